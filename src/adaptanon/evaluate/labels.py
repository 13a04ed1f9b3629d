"""Ground-truth labels for top-1 accuracy: a ``labels.csv`` (``file,class_index``) beside
the images."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from adaptanon.io.images import InputImage

LABELS_FILE = "labels.csv"


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
