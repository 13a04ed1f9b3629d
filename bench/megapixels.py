"""Seconds per correction step against the image's resolution (issue 10.1).

One photo (scikit-image ``astronaut``), upscaled with PIL (bicubic) to 0.25, 4, 12 and 24
megapixels, goes through ``process_batch`` with efficientnet_lite0, a blur and one region:
a 50x50 square of view pixels at the centre of the model's view, mapped to input pixels
(as the saliency source maps its square). The criterion ``margin:50`` never holds, so the
correction takes exactly ``--max-steps`` steps. Each run is timed (the fastest of
``--repeats``) with ``--max-steps`` steps and with 0 (classify, anonymize, check, encode and verify only), and
the difference divided by the steps is the cost of one step. Each size runs in a child
process, once with the full-image path (``region.WINDOWED = False``, the solver before
issue 10.1) and once windowed, so that each child's peak resident memory (``ru_maxrss``)
is its own. One CPU thread (``OMP_NUM_THREADS=1``).

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/megapixels.py [--sizes 0.25 4 12 24]
    [--max-steps 5] [--repeats 2] [--no-docs]
Writes the table into docs/results.md between the ``bench:megapixels`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python bench/megapixels.py"


def photo(megapixels: float):
    """The astronaut upscaled to about ``megapixels`` (its aspect ratio, 1:1), as a tensor."""
    import numpy as np
    from PIL import Image
    from skimage import data

    from adaptanon.io import to_image

    side = round((megapixels * 1e6) ** 0.5)
    pixels = Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.BICUBIC)
    return to_image(np.asarray(pixels))


def child(megapixels: float, windowed: bool, max_steps: int, repeats: int) -> dict:
    """One size and path, in this process: seconds per step and the peak memory."""
    import torch

    from adaptanon.classifiers import efficientnet_lite
    from adaptanon.engines import reuse_freed_memory
    from adaptanon.method import Blur, GradientSolver, SameClass, Settings, process_batch
    from adaptanon.method.solvers import region
    from adaptanon.regions import ExplicitBoxes

    torch.set_num_threads(1)
    reuse_freed_memory()  # as the command's process does
    region.WINDOWED = windowed
    clf = efficientnet_lite("efficientnet_lite0")
    image = photo(megapixels)
    h, w = image.shape[-2:]
    geometry = clf.geometry(h, w)
    assert geometry is not None
    c = geometry.crop / 2
    box = geometry.view_box_to_input((c - 25, c - 25, c + 25, c + 25))
    source = ExplicitBoxes({"photo": [list(box)]})

    def run(steps: int) -> tuple[float, int]:
        settings = Settings(
            filter=Blur(),
            criterion=SameClass(margin=50.0),
            solver=GradientSolver(alpha=0.1, max_steps=steps),
        )
        start = time.perf_counter()
        (outcome,) = process_batch(clf, source, settings, ["photo"], [image])
        return time.perf_counter() - start, int(outcome.record.steps or 0)

    run(1)  # warm-up: caches (taps, resize order), allocator
    base = min(run(0)[0] for _ in range(repeats))
    timed = [run(max_steps) for _ in range(repeats)]
    total, steps = min(t for t, _ in timed), timed[0][1]
    if steps != max_steps:
        raise RuntimeError(f"expected {max_steps} steps, the correction took {steps}")
    return {
        "megapixels": round(h * w / 1e6, 2),
        "size": f"{w}x{h}",
        "region": f"{box[2] - box[0]}x{box[3] - box[1]}",
        "windowed": windowed,
        "step_s": (total - base) / steps,
        "fixed_s": base,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 4, 12, 24])
    parser.add_argument("--max-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="timings kept: the fastest")
    parser.add_argument("--no-docs", action="store_true", help="print only, leave docs alone")
    parser.add_argument("--child", nargs=2, metavar=("MP", "WINDOWED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mp, windowed = float(args.child[0]), args.child[1] == "1"
        print(json.dumps(child(mp, windowed, args.max_steps, args.repeats)), flush=True)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    for mp in args.sizes:
        for windowed in (False, True):
            cmd = [sys.executable, __file__, "--child", str(mp), str(int(windowed))]
            cmd += ["--max-steps", str(args.max_steps), "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    table = render(rows, args)
    print(table)
    if not args.no_docs:
        sys.path.insert(0, str(ROOT / "bench"))
        from docs_section import update_section

        update_section("megapixels", "Correction steps against resolution", table)


def render(rows: list[dict], args: argparse.Namespace) -> str:
    """The Markdown section for docs/results.md."""
    import torch

    def ratio(row: dict) -> float:
        first = next(r for r in rows if r["windowed"] == row["windowed"])
        return row["step_s"] / first["step_s"]

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        f"cores shared with other work (loaded), no GPU, one thread, torch {torch.__version__}, "
        f"by `{COMMAND}`: the astronaut upscaled, efficientnet_lite0, blur, one region of "
        f"50x50 view pixels at the view's centre, {args.max_steps} steps forced "
        f"(`margin:50`). A step's cost is (time with the steps - time with none) / steps, "
        f"each the fastest of {args.repeats} runs; "
        "the ratio is to the smallest size's step on the same path. *Full*: every step on "
        "the whole image (as before issue 10.1, `region.WINDOWED = False`); *windowed*: "
        "the steps on the region's window only. Peak RSS: each run's own process (model "
        "included).",
        "",
        "| image | region (px) | full: s/step | ratio | peak RSS MiB | windowed: s/step "
        "| ratio | peak RSS MiB | once per image (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for full, win in zip(rows[::2], rows[1::2], strict=True):
        lines.append(
            f"| {full['megapixels']:g} MP ({full['size']}) | {full['region']} "
            f"| {full['step_s']:.3f} | {ratio(full):.1f}x | {full['peak_rss_mib']:.0f} "
            f"| {win['step_s']:.3f} | {ratio(win):.1f}x | {win['peak_rss_mib']:.0f} "
            f"| {win['fixed_s']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
