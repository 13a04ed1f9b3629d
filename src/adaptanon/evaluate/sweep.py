"""Running an evaluation: every configuration of the sweep over every image, resuming
from the cache, then the summaries and reports."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from adaptanon.classifiers import Classifier
from adaptanon.engines import load_batches, process_loaded
from adaptanon.evaluate.cache import (
    ConfigCache,
    content_key,
    image_key,
    load_examples,
    save_example,
)
from adaptanon.evaluate.identity import add_identity
from adaptanon.evaluate.labels import find_labels
from adaptanon.evaluate.metrics import summarize
from adaptanon.evaluate.readability import PlateCheck
from adaptanon.evaluate.rows import Config, ImageRow
from adaptanon.io.images import InputImage
from adaptanon.method import Outcome, OutcomeImages
from adaptanon.records import Box, Status
from adaptanon.regions import Combined, Detection, RegionQuery, RegionSource
from adaptanon.regions.detectors import CenterFace

REDETECT_IOU = 0.5
"""A face counts as found again when a detection in the output overlaps it this much."""

OnOutcome = Callable[[Config, InputImage, Outcome], None]
"""Called with each processed image's outcome (its ``data`` is the file ``anonymize``
would write), e.g. to keep the files."""


def outcome_row(item: InputImage, out: Outcome, seconds: float) -> ImageRow:
    """The cache row for one processed image."""
    rec = out.record
    fields = rec.to_dict() | {"input": item.relative.as_posix()}
    return ImageRow(
        **fields,
        path=image_key(item),
        content=content_key(item),
        seconds=seconds if rec.status != Status.ERROR else 0.0,
    )


def face_detector(source: RegionSource) -> RegionSource | None:
    """The face detector behind ``source`` (``faces``, or ``faces`` joined with others),
    else None: regions from files or saliency do not look at pixels again."""
    if isinstance(source, CenterFace):
        return source
    if isinstance(source, Combined):
        return next((s for s in source.sources if isinstance(s, CenterFace)), None)
    return None


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x0, y0, x1, y1]`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def count_found(faces: Sequence[Box], found: Sequence[Detection]) -> int:
    """How many of ``faces`` some ``face`` detection in ``found`` overlaps with IoU >=
    :data:`REDETECT_IOU`."""
    boxes = [d.box for d in found if d.label == "face"]
    return sum(1 for f in faces if any(box_iou(f, b) >= REDETECT_IOU for b in boxes))


def correction_size(images: OutcomeImages) -> tuple[float, float] | None:
    """Mean and largest absolute change between the plainly anonymized and the final
    pixels inside the regions (all channels), in 0-255 levels; None without regions."""
    inside = images.mask.expand_as(images.final)
    if not bool(inside.any()):
        return None
    diff = (images.final - images.anonymized).abs()[inside].double() * 255
    return round(float(diff.mean()), 4), round(float(diff.max()), 4)


def add_privacy(
    rows: Sequence[ImageRow], outcomes: Sequence[Outcome], source: RegionSource
) -> None:
    """Fill each row's correction size and, when ``source`` has a face detector, its face
    re-detection counts: the detector runs on the plainly anonymized and the final images
    of the rows with faces (one batch), at the threshold it found them with."""
    todo: list[tuple[ImageRow, OutcomeImages, list[Box]]] = []
    for row, out in zip(rows, outcomes, strict=True):
        if out.images is None or not row.regions:
            continue
        size = correction_size(out.images)
        row.correction_mean, row.correction_max = size if size else (None, None)
        faces = [tuple(d["box"]) for d in row.detections or [] if d.get("label") == "face"]
        if faces:
            todo.append((row, out.images, faces))
    detector = face_detector(source)
    if detector is None or not todo:
        return
    queries = [
        RegionQuery(row.input, img) for row, images, _ in todo
        for img in (images.anonymized, images.final)
    ]  # fmt: skip
    found = detector.find(queries)
    for k, (row, _, faces) in enumerate(todo):
        plain, final = found[2 * k], found[2 * k + 1]
        if plain.error is None and final.error is None:
            row.faces_checked = len(faces)
            row.faces_redetected_plain = count_found(faces, plain.detections)
            row.faces_redetected_final = count_found(faces, final.detections)


def scale_of(classifier: Classifier, image: Tensor) -> float:
    """Input pixels per view pixel of a ``(3, H, W)`` image, as the pipeline scales
    filters."""
    geometry = classifier.geometry(image.shape[-2], image.shape[-1])
    return geometry.scale if geometry else 1.0


def process_items(
    classifier: Classifier,
    source: RegionSource,
    config: Config,
    loaded: Sequence[tuple[InputImage, Any]],
    examples_dir: Path,
    examples_left: int,
    first_example: int,
    on_outcome: OnOutcome | None = None,
    plates: PlateCheck | None = None,
) -> list[ImageRow]:
    """Rows for one batch of loaded images (pixels, or the exception reading raised).

    The first ``examples_left`` images whose class changed after anonymization are kept as
    examples, numbered from ``first_example``. Each row gets the privacy measures of
    :func:`add_privacy` and, with ``plates``, plate readability (not counted in its
    seconds).
    """
    start = time.perf_counter()
    results = process_loaded(classifier, source, config.settings, loaded, keep_images=True)
    good = sum(1 for _, px in loaded if not isinstance(px, Exception))
    seconds = (time.perf_counter() - start) / max(1, good)
    rows = [outcome_row(item, out, seconds) for item, out in results]
    add_privacy(rows, [out for _, out in results], source)
    if plates is not None:
        plates.add(rows, [out for _, out in results])
    add_identity(
        rows,
        [out.images for _, out in results],
        config.settings.filter,
        config.settings.shape,
        lambda img: scale_of(classifier, img),
    )
    for row, (item, out) in zip(rows, results, strict=True):
        if on_outcome is not None:
            on_outcome(config, item, out)
        changed = row.anonymized_class is not None and row.anonymized_class != row.original_class
        if changed and out.images is not None and examples_left > 0:
            row.example = save_example(examples_dir, first_example, out.images)
            first_example += 1
            examples_left -= 1
    return rows


def pending_items(items: Sequence[InputImage], done: Mapping[str, ImageRow]) -> list[InputImage]:
    """The images still to compute: not in the cache, cached from a file that has changed
    since, or cached with status ``error`` (errors are retried; they are cheap and may have
    been transient)."""
    todo = []
    for item in items:
        row = done.get(image_key(item))
        if row is None or row.status == Status.ERROR or row.content != content_key(item):
            todo.append(item)
    return todo


@dataclass
class SweepResult:
    """The per-image rows of one configuration (in input order) and whether all are there."""

    config: Config
    rows: list[ImageRow]
    complete: bool


def run_sweep(
    items: Sequence[InputImage],
    cache_dir: Path,
    configs: Sequence[Config],
    source: RegionSource,
    load_model: Callable[[str], Classifier],
    *,
    batch_size: int = 16,
    examples: int = 4,
    limit: int | None = None,
    on_config: Callable[[Config, int, int], None] | None = None,
    on_row: Callable[[Config, ImageRow], None] | None = None,
    share_unchanged: bool = True,
    on_outcome: OnOutcome | None = None,
    plates: PlateCheck | None = None,
) -> list[SweepResult]:
    """Evaluate every configuration on ``items``, resuming from ``cache_dir``.

    Args:
        load_model: model spec -> classifier; called once per model that has work left.
        examples: images per configuration kept for the report's figure.
        limit: compute at most this many images in this call, then stop (the results of
            unfinished configurations have ``complete=False``); None for no limit.
        on_config: called with (config, images already cached, images in all) as each
            configuration starts.
        on_row: called with each newly computed row.
        share_unchanged: reuse the row of an image that plain anonymization left
            unchanged (status ``unchanged``, 0 steps) for every configuration that differs
            only in the step size: the step size plays no part before the first step.
            Such rows are copied, not computed, and keep the first one's timing.
        on_outcome: called with each newly computed image's outcome.
        plates: plate ground truth and reader: adds plate readability to the rows.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    budget = math.inf if limit is None else limit
    models: dict[str, Classifier] = {}
    results: list[SweepResult] = []
    unchanged: dict[str, dict[str, ImageRow]] = {}
    for config in configs:
        cache = ConfigCache(cache_dir, config)
        done = cache.read()
        shared = unchanged.setdefault(config.step_free_key, {})
        if share_unchanged:
            shared.update({k: r for k, r in done.items() if r.status == Status.UNCHANGED})
            copies = [
                replace(shared[image_key(item)], example=None)
                for item in pending_items(items, done)
                if image_key(item) in shared
            ]
            cache.append(copies)
            done.update((r.path, r) for r in copies)
        todo = pending_items(items, done)
        if on_config:
            on_config(config, len(items) - len(todo), len(items))
        todo = todo[: int(min(len(todo), budget))]
        if todo and config.model not in models:
            models.clear()  # one model in memory at a time; configs come grouped
            models[config.model] = load_model(config.model)
        saved = sum(1 for r in done.values() if r.example)
        for loaded in load_batches(todo, batch_size):
            rows = process_items(
                models[config.model],
                source,
                config,
                loaded,
                cache.examples_dir,
                max(0, examples - saved),
                saved,
                on_outcome,
                plates,
            )
            saved += sum(1 for r in rows if r.example)
            cache.append(rows)
            budget -= len(rows)
            for row in rows:
                done[row.path] = row
                if row.status == Status.UNCHANGED:
                    shared[row.path] = row
                if on_row:
                    on_row(config, row)
        ordered = [done[k] for k in map(image_key, items) if k in done]
        results.append(SweepResult(config, ordered, len(ordered) == len(items)))
    return results


