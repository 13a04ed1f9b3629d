"""Fuzz suite (issue 7): seeded, generated inputs that must never crash a run.

Most cases call the reader directly (fast): every generated file -- valid images in odd
modes and sizes, and truncated, bit-flipped or overwritten copies of PNG, JPEG (with an
EXIF block holding an orientation and a GPS IFD), WebP, GIF, TIFF and BMP files, random
bytes, empty files -- must give an ``(H, W, 3)`` uint8 array or a ``ValueError`` with a
one-line reason, nothing else. Generated boxes files must load or be refused with a
``ValueError``, and a loaded one must give each image boxes or that image's error. A few
CLI runs over folders of dozens of such files check the whole path: no traceback, one
valid manifest record per input, no input or foreign file changed, every output decodes.

Everything is generated from fixed seeds, so a failure names a case that can be rerun.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import ExifTags, Image

from adaptanon.cli import main
from adaptanon.io.images import read_image
from adaptanon.io.manifest import read_manifest
from adaptanon.records import REQUIRED_KEYS, Status
from adaptanon.regions import RegionQuery, parse_region_source

SEED = 20240607
COUNTS: Counter[str] = Counter()
"""Cases run, by kind (printed by each test; run ``pytest -rP tests/test_fuzz.py``)."""

pytestmark = [
    # Pillow warns about the damage made here on purpose ("Corrupt EXIF data", ...).
    pytest.mark.filterwarnings("ignore::UserWarning:PIL"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]

SIZES = [(1, 1), (1, 9), (9, 1), (2, 40), (40, 2), (13, 17)]
"""(height, width) of the generated images: single pixels, lines, strips, odd sizes."""

MODES = ["1", "L", "LA", "P", "PT", "I;16", "I", "F", "CMYK", "RGB", "RGBA"]
"""Image modes; ``PT`` is a palette image with a transparent index."""

FORMATS = {
    "png": ("PNG", {"1", "L", "LA", "P", "PT", "I;16", "RGB", "RGBA"}),
    "jpg": ("JPEG", {"L", "RGB", "CMYK"}),
    "webp": ("WEBP", {"RGB", "RGBA"}),
    "gif": ("GIF", {"L", "P", "PT"}),
    "tif": ("TIFF", {"1", "L", "LA", "P", "I;16", "I", "F", "CMYK", "RGB", "RGBA"}),
    "bmp": ("BMP", {"1", "L", "P", "RGB", "RGBA"}),
}
"""Extension -> (Pillow format, the modes generated in it)."""


def make_mode(mode: str, height: int, width: int, rng: np.random.Generator) -> Image.Image:
    """A random image of ``mode`` and size."""
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    base = Image.fromarray(rgb, "RGB")
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**20), 2**20, (height, width), dtype=np.int32))
    if mode == "F":
        scale = float(rng.choice([1.0, 1000.0]))
        return Image.fromarray((rng.random((height, width)) * scale).astype(np.float32), "F")
    if mode == "PT":
        img = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
        img.info["transparency"] = 0
        return img
    if mode == "RGBA":
        alpha = rng.integers(0, 256, (height, width, 1), dtype=np.uint8)
        return Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")
    if mode == "LA":
        return base.convert("RGBA").convert("LA")
    return base.convert(mode)


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    kw: dict[str, object] = {}
    if fmt == "PNG" and "transparency" in img.info:
        kw["transparency"] = img.info["transparency"]
    if fmt == "GIF" and "transparency" in img.info:
        kw["transparency"] = img.info["transparency"]
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def exif_jpeg(rng: np.random.Generator) -> bytes:
    """A 24x16 JPEG whose EXIF block holds orientation 6 (upright is 16x24) and a GPS IFD."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "FuzzCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 30.0, 1.5)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 2.0)
    img = make_mode("RGB", 24, 16, rng)
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=90)
    return buf.getvalue()


