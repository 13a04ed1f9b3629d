"""Can a plate still be read? OCR on each ground-truth plate box of the original, the
plainly anonymized and the final image, scored against the plate's true text.

Ground truth: a ``plates.csv`` beside the images (or a file given with
``--plates-truth``), columns ``file,x0,y0,x1,y1,text`` (input pixels, half-open; one row
per plate). The reader is PP-OCRv4's recognizer restricted to ``0-9 A-Z``
(:class:`~adaptanon.regions.detectors.ppocr.TextRecognizer`). Texts are compared upper
case with everything but letters and digits dropped; a plate's *correct characters* are
``max(0, len(truth) - edit_distance(read, truth))``: all of them for an exact reading, none
for a reading as far from the truth as nothing at all.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from adaptanon.evaluate.labels import input_root
from adaptanon.evaluate.rows import ImageRow
from adaptanon.io.codecs import to_pixels
from adaptanon.io.images import InputImage
from adaptanon.method import Outcome
from adaptanon.records import Box

PLATES_FILE = "plates.csv"
COLUMNS = ("file", "x0", "y0", "x1", "y1", "text")


@dataclass(frozen=True)
class Plate:
    """One ground-truth plate: its box in input pixels and its text (normalized)."""

    box: Box
    text: str


def normalize(text: str) -> str:
    """``text`` upper case, letters and digits only (``"ab-12 c"`` -> ``"AB12C"``)."""
    return "".join(c for c in text.upper() if c.isalnum())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def correct_chars(read: str, truth: str) -> int:
    """Characters of ``truth`` read correctly: ``len(truth)`` minus the edit distance,
    at least 0 (both normalized first)."""
    read, truth = normalize(read), normalize(truth)
    return max(0, len(truth) - edit_distance(read, truth))


def read_plate_truth(path: Path) -> dict[str, list[Plate]]:
    """``file -> plates`` from a CSV with the columns :data:`COLUMNS`.

    Raises:
        ValueError: a column is missing, a coordinate is not a number, a box is empty or
            a text has no letter or digit.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not set(COLUMNS) <= set(reader.fieldnames):
            raise ValueError(f"{path} needs the columns {','.join(COLUMNS)}")
        out: dict[str, list[Plate]] = {}
        for line, rec in enumerate(reader, start=2):
            try:
                x0, y0, x1, y1 = (round(float(rec[k])) for k in COLUMNS[1:5])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: a box needs four numbers") from exc
            text = normalize(rec["text"] or "")
            if x1 <= x0 or y1 <= y0 or not text:
                raise ValueError(f"{path}:{line}: empty box or text")
            out.setdefault(rec["file"].strip(), []).append(Plate((x0, y0, x1, y1), text))
    return out


def find_plate_truth(
    items: Sequence[InputImage], path: Path | None = None
) -> dict[str, list[Plate]]:
    """Plates of each image keyed by resolved image path: from ``path``, else from the
    :data:`PLATES_FILE` beside the images (in each input root). An entry names a file
    relative to that folder, or a bare file name."""
    tables: dict[Path, dict[str, list[Plate]]] = {}
    given = read_plate_truth(path) if path is not None else None
    out: dict[str, list[Plate]] = {}
    for item in items:
        root = input_root(item)
        if given is not None:
            table = given
        elif root not in tables:
            csv_path = root / PLATES_FILE
            table = tables[root] = read_plate_truth(csv_path) if csv_path.is_file() else {}
        else:
            table = tables[root]
        plates = table.get(item.relative.as_posix(), table.get(item.path.name))
        if plates:
            out[str(item.path.resolve())] = plates
    return out


class PlateReader:
    """Reads the text in plate boxes of ``(3, H, W)`` images in ``[0, 1]``.

    Args:
        device: where onnxruntime should run (``cpu``, ``cuda[:N]``).
    """

    def __init__(self, device: str = "cpu") -> None:
        from adaptanon.regions.detectors.ppocr import TextRecognizer

        self.recognizer = TextRecognizer(device)

    def read(self, image: Tensor, boxes: Sequence[Box]) -> list[str]:
        """The text read in each box of ``image``."""
        pixels = to_pixels(image)
        height, width = pixels.shape[:2]
        crops = []
        for x0, y0, x1, y1 in boxes:
            x0, y0 = max(0, x0), max(0, y0)
            x1, y1 = min(width, max(x1, x0 + 1)), min(height, max(y1, y0 + 1))
            crops.append(np.ascontiguousarray(pixels[y0:y1, x0:x1]))
        return [text for text, _ in self.recognizer.read(crops)]

    def score(self, image: Tensor, plates: Sequence[Plate]) -> int:
        """Correct characters read in ``plates`` of ``image``, summed."""
        texts = self.read(image, [p.box for p in plates])
        return sum(correct_chars(t, p.text) for t, p in zip(texts, plates, strict=True))


@dataclass
class PlateCheck:
    """Plate readability for an evaluation: the ground truth keyed by resolved image path
    (:func:`find_plate_truth`) and the reader."""

    truth: Mapping[str, Sequence[Plate]]
    reader: PlateReader

    def add(self, rows: Sequence[ImageRow], outcomes: Sequence[Outcome]) -> None:
        """Fill the ``plate_*`` fields of the rows of images with ground-truth plates."""
        for row, out in zip(rows, outcomes, strict=True):
            plates = self.truth.get(row.path)
            if not plates or out.images is None:
                continue
            row.plates_checked = len(plates)
            row.plate_chars = sum(len(p.text) for p in plates)
            row.plate_chars_original = self.reader.score(out.images.original, plates)
            row.plate_chars_plain = self.reader.score(out.images.anonymized, plates)
            row.plate_chars_final = self.reader.score(out.images.final, plates)
