"""Encoders and decoders for the stored file, on ImageNet-size and 12-megapixel photos.

PNG encoders: Pillow at zlib level 1 (adaptanon's encoder before this bench),
``pyspng-seunglab`` (libspng) at level 1, ``fpng``, and a plain PNG writer (one filter for
every row, computed with numpy) around ``zlib`` (Python's), ``zlib-ng`` and ``isal``
(ISA-L) deflate. PNG decoders: Pillow and pyspng. JPEG (quality 95): Pillow and
``simplejpeg``. A candidate counts only when its file decodes (with Pillow) to exactly
the pixels it was given; the JPEG rows say whether the bytes equal Pillow's.

Photos: the first ``--images`` of the ImageNet sample (``--data``) as they are, and a
4000x3000 mosaic of 64 of them (each resized to 500x375), a 12-megapixel photo with
photographic detail everywhere. Each time is the median of ``--repeats`` runs, one thread.

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/codecs.py [--data DIR] [--images 20]
    [--repeats 3] [--no-docs]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import platform
import statistics
import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python bench/codecs.py"
DEFAULT_DATA = Path("../shared/data/imagenet-sample")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def plain_png(pixels: np.ndarray, compress: Callable[[bytes], bytes], up: bool = True) -> bytes:
    """A PNG of ``(H, W, 3)`` uint8 ``pixels`` with one filter on every row (Up, or None)."""
    h, w, _ = pixels.shape
    rows = pixels.reshape(h, w * 3)
    if up:
        rows = np.concatenate([rows[:1], rows[1:] - rows[:-1]])  # uint8: modulo 256
    raw = np.empty((h, w * 3 + 1), np.uint8)
    raw[:, 0] = 2 if up else 0  # on the first row Up sees zeros above: the row itself
    raw[:, 1:] = rows
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", compress(raw.tobytes()))
        + _chunk(b"IEND", b"")
    )


def pillow_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.array(img.convert("RGB"))


def pillow_jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def candidates() -> tuple[dict[str, Callable], dict[str, Callable], dict[str, Callable]]:
    """PNG encoders, PNG decoders and JPEG encoders that are installed."""
    png: dict[str, Callable] = {"pillow level 1": pillow_png}
    dec: dict[str, Callable] = {"pillow": pillow_decode}
    jpg: dict[str, Callable] = {"pillow q95": pillow_jpeg}
    png["plain Up + zlib 1"] = lambda p: plain_png(p, lambda b: zlib.compress(b, 1))
    if importlib.util.find_spec("pyspng"):
        import pyspng

        png["pyspng level 1"] = lambda p: pyspng.encode(p, compress_level=1)
        dec["pyspng"] = pyspng.load
    if importlib.util.find_spec("fpng"):
        import fpng

        png["fpng"] = lambda p: fpng.from_ndarray(np.ascontiguousarray(p))
    if importlib.util.find_spec("zlib_ng"):
        from zlib_ng import zlib_ng

        png["plain Up + zlib-ng 1"] = lambda p: plain_png(p, lambda b: zlib_ng.compress(b, 1))
    if importlib.util.find_spec("isal"):
        from isal import isal_zlib

        for level in (0, 1):
            png[f"plain Up + isal {level}"] = lambda p, lv=level: plain_png(
                p, lambda b: isal_zlib.compress(b, lv)
            )
        png["plain None + isal 1"] = lambda p: plain_png(
            p, lambda b: isal_zlib.compress(b, 1), up=False
        )
    if importlib.util.find_spec("simplejpeg"):
        import simplejpeg

        jpg["simplejpeg q95"] = lambda p: simplejpeg.encode_jpeg(
            np.ascontiguousarray(p), quality=95, colorsubsampling="420"
        )
    return png, dec, jpg


def photos(data: Path, count: int) -> dict[str, list[np.ndarray]]:
    """ImageNet-size photos, and one 12-megapixel mosaic of 64 of them."""
    files = sorted(data.glob("*.JPEG")) + sorted(data.glob("*.jpg"))
    small = [np.asarray(Image.open(f).convert("RGB")) for f in files[:count]]
    tiles = [np.asarray(Image.open(f).convert("RGB").resize((500, 375))) for f in files[:64]]
    rows = [np.concatenate(tiles[r * 8 : r * 8 + 8], axis=1) for r in range(8)]
    return {"imagenet": small, "12mp": [np.ascontiguousarray(np.concatenate(rows, axis=0))]}


def timed(fn: Callable, items: list, repeats: int) -> tuple[float, list]:
    """Median seconds per item over ``repeats`` passes, and the last pass's results."""
    times, out = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        out = [fn(x) for x in items]
        times.append((time.perf_counter() - start) / len(items))
    return statistics.median(times), out


