"""``adaptanon evaluate``: the paper's measurements (Section 4, Tables 1-4) over a sweep
of models x filters x step sizes.

Each image of each configuration gives one :class:`ImageRow`. Rows are cached as JSON
lines in ``OUT/cache/<key>.jsonl``, one file per configuration, where ``key`` hashes
everything that changes the result (model, regions, filter, criterion, alpha, format...);
a rerun skips the images already there, so an interrupted evaluation continues where it
stopped. The metrics are small pure functions of those rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from adaptanon.classifiers import Classifier
from adaptanon.encoding import to_pixels
from adaptanon.files import InputImage
from adaptanon.pipeline import CORRECTED, ERROR, FAILED, UNCHANGED, Outcome, Settings
from adaptanon.regions import RegionSource
from adaptanon.runner import load_batches, process_loaded

CACHE_SCHEMA = 1
"""Bump when the meaning of cached rows changes, so that old caches are not reused."""

LABELS_FILE = "labels.csv"
THUMBNAIL = 384
"""Longest side, in pixels, of the example images kept for the report's figure."""

TIMING_KEYS = ("seconds_per_image", "images_per_second")
"""Summary keys that depend on the machine, not on the method."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Config:
    """One point of the sweep: a model, a filter and a step size (``settings.alpha``).

    Attributes:
        model: the model spec as given (built-in name, file, ``module:function``).
        filter: the filter's short name (``blur``, ``mask``, ``mosaic``).
        settings: the full method settings (filter parameters, alpha, criterion, codec...).
        regions: what identifies the regions (e.g. ``saliency`` or ``boxes=<sha256>``).
    """

    model: str
    filter: str
    settings: Settings
    regions: str = "saliency"

    @property
    def alpha(self) -> float:
        """The step size."""
        return self.settings.alpha

    def identity(self) -> dict[str, Any]:
        """Everything that changes the per-image results (not the device or batch size)."""
        s = self.settings
        return {
            "schema": CACHE_SCHEMA,
            "model": self.model,
            "regions": self.regions,
            "filter": s.filter.describe(),
            "shape": s.shape,
            "criterion": s.criterion.describe(),
            "alpha": s.alpha,
            "max_steps": s.max_steps,
            "delta": s.delta,
            "format": s.codec.format,
            "quality": None if s.codec.lossless else s.codec.quality,
        }

    @property
    def key(self) -> str:
        """Short hash of :meth:`identity`: the name of this configuration's cache."""
        text = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def step_free_key(self) -> str:
        """Hash of :meth:`identity` without the step size: configurations that share it
        anonymize identically, so an image unchanged by one is unchanged by all."""
        ident = {k: v for k, v in self.identity().items() if k != "alpha"}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``efficientnet_lite0 / blur / α=0.1``."""
        return f"{self.model} / {self.filter} / α={self.alpha:g}"


@dataclass
class ImageRow:
    """What one configuration did to one image (a line of the cache).

    ``path`` (the resolved input path) identifies the image; ``name`` is its path relative
    to the input root. PSNRs are in dB between the original and the plainly anonymized
    (``psnr_plain``) or corrected (``psnr_final``) pixels inside the region; None when the
    region is empty or unchanged. ``seconds`` is this image's share of its batch's time.
    ``anonymized_confidence`` is only computed for images kept as examples (``example``
    names their file under ``cache/<key>/``).
    """

    path: str
    name: str
    status: str
    message: str | None = None
    regions: list[list[int]] = field(default_factory=list)
    steps: int = 0
    original_class: int | None = None
    anonymized_class: int | None = None
    final_class: int | None = None
    original_name: str | None = None
    anonymized_name: str | None = None
    final_name: str | None = None
    original_confidence: float | None = None
    anonymized_confidence: float | None = None
    final_confidence: float | None = None
    psnr_plain: float | None = None
    psnr_final: float | None = None
    seconds: float = 0.0
    example: str | None = None

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageRow:
        """Build from a decoded JSON line (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Example:
    """Thumbnails of one example image for the report's figure (like the paper's Fig. 3).

    Images are ``(h, w, 3)`` uint8; ``mask`` is ``(h, w)`` bool (the anonymized region).
    """

    row: ImageRow
    original: np.ndarray
    anonymized: np.ndarray
    final: np.ndarray
    mask: np.ndarray


# --------------------------------------------------------------------------- metrics


def region_psnr(reference: Tensor, other: Tensor, mask: Tensor) -> float | None:
    """PSNR in dB between two ``(3, H, W)`` images in ``[0, 1]``, over the pixels where the
    ``(1, H, W)`` or ``(H, W)`` bool ``mask`` is set (all channels). ``inf`` when they are
    equal there, None when the mask is empty."""
    m = mask.reshape(1, *reference.shape[-2:]).to(reference.device).expand_as(reference)
    count = int(m.sum())
    if count == 0:
        return None
    diff = (reference.double() - other.to(reference.device).double())[m]
    mse = float((diff**2).mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def valid_rows(rows: Iterable[ImageRow]) -> list[ImageRow]:
    """The rows that count as evaluated images (every status except ``error``)."""
    return [r for r in rows if r.status != ERROR]


def count_changed(rows: Iterable[ImageRow]) -> int:
    """Images whose class changed after the plain anonymization."""
    return sum(1 for r in valid_rows(rows) if r.anonymized_class != r.original_class)


def count_not_corrected(rows: Iterable[ImageRow]) -> int:
    """Images whose final class differs from the original, or whose correction failed."""
    return sum(
        1 for r in valid_rows(rows) if r.final_class != r.original_class or r.status == FAILED
    )


def percent(part: int, whole: int) -> float | None:
    """``100 * part / whole``; None when ``whole`` is 0."""
    return None if whole == 0 else 100.0 * part / whole


def steps_histogram(rows: Iterable[ImageRow]) -> dict[int, int]:
    """Corrected images by number of steps, e.g. ``{1: 680, 2: 41, 3: 4}`` (sorted)."""
    counts = Counter(r.steps for r in rows if r.status == CORRECTED)
    return dict(sorted(counts.items()))


def mean_steps(rows: Iterable[ImageRow]) -> float | None:
    """Mean number of steps over corrected images (the paper's average); None if none."""
    steps = [r.steps for r in rows if r.status == CORRECTED]
    return sum(steps) / len(steps) if steps else None


def mean_finite(values: Iterable[float | None]) -> float | None:
    """Mean of the finite values (None and infinities skipped); None if there are none."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def accuracy(rows: Iterable[ImageRow], labels: Mapping[str, int], attr: str) -> float | None:
    """Top-1 accuracy in percent of ``attr`` (``original_class``, ``anonymized_class`` or
    ``final_class``) over the evaluated images that have a label (keyed by ``row.path``);
    None when no image has one."""
    labelled = [r for r in valid_rows(rows) if r.path in labels]
    hits = sum(1 for r in labelled if getattr(r, attr) == labels[r.path])
    return percent(hits, len(labelled))


def timing(rows: Iterable[ImageRow]) -> tuple[float | None, float | None]:
    """``(seconds per image, images per second)`` over the evaluated images."""
    valid = valid_rows(rows)
    total = sum(r.seconds for r in valid)
    if not valid:
        return None, None
    return total / len(valid), (len(valid) / total if total > 0 else None)


def summarize(
    config: Config, rows: Sequence[ImageRow], labels: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """One results row for ``config``: the paper's columns and more.

    Percentages are in percent. ``not_corrected_pct`` is relative to the images that
    changed class after anonymization (the paper's "% images not corrected"); the
    ``vulnerable_*_pct`` are relative to all evaluated images. Images that could not be read
    or processed are counted in ``errors`` and left out of everything else.
    """
    labels = labels or {}
    valid = valid_rows(rows)
    status = Counter(r.status for r in rows)
    changed = count_changed(valid)
    not_corrected = count_not_corrected(valid)
    seconds, rate = timing(valid)
    s = config.settings
    return {
        "model": config.model,
        "filter": config.filter,
        "alpha": config.alpha,
        "regions": config.regions,
        "filter_settings": s.filter.describe(),
        "shape": s.shape,
        "criterion": s.criterion.describe(),
        "max_steps": s.max_steps,
        "format": s.codec.format,
        "images": len(valid),
        "errors": status[ERROR],
        "unchanged": status[UNCHANGED],
        "corrected": status[CORRECTED],
        "failed": status[FAILED],
        "changed_after_anonymization": changed,
        "not_corrected": not_corrected,
        "not_corrected_pct": percent(not_corrected, changed),
        "vulnerable_initial_pct": percent(changed, len(valid)),
        "vulnerable_final_pct": percent(not_corrected, len(valid)),
        "mean_steps": mean_steps(valid),
        "steps_histogram": steps_histogram(valid),
        "labelled": sum(1 for r in valid if r.path in labels),
        "accuracy_original": accuracy(valid, labels, "original_class"),
        "accuracy_anonymized": accuracy(valid, labels, "anonymized_class"),
        "accuracy_corrected": accuracy(valid, labels, "final_class"),
        "psnr_plain_db": mean_finite(r.psnr_plain for r in valid),
        "psnr_corrected_db": mean_finite(r.psnr_final for r in valid),
        "seconds_per_image": seconds,
        "images_per_second": rate,
        "key": config.key,
    }


# --------------------------------------------------------------------------- labels


def read_labels(path: Path) -> dict[str, int]:
    """``file -> class_index`` from a CSV with (at least) those two columns.

    Raises:
        ValueError: the columns are missing or a class index is not an integer.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "class_index"} <= set(reader.fieldnames):
            raise ValueError(f"{path} needs the columns file,class_index")
        out: dict[str, int] = {}
        for line, rec in enumerate(reader, start=2):
            try:
                out[rec["file"].strip()] = int(rec["class_index"])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: bad class_index {rec['class_index']!r}") from exc
    return out


def input_root(item: InputImage) -> Path:
    """The folder ``item.relative`` is relative to."""
    return item.path.parents[len(item.relative.parts) - 1]


def find_labels(items: Sequence[InputImage]) -> dict[str, int]:
    """Labels from the ``labels.csv`` beside the images (in each input root), keyed by
    resolved image path. A CSV entry names a file relative to its folder, or a bare file
    name found anywhere under it."""
    labels: dict[str, int] = {}
    tables: dict[Path, dict[str, int]] = {}
    for item in items:
        root = input_root(item)
        if root not in tables:
            csv_path = root / LABELS_FILE
            tables[root] = read_labels(csv_path) if csv_path.is_file() else {}
        table = tables[root]
        rel = item.relative.as_posix()
        label = table.get(rel, table.get(item.path.name))
        if label is not None:
            labels[str(item.path.resolve())] = label
    return labels


# --------------------------------------------------------------------------- cache


def image_key(item: InputImage) -> str:
    """How an image is identified in the cache: its resolved path."""
    return str(item.path.resolve())


class ConfigCache:
    """The per-image rows of one configuration: ``<dir>/<key>.jsonl`` (appended batch by
    batch, so an interruption loses at most the batch in flight), ``<dir>/<key>.json``
    (the configuration, for people) and ``<dir>/<key>/`` (example thumbnails)."""

    def __init__(self, directory: Path, config: Config) -> None:
        self.rows_path = directory / f"{config.key}.jsonl"
        self.examples_dir = directory / config.key
        directory.mkdir(parents=True, exist_ok=True)
        info = directory / f"{config.key}.json"
        if not info.exists():
            info.write_text(json.dumps(config.identity(), indent=2) + "\n")

    def read(self) -> dict[str, ImageRow]:
        """Rows by image path; the last line for an image wins; a torn line is skipped."""
        rows: dict[str, ImageRow] = {}
        if not self.rows_path.exists():
            return rows
        with open(self.rows_path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = ImageRow.from_dict(json.loads(line))
                except (json.JSONDecodeError, TypeError, AttributeError):
                    continue
                rows[row.path] = row
        return rows

    def _ends_with_newline(self) -> bool:
        with open(self.rows_path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def append(self, rows: Sequence[ImageRow]) -> None:
        """Add rows durably, on a fresh line even after a torn one (a crash mid-write)."""
        if not rows:
            return
        with open(self.rows_path, "ab") as f:
            torn = f.tell() > 0 and not self._ends_with_newline()
            text = ("\n" if torn else "") + "".join(r.to_json() + "\n" for r in rows)
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())


def thumbnail(pixels: np.ndarray, size: int = THUMBNAIL, mask: bool = False) -> np.ndarray:
    """Downscale ``(H, W, 3)`` uint8 (or ``(H, W)`` bool with ``mask``) so that the longest
    side is at most ``size``."""
    h, w = pixels.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale == 1.0:
        return pixels
    dims = (max(1, round(w * scale)), max(1, round(h * scale)))
    if mask:
        img = Image.fromarray(pixels.astype(np.uint8) * 255).resize(dims, Image.NEAREST)
        return np.asarray(img) > 127
    return np.asarray(Image.fromarray(pixels).resize(dims, Image.LANCZOS))


def save_example(directory: Path, index: int, out: Outcome) -> str:
    """Store thumbnails of ``out`` for the figure; returns the file name."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"example_{index:04d}.npz"
    tmp = directory / f".{name}.tmp.npz"
    np.savez_compressed(
        tmp,
        original=thumbnail(to_pixels(out.original)),
        anonymized=thumbnail(to_pixels(out.anonymized)),
        final=thumbnail(to_pixels(out.final)),
        mask=thumbnail(out.mask[0].cpu().numpy(), mask=True),
    )
    os.replace(tmp, directory / name)
    return name


def load_examples(cache_dir: Path, config: Config, rows: Sequence[ImageRow]) -> list[Example]:
    """The example thumbnails stored for ``rows`` of ``config``, in row order."""
    out: list[Example] = []
    for row in rows:
        if not row.example:
            continue
        path = cache_dir / config.key / row.example
        try:
            with np.load(path) as data:
                out.append(
                    Example(row, data["original"], data["anonymized"], data["final"], data["mask"])
                )
        except (OSError, KeyError, ValueError):
            continue
    return out


# --------------------------------------------------------------------------- running


def outcome_row(item: InputImage, out: Outcome, seconds: float, classifier: Classifier) -> ImageRow:
    """The cache row for one processed image."""

    def name(index: int | None) -> str | None:
        return None if index is None else classifier.class_name(index)

    def psnr(other: Tensor | None) -> float | None:
        if out.original is None or other is None or out.mask is None:
            return None
        value = region_psnr(out.original, other, out.mask)
        return value if value is not None and math.isfinite(value) else None

    return ImageRow(
        path=image_key(item),
        name=item.relative.as_posix(),
        status=out.status,
        message=out.message,
        regions=[list(b) for b in out.regions],
        steps=out.steps,
        original_class=out.original_class,
        anonymized_class=out.anonymized_class,
        final_class=out.final_class,
        original_name=name(out.original_class),
        anonymized_name=name(out.anonymized_class),
        final_name=name(out.final_class),
        original_confidence=out.original_confidence,
        final_confidence=out.final_confidence,
        psnr_plain=psnr(out.anonymized),
        psnr_final=psnr(out.final),
        seconds=seconds if out.status != ERROR else 0.0,
    )


def process_items(
    classifier: Classifier,
    source: RegionSource,
    config: Config,
    loaded: Sequence[tuple[InputImage, Any]],
    examples_dir: Path,
    examples_left: int,
    first_example: int,
) -> list[ImageRow]:
    """Rows for one batch of loaded images (pixels, or the exception reading raised).

    The first ``examples_left`` images whose class changed after anonymization are kept as
    examples, numbered from ``first_example``.
    """
    rows: dict[int, ImageRow] = {}
    good = []
    for i, (item, px) in enumerate(loaded):
        if isinstance(px, Exception):
            rows[i] = ImageRow(image_key(item), item.relative.as_posix(), ERROR, str(px))
        else:
            good.append((i, item, px))
    start = time.perf_counter()
    results = process_loaded(classifier, source, config.settings, [(it, px) for _, it, px in good])
    seconds = (time.perf_counter() - start) / max(1, len(good))
    picked: list[tuple[int, Outcome]] = []
    for (i, item, _), (_, out) in zip(good, results, strict=True):
        rows[i] = outcome_row(item, out, seconds, classifier)
        changed = out.anonymized is not None and out.anonymized_class != out.original_class
        if changed and len(picked) < examples_left:
            picked.append((i, out))
    for i, out in picked:
        rows[i].anonymized_confidence = out.anonymized_confidence
        rows[i].example = save_example(examples_dir, first_example, out)
        first_example += 1
    return [rows[i] for i in range(len(loaded))]


def pending_items(items: Sequence[InputImage], done: Mapping[str, ImageRow]) -> list[InputImage]:
    """The images still to compute: not in the cache, or cached with status ``error``
    (errors are retried; they are cheap and may have been transient)."""
    todo = []
    for item in items:
        row = done.get(image_key(item))
        if row is None or row.status == ERROR:
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
            shared.update({k: r for k, r in done.items() if r.status == UNCHANGED})
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
            )
            saved += sum(1 for r in rows if r.example)
            cache.append(rows)
            budget -= len(rows)
            for row in rows:
                done[row.path] = row
                if row.status == UNCHANGED:
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
) -> list[dict[str, Any]]:
    """Run the sweep (see :func:`run_sweep`) and write ``results.json``, ``results.csv``,
    ``results.md`` and ``report.html`` to ``out_dir``. Returns the results rows, one per
    configuration. ``labels`` defaults to the ``labels.csv`` files beside the images."""
    from adaptanon.report import write_reports

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
    )
    labels = find_labels(items) if labels is None else labels
    summaries = [summarize(s.config, s.rows, labels) for s in swept]
    for summary, s in zip(summaries, swept, strict=True):
        summary["complete"] = s.complete
    figures = [(s.config, load_examples(cache_dir, s.config, s.rows)) for s in swept]
    write_reports(out_dir, summaries, figures, examples)
    return summaries