def animated(fmt: str, rng: np.random.Generator) -> bytes:
    first, *rest = [make_mode("RGB", 6, 7, rng) for _ in range(3)]
    buf = io.BytesIO()
    first.save(buf, fmt, save_all=True, append_images=rest)
    return buf.getvalue()


def valid_files(rng: np.random.Generator) -> list[tuple[str, bytes, tuple[int, int] | None]]:
    """(name, bytes, expected (H, W) or None when the file must be refused)."""
    files: list[tuple[str, bytes, tuple[int, int] | None]] = []
    for ext, (fmt, modes) in FORMATS.items():
        for mode in MODES:
            if mode not in modes:
                continue
            for h, w in SIZES:
                data = encode(make_mode(mode, h, w, rng), fmt)
                files.append((f"{mode.replace(';', '')}_{h}x{w}.{ext}", data, (h, w)))
    files.append(("exif.jpg", exif_jpeg(rng), (16, 24)))
    for ext, fmt in (("gif", "GIF"), ("webp", "WEBP"), ("png", "PNG"), ("tif", "TIFF")):
        files.append((f"animated.{ext}", animated(fmt, rng), None))
    return files


def mutations(data: bytes, rng: np.random.Generator, n: int) -> Iterator[tuple[str, bytes]]:
    """``n`` damaged copies of ``data``: truncations, bit flips, overwritten spans."""
    size = len(data)
    for i in range(n):
        kind = i % 4
        if kind == 0:  # truncation, often inside the header
            cut = int(rng.integers(0, min(size, 64))) if i % 8 == 0 else int(rng.integers(0, size))
            yield f"trunc{cut}", data[:cut]
            continue
        damaged = bytearray(data)
        if kind == 1:  # a few single-bit flips
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.integers(0, size))
                damaged[pos] ^= 1 << int(rng.integers(0, 8))
            yield "flip", bytes(damaged)
        elif kind == 2:  # two bytes changed (as in the GPS block that broke exif_transpose)
            pos = int(rng.integers(0, max(1, size - 1)))
            damaged[pos : pos + 2] = rng.integers(0, 256, 2, dtype=np.uint8).tobytes()
            yield "two", bytes(damaged)
        else:  # a span overwritten with random bytes
            pos = int(rng.integers(0, size))
            span = int(rng.integers(1, 33))
            damaged[pos : pos + span] = rng.integers(0, 256, span, dtype=np.uint8).tobytes()
            yield "span", bytes(damaged[:size])


def exif_mutations(data: bytes, rng: np.random.Generator, n: int) -> Iterator[tuple[str, bytes]]:
    """Damage inside the EXIF segment only (IFD0, GPS IFD, their values)."""
    start = data.index(b"Exif\x00\x00")
    length = int.from_bytes(data[start - 2 : start], "big") - 2
    for _ in range(n):
        damaged = bytearray(data)
        for _ in range(int(rng.integers(1, 3))):
            pos = start + 6 + int(rng.integers(0, length - 6))
            damaged[pos] = int(rng.integers(0, 256))
        yield "exif", bytes(damaged)


def generated_files(seed: int) -> Iterator[tuple[str, bytes, tuple[int, int] | None, bool]]:
    """Every fuzz file: (name, bytes, expected (H, W) for an intact file or None,
    whether the bytes are intact)."""
    rng = np.random.default_rng(seed)
    for name, data, shape in valid_files(rng):
        yield name, data, shape, True
        stem, ext = name.rsplit(".", 1)
        for kind, damaged in mutations(data, rng, 5):
            yield f"{stem}_{kind}.{ext}", damaged, None, False
        if name == "exif.jpg":
            for i, (kind, damaged) in enumerate(exif_mutations(data, rng, 120)):
                yield f"exif_{kind}{i}.jpg", damaged, None, False
    for i in range(60):
        ext = ["jpg", "png", "webp", "gif", "tif", "bmp", "ppm", "jpeg"][i % 8]
        blob = rng.integers(0, 256, int(rng.integers(1, 2000)), dtype=np.uint8).tobytes()
        if i % 3 == 0:  # a real signature in front of the noise
            blob = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"II*\x00"][i % 4] + blob
        yield f"random{i}.{ext}", blob, None, False
    for ext in ("jpg", "png", "webp", "gif", "tif"):
        yield f"empty.{ext}", b"", None, False


