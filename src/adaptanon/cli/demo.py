"""``adaptanon demo``: the main job on photographs that ship inside scikit-image."""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from adaptanon.cli.anonymize import anonymize, anonymize_paths
from adaptanon.cli.options import err
from adaptanon.io import read_manifest

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
    """Paths of the demo photographs inside the installed scikit-image package (empty
    when scikit-image, the ``demo`` extra, is not installed)."""
    try:
        folder = resources.files("skimage") / "data"
    except ModuleNotFoundError:
        return []
    return [Path(str(folder / name)) for name in DEMO_PHOTOS if (folder / name).is_file()]


def demo_options(device: str) -> dict[str, Any]:
    """The options of ``adaptanon anonymize`` at their defaults (so the demo runs exactly
    what a user gets with no options), on ``device``."""
    ctx = anonymize.make_context("anonymize", ["placeholder"], resilient_parsing=True)
    kw = {k: v for k, v in ctx.params.items() if k not in ("inputs", "out", "quiet")}
    return kw | {"device": device}


def run_demo(out: Path, device: str = "auto") -> int:
    """Copy the photos to ``out/inputs``, anonymize them into ``out/anonymized``, print a
    per-image table. Returns the process exit code."""
    photos = demo_photo_paths()
    if not photos:
        raise click.UsageError(
            "the demo photographs come with scikit-image: pip install 'adaptanon[demo]'"
        )
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        shutil.copyfile(photo, inputs / photo.name)
    results = out / "anonymized"
    err.print(f"demo: {len(photos)} photographs from scikit-image -> {results}")
    summary = anonymize_paths([str(inputs)], results, demo_options(device))
    table = Table(title="per image (class names of the default model)")
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


@click.command()
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/demo"),
    show_default=True,
    help="Output folder.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
def demo(out: Path, device: str) -> None:
    """Anonymize photographs shipped with scikit-image (saliency box, blur, correction)."""
    sys.exit(run_demo(out, device))
