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
from adaptanon.regions import parse_region_source

DEMO_REGIONS = "faces+saliency"
"""Faces found by CenterFace, plus the paper's saliency square so that every photograph
(most have no face) shows the correction at work."""

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


def demo_regions() -> str:
    """``faces+saliency``, or ``saliency`` alone (with a note) when the ``faces`` extra is
    not installed."""
    try:
        parse_region_source("faces")
    except ValueError as exc:
        err.print(f"[yellow]demo: no face detector ({exc}); saliency squares only[/yellow]")
        return "saliency"
    return DEMO_REGIONS


def demo_options(device: str, regions: str = DEMO_REGIONS) -> dict[str, Any]:
    """The options of ``adaptanon anonymize`` at their defaults (so the demo runs what a
    user gets with ``--regions faces+saliency`` and nothing else), on ``device``."""
    ctx = anonymize.make_context("anonymize", ["placeholder"], resilient_parsing=True)
    kw = {k: v for k, v in ctx.params.items() if k not in ("inputs", "out", "quiet")}
    return kw | {"device": device, "regions": regions}


def found_regions(rec: dict[str, Any]) -> str:
    """What was anonymized, e.g. ``face 0.93, saliency``."""
    parts = []
    for det in rec.get("detections") or []:
        label, score = det.get("label", "region"), det.get("score", 1.0)
        parts.append(label if label in ("saliency", "box") else f"{label} {score:.2f}")
    return ", ".join(parts) or "-"


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
    regions = demo_regions()
    err.print(
        f"demo: {len(photos)} photographs from scikit-image, --regions {regions} -> {results}"
    )
    summary = anonymize_paths([str(inputs)], results, demo_options(device, regions))
    table = Table(title="per image (class names of the default model)")
    columns = ("image", "anonymized", "original", "plainly anonymized", "stored file", "status")
    for col in (*columns, "steps"):
        table.add_column(col)
    for rec in read_manifest(results / "manifest.jsonl"):
        names = rec.get("original_name"), rec.get("final_name")
        plain = rec["anonymized_class"]
        table.add_row(
            Path(rec["input"]).name,
            found_regions(rec),
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
    """Anonymize photographs shipped with scikit-image (faces with the face mosaic, a saliency
    box with the blur, then the correction)."""
    sys.exit(run_demo(out, device))
