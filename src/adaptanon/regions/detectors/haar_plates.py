"""Licence plates, weak fallback (``plates:haar``): OpenCV 4.x's Haar cascades for
(Russian-style) plates (``haarcascade_russian_plate_number.xml``, Apache-2.0, shipped in
``opencv-python-headless<5``; OpenCV 5 dropped them).

They miss many plates and fire on other text and grilles (see docs/results.md for recall
on European plates): ``plates`` (:mod:`.text_plates`) finds plates as plate-shaped text. ``plate_threshold`` is
the cascade's ``minNeighbors`` (raw detections that must agree); the score is the number
that did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptanon.regions.detectors.common import (
    DEFAULT_PLATE_THRESHOLD,
    Detector,
    DetectorOptions,
    missing_extra,
)

CASCADE = "haarcascade_russian_plate_number.xml"
"""The cascade file in ``cv2.data.haarcascades`` (the pip wheels do not ship the other
plate cascade, ``haarcascade_licence_plate_rus_16stages.xml``)."""
SCALE_FACTOR = 1.05
MIN_PLATE = (36, 12)
"""Smallest plate searched for, width x height in detection pixels."""


class HaarPlates(Detector):
    """Plates found by an OpenCV Haar cascade; label ``plate``."""

    label = "plate"

    def __init__(self, options: DetectorOptions | None = None) -> None:
        super().__init__(options or DetectorOptions())
        threshold = self.options.plate_threshold
        self.min_neighbors = DEFAULT_PLATE_THRESHOLD if threshold is None else int(threshold)
        if threshold is not None and (threshold != self.min_neighbors or threshold < 0):
            raise ValueError(
                f"plates:haar takes a whole plate threshold (minNeighbors), got {threshold:g}"
            )
        try:
            import cv2
        except ImportError as exc:
            raise missing_extra("plates:haar", "plates", exc) from exc
        self.cv2 = cv2
        path = Path(getattr(cv2, "data").haarcascades) / CASCADE  # noqa: B009 - untyped
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ValueError(
                f"OpenCV has no {path.name} (OpenCV 5 dropped the plate cascades): "
                "pip install 'opencv-python-headless<5'"
            )

    def detect(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        cv2 = self.cv2
        out = []
        for img in images:
            gray = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
            rects, neighbours = self.cascade.detectMultiScale2(
                gray,
                scaleFactor=SCALE_FACTOR,
                minNeighbors=self.min_neighbors,
                minSize=MIN_PLATE,
            )
            xywh = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
            out.append((boxes, np.asarray(neighbours, dtype=np.float32).reshape(-1)))
        return out

    def describe(self) -> str:
        o = self.options
        return f"plates(haar>={self.min_neighbors},x{o.box_scale:g})"
