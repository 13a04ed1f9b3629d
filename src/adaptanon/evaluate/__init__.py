"""``adaptanon evaluate``: the paper's measurements (Section 4, Tables 1-4) over a sweep of
models x filters x step sizes.

Each image of each configuration gives one :class:`ImageRow` (:mod:`.rows`), cached as
JSON lines so an interrupted evaluation continues (:mod:`.cache`); the metrics are small
pure functions of those rows (:mod:`.metrics`); :mod:`.report` writes results.json, .csv,
.md and report.html (it needs matplotlib: the ``report`` extra).
"""

from adaptanon.evaluate.cache import ConfigCache, image_key, load_examples, save_example
from adaptanon.evaluate.labels import LABELS_FILE, find_labels, read_labels
from adaptanon.evaluate.metrics import (
    TIMING_KEYS,
    accuracy,
    count_changed,
    count_not_corrected,
    mean_finite,
    mean_steps,
    percent,
    region_psnr,
    steps_histogram,
    summarize,
    timing,
    valid_rows,
)
from adaptanon.evaluate.rows import CACHE_SCHEMA, Config, Example, ImageRow
from adaptanon.evaluate.sweep import (
    SweepResult,
    evaluate,
    outcome_row,
    pending_items,
    process_items,
    run_sweep,
)

__all__ = [
    "TIMING_KEYS",
    "CACHE_SCHEMA",
    "LABELS_FILE",
    "Config",
    "ConfigCache",
    "Example",
    "ImageRow",
    "SweepResult",
    "accuracy",
    "count_changed",
    "count_not_corrected",
    "evaluate",
    "find_labels",
    "image_key",
    "load_examples",
    "mean_finite",
    "mean_steps",
    "outcome_row",
    "pending_items",
    "percent",
    "process_items",
    "read_labels",
    "region_psnr",
    "run_sweep",
    "save_example",
    "steps_histogram",
    "summarize",
    "timing",
    "valid_rows",
]
