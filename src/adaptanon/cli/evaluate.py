"""``adaptanon evaluate``: the paper's measurements on the user's images."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from adaptanon.classifiers import DEFAULT_MODEL
from adaptanon.cli.options import (
    Number,
    build_settings,
    detector_options,
    device_option,
    err,
    load_model,
    method_options,
    named_files,
    progress_bar,
    regions_and_inputs,
)
from adaptanon.cli.video import build_video_options, split_videos, video_options
from adaptanon.engines import default_batch_size
from adaptanon.evaluate import Config, evaluate, find_labels
from adaptanon.evaluate.identity import gallery_descriptors
from adaptanon.evaluate.readability import PLATES_FILE, PlateCheck, PlateReader, find_plate_truth
from adaptanon.evaluate.video import evaluate_videos
from adaptanon.io import IMAGE_EXTENSIONS, InputImage
from adaptanon.io.video import VIDEO_EXTENSIONS
from adaptanon.method import FILTERS
from adaptanon.method.identity import IdentityUnavailable
from adaptanon.records import Status
from adaptanon.regions import RegionSource

SWEEP_FILTERS = tuple(FILTERS)


def parse_list(text: str, hint: str) -> list[str]:
    """Comma-separated values, stripped, duplicates dropped (order kept)."""
    values = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not values:
        raise click.BadParameter("give at least one value", param_hint=hint)
    return values


def parse_alphas(text: str) -> list[float]:
    """``0.1,0.5`` -> ``[0.1, 0.5]``; each must be a positive number."""
    alphas = []
    kind = Number(min=0, min_open=True)
    for part in parse_list(text, "--alpha"):
        try:
            alphas.append(kind.convert(part, None, None))
        except click.BadParameter as exc:
            raise click.BadParameter(exc.message, param_hint="--alpha") from exc
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


def regions_identity(kw: dict[str, Any]) -> str:
    """What identifies the regions in the evaluation cache: the ``--regions`` spec, the
    detector options, and the content digest of every file it names (a boxes, COCO, YOLO,
    VOC or CSV file or folder), so that editing one of them invalidates the cache."""
    spec = kw["regions"]
    files = named_files({"regions": spec})
    options = detector_options(kw)
    detectors = (
        f"|faces>{options.face_threshold:g},plates>{options.plate_threshold},"
        f"x{options.box_scale:g},min{options.min_size:g}"
        if any(name in spec for name in ("faces", "plates"))
        else ""
    )
    digests = "".join(f"|{digest}" for digest in files.values())
    return spec.split("=")[0] + digests + detectors if files else spec + detectors


def sweep_configs(kw: dict[str, Any]) -> list[Config]:
    """The configurations to evaluate: models x filters x alphas, in that nesting order."""

    models = parse_list(kw["model"], "--model")
    filters = parse_filters(kw["filter_name"])
    alphas = parse_alphas(kw["alpha"])
    regions = regions_identity(kw)
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


def plate_check(
    items: Sequence[InputImage], kw: dict[str, Any], path: Path | None
) -> PlateCheck | None:
    """Plate readability for the run: with ``--plates-truth FILE``, or when the regions
    include ``plates`` and a plates.csv lies beside the images; else None."""
    detects_plates = any(part.split(":")[0] == "plates" for part in kw["regions"].split("+"))
    if path is None and not detects_plates:
        return None
    try:
        truth = find_plate_truth(items, path)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--plates-truth") from exc
    if not truth:
        if path is not None:
            raise click.BadParameter(
                f"{path} names none of the inputs", param_hint="--plates-truth"
            )
        return None
    try:
        reader = PlateReader(detector_options(kw).device)
    except ValueError as exc:
        raise click.UsageError(f"plate readability: {exc}") from exc
    return PlateCheck(truth, reader)


def with_plates(configs: list[Config], plates: PlateCheck | None) -> list[Config]:
    """``configs`` whose cache identity includes the plate ground truth, so that an edited
    truth file is read again."""
    if plates is None:
        return configs
    text = json.dumps({k: [(p.box, p.text) for p in v] for k, v in sorted(plates.truth.items())})
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return [replace(c, regions=f"{c.regions}|plates-truth={digest}") for c in configs]


def evaluate_paths(
    inputs: list[str],
    out: Path,
    kw: dict[str, Any],
    examples: int = 4,
    quiet: bool = False,
    plates_truth: Path | None = None,
) -> list[dict[str, Any]]:
    """Run ``evaluate`` on ``inputs`` with the parsed options; returns the results rows."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise click.UsageError(
            "adaptanon evaluate writes its report with matplotlib: pip install 'adaptanon[report]'"
        ) from exc

    configs = sweep_configs(kw)
    gallery = None
    if kw.get("gallery") is not None:
        try:
            gallery = gallery_descriptors(kw["gallery"])
        except IdentityUnavailable as exc:
            raise click.BadParameter(str(exc), param_hint="--gallery") from exc
    source, items = regions_and_inputs(inputs, out, kw, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    items, videos = split_videos(items)
    video_rows: list[dict[str, Any]] = []
    if videos:
        video_rows = evaluate_video_paths(videos, out, configs, source, kw, quiet)
        if not items:
            return video_rows
    try:
        labels = find_labels(items)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="INPUT") from exc
    plates = plate_check(items, kw, plates_truth)
    configs = with_plates(configs, plates)
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
            if row.status == Status.ERROR:
                progress.console.print(f"[red]error[/red] {row.name}: {row.error}")

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
                plates=plates,
                gallery=gallery,
            )
        except KeyboardInterrupt:
            progress.stop()
            err.print(f"[yellow]interrupted[/yellow]: rerun the same command to resume ({out})")
            sys.exit(130)
    if not quiet:
        print_results(rows, out)
    return rows + video_rows


