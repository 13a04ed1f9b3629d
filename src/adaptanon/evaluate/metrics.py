"""The paper's measurements as small pure functions of the per-image rows."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from adaptanon.evaluate.identity import identity_summary
from adaptanon.evaluate.rows import Config, ImageRow
from adaptanon.method.metrics import region_psnr
from adaptanon.records import Status

TIMING_KEYS = ("seconds_per_image", "images_per_second")
"""Summary keys that depend on the machine, not on the method."""

__all__ = ["TIMING_KEYS", "region_psnr"]


def valid_rows(rows: Iterable[ImageRow]) -> list[ImageRow]:
    """The rows that count as evaluated images (every status except ``error``)."""
    return [r for r in rows if r.status != Status.ERROR]


def count_changed(rows: Iterable[ImageRow]) -> int:
    """Images whose class changed after the plain anonymization."""
    return sum(1 for r in valid_rows(rows) if r.anonymized_class != r.original_class)


def count_not_corrected(rows: Iterable[ImageRow]) -> int:
    """Images whose final class differs from the original, or whose correction failed."""
    return sum(
        1
        for r in valid_rows(rows)
        if r.final_class != r.original_class or r.status == Status.FAILED
    )


def percent(part: int, whole: int) -> float | None:
    """``100 * part / whole``; None when ``whole`` is 0."""
    return None if whole == 0 else 100.0 * part / whole


def steps_histogram(rows: Iterable[ImageRow]) -> dict[int, int]:
    """Corrected images by number of steps, e.g. ``{1: 680, 2: 41, 3: 4}`` (sorted)."""
    counts = Counter(r.steps for r in rows if r.status == Status.CORRECTED)
    return dict(sorted(counts.items()))


def mean_steps(rows: Iterable[ImageRow]) -> float | None:
    """Mean number of steps over corrected images (the paper's average); None if none."""
    steps = [r.steps for r in rows if r.status == Status.CORRECTED]
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


STRENGTH_STAGES = {"plain": "strength_plain", "corrected": "strength_final"}
"""Summary prefix -> the record field holding that stage's per-region strengths."""


def region_values(rows: Iterable[ImageRow], field: str, key: str) -> list[float]:
    """Every region's ``key`` (``psnr``, ``ssim`` or ``detail``) from the per-region
    strength lists in ``field`` (``strength_plain`` or ``strength_final``); None values
    (an identical region's PSNR, a region without detail) are left out."""
    out = []
    for r in rows:
        for strength in getattr(r, field) or []:
            value = strength.get(key)
            if value is not None and math.isfinite(value):
                out.append(float(value))
    return out


def strength_summary(rows: Sequence[ImageRow]) -> dict[str, Any]:
    """The distribution of per-region anonymization strength over ``rows``.

    For ``plain`` (after plain anonymization) and ``corrected`` (the written files):
    ``region_{ssim,psnr}_{stage}_{min,median,max}`` and ``region_detail_{stage}_max`` (the
    worst region is the one with the highest SSIM, PSNR or detail), the number of
    ``measured_regions`` and of ``identical_regions`` (written region equal to the
    original, PSNR infinite).
    """
    out: dict[str, Any] = {
        "measured_regions": sum(len(r.strength_final or []) for r in rows),
        "identical_regions": sum(
            1 for r in rows for st in (r.strength_final or []) if st.get("psnr") is None
        ),
    }
    for stage, field in STRENGTH_STAGES.items():
        for key in ("ssim", "psnr"):
            values = region_values(rows, field, key)
            out[f"region_{key}_{stage}_min"] = min(values) if values else None
            out[f"region_{key}_{stage}_median"] = statistics.median(values) if values else None
            out[f"region_{key}_{stage}_max"] = max(values) if values else None
        details = region_values(rows, field, "detail")
        out[f"region_detail_{stage}_max"] = max(details) if details else None
        for key in ("ssim", "psnr"):
            out[f"region_{key}_{stage}_mean"] = mean_finite(region_values(rows, field, key))
    return out


LABEL_KEYS = ("images", "images_pct", "changed", "vulnerable_initial_pct",
              "vulnerable_initial_within_pct", "not_corrected", "vulnerable_final_pct",
              "mean_steps")  # fmt: skip
"""The keys of each label's entry in a summary's ``by_label`` (see :func:`label_summary`)."""


def has_label(row: ImageRow, label: str) -> bool:
    """Whether one of the row's regions has ``label`` (``face``, ``plate``, ...)."""
    return any(d.get("label") == label for d in row.detections or [])


def label_summary(rows: Sequence[ImageRow], label: str) -> dict[str, Any]:
    """The paper's Table 4 for the images with at least one ``label`` region among the
    evaluated ``rows``: how many (and their share), how many changed class after plain
    anonymization (in percent of all images, as Table 4, and of these images), how many
    were not corrected (and in percent of all images) and their mean steps."""
    sub = [r for r in rows if has_label(r, label)]
    changed = count_changed(sub)
    not_corrected = count_not_corrected(sub)
    return {
        "images": len(sub),
        "images_pct": percent(len(sub), len(rows)),
        "changed": changed,
        "vulnerable_initial_pct": percent(changed, len(rows)),
        "vulnerable_initial_within_pct": percent(changed, len(sub)),
        "not_corrected": not_corrected,
        "vulnerable_final_pct": percent(not_corrected, len(rows)),
        "mean_steps": mean_steps(sub),
    }


def regions_summary(rows: Sequence[ImageRow]) -> dict[str, Any]:
    """Images with at least one region, and per region label (``face``, ``plate``, from
    the detections) :func:`label_summary` under ``by_label``; each label's entries are
    also flat keys ``<label>_<key>`` (e.g. ``face_images_pct``)."""
    with_regions = sum(1 for r in rows if r.regions)
    labels = sorted({str(d.get("label")) for r in rows for d in r.detections or []})
    by_label = {label: label_summary(rows, label) for label in labels}
    flat = {f"{lab}_{k}": v for lab, entry in by_label.items() for k, v in entry.items()}
    return {
        "images_with_regions": with_regions,
        "images_with_regions_pct": percent(with_regions, len(rows)),
        "by_label": by_label,
        **flat,
    }


def privacy_summary(rows: Sequence[ImageRow]) -> dict[str, Any]:
    """Face re-detection and the correction's size.

    ``faces_checked``: faces the face detector found in the originals (None when the
    regions do not come from it); ``face_redetection_{plain,corrected}_pct``: the share of
    them it finds again (IoU >= 0.5, same threshold) after plain anonymization and in the
    final images; ``correction_mean_levels``: the mean over corrected images of their mean
    absolute change inside the regions (plain to final, 0-255 levels);
    ``correction_max_levels``: the largest change in any image.
    """
    checked = [r for r in rows if r.faces_checked is not None]
    faces = sum(r.faces_checked or 0 for r in checked)
    plain = sum(r.faces_redetected_plain or 0 for r in checked)
    final = sum(r.faces_redetected_final or 0 for r in checked)
    corrected = [r.correction_mean for r in rows if r.status == Status.CORRECTED]
    largest = [r.correction_max for r in rows if r.correction_max is not None]
    return {
        "faces_checked": faces if checked else None,
        "faces_redetected_plain": plain if checked else None,
        "faces_redetected_corrected": final if checked else None,
        "face_redetection_plain_pct": percent(plain, faces),
        "face_redetection_corrected_pct": percent(final, faces),
        "correction_mean_levels": mean_finite(corrected),
        "correction_max_levels": max(largest) if largest else None,
    }


def readability_summary(rows: Sequence[ImageRow]) -> dict[str, Any]:
    """Plate readability (:mod:`~adaptanon.evaluate.readability`): ``plates_checked``
    ground-truth plates read (None without ground truth), ``plate_chars`` their
    characters, ``plate_chars_read_{original,plain,corrected}_pct`` the share of those
    characters read correctly in the original, plainly anonymized and final images."""
    checked = [r for r in rows if r.plates_checked is not None]
    chars = sum(r.plate_chars or 0 for r in checked)

    def share(key: str) -> float | None:
        return percent(sum(getattr(r, key) or 0 for r in checked), chars)

    return {
        "plates_checked": sum(r.plates_checked or 0 for r in checked) if checked else None,
        "plate_chars": chars if checked else None,
        "plate_chars_read_original_pct": share("plate_chars_original"),
        "plate_chars_read_plain_pct": share("plate_chars_plain"),
        "plate_chars_read_corrected_pct": share("plate_chars_final"),
    }


def query_summary(rows: Sequence[ImageRow]) -> dict[str, Any]:
    """The CEC 2024 measures, for every run (queries only for a query-only model).

    ``concordance_pct``: the share of evaluated images whose final (stored) pixels have
    the original's class, failed ones included; ``concordance_vulnerable_pct``: the same
    over the images whose class the plain anonymization changed; ``queries_{mean,median}``
    over corrected images and ``queries_mean_all`` over all images that record queries
    (None when none do: a gradient run).
    """
    vulnerable = [r for r in rows if r.anonymized_class != r.original_class]
    kept = [r for r in rows if r.final_class == r.original_class]
    corrected = [r.queries for r in rows if r.status == Status.CORRECTED and r.queries is not None]
    every = [r.queries for r in rows if r.queries is not None]
    return {
        "concordance_pct": percent(len(kept), len(rows)),
        "concordance_vulnerable_pct": percent(
            sum(1 for r in vulnerable if r.final_class == r.original_class), len(vulnerable)
        ),
        "queries_mean": statistics.mean(corrected) if corrected else None,
        "queries_median": statistics.median(corrected) if corrected else None,
        "queries_mean_all": statistics.mean(every) if every else None,
    }


def summarize(
    config: Config,
    rows: Sequence[ImageRow],
    labels: Mapping[str, int] | None = None,
    gallery: np.ndarray | None = None,
) -> dict[str, Any]:
    """One results row for ``config``: the paper's columns and more.

    Percentages are in percent. ``not_corrected_pct`` is relative to the images that
    changed class after anonymization (the paper's "% images not corrected"); the
    ``vulnerable_*_pct`` are relative to all evaluated images. Images that could not be read
    or processed are counted in ``errors`` and left out of everything else. ``weak``
    counts images whose written region was not measurably anonymized; the ``region_*``
    keys are :func:`strength_summary`, the images with regions and the Table 4 analog per
    region label :func:`regions_summary`, face re-detection and the correction's size
    :func:`privacy_summary`, plate readability :func:`readability_summary`, identification
    of the anonymized faces among the originals (and ``gallery``)
    :func:`~adaptanon.evaluate.identity.identity_summary`, class concordance and queries
    :func:`query_summary`.
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
        "max_steps": s.solver.describe().get("max_steps"),
        "format": s.codec.format,
        "images": len(valid),
        "errors": status[Status.ERROR],
        "unchanged": status[Status.UNCHANGED],
        "corrected": status[Status.CORRECTED],
        "failed": status[Status.FAILED],
        "weak": status[Status.WEAK],
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
        **strength_summary(valid),
        **regions_summary(valid),
        **privacy_summary(valid),
        **readability_summary(valid),
        **identity_summary(valid, gallery),
        **query_summary(valid),
        "seconds_per_image": seconds,
        "images_per_second": rate,
        "key": config.key,
    }
