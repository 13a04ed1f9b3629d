"""``adaptanon demo``: the main job on photographs that ship inside scikit-image."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from rich.table import Table

DEMO_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "camera.png",
)


def demo_photo_paths() -> list[Path]:
    """Paths of the demo photographs inside the installed scikit-image package."""
    folder = resources.files("skimage") / "data"
    return [Path(str(folder / name)) for name in DEMO_PHOTOS if (folder / name).is_file()]


def run_demo(out: Path, device: str = "auto") -> int:
    """Copy the photos to ``out/inputs``, anonymize them into ``out/anonymized``, print a
    per-image table. Returns the process exit code."""
    from adaptanon.cli import DEFAULT_MODEL, anonymize_paths, err
    from adaptanon.manifest import read_manifest

    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for photo in demo_photo_paths():
        shutil.copyfile(photo, inputs / photo.name)
    results = out / "anonymized"
    kw = {
        "model": DEFAULT_MODEL,
        "regions": "saliency",
        "shape": "rect",
        "filter_name": "blur",
        "blur_kernel": 9,
        "blur_sigma": 10.0,
        "mask_value": 0.5,
        "mosaic_block": 8,
        "no_filter_scaling": False,
        "alpha": 0.1,
        "max_steps": 100,
        "criterion": "class",
        "delta": None,
        "fmt": "png",
        "quality": 95,
        "png_compression": 1,
        "device": device,
        "batch_size": 8,
    }
    err.print(f"demo: {len(list(inputs.iterdir()))} photographs from scikit-image -> {results}")
    summary = anonymize_paths([str(inputs)], results, kw)
    table = Table(title="per image (class names of efficientnet_lite0)")
    for col in ("image", "original", "after plain blur", "stored file", "status", "steps"):
        table.add_column(col)
    for rec in read_manifest(results / "manifest.jsonl"):
        names = rec.get("original_name"), rec.get("final_name")
        plain = rec["anonymized_class"]
        table.add_row(
            Path(rec["input"]).name,
            str(names[0]),
            "same" if plain == rec["original_class"] else f"{rec['anonymized_name']} (changed)",
            str(names[1]),
            rec["status"],
            str(rec["steps"]),
        )
    err.print(table)
    print(f"results: {results.resolve()}")
    return 0 if summary.ok else 1
