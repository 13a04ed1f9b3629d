"""Detections made elsewhere, read into :class:`~adaptanon.regions.boxes.ExplicitBoxes`:
COCO JSON, YOLO label folders, Pascal VOC XML folders and CSV files.

Every file is read and checked when the source is built, before any image is processed:
a malformed file is a ``ValueError`` naming the file and the line or entry (a usage error
on the command line). Whether a box lies inside its image is checked per image, as for
``boxes=FILE``. Each loader takes an optional set of labels (category names; for YOLO
also class numbers) and keeps only those.
"""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from adaptanon.regions.boxes import ExplicitBoxes

FORMATS = ("coco", "yolo", "voc", "csv")
"""The ``--regions FORMAT=PATH[:LABEL,...]`` formats this module reads (``boxes`` is the
plain JSON of :func:`~adaptanon.regions.boxes.load_boxes_file`)."""


class _Collect:
    """Boxes, labels and scores per image, as :class:`ExplicitBoxes` takes them."""

    def __init__(self) -> None:
        self.boxes: dict[str, list[list[float]]] = {}
        self.labels: dict[str, list[str]] = {}
        self.scores: dict[str, list[float]] = {}

    def image(self, key: str) -> None:
        self.boxes.setdefault(key, [])
        self.labels.setdefault(key, [])
        self.scores.setdefault(key, [])

    def add(self, key: str, box: list[float], label: str, score: float = 1.0) -> None:
        self.image(key)
        self.boxes[key].append(box)
        self.labels[key].append(label)
        self.scores[key].append(score)

    def source(self, name: str, **kw: Any) -> ExplicitBoxes:
        return ExplicitBoxes(self.boxes, self.labels, self.scores, name=name, **kw)


def _number(value: object, where: str, what: str) -> float:
    """A finite number (not a boolean), else a ValueError saying where."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{where}: {what} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{where}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {what} must be finite, got {value!r}")
    return number


def _corners(x0: float, y0: float, x1: float, y1: float, where: str) -> list[float]:
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"{where}: empty box [{x0:g}, {y0:g}, {x1:g}, {y1:g}]")
    return [x0, y0, x1, y1]


def _unknown_labels(wanted: Collection[str] | None, seen: set[str], path: Path) -> None:
    """A label asked for that the file never names is most likely a typo."""
    missing = sorted(set(wanted or ()) - seen)
    if missing:
        known = ", ".join(sorted(seen)) or "none"
        raise ValueError(f"{path}: no label {', '.join(missing)} (labels in the file: {known})")


def load_coco(path: str | Path, labels: Collection[str] | None = None) -> ExplicitBoxes:
    """A COCO detection file: ``images`` (``id``, ``file_name``), ``annotations``
    (``image_id``, ``bbox`` ``[x, y, width, height]``, ``category_id``, optional
    ``score``) and ``categories`` (``id``, ``name``). ``labels``: category names (or
    ids) to keep. Images listed without annotations get no region."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"cannot read COCO file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a COCO file is a JSON object with images and annotations")
    for section in ("images", "annotations"):
        if not isinstance(data.get(section), list):
            raise ValueError(f"{path}: no {section!r} list")
    categories: dict[object, str] = {}
    for i, cat in enumerate(data.get("categories") or []):
        if not isinstance(cat, dict) or "id" not in cat:
            raise ValueError(f"{path}: categories[{i}] needs an id")
        categories[cat["id"]] = str(cat.get("name", cat["id"]))
    names: dict[object, str] = {}
    found = _Collect()
    for i, img in enumerate(data["images"]):
        if (
            not isinstance(img, dict)
            or "id" not in img
            or not isinstance(img.get("file_name"), str)
        ):
            raise ValueError(f"{path}: images[{i}] needs an id and a file_name")
        names[img["id"]] = img["file_name"]
        found.image(img["file_name"])
    seen: set[str] = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise ValueError(f"{where} is not an object")
        if ann.get("image_id") not in names:
            raise ValueError(f"{where}: image_id {ann.get('image_id')!r} is not in images")
        cat = ann.get("category_id")
        label = categories.get(cat, str(cat)) if cat is not None else "box"
        seen.update((label, str(cat)))
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = (_number(v, where, "bbox") for v in bbox)
        box = _corners(x, y, x + w, y + h, where)
        score = _number(ann.get("score", 1.0), where, "score")
        if labels is None or label in labels or str(cat) in labels:
            found.add(names[ann["image_id"]], box, label, score)
    _unknown_labels(labels, seen | set(categories.values()), path)
    return found.source("coco")