def measure(sets: dict[str, list[np.ndarray]], repeats: int) -> list[dict]:
    png, dec, jpg = candidates()
    rows: list[dict] = []
    for kind, images in sets.items():
        reference = None
        for name, encode in png.items():
            seconds, files = timed(encode, images, repeats)
            exact = all(
                np.array_equal(pillow_decode(f), p) for f, p in zip(files, images, strict=True)
            )
            size = sum(map(len, files)) / len(files)
            reference = reference or files
            rows.append(
                {"photos": kind, "what": f"PNG encode: {name}", "ms": seconds * 1e3,
                 "kib": size / 1024, "exact": exact}
            )  # fmt: skip
        for name, decode in dec.items():
            seconds, _ = timed(decode, reference or [], repeats)
            rows.append({"photos": kind, "what": f"PNG decode: {name}", "ms": seconds * 1e3})
        first = None
        for name, encode in jpg.items():
            seconds, files = timed(encode, images, repeats)
            first = first or files
            rows.append(
                {"photos": kind, "what": f"JPEG encode: {name}", "ms": seconds * 1e3,
                 "kib": sum(map(len, files)) / len(files) / 1024, "exact": files == first}
            )  # fmt: skip
        print("\n".join(str(r) for r in rows if r["photos"] == kind), flush=True)
    return rows


def render(rows: list[dict], sets: dict[str, list[np.ndarray]], repeats: int) -> str:
    def fmt(row: dict) -> str:
        base = next(
            r["ms"]
            for r in rows
            if r["photos"] == row["photos"] and r["what"].startswith(row["what"].split(":")[0])
        )
        exact = {True: "yes", False: "no", None: ""}[row.get("exact")]
        kib = f"{row['kib']:.0f}" if "kib" in row else ""
        return (
            f"| {row['photos']} | {row['what']} | {row['ms']:.1f} | {base / row['ms']:.2f}x | "
            f"{kib} | {exact} |"
        )

    small = sets["imagenet"][0].shape
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        "cores shared with other jobs, one thread, by "
        f"`{COMMAND}`: {len(sets['imagenet'])} ImageNet-sample photos (the first is "
        f"{small[1]}x{small[0]}) and a 4000x3000 mosaic of 64 of them; median of {repeats} "
        "passes. *Speed* is against the first row of its kind (Pillow). *Exact*: PNG, "
        "Pillow decodes every file to exactly the encoded pixels; JPEG, the bytes equal "
        "Pillow's.",
        "",
        "| photos | what | ms per photo | speed | KiB per file | exact |",
        "|---|---|---|---|---|---|",
        *[fmt(r) for r in rows],
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    sets = photos(args.data, args.images)
    rows = measure(sets, args.repeats)
    section = render(rows, sets, args.repeats)
    print(section)
    if not args.no_docs:
        sys.path.insert(0, str(ROOT / "bench"))
        from docs_section import update_section

        update_section("codecs", "Codecs for the stored file (issue 16)", section)


if __name__ == "__main__":
    main()
