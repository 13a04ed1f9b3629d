"""``adaptanon anonymize`` end to end on the CPU against the model's own work (issue 16).

The same run measures:

- model: EfficientNet-Lite0's least work for the method, two forward passes plus one
  forward/backward per image in batches of 8 on two threads, on inputs preprocessed
  before the clock starts (:func:`throughput.time_bound`), on two networks: as its package
  publishes it (in a plain process), and as the built-in classifier runs it (batch norms
  folded into the convolutions, channels-last, the command's allocator setting from
  :mod:`adaptanon.engines.host_memory`);
- ``adaptanon anonymize`` on the same photos as a user types it (default options:
  saliency box, blur, PNG; model load included), once per ``--workers`` value (default
  0, everything in the main process, and 1), each on two torch threads
  (``OMP_NUM_THREADS=2``). ``--workers auto`` gives the cores the model's threads leave
  free: none on a 2-core machine.

The ratio is model seconds / command seconds (1.0: files in, verified files out as fast as
the model alone), against each network. The workers' own threads (one each) share the same cores.

Usage: .venv/bin/python bench/pipeline_cpu.py [--images DIR] [--limit 150]
    [--workers 0 1] [--no-docs]
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

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("../shared/data/imagenet-sample")
THREADS = 2
REPEATS = 2
"""Each figure is the fastest of this many runs: two OpenMP threads on two cores that other
jobs share stall now and then (a thread waits at a barrier for one that is not running)."""


def model_seconds(paths: list[Path], batch: int, network: str) -> float:
    """Seconds of two forwards + one forward/backward per image, batches of ``batch``, on
    ``network``: ``published`` (EfficientNet-Lite0 as its package publishes it, NCHW,
    batch norms as layers, in a plain process) or ``prepared`` (the network the built-in
    classifier runs, batch norms folded and channels-last, with the allocator setting of
    the command's process)."""
    import torch
    from throughput import time_bound

    from adaptanon.classifiers import efficientnet_lite
    from adaptanon.classifiers.efficientnet_lite import lite_network
    from adaptanon.engines import reuse_freed_memory
    from adaptanon.io import read_image, to_image

    torch.set_num_threads(THREADS)
    clf = efficientnet_lite("efficientnet_lite0")
    images = [to_image(read_image(p)) for p in paths]
    with torch.no_grad():
        inputs = torch.cat([clf.inputs(images[i : i + 64]) for i in range(0, len(images), 64)])
    if network == "published":
        model = lite_network("efficientnet_lite0")
    else:
        reuse_freed_memory()
        model, inputs = clf.model, inputs.contiguous(memory_format=torch.channels_last)
    time_bound(model, inputs[:batch], batch, torch.device("cpu"))  # warm-up
    return min(time_bound(model, inputs, batch, torch.device("cpu")) for _ in range(REPEATS))


def reference_seconds(images: Path, limit: int, network: str) -> float:
    """:func:`model_seconds` of ``network`` in a process of its own (the allocator setting
    is per process)."""
    import subprocess

    cmd = [sys.executable, __file__, "--images", str(images), "--limit", str(limit)]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    done = subprocess.run([*cmd, "--reference", network], env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def engine_seconds(paths: list[Path]) -> float:
    """Seconds of the local engine in this process on ``paths`` with the CLI's defaults,
    the model already loaded and warmed up: the command without its start-up (imports,
    model load, the first batch's one-time costs)."""
    import torch

    from adaptanon.classifiers import efficientnet_lite
    from adaptanon.engines import reuse_freed_memory, run
    from adaptanon.io.images import InputImage
    from adaptanon.method import Settings
    from adaptanon.regions import parse_region_source

    torch.set_num_threads(THREADS)
    reuse_freed_memory()  # as the command's process does
    clf = efficientnet_lite("efficientnet_lite0")
    items = [InputImage(p, Path(p.name)) for p in paths]
    times = []
    for _ in range(REPEATS + 1):  # the first one warms up
        with tempfile.TemporaryDirectory(prefix="adaptanon-bench-") as folder:
            start = time.perf_counter()
            run(items, Path(folder) / "out", clf, parse_region_source("saliency"), Settings(), 8,
                lambda record: None, workers=0)  # fmt: skip
            times.append(time.perf_counter() - start)
    return min(times[1:])


def command_seconds(paths: list[Path], workers: str) -> tuple[float, dict[str, int], str]:
    """Wall seconds of ``adaptanon anonymize PATHS --workers W``, its status counts, and
    the command as typed."""
    from cli_run import run_anonymize, status_counts

    with tempfile.TemporaryDirectory(prefix="adaptanon-bench-") as folder:
        inputs = [str(p.resolve()) for p in paths]
        options = ["--workers", workers, "-q"]
        records, seconds, _ = run_anonymize(inputs, Path(folder) / "out", options, THREADS)
    counts = status_counts(records)
    shown = f"OMP_NUM_THREADS={THREADS} adaptanon anonymize <{len(paths)} photos> -o OUT --workers {workers}"
    return seconds, counts, shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument("--workers", nargs="+", default=["0", "1"])
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--reference", choices=["published", "prepared"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    paths = paths[: args.limit]
    if args.reference:
        print(json.dumps({"seconds": model_seconds(paths, 8, args.reference)}))
        return
    model = {
        network: reference_seconds(args.images, args.limit, network)
        for network in ("published", "prepared")
    }
    engine = engine_seconds(paths)
    print(json.dumps({"engine_in_process_s": engine, "model_s": model}))
    rows = []
    for workers in args.workers:
        runs = [command_seconds(paths, workers) for _ in range(REPEATS)]
        seconds, counts, shown = min(runs, key=lambda run: run[0])
        row = {
            "workers": workers,
            "images": len(paths),
            "command_s": seconds,
            "model_s": model,
            "ratio": model["published"] / seconds,
            "ratio_prepared": model["prepared"] / seconds,
            "statuses": counts,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    published, prepared = model["published"], model["prepared"]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        "cores shared with other jobs (figures move with their load), no GPU, by "
        f"`.venv/bin/python bench/pipeline_cpu.py --limit {args.limit}`: the first "
        f"{len(paths)} photos of the ImageNet sample, EfficientNet-Lite0, default options "
        f"(saliency box, blur, PNG), {THREADS} torch threads. *Model*: two forward passes "
        "and one forward/backward per image in batches of 8 on preprocessed inputs, in the "
        f"same run, on the network as its package publishes it ({published:.1f} s) and on "
        f"the network the built-in classifier runs, batch norms folded and channels-last, "
        f"with the command's allocator setting ({prepared:.1f} s), each in a process of its "
        "own. *Ratio* = model seconds / command seconds (model load "
        f"included in the command); each the fastest of {REPEATS} runs.",
        "",
        "| --workers | images | command s | ratio (published network) | ratio (prepared "
        "network) | statuses |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['images']} | {r['command_s']:.1f} | {r['ratio']:.2f}x | "
            f"{r['ratio_prepared']:.2f}x | {r['statuses']} |"
        )
    lines.append(
        f"| 0, in process, model loaded and warm | {len(paths)} | {engine:.1f} | "
        f"{published / engine:.2f}x | {prepared / engine:.2f}x | |"
    )
    lines += [
        "",
        "The last row is `adaptanon.engines.run` with the same defaults in the benchmark's own "
        "process after a warm-up run: the command without its start-up (imports, model "
        "load, the first batch's one-time costs).",
    ]
    section = "\n".join(lines)
    print(section)
    if not args.no_docs:
        from docs_section import update_section

        update_section("pipeline-cpu", "The pipelined engine on the CPU (issue 16)", section)


if __name__ == "__main__":
    main()
