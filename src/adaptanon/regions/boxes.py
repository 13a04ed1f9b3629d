"""Regions given by the user: a boxes file (``--regions boxes=FILE``) or a mapping."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath

from adaptanon.regions.base import Detection, RegionQuery, RegionSource, validate_boxes


def _key(name: str) -> str:
    return str(name).replace("\\", "/")


class ExplicitBoxes(RegionSource):
    """Boxes given per image, looked up by relative path, then by file name. An image
    that is not listed gets no region (status ``no_regions``)."""

    def __init__(self, boxes: Mapping[str, Sequence[Sequence[float]]]) -> None:
        self.boxes = {_key(k): v for k, v in boxes.items()}

    def lookup(self, name: str) -> Sequence[Sequence[float]]:
        """The raw boxes listed for the image called ``name`` (empty when not listed)."""
        key = _key(name)
        return self.boxes.get(key, self.boxes.get(PurePosixPath(key).name, []))

    def find_one(self, query: RegionQuery) -> list[Detection]:
        raw = self.lookup(query.name)
        boxes = validate_boxes(raw, query.image.shape[-2], query.image.shape[-1])
        return [Detection(box) for box in boxes]

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """Keys that match no input, neither as a relative path nor as a file name."""
        known: set[str] = set()
        for name in names:
            key = _key(name)
            known.update((key, PurePosixPath(key).name))
        return [k for k in self.boxes if k not in known]

    def describe(self) -> str:
        return "boxes"


def load_boxes_file(path: str | Path) -> ExplicitBoxes:
    """Read a JSON file mapping image names to lists of ``[x0, y0, x1, y1]`` boxes.

    ``NaN`` and ``Infinity`` are refused when the file is read."""

    def refuse(token: str) -> float:
        raise ValueError(f"{token} is not a valid coordinate")

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=refuse)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"cannot read boxes file {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"boxes file {path} must map image names to lists of boxes")
    return ExplicitBoxes(data)
