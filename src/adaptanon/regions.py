"""Regions to anonymize: boxes, masks, and pluggable region sources.

A box is ``(x0, y0, x1, y1)`` in integer input-pixel coordinates, half-open: it covers
columns ``x0 .. x1-1`` and rows ``y0 .. y1-1``. A :class:`RegionSource` finds the boxes of
one image; :class:`ExplicitBoxes` and :class:`SaliencyBox` are built in, and detectors
(faces, plates) plug in by subclassing it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptanon.preprocessing import ViewGeometry

Box = tuple[int, int, int, int]


def validate_boxes(boxes: Sequence[Sequence[float]], height: int, width: int) -> list[Box]:
    """Check boxes and clip them to a ``height x width`` image.

    Raises:
        ValueError: a box is not four numbers, has ``x1 <= x0`` or ``y1 <= y0``, or lies
            entirely outside the image.
    """
    out: list[Box] = []
    if not isinstance(boxes, list | tuple):
        raise ValueError(f"boxes must be a list of [x0, y0, x1, y1], got {boxes!r}")
    for raw in boxes:
        if (
            not isinstance(raw, list | tuple)
            or len(raw) != 4
            or not all(isinstance(v, int | float) for v in raw)
        ):
            raise ValueError(f"a box must be [x0, y0, x1, y1], got {raw!r}")
        x0, y0, x1, y1 = (int(round(v)) for v in raw)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"empty box {list(raw)}: need x0 < x1 and y0 < y1")
        c = (max(0, x0), max(0, y0), min(width, x1), min(height, y1))
        if c[2] <= c[0] or c[3] <= c[1]:
            raise ValueError(f"box {list(raw)} lies outside the {width}x{height} image")
        out.append(c)
    return out


def region_mask(height: int, width: int, boxes: Sequence[Box], shape: str = "rect") -> Tensor:
    """``(H, W)`` bool mask of the pixels inside any box (``rect``) or its inscribed ellipse."""
    if shape not in ("rect", "ellipse"):
        raise ValueError(f"region shape must be 'rect' or 'ellipse', got {shape!r}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        if shape == "rect":
            mask[y0:y1, x0:x1] = True
            continue
        ys = (torch.arange(y0, y1, dtype=torch.float32) + 0.5 - (y0 + y1) / 2) / ((y1 - y0) / 2)
        xs = (torch.arange(x0, x1, dtype=torch.float32) + 0.5 - (x0 + x1) / 2) / ((x1 - x0) / 2)
        mask[y0:y1, x0:x1] |= ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0
    return mask


def best_square(saliency: Tensor, size: int) -> tuple[int, int, int, int]:
    """The ``size x size`` square with the largest sum of ``saliency``.

    Args:
        saliency: ``(h, w)`` non-negative map.

    Returns:
        Half-open box ``(x0, y0, x1, y1)`` in map pixels.
    """
    h, w = saliency.shape
    size = min(size, h, w)
    # Box sums from an integral image: O(h*w) whatever the size.
    c = F.pad(saliency.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    sums = c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]
    flat = int(torch.argmax(sums))
    y0, x0 = divmod(flat, sums.shape[1])
    return x0, y0, x0 + size, y0 + size


class RegionSource(ABC):
    """Finds the regions to anonymize in one image.

    Sources that set ``uses_saliency`` receive the classifier's loss-gradient magnitude at
    its input view (computed in the same pass that finds the original class).
    """

    uses_saliency: bool = False

    @abstractmethod
    def find(
        self, name: str, image: Tensor, geometry: ViewGeometry | None, saliency: Tensor | None
    ) -> list[Box]:
        """Boxes for the image called ``name`` (its path relative to the input root).

        Args:
            image: ``(3, H, W)`` in ``[0, 1]``.
            geometry: where the classifier's view lies in the image, when known.
            saliency: ``(crop, crop)`` map at the view, for sources with ``uses_saliency``.
        """

    def describe(self) -> str:
        """Short text for manifests and reports."""
        return type(self).__name__


class ExplicitBoxes(RegionSource):
    """Boxes given per image, looked up by relative path, then by file name."""

    def __init__(self, boxes: Mapping[str, Sequence[Sequence[float]]]) -> None:
        self.boxes = {str(k).replace("\\", "/"): v for k, v in boxes.items()}

    def find(
        self, name: str, image: Tensor, geometry: ViewGeometry | None, saliency: Tensor | None
    ) -> list[Box]:
        key = name.replace("\\", "/")
        raw = self.boxes.get(key, self.boxes.get(Path(key).name, []))
        return validate_boxes(raw, image.shape[-2], image.shape[-1])

    def describe(self) -> str:
        return "boxes"


def load_boxes_file(path: str | Path) -> ExplicitBoxes:
    """Read a JSON file mapping image names to lists of ``[x0, y0, x1, y1]`` boxes."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read boxes file {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"boxes file {path} must map image names to lists of boxes")
    return ExplicitBoxes(data)


class SaliencyBox(RegionSource):
    """The paper's ImageNet simulation: the ``size x size`` square at the classifier's view
    with the largest sum of absolute loss gradients, mapped back to input pixels."""

    uses_saliency = True

    def __init__(self, size: int = 50) -> None:
        if size < 1:
            raise ValueError(f"saliency box size must be >= 1, got {size}")
        self.size = size

    def find(
        self, name: str, image: Tensor, geometry: ViewGeometry | None, saliency: Tensor | None
    ) -> list[Box]:
        if saliency is None or geometry is None:
            raise ValueError("saliency regions need a classifier with a Preprocess geometry")
        view_box = best_square(saliency, self.size)
        return [geometry.view_box_to_input(view_box)]

    def describe(self) -> str:
        return f"saliency({self.size})"


def parse_region_source(spec: str) -> RegionSource:
    """``saliency``, ``saliency:SIZE`` or ``boxes=FILE`` as a region source."""
    if spec == "saliency" or spec.startswith("saliency:"):
        size = spec.partition(":")[2]
        return SaliencyBox(int(size)) if size else SaliencyBox()
    if spec.startswith("boxes="):
        return load_boxes_file(spec.partition("=")[2])
    raise ValueError(f"unknown regions {spec!r}: use saliency, saliency:SIZE or boxes=FILE")
