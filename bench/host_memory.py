"""What the allocator setting of the command's processes buys and costs (issue 16):
``adaptanon anonymize`` with glibc keeping freed memory for reuse (the default,
:mod:`adaptanon.engines.host_memory`) and with it off (``ADAPTANON_REUSE_FREED_MEMORY=0``),
on the same photos in the same run: wall seconds and the peak resident memory of the
command's largest process.

Two sets: the first ``--limit`` photos of the ImageNet sample (default options: saliency
box, blur, PNG), and four large JPEGs made from them (the 4000x3000 mosaic of
``bench/large_photos.py``, its 3000x4000 turn, and both scaled to 24 MP). Two torch
threads; each figure is the fastest of ``--repeats`` runs (its memory from that run).

Usage: .venv/bin/python bench/host_memory.py [--images DIR] [--limit 150] [--repeats 2]
    [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("../shared/data/imagenet-sample")
THREADS = 2
SWITCH = "ADAPTANON_REUSE_FREED_MEMORY"


def large_photos(data: Path, folder: Path) -> list[Path]:
    """Four JPEGs (quality 95) in ``folder``: 12 MP landscape and portrait, 24 MP both."""
    from large_photos import mosaic

    big = mosaic(data)
    turned = big.transpose(Image.Transpose.ROTATE_90)
    images = {
        "12mp": big,
        "12mp-portrait": turned,
        "24mp": big.resize((6000, 4000), Image.Resampling.BICUBIC),
        "24mp-portrait": turned.resize((4000, 6000), Image.Resampling.BICUBIC),
    }
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in images.items():
        paths.append(folder / f"{name}.jpg")
        image.save(paths[-1], quality=95)
    return paths


def measure(paths: list[Path], reuse: bool, repeats: int) -> dict:
    """Fastest of ``repeats`` runs of the command on ``paths``: seconds, peak MiB, statuses."""
    from cli_run import run_anonymize_usage, status_counts

    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="adaptanon-bench-") as folder:
            records, seconds, _, peak = run_anonymize_usage(
                [str(p.resolve()) for p in paths], Path(folder) / "out", ["-q"], THREADS,
                {SWITCH: "1" if reuse else "0"},
            )  # fmt: skip
        runs.append({"seconds": seconds, "peak_mib": peak, "statuses": status_counts(records)})
    return min(runs, key=lambda run: run["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="adaptanon-bench-large-") as tmp:
        sets = {
            f"{args.limit} ImageNet photos": photos[: args.limit],
            "4 photos of 12-24 MP": large_photos(args.images, Path(tmp)),
        }
        for name, paths in sets.items():
            on = measure(paths, True, args.repeats)
            off = measure(paths, False, args.repeats)
            row = {"set": name, "reuse": on, "off": off}
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        "cores shared with other jobs (figures move with their load), no GPU, by "
        f"`.venv/bin/python bench/host_memory.py --limit {args.limit}`: `adaptanon anonymize` "
        f"with default options on {THREADS} torch threads, with the allocator keeping freed "
        f"memory (the default) and with `{SWITCH}=0`; each the fastest of {args.repeats} runs; "
        "peak memory is the largest process's resident size in that run.",
        "",
        "| photos | seconds, reuse / off | speed-up | peak MiB, reuse / off | memory | statuses |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        on, off = r["reuse"], r["off"]
        lines.append(
            f"| {r['set']} | {on['seconds']:.1f} / {off['seconds']:.1f} | "
            f"{off['seconds'] / on['seconds']:.2f}x | {on['peak_mib']:.0f} / "
            f"{off['peak_mib']:.0f} | {on['peak_mib'] / off['peak_mib']:.2f}x | "
            f"{on['statuses']} |"
        )
    section = "\n".join(lines)
    print(section)
    if not args.no_docs:
        from docs_section import update_section

        update_section("host-memory", "The allocator keeps freed memory (issue 16)", section)


if __name__ == "__main__":
    main()
