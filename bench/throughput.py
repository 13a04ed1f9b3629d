"""Throughput of the whole method against two baselines measured in the same run.

- pipeline: ``process_batch`` (classify + saliency, anonymize, correct, encode and verify
  the file bytes) over images already decoded in memory, ``--batch-size`` per pass.
- bound: the least any anonymizer that verifies its output against the classifier must
  do: plain batched forward passes, two per image (original and anonymized), plus one
  forward+backward per image when regions come from saliency. Inputs are preprocessed
  before the clock starts, so the bound is the model alone.
- loop: the same method one image at a time (the paper's way).

Usage: .venv/bin/python bench/throughput.py [--images DIR] [--limit N] [--device auto]
Prints a JSON line and a Markdown table; ratios are what to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from docs_section import update_section

from adaptanon.classifiers import efficientnet_lite
from adaptanon.engines import default_batch_size, resolve_device, reuse_freed_memory
from adaptanon.io import collect_inputs, read_image, to_image
from adaptanon.method import Blur, Settings, process_batch
from adaptanon.regions import SaliencyBox


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_bound(
    model: torch.nn.Module, inputs: torch.Tensor, batch: int, device: torch.device
) -> float:
    """Seconds for 2 forward passes + 1 forward/backward per image, in batches."""
    sync(device)
    start = time.perf_counter()
    for i in range(0, len(inputs), batch):
        x = inputs[i : i + batch]
        with torch.no_grad():
            model(x)
            model(x)
        xg = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(
            model(xg), torch.zeros(len(x), dtype=torch.long, device=device)
        )
        torch.autograd.grad(loss, [xg])
    sync(device)
    return time.perf_counter() - start


def time_pipeline(clf, images, names, batch: int, device: torch.device) -> tuple[float, dict]:
    """Seconds for the whole method over ``images`` in batches of ``batch``; status counts."""
    settings = Settings(filter=Blur())
    source = SaliencyBox(50)
    counts: dict[str, int] = {}
    sync(device)
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        for out in process_batch(
            clf, source, settings, names[i : i + batch], images[i : i + batch]
        ):
            counts[str(out.status)] = counts.get(str(out.status), 0) + 1
    sync(device)
    return time.perf_counter() - start, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", default="../shared/data/imagenet-sample")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: 8 on CPU, 256 on GPU"
    )
    parser.add_argument("--loop-limit", type=int, default=100, help="images for the one-image loop")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-docs", action="store_true", help="print only, leave docs alone")
    args = parser.parse_args()
    device = resolve_device(args.device)
    reuse_freed_memory()  # the pipeline, the bound and the loop all run as in the command
    batch = args.batch_size or (256 if device.type == "cuda" else default_batch_size(device))
    items = collect_inputs([args.images])[: args.limit]
    images = [to_image(read_image(item.path), device) for item in items]
    names = [item.relative.as_posix() for item in items]
    clf = efficientnet_lite("efficientnet_lite0").to(device)
    if device.type == "cuda":
        clf.model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        inputs = torch.cat([clf.inputs(images[i : i + 64]) for i in range(0, len(images), 64)])
    time_bound(clf.model, inputs[:batch], batch, device)  # warm-up
    bound = time_bound(clf.model, inputs, batch, device)
    pipe, counts = time_pipeline(clf, images, names, batch, device)
    n_loop = min(args.loop_limit, len(images))
    loop, _ = time_pipeline(clf, images[:n_loop], names[:n_loop], 1, device)
    row = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "images": len(images),
        "batch_size": batch,
        "statuses": counts,
        "pipeline_img_s": len(images) / pipe,
        "bound_img_s": len(images) / bound,
        "loop_img_s": n_loop / loop,
        "loop_images": n_loop,
    }
    row["pipeline_over_bound"] = row["pipeline_img_s"] / row["bound_img_s"]
    row["pipeline_over_loop"] = row["pipeline_img_s"] / row["loop_img_s"]
    print(json.dumps(row))
    table = (
        "| device | images | batch | pipeline img/s | bound img/s | loop img/s | "
        "pipeline/bound | pipeline/loop |\n|---|---|---|---|---|---|---|---|\n"
        f"| {row['device']} ({row['cpu_cores']} cores) | {row['images']} | {batch} | "
        f"{row['pipeline_img_s']:.2f} | {row['bound_img_s']:.2f} | {row['loop_img_s']:.2f} "
        f"({n_loop} images) | {row['pipeline_over_bound']:.2f}x | {row['pipeline_over_loop']:.2f}x |"
    )
    print(table)
    if not args.no_docs and args.limit is None:
        command = "`.venv/bin/python bench/throughput.py" + (
            f" --device {args.device}`" if args.device != "auto" else "`"
        )
        text = (
            f"Measured {time.strftime('%Y-%m-%d')} by {command} on {row['device']}, torch "
            f"{row['torch']}, EfficientNet-Lite0, saliency box, blur, PNG, images decoded in "
            f"memory beforehand; statuses {row['statuses']}.\n\n{table}"
        )
        update_section(f"throughput-{device.type}", f"Throughput ({device.type})", text)


if __name__ == "__main__":
    main()