def check_read(path: Path, expected: tuple[int, int] | None) -> str | None:
    """None when ``read_image`` behaves, else what went wrong."""
    try:
        px = read_image(path)
    except ValueError as exc:
        message = str(exc)
        if "\n" in message or not message.startswith("cannot read image"):
            return f"bad error message {message!r}"
        if expected is not None:
            return f"refused an intact image: {message}"
        return None
    except Exception as exc:  # noqa: BLE001 - this is what the fuzz looks for
        return f"{type(exc).__name__}: {exc}"
    if not (
        isinstance(px, np.ndarray)
        and px.dtype == np.uint8
        and px.ndim == 3
        and px.shape[2] == 3
        and px.shape[0] >= 1
        and px.shape[1] >= 1
        and px.flags.c_contiguous
    ):
        return f"returned {type(px).__name__} {getattr(px, 'shape', None)}"
    if expected is not None and px.shape[:2] != expected:
        return f"shape {px.shape[:2]}, expected {expected}"
    return None


def test_fuzz_reader(tmp_path):
    """At least 1,000 generated files through ``read_image``: an image or a ValueError."""
    start = time.perf_counter()
    failures = []
    intact_refused = 0
    for n, (name, data, expected, intact) in enumerate(generated_files(SEED)):
        path = tmp_path / f"{n:05d}_{name}"
        path.write_bytes(data)
        problem = check_read(path, expected)
        if problem:
            failures.append(f"{path.name}: {problem}")
        if intact and expected is None:
            intact_refused += 1  # the animated files: refused, checked above
        COUNTS["reader"] += 1
    seconds = time.perf_counter() - start
    print(f"fuzz reader: {COUNTS['reader']} cases in {seconds:.1f} s")
    assert not failures, "\n".join(failures[:20])
    assert intact_refused == 4
    assert COUNTS["reader"] >= 1000, f"only {COUNTS['reader']} reader cases"


# ------------------------------------------------------------------------ boxes files


