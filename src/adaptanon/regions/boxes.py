"""Regions given by the user: a boxes file (``--regions boxes=FILE``) or a mapping.

:class:`ExplicitBoxes` is also what the external detection formats
(:mod:`adaptanon.regions.formats`: COCO, YOLO, Pascal VOC, CSV) load into."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath

from adaptanon.regions.base import Detection, RegionQuery, RegionSource, validate_boxes


def _key(name: str) -> str:
    return str(name).replace("\\", "/")


class ExplicitBoxes(RegionSource):
    """Boxes given per image, looked up by relative path, then by file name. An image
    that is not listed gets no region (status ``no_regions``).

    Args:
        boxes: image name -> ``[x0, y0, x1, y1]`` boxes in input pixels (or, with
            ``normalized``, in fractions of the image's width and height).
        labels: image name -> one label per box (default ``box``).
        scores: image name -> one score per box (default 1).
        normalized: coordinates are fractions of the image size (YOLO), converted to
            pixels per image when it is seen.
        by_stem: keys are names without extension (``sub/img`` for ``sub/img.jpg``), as
            YOLO and Pascal VOC label files are named after their images.
        name: what :meth:`describe` says (``boxes``, ``coco``, ``yolo``, ...).
    """

    def __init__(
        self,
        boxes: Mapping[str, Sequence[Sequence[float]]],
        labels: Mapping[str, Sequence[str]] | None = None,
        scores: Mapping[str, Sequence[float]] | None = None,
        *,
        normalized: bool = False,
        by_stem: bool = False,
        name: str = "boxes",
    ) -> None:
        self.boxes = {_key(k): v for k, v in boxes.items()}
        self.labels = {_key(k): list(v) for k, v in (labels or {}).items()}
        self.scores = {_key(k): list(v) for k, v in (scores or {}).items()}
        self.normalized = normalized
        self.by_stem = by_stem
        self.name = name

    def _candidates(self, name: str) -> tuple[str, str]:
        """The keys that ``name`` may be listed under: relative path, then file name."""
        path = PurePosixPath(_key(name))
        if self.by_stem:
            return str(path.with_suffix("")), path.stem
        return str(path), path.name

    def _lookup_key(self, name: str) -> str | None:
        for key in self._candidates(name):
            if key in self.boxes:
                return key
        return None

    def lookup(self, name: str) -> Sequence[Sequence[float]]:
        """The raw boxes listed for the image called ``name`` (empty when not listed)."""
        key = self._lookup_key(name)
        return [] if key is None else self.boxes[key]

    def find_one(self, query: RegionQuery) -> list[Detection]:
        key = self._lookup_key(query.name)
        if key is None:
            return []
        raw = self.boxes[key]
        height, width = query.image.shape[-2], query.image.shape[-1]
        if self.normalized:
            raw = [[b[0] * width, b[1] * height, b[2] * width, b[3] * height] for b in raw]
        boxes = validate_boxes(raw, height, width)
        labels = self.labels.get(key) or ["box"] * len(boxes)
        scores = self.scores.get(key) or [1.0] * len(boxes)
        return [
            Detection(box, float(score), label)
            for box, label, score in zip(boxes, labels, scores, strict=True)
        ]

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """Keys that match no input, neither as a relative path nor as a file name."""
        known: set[str] = set()
        for name in names:
            known.update(self._candidates(name))
        return [k for k in self.boxes if k not in known]

    def describe(self) -> str:
        return self.name


def load_boxes_file(path: str | Path) -> ExplicitBoxes:
    """Read a JSON file mapping image names to lists of ``[x0, y0, x1, y1]`` boxes.

    ``NaN`` and ``Infinity`` are refused when the file is read."""

    def refuse(token: str) -> float:
        raise ValueError(f"{token} is not a valid coordinate")

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=refuse)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"cannot read boxes file {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"boxes file {path} must map image names to lists of boxes")
    return ExplicitBoxes(data)
