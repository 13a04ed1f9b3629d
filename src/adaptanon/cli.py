"""Command line: ``adaptanon anonymize``, ``adaptanon demo``, ``adaptanon models``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from adaptanon.classifiers import BUILTIN_MODELS, DEFAULT_MODEL, load_classifier
from adaptanon.criteria import parse_criterion
from adaptanon.encoding import FORMATS, Codec
from adaptanon.files import collect_inputs
from adaptanon.filters import Blur, Filter, Mask, Mosaic
from adaptanon.manifest import Record
from adaptanon.pipeline import Settings
from adaptanon.regions import parse_region_source
from adaptanon.runner import FAILED_DIR, Summary, resolve_device, run

err = Console(stderr=True)


def method_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by every command that runs the method."""
    options = [
        click.option(
            "--model",
            default=DEFAULT_MODEL,
            show_default=True,
            help="Built-in name (see `adaptanon models`), TorchScript file, or module:function.",
        ),
        click.option(
            "--regions",
            default="saliency",
            show_default=True,
            help="saliency[:SIZE] (most salient SIZExSIZE square at the model view) "
            "or boxes=FILE (JSON: image name -> [[x0,y0,x1,y1], ...]).",
        ),
        click.option(
            "--shape",
            type=click.Choice(["rect", "ellipse"]),
            default="rect",
            show_default=True,
            help="Anonymize each box, or the ellipse inside it.",
        ),
        click.option(
            "--filter",
            "filter_name",
            type=click.Choice(["blur", "mask", "mosaic"]),
            default="blur",
            show_default=True,
            help="Anonymization filter.",
        ),
        click.option(
            "--blur-kernel",
            type=int,
            default=9,
            show_default=True,
            help="Blur kernel size at the model view (odd).",
        ),
        click.option(
            "--blur-sigma",
            type=float,
            default=10.0,
            show_default=True,
            help="Blur sigma at the model view.",
        ),
        click.option(
            "--mask-value",
            type=float,
            default=0.5,
            show_default=True,
            help="Fill value in [0, 1] for --filter mask.",
        ),
        click.option(
            "--mosaic-block",
            type=int,
            default=8,
            show_default=True,
            help="Mosaic cell size at the model view.",
        ),
        click.option(
            "--no-filter-scaling",
            is_flag=True,
            help="Use blur/mosaic sizes in input pixels instead of scaling them from "
            "the model view to the input's resolution.",
        ),
        click.option(
            "--alpha",
            type=float,
            default=0.1,
            show_default=True,
            help="Step size, in [0,1] pixel units per step (gradient normalised to max 1).",
        ),
        click.option(
            "--max-steps",
            type=int,
            default=100,
            show_default=True,
            help="Most correction steps per image.",
        ),
        click.option(
            "--criterion",
            default="class",
            show_default=True,
            help="class (same top-1, margin 0.01), margin:M (same top-1 by at least M "
            "logits), or prob:EPS (same class and L2 probability distance < EPS).",
        ),
        click.option(
            "--delta",
            type=float,
            default=None,
            help="Optional L-inf bound on the correction around the anonymized pixels.",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(list(FORMATS)),
            default="png",
            show_default=True,
            help="Output format; the check is done on the decoded file.",
        ),
        click.option(
            "--quality",
            type=click.IntRange(1, 100),
            default=95,
            show_default=True,
            help="JPEG/WebP quality.",
        ),
        click.option(
            "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ..."
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=16,
            show_default=True,
            help="Images per forward/backward pass.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_filter(name: str, kw: dict[str, Any]) -> Filter:
    """The filter chosen by ``--filter`` and its parameters."""
    scaled = not kw["no_filter_scaling"]
    if name == "blur":
        if kw["blur_kernel"] < 1 or kw["blur_kernel"] % 2 == 0:
            raise click.BadParameter("must be odd and positive", param_hint="--blur-kernel")
        return Blur(kw["blur_kernel"], kw["blur_sigma"], scaled)
    if name == "mask":
        if not 0.0 <= kw["mask_value"] <= 1.0:
            raise click.BadParameter("must be in [0, 1]", param_hint="--mask-value")
        return Mask(kw["mask_value"])
    return Mosaic(kw["mosaic_block"], scaled)


def build_settings(
    kw: dict[str, Any], filter_name: str | None = None, alpha: float | None = None
) -> Settings:
    """Settings from the parsed shared options (``filter_name``/``alpha`` override them)."""
    try:
        criterion = parse_criterion(kw["criterion"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--criterion") from exc
    a = kw["alpha"] if alpha is None else alpha
    if a <= 0:
        raise click.BadParameter("must be positive", param_hint="--alpha")
    if kw["max_steps"] < 0:
        raise click.BadParameter("must be >= 0", param_hint="--max-steps")
    return Settings(
        filter=build_filter(filter_name or kw["filter_name"], kw),
        shape=kw["shape"],
        criterion=criterion,
        alpha=a,
        max_steps=kw["max_steps"],
        delta=kw["delta"],
        codec=Codec(kw["fmt"], kw["quality"]),
    )


def load_model(spec: str, device: str) -> Any:
    """The classifier on its device, with CLI-friendly errors."""
    try:
        return load_classifier(spec).to(resolve_device(device))
    except (ValueError, RuntimeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc


def print_summary(summary: Summary, out_dir: Path) -> None:
    """The end-of-run table, on stderr."""
    table = Table(title="adaptanon", show_header=False)
    table.add_row("images", str(summary.images))
    for status, count in summary.counts.items():
        table.add_row(status, str(count))
    err.print(table)
    err.print(f"outputs and manifest: {out_dir}/ (manifest.jsonl)")
    if summary.counts["failed"]:
        err.print(f"[yellow]failed images are under {out_dir / FAILED_DIR}/[/yellow]")


def anonymize_paths(
    inputs: list[str], out: Path, kw: dict[str, Any], quiet: bool = False
) -> Summary:
    """Run ``anonymize`` on ``inputs`` with the parsed shared options."""
    settings = build_settings(kw)
    try:
        source = parse_region_source(kw["regions"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--regions") from exc
    try:
        items = collect_inputs(inputs, exclude=out)
    except FileNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="INPUT") from exc
    classifier = load_model(kw["model"], kw["device"])
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
        transient=False,
    ) as progress:
        task = progress.add_task("anonymizing", total=len(items))

        def advance(rec: Record) -> None:
            progress.advance(task)
            if rec.status == "error":
                progress.console.print(f"[red]error[/red] {rec.input}: {rec.error}")

        summary = run(items, out, classifier, source, settings, kw["batch_size"], advance)
    if not quiet:
        print_summary(summary, out)
    return summary


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adaptanon")
def main() -> None:
    """Anonymize image regions so that a classifier keeps its decision on the stored file."""


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder (inputs keep their relative paths).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@method_options
def anonymize(inputs: tuple[str, ...], out: Path, quiet: bool, **kw: Any) -> None:
    """Anonymize INPUT files, folders (recursively) or globs into OUT.

    Writes OUT/manifest.jsonl. Exits 1 if any image failed or could not be read.
    """
    summary = anonymize_paths(list(inputs), out, kw, quiet)
    sys.exit(0 if summary.ok else 1)


@main.command()
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/demo"),
    show_default=True,
    help="Output folder.",
)
@click.option("--device", default="auto", show_default=True)
def demo(out: Path, device: str) -> None:
    """Anonymize photographs shipped with scikit-image (saliency box, blur, correction)."""
    from adaptanon.demo import run_demo

    sys.exit(run_demo(out, device))


@main.command()
def models() -> None:
    """List the built-in classifiers."""
    for name, text in BUILTIN_MODELS.items():
        mark = " (default)" if name == DEFAULT_MODEL else ""
        click.echo(f"{name}{mark}\t{text}")
    click.echo("Also: a TorchScript file, or module:function returning a Classifier or nn.Module.")