def evaluate_video_paths(
    videos: list[InputImage],
    out: Path,
    configs: list[Config],
    source: RegionSource,
    kw: dict[str, Any],
    quiet: bool,
) -> list[dict[str, Any]]:
    """The video half of ``evaluate``: ``out/videos.json`` and ``out/videos.md``; rows
    count frames (``images``: frames of the videos evaluated without error)."""
    with progress_bar(quiet) as progress:
        task = progress.add_task("videos", total=len(configs) * len(videos))

        def on_row(row: dict[str, Any]) -> None:
            progress.advance(task)
            if row["error"]:
                progress.console.print(f"[red]error[/red] {row['video']}: {row['error']}")

        rows = evaluate_videos(
            videos,
            out,
            configs,
            source,
            lambda spec: load_model(spec, kw["device"]),
            build_video_options(kw),
            batch_size=kw["batch_size"] or default_batch_size(device_option(kw["device"])),
            on_row=on_row,
        )
    if not quiet:
        for r in rows:
            if r["error"] is None:
                err.print(
                    f"{r['video']} {r['model']} {r['filter']} alpha {r['alpha']:g}: "
                    f"{r['frames']} frames, vulnerable {r['vulnerable_initial_pct']:.2f}%, "
                    f"not corrected {r['not_corrected']}, final {r['vulnerable_final_pct']:.2f}%, "
                    f"flicker {len(r['flicker_frames'])} frame(s), {len(r['tracks'])} track(s)"
                )
        err.print(f"video results: {out}/videos.json, videos.md")
    return [{**r, "images": 0 if r["error"] else r["frames"]} for r in rows]


@click.command("evaluate")
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
@click.option(
    "--plates-truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=f"CSV file,x0,y0,x1,y1,text of the true plates: OCR measures how many of their "
    f"characters can be read before and after anonymization [default: {PLATES_FILE} beside "
    "the images, when --regions includes plates].",
)
@click.option(
    "--gallery",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of face photos of other people: added to the originals that each "
    "anonymized face is identified among (needs adaptanon[privacy]).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@method_options
@video_options
def evaluate_command(
    inputs: tuple[str, ...],
    out: Path,
    examples: int,
    plates_truth: Path | None,
    gallery: Path | None,
    quiet: bool,
    **kw: Any,
) -> None:
    """Measure the method on INPUT files, folders or globs, like the paper's Section 4.

    --model, --filter and --alpha take comma-separated lists; every combination is
    evaluated. A labels.csv (file,class_index) beside the images adds top-1 accuracies;
    a plates.csv (file,x0,y0,x1,y1,text), with --regions plates, how much of each plate
    OCR still reads.
    Writes OUT/results.json, results.csv, results.md and report.html; for videos
    OUT/videos.json and videos.md (per-frame measures, flicker, per-track privacy). Exits 1
    if no image could be evaluated.
    """
    rows = evaluate_paths(
        list(inputs), out, kw | {"gallery": gallery}, examples, quiet, plates_truth
    )
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
            default="auto",
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
