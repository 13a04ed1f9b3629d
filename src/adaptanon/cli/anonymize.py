"""``adaptanon anonymize``: files in, anonymized files and a manifest out."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch
from rich.markup import escape
from rich.table import Table

from adaptanon.classifiers import Classifier
from adaptanon.cli.options import (
    black_box,
    build_settings,
    err,
    load_model,
    load_verifier,
    method_options,
    named_files,
    preprocess_option,
    progress_bar,
    regions_and_inputs,
    verify_option,
)
from adaptanon.cli.video import (
    build_video_options,
    frame_total,
    split_videos,
    unmatched_keys,
    video_options,
)
from adaptanon.engines import FAILED_DIR, Summary, default_batch_size, run
from adaptanon.engines.devices import DEFAULT_BATCH_PIXELS
from adaptanon.engines.output_folder import OutputRefused, RunStopped
from adaptanon.engines.video import run_videos
from adaptanon.engines.workers import AUTO_WORKERS_MIN_IMAGES
from adaptanon.io import IMAGE_EXTENSIONS, InputImage
from adaptanon.io.video import VIDEO_EXTENSIONS
from adaptanon.method import Settings
from adaptanon.method.identity import INSTALL_HINT
from adaptanon.method.identity import available as identity_available
from adaptanon.records import ImageRecord, Status
from adaptanon.regions import RegionSource


def warn_unmatched(
    source: RegionSource, items: list[InputImage], videos: list[InputImage] | None = None
) -> None:
    """Say which regions the source was given that match no input (e.g. a mistyped key
    in a boxes file) nor a frame of a video (``clip.mp4#12``), before any work."""
    unmatched = unmatched_keys(
        source,
        [item.relative.as_posix() for item in items],
        [item.relative.as_posix() for item in videos or []],
    )
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
    if summary.skipped:
        table.add_row("finished earlier", str(summary.skipped))
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
    if summary.skipped:
        err.print(
            f"{summary.skipped} image(s) were finished by an earlier run into {out_dir} with "
            "the same settings and kept (--no-resume processes them again)"
        )
    if summary.counts[Status.PARTIAL]:
        err.print(
            f"[yellow]{summary.counts[Status.PARTIAL]} video(s) are written whole, every region "
            "anonymized, but some frames' decision could not be kept (status partial; the "
            "manifest's frame_records list them with their reason)[/yellow]"
        )
    if summary.counts[Status.NO_REGIONS]:
        err.print(
            f"[yellow]{summary.counts[Status.NO_REGIONS]} image(s) had no region to "
            "anonymize (status no_regions): they are written re-encoded, not anonymized[/yellow]"
        )


def _extra(kw: dict[str, Any]) -> dict[str, Any]:
    """What each record's settings add to the method's: the named files' digests and a
    ``--preprocess`` spec, so that resuming tells such runs apart."""
    extra: dict[str, Any] = {}
    files = named_files(kw)
    if files:
        extra["files"] = files
    if kw.get("preprocess"):
        extra["preprocess"] = kw["preprocess"]
    return extra


def run_on_ray(
    items: list[InputImage],
    out: Path,
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    batch: int,
    advance: Callable[[ImageRecord], None],
    kw: dict[str, Any],
    options: dict[str, Any],
) -> Summary:
    """``--engine ray``: the run on a Ray pool of actors (a usage error without Ray)."""
    if black_box(kw):
        raise click.UsageError("--engine ray does not run --black-box models yet")
    try:
        from adaptanon.engines import ray as ray_engine
    except ImportError as exc:
        raise click.UsageError(
            f"--engine ray needs Ray ({exc}): pip install 'adaptanon[ray]'"
        ) from exc
    model = ray_engine.ModelSpec(
        kw["model"],
        kw["device"],
        kw.get("class_names"),
        preprocess_option(kw["model"]),
        trust_model=bool(kw.get("trust_model")),
    )
    try:
        return ray_engine.run(
            items, out, classifier, source, settings, batch, advance, model=model,
            address=kw.get("address"), actors=kw.get("ray_actors"),
            gpus_per_actor=kw.get("ray_gpus_per_actor") or 0.0, **options,
        )  # fmt: skip
    except ConnectionError as exc:
        raise click.UsageError(f"cannot reach the Ray cluster: {exc}") from exc


def engine_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--engine`` and the Ray engine's options."""
    options = [
        click.option(
            "--engine",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            help="local: this process. ray: a pool of Ray actors, each holding the model, on "
            "a local Ray instance or the cluster at --address (pip install 'adaptanon[ray]'); "
            "same outputs and manifest.",
        ),
        click.option(
            "--address",
            default=None,
            metavar="ADDR",
            help="With --engine ray: the Ray cluster to use (auto: the one this machine "
            "belongs to, as under `ray job submit`). Default: start a local instance.",
        ),
        click.option(
            "--ray-actors",
            type=click.IntRange(min=1),
            default=None,
            help="With --engine ray: actors (model copies) [default: one per CPU, or per "
            "--ray-gpus-per-actor share of the GPUs].",
        ),
        click.option(
            "--ray-gpus-per-actor",
            type=click.FloatRange(min=0),
            default=0.0,
            show_default=True,
            help="With --engine ray: GPUs each actor holds (0.5: two actors per GPU).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def anonymize_paths(
    inputs: list[str],
    out: Path,
    kw: dict[str, Any],
    quiet: bool = False,
    overwrite: bool = False,
    resume: bool = True,
) -> Summary:
    """Run ``anonymize`` on ``inputs`` with the parsed shared options.

    Another run writing into ``out`` is a usage error (exit 2); a full, read-only or
    unwritable disk ends the run with one line (exit 1); Ctrl-C exits 130. In each case
    the manifest lists the images finished. With ``resume``, images an earlier run into
    ``out`` finished with the same settings are kept, not processed again.
    """
    settings = build_settings(kw)
    video = build_video_options(kw)
    source, items = regions_and_inputs(inputs, out, kw, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    items, videos = split_videos(items)
    classifier = load_model(kw["model"], kw["device"])
    verify = load_verifier(kw.get("verify_with"))
    warn_unmatched(source, items, videos)
    with progress_bar(quiet) as progress:
        task = progress.add_task("anonymizing", total=len(items) + len(videos))
        frames_task = (
            progress.add_task("video frames", total=frame_total(videos)) if videos else None
        )

        def frames_done(n: int) -> None:
            if frames_task is not None:
                progress.advance(frames_task, n)

        def advance(rec: ImageRecord) -> None:
            progress.advance(task)
            if rec.status == Status.ERROR:
                progress.console.print(f"[red]error[/red] {rec.input}: {rec.error}")

        gpus = kw.get("ray_gpus_per_actor") or 0.0
        device = torch.device("cuda") if gpus > 0 else classifier.device
        batch = kw["batch_size"] or default_batch_size(device)
        batch_pixels = round(kw.get("batch_pixels", DEFAULT_BATCH_PIXELS / 1e6) * 1e6)
        options: dict[str, Any] = {
            "overwrite": overwrite,
            "verify": verify,
            "resume": resume,
            "batch_pixels": batch_pixels,
            "extra_settings": _extra(kw),
        }
        try:
            summary = Summary()
            if items and kw.get("engine") == "ray":
                summary = run_on_ray(
                    items, out, classifier, source, settings, batch, advance, kw, options
                )
            elif items:
                summary = run(
                    items, out, classifier, source, settings, batch, advance,
                    workers=kw.get("workers"), **options,
                )  # fmt: skip
            if videos:
                done = run_videos(
                    videos, out, classifier, source, settings, video, batch, advance,
                    overwrite=overwrite, resume=resume, extra_settings=options["extra_settings"],
                    on_frames=frames_done,
                )  # fmt: skip
                summary.counts.update(done.counts)
                summary.skipped += done.skipped
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
        print_identity_note(settings)
    return summary


def print_identity_note(settings: Settings) -> None:
    """Say whether written faces were checked against their originals with a face
    recognition model (``--min-identity-distance``)."""
    if settings.identity is not None:
        err.print(
            "faces checked for recognizability: a written face whose descriptor lies "
            f"within {settings.identity.min_distance:g} of its original is weak"
        )
    elif identity_available():
        err.print("[yellow]face identity check off (--min-identity-distance off)[/yellow]")
    else:
        err.print(
            "[yellow]face identity check off: the face-recognition model is not installed "
            f"({INSTALL_HINT})[/yellow]"
        )


def _check_workers(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    """``--workers``: ``auto`` (None) or a count >= 0."""
    if value == "auto":
        return None
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise click.BadParameter(f"expected auto or a number >= 0, got {value!r}")
    return count


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
@click.option(
    "--no-resume",
    is_flag=True,
    help="Process every input again. By default an image that an earlier run into OUT "
    "finished with the same settings (its output is there and its record complete) is "
    "kept, so rerunning an interrupted command finishes it.",
)
@click.option(
    "--batch-pixels",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_BATCH_PIXELS / 1e6,
    show_default=True,
    help="Most megapixels of input in one batch, besides --batch-size (a larger image "
    "goes alone); bounds memory on folders of large photos.",
)
@click.option(
    "--workers",
    callback=_check_workers,
    default="auto",
    show_default=True,
    metavar="N|auto",
    help="With --engine local: worker processes that read, decode, measure, encode and "
    "verify the images beside the model (0: all in this process). auto: the CPU cores the "
    f"model's threads leave free, for {AUTO_WORKERS_MIN_IMAGES} images or more, else 0.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@engine_options
@method_options
@video_options
@verify_option
def anonymize(
    inputs: tuple[str, ...], out: Path, overwrite: bool, no_resume: bool, quiet: bool, **kw: Any
) -> None:
    """Anonymize INPUT files, folders (recursively) or globs into OUT.

    Writes OUT/manifest.jsonl. Exits 0 when every image is unchanged, corrected or had no
    region (no_regions), 1 if any image failed, was weakly anonymized (weak) or could not be
    read, or the disk is full or read-only, 2 on a usage error (another run writing into OUT
    included), 130 on Ctrl-C.
    """
    ray_only = ("address", "ray_actors", "ray_gpus_per_actor")
    if kw.get("engine") != "ray" and any(kw.get(name) for name in ray_only):
        raise click.UsageError("--address and --ray-* options need --engine ray")
    if kw.get("engine") == "ray" and kw.get("workers"):
        raise click.UsageError("--workers is for --engine local (Ray actors read and finish)")
    summary = anonymize_paths(list(inputs), out, kw, quiet, overwrite, resume=not no_resume)
    sys.exit(0 if summary.ok and not summary.counts[Status.PARTIAL] else 1)
