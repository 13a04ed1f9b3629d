"""Regions to anonymize: boxes, masks and the :class:`RegionSource` interface.

A box is ``(x0, y0, x1, y1)`` in integer input-pixel coordinates, half-open: it covers
columns ``x0 .. x1-1`` and rows ``y0 .. y1-1``. A :class:`RegionSource` answers a batch of
images with :class:`Regions` per image: detections (box, score, label) or an error.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from adaptanon.preprocessing import ViewGeometry
from adaptanon.records import Box


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def validate_boxes(boxes: Sequence[Sequence[float]], height: int, width: int) -> list[Box]:
    """Check boxes and clip them to a ``height x width`` image.

    Raises:
        ValueError: a box is not four finite numbers (booleans are not numbers), has ``x1 <= x0`` or ``y1 <= y0``, or lies
            entirely outside the image.
    """
    out: list[Box] = []
    if not isinstance(boxes, list | tuple):
        raise ValueError(f"boxes must be a list of [x0, y0, x1, y1], got {boxes!r}")
    for raw in boxes:
        if (
            not isinstance(raw, list | tuple)
            or len(raw) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
        ):
            raise ValueError(f"a box must be [x0, y0, x1, y1], got {raw!r}")
        if not all(_finite(v) for v in raw):
            raise ValueError(f"a box must hold finite numbers, got {list(raw)}")
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


@dataclass(frozen=True)
class Detection:
    """One region: a box in input pixels, the finder's confidence and what it is."""

    box: Box
    score: float = 1.0
    label: str = "region"


@dataclass(frozen=True)
class Regions:
    """What a region source found in one image: detections, or why it could not say."""

    detections: tuple[Detection, ...] = ()
    error: str | None = None

    @property
    def boxes(self) -> list[Box]:
        """The boxes of the detections."""
        return [d.box for d in self.detections]


@dataclass(frozen=True)
class RegionQuery:
    """One image as a region source sees it.

    Attributes:
        name: the image's path relative to its input root (``/``-separated).
        image: ``(3, H, W)`` in ``[0, 1]``.
        geometry: where the classifier's view lies in the image, when known.
        saliency: ``(crop, crop)`` absolute loss-gradient map at the view, for sources
            with ``uses_saliency`` (computed in the pass that finds the original class).
    """

    name: str
    image: Tensor
    geometry: ViewGeometry | None = None
    saliency: Tensor | None = None


class RegionSource(ABC):
    """Finds the regions to anonymize in a batch of images.

    Sources that set ``uses_saliency`` receive the classifier's loss-gradient magnitude at
    its input view. Per-image sources implement :meth:`find_one`; batched ones (detectors)
    override :meth:`find`.
    """

    uses_saliency: bool = False

    def find(self, queries: Sequence[RegionQuery]) -> list[Regions]:
        """One :class:`Regions` per query, in order; a ``ValueError`` for one image becomes
        that image's ``error``."""
        out = []
        for query in queries:
            try:
                out.append(Regions(tuple(self.find_one(query))))
            except ValueError as exc:
                out.append(Regions(error=str(exc)))
        return out

    @abstractmethod
    def find_one(self, query: RegionQuery) -> list[Detection]:
        """The detections in one image."""

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """What this source was told about that matches none of ``names`` (the inputs'
        relative paths), e.g. keys of a boxes file; empty for sources that find regions."""
        return []

    def at_most(self, max_side: int) -> RegionSource:
        """This source looking at images downscaled so that their longer side is at most
        ``max_side`` pixels, for sources that find regions in the pixels (detectors; the
        boxes still come back in input pixels); a source that reads its boxes from
        elsewhere returns itself. Videos detect on such a copy of each frame."""
        return self

    def describe(self) -> str:
        """Short text for manifests and reports."""
        return type(self).__name__
