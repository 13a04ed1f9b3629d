"""Command line: ``adaptanon anonymize``, ``adaptanon demo``, ``adaptanon models``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from adaptanon.classifiers import BUILTIN_MODELS, DEFAULT_MODEL, load_classifier
from adaptanon.criteria import parse_criterion
from adaptanon.encoding import FORMATS, Codec
from adaptanon.files import InputImage, collect_inputs
from adaptanon.filters import Blur, Filter, Mask, Mosaic
from adaptanon.manifest import Record
from adaptanon.pipeline import Settings
from adaptanon.regions import RegionSource, parse_region_source
from adaptanon.runner import FAILED_DIR, Summary, default_batch_size, resolve_device, run

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
            "--png-compression",
            type=click.IntRange(0, 9),
            default=1,
            show_default=True,
            help="PNG zlib level: 9 for the smallest files, 1 for speed.",
        ),
        click.option(
            "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ..."
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=None,
            help="Images per forward/backward pass [default: 8 on CPU, 64 on CUDA].",
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
        codec=Codec(kw["fmt"], kw["quality"], kw["png_compression"]),
    )


def device_option(name: str) -> torch.device:
    """``--device`` as a torch device, with a usage error for a bad value."""
    try:
        return resolve_device(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from exc


def load_model(spec: str, device: str) -> Any:
    """The classifier on its device, with CLI-friendly errors."""
    target = device_option(device)
    try:
        return load_classifier(spec).to(target)
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


def regions_and_inputs(
    inputs: list[str], out: Path, kw: dict[str, Any]
) -> tuple[RegionSource, list[InputImage]]:
    """The region source and the input images, with usage errors for bad values."""
    try:
        source = parse_region_source(kw["regions"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--regions") from exc
    try:
        items = collect_inputs(inputs, exclude=out)
    except FileNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="INPUT") from exc
    return source, items


def progress_bar(quiet: bool) -> Progress:
    """A progress bar on stderr (disabled with ``quiet``)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
    )


def anonymize_paths(
    inputs: list[str], out: Path, kw: dict[str, Any], quiet: bool = False
) -> Summary:
    """Run ``anonymize`` on ``inputs`` with the parsed shared options."""
    settings = build_settings(kw)
    source, items = regions_and_inputs(inputs, out, kw)
    classifier = load_model(kw["model"], kw["device"])
    with progress_bar(quiet) as progress:
        task = progress.add_task("anonymizing", total=len(items))

        def advance(rec: Record) -> None:
            progress.advance(task)
            if rec.status == "error":
                progress.console.print(f"[red]error[/red] {rec.input}: {rec.error}")

        batch = kw["batch_size"] or default_batch_size(classifier.device)
        summary = run(items, out, classifier, source, settings, batch, advance)
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
    default=Path("anonymized"),
    show_default=True,
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


# --------------------------------------------------------------------------- evaluate

SWEEP_FILTERS = ("blur", "mask", "mosaic")


def parse_list(text: str, hint: str) -> list[str]:
    """Comma-separated values, stripped, duplicates dropped (order kept)."""
    values = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not values:
        raise click.BadParameter("give at least one value", param_hint=hint)
    return values


def parse_alphas(text: str) -> list[float]:
    """``0.1,0.5`` -> ``[0.1, 0.5]``; each must be a positive number."""
    alphas = []
    for part in parse_list(text, "--alpha"):
        try:
            value = float(part)
        except ValueError as exc:
            raise click.BadParameter(f"{part!r} is not a number", param_hint="--alpha") from exc
        if not value > 0:
            raise click.BadParameter(f"{part} must be positive", param_hint="--alpha")
        alphas.append(value)
    return list(dict.fromkeys(alphas))


def parse_filters(text: str) -> list[str]:
    """``blur,mask`` -> ``["blur", "mask"]``; each one of :data:`SWEEP_FILTERS`."""
    names = parse_list(text, "--filter")
    for name in names:
        if name not in SWEEP_FILTERS:
            raise click.BadParameter(
                f"{name!r} is not one of {', '.join(SWEEP_FILTERS)}", param_hint="--filter"
            )
    return names


def regions_identity(spec: str) -> str:
    """What identifies the regions in the evaluation cache: the spec, with a boxes file
    replaced by a hash of its content (so editing the file invalidates the cache)."""
    if not spec.startswith("boxes="):
        return spec
    import hashlib

    path = Path(spec.partition("=")[2])
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--regions") from exc
    return f"boxes:{digest}"


def sweep_configs(kw: dict[str, Any]) -> list[Any]:
    """The configurations to evaluate: models x filters x alphas, in that nesting order."""
    from adaptanon.evaluate import Config

    models = parse_list(kw["model"], "--model")
    filters = parse_filters(kw["filter_name"])
    alphas = parse_alphas(kw["alpha"])
    regions = regions_identity(kw["regions"])
    return [
        Config(model, name, build_settings(kw, name, alpha), regions)
        for model in models
        for name in filters
        for alpha in alphas
    ]


