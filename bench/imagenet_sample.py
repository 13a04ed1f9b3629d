"""Decision changes on the written files, ImageNet sample (issue 2's acceptance figures).

Runs the real command line (``adaptanon anonymize``) on ``../shared/data/imagenet-sample``
for each configuration, then re-classifies every written file with an independent plain
PIL loader (PIL bilinear resize of the shorter side, centre crop, normalise; none of
adaptanon's preprocessing code) and counts files whose class differs from the original's.
Writes the table into docs/results.md between the ``bench:imagenet_sample`` markers.

Usage: .venv/bin/python bench/imagenet_sample.py [--images DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from cli_run import ROOT, run_anonymize
from docs_section import update_section
from PIL import Image

from adaptanon.classifiers.efficientnet_lite import lite_network

CONFIGS = [
    ("blur", "png", []),
    ("mask", "png", []),
    ("blur", "jpg", ["--quality", "90"]),
    ("mask", "jpg", ["--quality", "90"]),
]


def plain_pil_input(path: Path, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """The usual loader: PIL bilinear resize of the shorter side, centre crop, normalise."""
    with Image.open(path) as img:
        return plain_pil_tensor(img, resize, crop)


def plain_pil_tensor(img: Image.Image, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """:func:`plain_pil_input` of an image already open (a decoded video frame)."""
    img = img.convert("RGB")
    w, h = img.size
    if w <= h:
        size = (resize, int(resize * h / w))
    else:
        size = (int(resize * w / h), resize)
    img = img.resize(size, Image.BILINEAR)
    top = int(round((size[1] - crop) / 2.0))
    left = int(round((size[0] - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - 0.498) / 0.502


def plain_classes(model: torch.nn.Module, paths: list[Path], batch: int = 32) -> list[int]:
    """Top-1 classes of ``paths`` under the plain loader."""
    out: list[int] = []
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            x = torch.stack([plain_pil_input(p) for p in paths[i : i + batch]])
            out += model(x).argmax(1).tolist()
    return out


def run_config(images: Path, out: Path, filt: str, fmt: str, extra: list[str], limit: int | None):
    """Run the CLI for one configuration; returns (records, seconds, command)."""
    inputs = [str(images)]
    if limit:
        inputs = [str(p) for p in sorted(images.glob("*.JPEG"))[:limit]]
    options = ["--filter", filt, "--format", fmt, "--regions", "saliency", "--alpha", "0.1", "-q"]
    return run_anonymize(inputs, out, options + extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=Path("../shared/data/imagenet-sample"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/imagenet_sample")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--no-docs", action="store_true", help="print only, leave docs alone")
    args = parser.parse_args()
    model = lite_network("efficientnet_lite0")
    rows = []
    for filt, fmt, extra in CONFIGS:
        out = args.out / f"{filt}-{fmt}"
        records, seconds, cmd = run_config(args.images, out, filt, fmt, extra, args.limit)
        ok = [r for r in records if r["status"] != "error"]
        originals = plain_classes(model, [ROOT / r["input"] for r in ok])
        written = plain_classes(model, [ROOT / r["output"] for r in ok])
        changed_file = sum(a != b for a, b in zip(originals, written, strict=True))
        agree = sum(a == r["original_class"] for a, r in zip(originals, ok, strict=True))
        vulnerable = [r for r in ok if r["anonymized_class"] != r["original_class"]]
        corrected = [r for r in ok if r["status"] == "corrected"]
        rows.append(
            {
                "filter": filt,
                "format": fmt + (f" q{extra[1]}" if extra else ""),
                "images": len(ok),
                "errors": len(records) - len(ok),
                "vulnerable_initial": len(vulnerable),
                "vulnerable_initial_pct": 100.0 * len(vulnerable) / max(1, len(ok)),
                "corrected": len(corrected),
                "failed": sum(r["status"] == "failed" for r in ok),
                "mean_steps": float(np.mean([r["steps"] for r in corrected])) if corrected else 0.0,
                "changed_on_written_file": changed_file,
                "changed_on_written_file_pct": 100.0 * changed_file / max(1, len(ok)),
                "manifest_agrees_with_plain_loader": agree,
                "seconds": seconds,
                "command": cmd,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    table = render(rows, args)
    print(table)
    if not args.no_docs and args.limit is None:
        update_section("imagenet_sample", "Anonymize: decision changes on the written files", table)


def render(rows: list[dict], args: argparse.Namespace) -> str:
    """The Markdown section for docs/results.md."""
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, no GPU, by `.venv/bin/python bench/imagenet_sample.py` "
        f"on {args.images.name} ({rows[0]['images']} images). Default model efficientnet_lite0, "
        "saliency 50x50 box at the 224x224 view, alpha 0.1, criterion `class`.",
        "",
        "| filter | output | images | vulnerable before correction | failed | mean steps "
        "(corrected) | class changed on the written file (plain PIL loader) | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['filter']} | {r['format']} | {r['images']} | {r['vulnerable_initial']} "
            f"({r['vulnerable_initial_pct']:.2f}%) | {r['failed']} | {r['mean_steps']:.2f} | "
            f"{r['changed_on_written_file']} ({r['changed_on_written_file_pct']:.3f}%) | "
            f"{r['seconds']:.0f} |"
        )
    lines += ["", "Commands run (one per row):", ""]
    lines += [f"- `{r['command']}`" for r in rows]
    lines += [
        "",
        "The manifest's original class agreed with the plain PIL loader on "
        + ", ".join(f"{r['manifest_agrees_with_plain_loader']}/{r['images']}" for r in rows)
        + " images.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
