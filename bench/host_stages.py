"""The host's work per ImageNet-size photo, stage by stage, and the engine's throughput
against its number of worker processes, with a classifier whose cost is negligible
(issue 16).

Stages, each timed (CPU time and wall clock) on one thread over the same photos (one region each, the middle
third of the photo, blurred): decode (:func:`~adaptanon.io.images.read_image`),
anonymize (8-bit to float, :func:`~adaptanon.method.filters.anonymize`), metrics (PSNR
and strength of the region, :func:`~adaptanon.method.finish.measure_regions`, as for an
image that needed no correction step, most of them), encode (the PNG file), verify (decode the file and compare) and write
(:func:`~adaptanon.io.atomic.atomic_write`, fsync included); hand-over is what worker
processes add: the decoded pixels and the finishing job (the file's pixels and the
region's float crops) pickled and unpickled, as they cross between processes.

Throughput: :func:`adaptanon.engines.run` on the same photos with a tiny convolutional
net (32x32 view) and ``workers`` = 0 (all in this process), 1, 2, ...; images per second
between the first and the last record (worker start-up excluded) and over the whole run.

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/host_stages.py [--images DIR]
    [--limit 100] [--workers 0 1 2] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("../shared/data/imagenet-sample")
COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python bench/host_stages.py"


def tiny() -> Any:
    """A classifier whose cost is negligible: two small convolutions on a 32x32 view."""
    from adaptanon.classifiers import TorchClassifier
    from adaptanon.preprocessing import Preprocess

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32, 10),
    ).eval()  # fmt: skip
    preprocess = Preprocess(resize=40, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return TorchClassifier(net, preprocess, name="tiny")


def middle_box(h: int, w: int) -> tuple[int, int, int, int]:
    """The middle third of an ``h`` x ``w`` photo."""
    return (w // 3, h // 3, 2 * w // 3, 2 * h // 3)


def stage_ms(paths: list[Path], folder: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Mean milliseconds per photo of each host stage, one thread: CPU time (this
    process's, so waiting for the disk or for other jobs on the cores does not count) and
    wall-clock time."""
    import numpy as np

    from adaptanon.io.atomic import atomic_write
    from adaptanon.io.codecs import Codec, to_image, to_pixels
    from adaptanon.io.images import read_image
    from adaptanon.method.filters import Blur, anonymize
    from adaptanon.method.finish import FinishJob, measure_regions
    from adaptanon.records import ImageRecord

    codec, blur = Codec(), Blur()
    times: dict[str, list[float]] = {k: [] for k in ("decode", "anonymize", "metrics")}
    times.update({k: [] for k in ("hand-over", "encode", "verify", "write")})

    walls: dict[str, list[float]] = {k: [] for k in times}

    def clock(stage: str, fn: Callable[[], Any]) -> Any:
        start, cpu = time.perf_counter(), time.process_time()
        value = fn()
        times[stage].append((time.process_time() - cpu) * 1e3)
        walls[stage].append((time.perf_counter() - start) * 1e3)
        return value

    for i, path in enumerate(paths):
        pixels = clock("decode", lambda p=path: read_image(p))
        box = middle_box(*pixels.shape[:2])

        def anonymized(px=pixels, b=box) -> tuple[Any, Any, Any]:
            img = to_image(px)
            return (img, *anonymize(img, [b], blur, 2.0))

        image, anon, mask = clock("anonymize", anonymized)

        crop = (slice(None), slice(box[1], box[3]), slice(box[0], box[2]))
        floats = [t[crop].contiguous().numpy() for t in (image, anon)]
        final = to_pixels(anon)
        job = FinishJob(
            ImageRecord("photo"), [box], box, floats[0], floats[1], floats[1],
            mask[0][crop[1:]].contiguous().numpy(), final, None, True,
        )  # fmt: skip

        def metrics(j=job) -> None:
            # As finish_image measures an image no step changed (most of them): once.
            measure_regions(j, "rect")

        clock("metrics", metrics)

        def hand_over(px=pixels, j=job) -> None:
            """What crosses between processes: the decoded pixels (stage A to B) and the
            finishing job (B to C), pickled both ways."""
            pickle.loads(pickle.dumps(px, pickle.HIGHEST_PROTOCOL))
            pickle.loads(pickle.dumps(j, pickle.HIGHEST_PROTOCOL))

        clock("hand-over", hand_over)
        data = clock("encode", lambda f=final: codec.encode(f))
        same = clock("verify", lambda d=data, f=final: np.array_equal(codec.decode(d), f))
        assert same
        clock("write", lambda d=data, n=i: atomic_write(folder / f"{n}.png", d))
    cpu = {k: statistics.mean(v) for k, v in times.items()}
    return cpu, {k: statistics.mean(v) for k, v in walls.items()}


