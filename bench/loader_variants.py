"""Class changes of the written files under loaders other than the declared one (issue 9).

Runs the real command line (``adaptanon anonymize``) on ``../shared/data/imagenet-sample``
three times: plain anonymization (``--max-steps 0``: the blurred file as it is), the
default correction, and ``--robust``; default model efficientnet_lite0, saliency box,
blur, PNG. Then classifies each original and each written file with loaders written out
here (Pillow, OpenCV, torch; none of adaptanon's preprocessing code) and counts the files
whose class under a loader differs from the class that loader gives the original.

Loaders: the declared one (Pillow bilinear, shorter side 256 truncated, centre crop 224)
and the ``--robust`` variants (Pillow bicubic; Pillow bilinear with the long side rounded;
OpenCV INTER_LINEAR and INTER_AREA resize + crop; ``F.interpolate`` bilinear with
antialias; a Pillow JPEG re-save at quality 75 and 90, then the declared loader), plus
loaders that are not among the variants (Pillow lanczos, ``F.interpolate`` bicubic with
antialias, an OpenCV JPEG re-save at quality 85) to see whether the effect carries over.

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/loader_variants.py [--limit N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from cli_run import run_anonymize
from docs_section import update_section
from PIL import Image

from adaptanon.classifiers.efficientnet_lite import lite_network

ROOT = Path(__file__).resolve().parent.parent
RESIZE, CROP = 256, 224
MEAN, STD = 0.498, 0.502  # EfficientNet-Lite's normalisation
MODES = [("plain", ["--max-steps", "0"]), ("default", []), ("robust", ["--robust"])]


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def sizes(h: int, w: int, rounding: Callable[[float], int] = int) -> tuple[int, int]:
    """``(new_h, new_w)``: the shorter side becomes RESIZE."""
    if w <= h:
        return rounding(RESIZE * h / w), RESIZE
    return RESIZE, rounding(RESIZE * w / h)


def crop_u8(rgb: np.ndarray) -> torch.Tensor:
    """Centre crop (torchvision's offsets) of an 8-bit ``(h, w, 3)`` array, normalised."""
    h, w = rgb.shape[:2]
    top, left = int(round((h - CROP) / 2.0)), int(round((w - CROP) / 2.0))
    x = rgb[top : top + CROP, left : left + CROP].astype(np.float32) / 255.0
    return (torch.from_numpy(x).permute(2, 0, 1) - MEAN) / STD


def pil_loader(
    resample: Image.Resampling, rounding: Callable[[float], int] = int
) -> Callable[[np.ndarray], torch.Tensor]:
    def load(rgb: np.ndarray) -> torch.Tensor:
        new_h, new_w = sizes(*rgb.shape[:2], rounding)
        return crop_u8(np.asarray(Image.fromarray(rgb).resize((new_w, new_h), resample)))

    return load


def cv_loader(mode: int) -> Callable[[np.ndarray], torch.Tensor]:
    def load(rgb: np.ndarray) -> torch.Tensor:
        new_h, new_w = sizes(*rgb.shape[:2])
        return crop_u8(cv2.resize(rgb, (new_w, new_h), interpolation=mode))

    return load


def torch_loader(mode: str) -> Callable[[np.ndarray], torch.Tensor]:
    def load(rgb: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
        new_h, new_w = sizes(*rgb.shape[:2])
        x = F.interpolate(x[None], (new_h, new_w), mode=mode, antialias=True, align_corners=False)
        top, left = int(round((new_h - CROP) / 2.0)), int(round((new_w - CROP) / 2.0))
        return (x[0, :, top : top + CROP, left : left + CROP] - MEAN) / STD

    return load


def pil_jpeg(quality: int) -> Callable[[np.ndarray], torch.Tensor]:
    def load(rgb: np.ndarray) -> torch.Tensor:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
        return DECLARED(read_rgb(buf))  # type: ignore[arg-type]

    return load


def cv_jpeg(quality: int) -> Callable[[np.ndarray], torch.Tensor]:
    def load(rgb: np.ndarray) -> torch.Tensor:
        ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        return DECLARED(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].copy())

    return load


DECLARED = pil_loader(Image.Resampling.BILINEAR)
LOADERS: list[tuple[str, bool, Callable[[np.ndarray], torch.Tensor]]] = [
    # name, among the --robust variants, loader
    ("declared: PIL bilinear, shorter side 256 (floor), crop 224", True, DECLARED),
    ("PIL bicubic", True, pil_loader(Image.Resampling.BICUBIC)),
    ("PIL bilinear, long side rounded", True, pil_loader(Image.Resampling.BILINEAR, round)),
    ("OpenCV INTER_LINEAR", True, cv_loader(cv2.INTER_LINEAR)),
    ("OpenCV INTER_AREA", True, cv_loader(cv2.INTER_AREA)),
    ("F.interpolate bilinear antialias", True, torch_loader("bilinear")),
    ("PIL JPEG q75 re-save, declared", True, pil_jpeg(75)),
    ("PIL JPEG q90 re-save, declared", True, pil_jpeg(90)),
    ("PIL lanczos", False, pil_loader(Image.Resampling.LANCZOS)),
    ("F.interpolate bicubic antialias", False, torch_loader("bicubic")),
    ("OpenCV JPEG q85 re-save, declared", False, cv_jpeg(85)),
]


def classes(model: torch.nn.Module, paths: list[Path], batch: int = 32) -> np.ndarray:
    """``(len(paths), len(LOADERS))`` top-1 classes."""
    out = np.zeros((len(paths), len(LOADERS)), dtype=np.int64)
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            rgbs = [read_rgb(p) for p in paths[i : i + batch]]
            for k, (_, _, load) in enumerate(LOADERS):
                x = torch.stack([load(rgb) for rgb in rgbs])
                out[i : i + len(rgbs), k] = model(x).argmax(1).numpy()
    return out


def run_mode(inputs: list[str], out: Path, extra: list[str]) -> tuple[list[dict], float, str]:
    """Run the CLI; returns (records, seconds, command)."""
    options = ["--filter", "blur", "--format", "png", "--regions", "saliency", "-q"]
    return run_anonymize(inputs, out, options + extra, threads=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=Path("../shared/data/imagenet-sample"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/loader_variants")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--no-docs", action="store_true", help="print only, leave docs alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = args.images if args.images.is_absolute() else (Path.cwd() / args.images)
    paths = sorted(images.resolve().glob("*.JPEG"))[: args.limit]
    inputs = [os.path.relpath(p, ROOT) for p in paths]
    model = lite_network("efficientnet_lite0")
    runs = {}
    for mode, extra in MODES:
        out = args.out / mode
        if out.exists():
            subprocess.run(["rm", "-r", "--", str(out)], check=True)
        runs[mode] = run_mode(inputs, out, extra)
        print(mode, f"{runs[mode][1]:.0f} s", flush=True)
    original = classes(model, paths)
    index = {str(p.resolve()): i for i, p in enumerate(paths)}
    rows = []
    for mode, _ in MODES:
        records, seconds, cmd = runs[mode]
        # plain: every file as blurred; corrections: the files delivered as done
        kept = [r for r in records if r["output"] and (mode == "plain" or r["status"] in OK)]
        rows_i = [index[str((ROOT / r["input"]).resolve())] for r in kept]
        written = classes(model, [ROOT / r["output"] for r in kept])
        changed = (written != original[rows_i]).sum(0)
        rows.append(
            {
                "mode": mode,
                "images": len(records),
                "files": len(kept),
                "failed": sum(r["status"] in ("failed", "weak") for r in records),
                "errors": sum(r["status"] == "error" for r in records),
                "changed": changed.tolist(),
                "seconds": seconds,
                "command": cmd,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    disagree = (original != original[:, :1]).sum(0).tolist()
    section = render(rows, disagree, args, len(paths))
    print(section)
    if not args.no_docs:
        update_section("loader_variants", "Robust mode: class changes under other loaders", section)


OK = ("unchanged", "corrected", "no_regions")


def render(rows: list[dict], disagree: list[int], args: argparse.Namespace, n: int) -> str:
    """The Markdown section for docs/results.md."""
    per = {r["mode"]: r["seconds"] / max(1, r["images"]) for r in rows}
    limit = f" --limit {args.limit}" if args.limit else ""
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        f"cores shared with other jobs (OMP_NUM_THREADS=1), torch {torch.__version__}, no GPU, by "
        f"`OMP_NUM_THREADS=1 .venv/bin/python bench/loader_variants.py{limit}` on the first {n} "
        f"images of {args.images.name}"
        + (" (the machine was too loaded for all 500)" if args.limit else "")
        + ". Model efficientnet_lite0 (declared loader: PIL bilinear, shorter side 256, "
        "crop 224), saliency box, blur, PNG. Each cell: written files whose class under that "
        "loader differs from the class the same loader gives the original, out of the files "
        "counted (plain: every blurred file; default and robust: the files written as done).",
        "",
        "| loader | robust variant | originals: class differs from declared | "
        + " | ".join(f"{r['mode']} ({r['files']} files)" for r in rows)
        + " |",
        "|---|---|---|" + "---|" * len(rows),
    ]
    for k, (name, variant, _) in enumerate(LOADERS):
        cells = [
            f"{r['changed'][k]} ({100.0 * r['changed'][k] / max(1, r['files']):.1f}%)" for r in rows
        ]
        lines.append(
            f"| {name} | {'yes' if variant else 'no'} | {disagree[k]} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "| mode | failed or weak (not written as done) | seconds per image | vs default |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['failed']} | {per[r['mode']]:.2f} | "
            f"{per[r['mode']] / per['default']:.2f}x |"
        )
    lines += ["", "Commands (inputs abbreviated as IMAGES):", ""]
    for r in rows:
        shown = r["command"].split(" -o ")[1]
        lines.append(f"- `adaptanon anonymize IMAGES -o {shown}`")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
