"""Peak memory of large photos through ``process_batch``: sets ``--batch-pixels``.

Each measurement runs in a fresh process: load the model, make N synthetic photos of the
given size (smooth noise, 8-bit values), then run one ``process_batch`` on them (saliency
box, blur, PNG, the CLI's defaults) and report the peak resident memory (``ru_maxrss``)
before and after, and the growth per input pixel.

Usage: .venv/bin/python bench/batch_memory.py [--megapixels 24] [--images 1 2]
    [--model efficientnet_lite0] [--max-steps 100] [--criterion class]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    megapixels: float, images: int, model: str, max_steps: int, criterion: str
) -> dict[str, object]:
    import torch
    import torch.nn.functional as F

    from adaptanon.classifiers import load_classifier
    from adaptanon.method import Settings, parse_criterion, process_batch
    from adaptanon.method.solvers import GradientSolver
    from adaptanon.regions import SaliencyBox

    torch.set_num_threads(1)
    classifier = load_classifier(model)
    width = int((megapixels * 1e6 * 1.5) ** 0.5)
    height = int(megapixels * 1e6 / width)
    gen = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(images):
        low = torch.rand(1, 3, height // 64, width // 64, generator=gen)
        img = F.interpolate(low, size=(height, width), mode="bilinear")[0]
        batch.append(torch.round(img * 255) / 255)
    before = peak_mb()
    start = time.perf_counter()
    outs = process_batch(
        classifier,
        SaliencyBox(),
        Settings(solver=GradientSolver(max_steps=max_steps), criterion=parse_criterion(criterion)),
        [f"p{i}.png" for i in range(images)],
        batch,
    )
    return {
        "megapixels": height * width / 1e6,
        "images": images,
        "peak_before_mb": round(before),
        "peak_after_mb": round(peak_mb()),
        "bytes_per_pixel": round((peak_mb() - before) * 2**20 / (images * height * width), 1),
        "seconds": round(time.perf_counter() - start, 1),
        "steps": [o.record.steps for o in outs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--images", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument(
        "--criterion", default="class", help="margin:20 forces correction steps on every image"
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = measure(
            args.megapixels, args.images[0], args.model, args.max_steps, args.criterion
        )
        print(json.dumps(result))
        return
    for n in args.images:
        cmd = [sys.executable, __file__, "--one", "--megapixels", str(args.megapixels)]
        cmd += ["--images", str(n), "--model", args.model, "--max-steps", str(args.max_steps)]
        cmd += ["--criterion", args.criterion]
        print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