def throughput(paths: list[Path], workers: int, folder: Path) -> dict[str, Any]:
    """The engine on ``paths`` with ``workers`` worker processes."""
    from adaptanon.engines import run
    from adaptanon.io.images import InputImage, read_image
    from adaptanon.method import Settings
    from adaptanon.regions import ExplicitBoxes

    items = [InputImage(p, Path(p.name)) for p in paths]
    boxes = {p.name: [middle_box(*read_image(p).shape[:2])] for p in paths}
    stamps: list[float] = []
    start = time.perf_counter()
    summary = run(
        items, folder / f"w{workers}", tiny(), ExplicitBoxes(boxes), Settings(), 8,
        lambda rec: stamps.append(time.perf_counter()), workers=workers,
    )  # fmt: skip
    total = time.perf_counter() - start
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return {
        "workers": workers,
        "images": len(paths),
        "img_s_steady": steady,
        "img_s_total": len(paths) / total,
        "statuses": {str(k): v for k, v in summary.counts.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from adaptanon.engines import reuse_freed_memory

    reuse_freed_memory()  # as the command's processes and its workers do
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    paths = paths[: args.limit]
    with tempfile.TemporaryDirectory(prefix="adaptanon-bench-") as tmp:
        stages, walls = stage_ms(paths, Path(tmp))
        print(json.dumps({"cpu_ms": stages, "wall_ms": walls}), flush=True)
        rows = [throughput(paths, w, Path(tmp)) for w in args.workers]
    for row in rows:
        print(json.dumps(row), flush=True)
    total = sum(stages.values())
    base = rows[0]["img_s_steady"]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        "cores shared with other jobs (figures move with their load), no GPU, by "
        f"`{COMMAND} --limit {args.limit}`: the first {len(paths)} photos of the ImageNet "
        "sample, one region each (the middle third), blur, PNG, torch "
        f"{torch.__version__}. Stages on one thread, mean ms per photo, CPU time of this "
        "process (the cost per core) and wall clock (which adds waiting for the disk, "
        "fsync, and for the other jobs on the cores):",
        "",
        "| ms per photo | " + " | ".join(stages) + " | total |",
        "|" + "---|" * (len(stages) + 2),
        "| CPU | " + " | ".join(f"{v:.1f}" for v in stages.values()) + f" | **{total:.1f}** |",
        "| wall | "
        + " | ".join(f"{v:.1f}" for v in walls.values())
        + f" | {sum(walls.values()):.1f} |",
        "",
        "The engine with a negligible classifier (a tiny convolutional net) against its "
        "worker processes: *steady* counts from the first record to the last (worker "
        "start-up excluded), *whole run* from the call to its return.",
        "",
        "| --workers | img/s steady | vs 0 workers | img/s whole run | statuses |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['img_s_steady']:.1f} | {r['img_s_steady'] / base:.2f}x | "
            f"{r['img_s_total']:.1f} | {r['statuses']} |"
        )
    section = "\n".join(lines)
    print(section)
    if not args.no_docs:
        sys.path.insert(0, str(ROOT / "bench"))
        from docs_section import update_section

        update_section(
            "host-stages", "Host stages per photo and worker processes (issue 16)", section
        )


if __name__ == "__main__":
    main()