def boxes_documents(rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    """Generated boxes files, mostly invalid: wrong types, booleans, NaN/Infinity,
    negative, huge, wrongly nested, non-dict JSON, invalid UTF-8, truncated JSON."""
    good = [[1, 1, 6, 5]]
    values: list[object] = [
        good,
        [[0, 0, 3, 3], [2, 2, 8, 6]],
        [],
        [1, 2, 3, 4],
        [[1, 2, 3]],
        [[1, 2, 3, 4, 5]],
        [[True, 0, 3, 3]],
        [[0, 0, False, 3]],
        [["0", "0", "3", "3"]],
        [[None, 0, 3, 3]],
        [[[0, 0, 3, 3]]],
        [{"x0": 0, "y0": 0, "x1": 3, "y1": 3}],
        [[-5, -5, -1, -1]],
        [[-5, -5, 3, 3]],
        [[0, 0, 1e308, 1e308]],
        [[-1e308, -1e308, 1e308, 1e308]],
        [[0, 0, 2**63, 2**63]],
        [[0.4, 0.4, 0.6, 0.6]],
        [[3, 3, 1, 1]],
        [[0, 0, 1e-300, 3]],
        "0,0,3,3",
        7,
        None,
        True,
        {"a": [0, 0, 3, 3]},
    ]
    for i, value in enumerate(values):
        yield f"value{i}", json.dumps({"a.png": value, "b.png": good}).encode()
    for token in ("NaN", "Infinity", "-Infinity", "1e999", "-1e999"):
        yield f"const_{token}", f'{{"a.png": [[0, 0, {token}, 3]], "b.png": [[1,1,6,5]]}}'.encode()
    for doc in ("[]", "[[0,0,3,3]]", "1", '"a.png"', "null", "true", "{}", '{"a.png": {}}'):
        yield f"doc_{doc[:6]}", doc.encode()
    yield "bad_utf8", b'{"a.png": [[0, 0, 3, 3]], "\xff\xfe": [[0, 0, 1, 1]]}'
    yield "latin1_key", '{"caf\xe9.png": [[0, 0, 3, 3]]}'.encode("latin-1")
    yield "bom", b"\xef\xbb\xbf" + json.dumps({"a.png": good}).encode()
    yield "empty", b""
    for i in range(40):  # random values in random nestings
        cell: list[object] = [
            float(rng.normal() * 10 ** rng.integers(0, 12)),
            int(rng.integers(-(2**40), 2**40)),
            bool(rng.integers(0, 2)),
            "1",
            None,
        ]
        box = [cell[int(rng.integers(0, len(cell)))] for _ in range(int(rng.integers(0, 6)))]
        wrapped: object = box
        for _ in range(int(rng.integers(0, 3))):
            wrapped = [wrapped]
        yield f"random{i}", json.dumps({"a.png": wrapped}).encode()
    base = json.dumps({"a.png": [[0, 0, 3, 3]], "sub/b.png": [[1, 1, 2, 2]]}).encode()
    for i in range(20):  # truncated and byte-damaged JSON
        cut = int(rng.integers(0, len(base)))
        damaged = bytearray(base[:cut] if i % 2 else base)
        if i % 2 == 0:
            damaged[int(rng.integers(0, len(damaged)))] = int(rng.integers(0, 256))
        yield f"damaged{i}", bytes(damaged)


def test_fuzz_boxes_files(tmp_path):
    """Each generated boxes file loads (a usage error otherwise: ValueError) and gives
    each image its boxes or that image's error, never an exception."""
    rng = np.random.default_rng(SEED + 1)
    image = torch.rand(3, 8, 10)
    failures = []
    for name, data in boxes_documents(rng):
        path = tmp_path / f"{name}.json"
        path.write_bytes(data)
        COUNTS["boxes"] += 1
        try:
            source = parse_region_source(f"boxes={path}")
        except ValueError as exc:
            if "\n" in str(exc).strip():
                failures.append(f"{name}: multi-line message")
            continue
        except Exception as exc:  # noqa: BLE001 - this is what the fuzz looks for
            failures.append(f"{name}: loading raised {type(exc).__name__}: {exc}")
            continue
        queries = [RegionQuery(n, image) for n in ("a.png", "b.png", "sub/b.png", "c.png")]
        try:
            found = source.find(queries)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{name}: find raised {type(exc).__name__}: {exc}")
            continue
        for query, regions in zip(queries, found, strict=True):
            for x0, y0, x1, y1 in regions.boxes:
                if not (0 <= x0 < x1 <= 10 and 0 <= y0 < y1 <= 8):
                    failures.append(f"{name}: {query.name} got box {(x0, y0, x1, y1)}")
            if regions.error is not None and not regions.error.strip():
                failures.append(f"{name}: {query.name} has an empty error")
    print(f"fuzz boxes: {COUNTS['boxes']} boxes files")
    assert not failures, "\n".join(failures[:20])
    assert COUNTS["boxes"] >= 100


def test_deeply_nested_boxes_file_is_a_usage_error(tmp_path):
    """JSON nested 100,000 deep makes the json module raise RecursionError: still a
    usage error naming --regions, before any work."""
    (tmp_path / "deep.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    res = CliRunner().invoke(
        main,
        ["anonymize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "-q"]
        + ["--model", "tiny_factory:make", "--regions", f"boxes={tmp_path / 'deep.json'}"],
    )
    assert res.exit_code == 2, res.output
    assert "--regions" in res.output and "recursion" in res.output
    assert not (tmp_path / "out").exists()
    COUNTS["boxes"] += 1


# ------------------------------------------------------------------------ whole CLI


def digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def pick_files(seed: int, count: int) -> list[tuple[str, bytes]]:
    """``count`` generated files, intact and damaged mixed, spread over the generator."""
    every = list(generated_files(seed))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(every), size=count, replace=False)
    return [(every[i][0], every[i][1]) for i in sorted(chosen)]


def run_folder(tmp_path: Path, files: list[tuple[str, bytes]], *extra: str) -> dict[str, dict]:
    """Run ``anonymize`` on a folder of ``files`` and check the run as a whole; returns
    the manifest records by input name."""
    root = tmp_path / "in"
    for i, (name, data) in enumerate(files):
        sub = root / ("deep" if i % 3 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:03d}_{name}").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("not adaptanon's")
    (tmp_path / "beside.txt").write_text("not an input")
    before = digest(tmp_path)
    res = CliRunner().invoke(
        main,
        ["anonymize", str(root), "-o", str(out), "--model", "tiny_factory:make", "--device", "cpu"]
        + ["--regions", "saliency:8", "--max-steps", "10", "-q", *extra],
        prog_name="adaptanon",
        catch_exceptions=True,
    )
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code in (0, 1), res.output
    assert "Traceback" not in res.output
    after = digest(tmp_path)
    for rel, sha in before.items():
        assert after.get(rel) == sha, f"{rel} was changed or removed"
    inputs = sorted(p for p in root.rglob("*") if p.is_file())
    records = read_manifest(out / "manifest.jsonl")
    assert sorted(r["input"] for r in records) == sorted(str(p) for p in inputs)
    statuses = {s.value for s in Status}
    for rec in records:
        assert set(REQUIRED_KEYS) <= set(rec), rec
        assert rec["status"] in statuses, rec
        if rec["status"] == Status.ERROR:
            assert rec["output"] is None
            assert isinstance(rec["error"], str) and rec["error"].strip()
            assert "\n" not in rec["error"]
            continue
        written = Path(rec["output"])
        assert written.is_file() and written.resolve().is_relative_to(out.resolve())
        with Image.open(written) as im:
            im.load()
            assert im.mode == "RGB"
    written_files = {
        p for p in out.rglob("*") if p.is_file() and p.name not in ("manifest.jsonl", "notes.txt")
    }
    recorded = {Path(r["output"]) for r in records if r["output"]}
    assert {p.resolve() for p in written_files if not p.name.startswith(".")} == {
        p.resolve() for p in recorded
    }
    COUNTS["cli inputs"] += len(records)
    return {Path(r["input"]).name: r for r in records}


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzz_cli_folder(tmp_path, seed):
    """A folder of 36 generated files, intact and damaged, through ``anonymize``."""
    recs = run_folder(tmp_path, pick_files(SEED + seed, 36))
    assert len(recs) == 36
    print(f"fuzz cli: {COUNTS['cli inputs']} inputs so far")


def test_fuzz_cli_folder_with_boxes_file(tmp_path):
    """The same with a boxes file holding good, bad and odd boxes for these names."""
    files = pick_files(SEED + 3, 30)
    rng = np.random.default_rng(SEED + 3)
    kinds: list[Callable[[], object]] = [
        lambda: [[0, 0, 1, 1]],
        lambda: [[0, 0, 1e308, 1e308]],
        lambda: [[True, 0, 1, 1]],
        lambda: [[0, 0, 0, 0]],
        lambda: [1, 2, 3, 4],
        lambda: [[-3, -3, 2, 2], [0, 0, 1, 1]],
    ]
    boxes = {
        f"{i:03d}_{name}": kinds[int(rng.integers(0, len(kinds)))]()
        for i, (name, _) in enumerate(files)
    }
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    recs = run_folder(tmp_path, files, "--regions", f"boxes={tmp_path / 'boxes.json'}")
    assert len(recs) == 30
    print(f"fuzz cli: {COUNTS['cli inputs']} inputs so far")
