"""``adaptanon anonymize``: files in, anonymized files and a manifest out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from adaptanon.cli.options import (
    build_settings,
    err,
    load_model,
    load_verifier,
    method_options,
    progress_bar,
    regions_and_inputs,
    verify_option,
)
from adaptanon.engines import FAILED_DIR, Summary, default_batch_size, run
from adaptanon.engines.local import OutputRefused, RunStopped
from adaptanon.io import InputImage
from adaptanon.records import ImageRecord, Status
from adaptanon.regions import RegionSource


def warn_unmatched(source: RegionSource, items: list[InputImage]) -> None:
    """Say which regions the source was given that match no input (e.g. a mistyped key
    in a boxes file), before any work."""
    unmatched = source.unmatched(item.relative.as_posix() for item in items)
    if unmatched:
        shown = ", ".join(repr(k) for k in unmatched[:5])
        more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        err.print(
            f"[yellow]warning[/yellow]: {len(unmatched)} key(s) of the regions match no "
            f"input: {shown}{more}"
        )


def print_summary(summary: Summary, out_dir: Path) -> None:
    """The end-of-run table, on stderr."""
    table = Table(title="adaptanon", show_header=False)
    table.add_row("images", str(summary.images))
    for status in Status:
        table.add_row(str(status), str(summary.counts[status]))
    err.print(table)
    err.print(f"outputs and manifest: {out_dir}/ (manifest.jsonl)")
    if summary.counts[Status.FAILED] or summary.counts[Status.WEAK]:
        err.print(f"[yellow]failed and weak images are under {out_dir / FAILED_DIR}/[/yellow]")
    if summary.counts[Status.WEAK]:
        err.print(
            f"[yellow]{summary.counts[Status.WEAK]} image(s) are weakly anonymized (status "
            "weak): a region of the written file is too similar to the original (see "
            "strength_final in the manifest; use a stronger filter)[/yellow]"
        )
    if summary.counts[Status.NO_REGIONS]:
        err.print(
            f"[yellow]{summary.counts[Status.NO_REGIONS]} image(s) had no region to "
            "anonymize (status no_regions): they are written re-encoded, not anonymized[/yellow]"
        )


def anonymize_paths(
    inputs: list[str], out: Path, kw: dict[str, Any], quiet: bool = False, overwrite: bool = False
) -> Summary:
    """Run ``anonymize`` on ``inputs`` with the parsed shared options.

    Another run writing into ``out`` is a usage error (exit 2); a full, read-only or
    unwritable disk ends the run with one line (exit 1); Ctrl-C exits 130. In each case
    the manifest lists the images finished.
    """
    settings = build_settings(kw)
    source, items = regions_and_inputs(inputs, out, kw)
    classifier = load_model(kw["model"], kw["device"])
    verify = load_verifier(kw.get("verify_with"))
    warn_unmatched(source, items)
    with progress_bar(quiet) as progress:
        task = progress.add_task("anonymizing", total=len(items))

        def advance(rec: ImageRecord) -> None:
            progress.advance(task)
            if rec.status == Status.ERROR:
                progress.console.print(f"[red]error[/red] {rec.input}: {rec.error}")

        batch = kw["batch_size"] or default_batch_size(classifier.device)
        try:
            summary = run(
                items, out, classifier, source, settings, batch, advance, overwrite=overwrite,
                verify=verify,
            )  # fmt: skip
        except OutputRefused as exc:
            raise click.UsageError(str(exc)) from exc
        except RunStopped as exc:
            progress.stop()
            err.print(f"[red]error[/red]: {escape(str(exc))}", soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt:
            progress.stop()
            err.print(
                f"[yellow]interrupted[/yellow]: {escape(str(out))}/manifest.jsonl lists the "
                "images finished; rerun the same command to finish",
                soft_wrap=True,
            )
            sys.exit(130)
    if not quiet:
        print_summary(summary, out)
    return summary


@click.command()
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
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace existing files in OUT that no earlier run into OUT wrote (by default "
    "such an image gets status error). Inputs are never replaced.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@method_options
@verify_option
def anonymize(inputs: tuple[str, ...], out: Path, overwrite: bool, quiet: bool, **kw: Any) -> None:
    """Anonymize INPUT files, folders (recursively) or globs into OUT.

    Writes OUT/manifest.jsonl. Exits 0 when every image is unchanged, corrected or had no
    region (no_regions), 1 if any image failed or could not be read or the disk is full or
    read-only, 2 on a usage error (another run writing into OUT included), 130 on Ctrl-C.
    """
    summary = anonymize_paths(list(inputs), out, kw, quiet, overwrite)
    sys.exit(0 if summary.ok else 1)