def _label_files(folder: Path, suffix: str) -> Iterator[tuple[str, Path]]:
    """``(key, file)`` for each label file under ``folder``: the key is its relative
    path without the extension, as the image it belongs to is named."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    for file in sorted(folder.rglob(f"*{suffix}")):
        rel = PurePosixPath(file.relative_to(folder).as_posix())
        yield str(rel.with_suffix("")), file


def load_yolo(folder: str | Path, labels: Collection[str] | None = None) -> ExplicitBoxes:
    """A folder of YOLO label files, ``NAME.txt`` for image ``NAME.*``: one line per box,
    ``class cx cy width height [score]``, fractions of the image's width and height.
    Class names come from ``classes.txt`` in the folder when there is one (else the
    class number is the label). ``labels``: class numbers or names to keep."""
    folder = Path(folder)
    names: list[str] = []
    classes_file = folder / "classes.txt"
    if classes_file.is_file():
        names = [ln.strip() for ln in classes_file.read_text(encoding="utf-8").splitlines()]
    found = _Collect()
    seen: set[str] = set()
    for key, file in _label_files(folder, ".txt"):
        if file == classes_file:
            continue
        found.image(key)
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read YOLO file {file}: {exc}") from exc
        for n, line in enumerate(lines, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{file} line {n}"
            if len(fields) not in (5, 6):
                raise ValueError(f"{where}: expected 'class cx cy width height [score]'")
            if not fields[0].isdigit():
                raise ValueError(f"{where}: class must be a whole number, got {fields[0]!r}")
            cls = int(fields[0])
            cx, cy, w, h = (_number(v, where, "a coordinate") for v in fields[1:5])
            if not (0 <= cx <= 1 and 0 <= cy <= 1 and 0 < w <= 1 and 0 < h <= 1):
                raise ValueError(
                    f"{where}: YOLO coordinates are fractions of the image size (0..1)"
                )
            score = _number(fields[5], where, "score") if len(fields) == 6 else 1.0
            label = names[cls] if cls < len(names) and names[cls] else str(cls)
            seen.update((label, str(cls)))
            if labels is None or label in labels or str(cls) in labels:
                box = _corners(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, where)
                found.add(key, box, label, score)
    _unknown_labels(labels, seen | set(filter(None, names)), folder)
    return found.source("yolo", normalized=True, by_stem=True)


def load_voc(folder: str | Path, labels: Collection[str] | None = None) -> ExplicitBoxes:
    """A folder of Pascal VOC annotation files, ``NAME.xml`` for image ``NAME.*``: each
    ``<object>`` has a ``<name>`` and a ``<bndbox>`` with ``xmin ymin xmax ymax`` in
    pixels (VOC counts from 1: ``xmin - 1`` is the first column, ``xmax`` the end).
    ``labels``: object names to keep."""
    folder = Path(folder)
    found = _Collect()
    seen: set[str] = set()
    for key, file in _label_files(folder, ".xml"):
        try:
            root = ET.parse(file).getroot()
        except (OSError, ET.ParseError) as exc:
            raise ValueError(f"cannot read VOC file {file}: {exc}") from exc
        found.image(key)
        for i, obj in enumerate(root.iter("object")):
            where = f"{file}: object {i + 1}"
            label = (obj.findtext("name") or "").strip() or "box"
            seen.add(label)
            bndbox = obj.find("bndbox")
            if bndbox is None:
                raise ValueError(f"{where} has no <bndbox>")
            x0, y0, x1, y1 = (
                _number(bndbox.findtext(tag), where, f"<{tag}>")
                for tag in ("xmin", "ymin", "xmax", "ymax")
            )
            score = _number(obj.findtext("score") or 1.0, where, "<score>")
            if labels is None or label in labels:
                found.add(key, _corners(x0 - 1, y0 - 1, x1, y1, where), label, score)
    _unknown_labels(labels, seen, folder)
    return found.source("voc", by_stem=True)


def load_csv(path: str | Path, labels: Collection[str] | None = None) -> ExplicitBoxes:
    """A CSV file, one box per row: ``file,x0,y0,x1,y1[,label]`` in input pixels
    (half-open). A first row whose ``x0`` is not a number is a header; with a header,
    the label is the column called ``label`` (other columns are ignored), without one
    the sixth column. ``labels``: labels to keep."""
    path = Path(path)
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read CSV file {path}: {exc}") from exc
    label_col: int | None = 5
    start = 0
    if rows and len(rows[0]) >= 5:
        try:
            float(rows[0][1])
        except ValueError:
            header = [c.strip().lower() for c in rows[0]]
            label_col = header.index("label") if "label" in header else None
            start = 1
    found = _Collect()
    seen: set[str] = set()
    for n, row in enumerate(rows[start:], start + 1):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{path} line {n}"
        if len(row) < 5 or not row[0].strip():
            raise ValueError(f"{where}: expected file,x0,y0,x1,y1[,label], got {','.join(row)!r}")
        x0, y0, x1, y1 = (_number(v.strip(), where, "a coordinate") for v in row[1:5])
        label = "box"
        if label_col is not None and label_col < len(row) and row[label_col].strip():
            label = row[label_col].strip()
        seen.add(label)
        if labels is None or label in labels:
            found.add(row[0].strip(), _corners(x0, y0, x1, y1, where), label)
        else:
            found.image(row[0].strip())
    _unknown_labels(labels, seen, path)
    return found.source("csv")


LOADERS = {"coco": load_coco, "yolo": load_yolo, "voc": load_voc, "csv": load_csv}


def parse_format_spec(kind: str, rest: str) -> ExplicitBoxes:
    """``PATH[:LABEL,...]`` of ``--regions KIND=...`` as a source. A path that exists is
    taken whole (so a path may hold a colon)."""
    path, labels = rest, None
    head, sep, tail = rest.rpartition(":")
    if sep and head and not Path(rest).exists() and "/" not in tail and "\\" not in tail:
        path = head
        labels = {t.strip() for t in tail.split(",") if t.strip()} or None
    if not path:
        raise ValueError(f"{kind}= needs a path")
    return LOADERS[kind](path, labels)