def evaluate(
    items: Sequence[InputImage],
    out_dir: Path,
    configs: Sequence[Config],
    source: RegionSource,
    load_model: Callable[[str], Classifier],
    *,
    batch_size: int = 16,
    examples: int = 4,
    limit: int | None = None,
    labels: Mapping[str, int] | None = None,
    on_config: Callable[[Config, int, int], None] | None = None,
    on_row: Callable[[Config, ImageRow], None] | None = None,
    share_unchanged: bool = True,
    on_outcome: OnOutcome | None = None,
    plates: PlateCheck | None = None,
    gallery: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Run the sweep (see :func:`run_sweep`) and write ``results.json``, ``results.csv``,
    ``results.md`` and ``report.html`` to ``out_dir``. Returns the results rows, one per
    configuration. ``labels`` defaults to the ``labels.csv`` files beside the images;
    ``gallery``: ``(M, 128)`` face descriptors of other people, added to the originals
    the anonymized faces are identified among."""
    from adaptanon.evaluate.report import write_reports

    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = out_dir / "cache"
    swept = run_sweep(
        items,
        cache_dir,
        configs,
        source,
        load_model,
        batch_size=batch_size,
        examples=examples,
        limit=limit,
        on_config=on_config,
        on_row=on_row,
        share_unchanged=share_unchanged,
        on_outcome=on_outcome,
        plates=plates,
    )
    labels = find_labels(items) if labels is None else labels
    summaries = [summarize(s.config, s.rows, labels, gallery) for s in swept]
    for summary, s in zip(summaries, swept, strict=True):
        summary["complete"] = s.complete
    figures = [(s.config, load_examples(cache_dir, s.config, s.rows)) for s in swept]
    write_reports(out_dir, summaries, figures, examples)
    return summaries