def print_results(rows: list[dict[str, Any]], out: Path) -> None:
    """The end-of-evaluation table, on stderr (the model column only when several)."""
    from rich import box

    models = list(dict.fromkeys(r["model"] for r in rows))
    several = len(models) > 1
    title = "adaptanon evaluate" + ("" if several else f": {models[0]}" if models else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    headers = ["model"] if several else []
    headers += ["filter", "α", "images", "changed", "not corr.", "vuln. %", "final %", "steps"]
    for header in headers + ["errors"]:
        left = header in ("model", "filter")
        table.add_column(header, justify="left" if left else "right", no_wrap=True)
    for r in rows:
        cells = [r["model"]] if several else []
        cells += [
            r["filter"],
            f"{r['alpha']:g}",
            str(r["images"]),
            str(r["changed_after_anonymization"]),
            str(r["not_corrected"]),
            "–" if r["vulnerable_initial_pct"] is None else f"{r['vulnerable_initial_pct']:.2f}",
            "–" if r["vulnerable_final_pct"] is None else f"{r['vulnerable_final_pct']:.3f}",
            "–" if r["mean_steps"] is None else f"{r['mean_steps']:.2f}",
            str(r["errors"]),
        ]
        table.add_row(*cells)
    err.print(table)
    err.print(f"results: {out}/results.json, results.csv, results.md, report.html")


def evaluate_paths(
    inputs: list[str], out: Path, kw: dict[str, Any], examples: int = 4, quiet: bool = False
) -> list[dict[str, Any]]:
    """Run ``evaluate`` on ``inputs`` with the parsed options; returns the results rows."""
    from adaptanon.evaluate import evaluate, find_labels

    configs = sweep_configs(kw)
    source, items = regions_and_inputs(inputs, out, kw)
    try:
        labels = find_labels(items)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="INPUT") from exc
    with progress_bar(quiet) as progress:
        overall = progress.add_task("all configurations", total=len(configs) * len(items))
        current = progress.add_task("", total=len(items), visible=False)

        def on_config(config: Any, cached: int, total: int) -> None:
            progress.reset(current, total=total, completed=cached, visible=True)
            progress.update(current, description=config.label)
            progress.advance(overall, cached)

        def on_row(config: Any, row: Any) -> None:
            progress.advance(current)
            progress.advance(overall)
            if row.status == "error":
                progress.console.print(f"[red]error[/red] {row.name}: {row.message}")

        try:
            rows = evaluate(
                items,
                out,
                configs,
                source,
                lambda spec: load_model(spec, kw["device"]),
                batch_size=kw["batch_size"] or default_batch_size(device_option(kw["device"])),
                examples=examples,
                labels=labels,
                on_config=on_config,
                on_row=on_row,
            )
        except KeyboardInterrupt:
            progress.stop()
            err.print(f"[yellow]interrupted[/yellow]: rerun the same command to resume ({out})")
            sys.exit(130)
    if not quiet:
        print_results(rows, out)
    return rows


@main.command("evaluate")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for results.json, results.csv, results.md, report.html and cache/ "
    "(a rerun with the same options resumes from it).",
)
@click.option(
    "--examples",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Images per configuration kept for the report's figure (ones whose class "
    "changed after anonymization).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@method_options
def evaluate_command(
    inputs: tuple[str, ...], out: Path, examples: int, quiet: bool, **kw: Any
) -> None:
    """Measure the method on INPUT files, folders or globs, like the paper's Section 4.

    --model, --filter and --alpha take comma-separated lists; every combination is
    evaluated. A labels.csv (file,class_index) beside the images adds top-1 accuracies.
    Writes OUT/results.json, results.csv, results.md and report.html. Exits 1 if no image
    could be evaluated.
    """
    rows = evaluate_paths(list(inputs), out, kw, examples, quiet)
    sys.exit(0 if any(r["images"] for r in rows) else 1)


def _sweepable(command: click.Command) -> click.Command:
    """Let ``--model``, ``--filter`` and ``--alpha`` of ``command`` take comma-separated
    lists (same names and defaults as in ``anonymize``)."""
    replacements = {
        "model": click.Option(
            ["--model"],
            default=DEFAULT_MODEL,
            show_default=True,
            help="Model(s), comma-separated: built-in name (see `adaptanon models`), "
            "TorchScript file, or module:function.",
        ),
        "filter_name": click.Option(
            ["--filter", "filter_name"],
            default="blur",
            show_default=True,
            help=f"Anonymization filter(s), comma-separated: {', '.join(SWEEP_FILTERS)}.",
        ),
        "alpha": click.Option(
            ["--alpha"],
            default="0.1",
            show_default=True,
            help="Step size(s), comma-separated, e.g. 0.025,0.05,0.1,0.5,1,2.",
        ),
    }
    command.params = [replacements.get(p.name or "", p) for p in command.params]
    return command


_sweepable(evaluate_command)
