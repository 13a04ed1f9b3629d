"""Licence plates as plate-shaped text (``--regions plates``): PP-OCRv4's text detector
and recognizer (:mod:`.ppocr`, Apache-2.0, inside ``rapidocr-onnxruntime``).

Text is detected on the whole image at its resolution (at most ``max_side``) and, for
small plates, on overlapping tiles upscaled twice; a box found in both is kept once. Words
on one line (a plate's text is often split at its gaps) are joined into lines. Each line
is read with the recognizer restricted to ``0-9 A-Z`` and kept as a plate when it looks
like one: width over height within :data:`ASPECT`, a number of characters within
:data:`CHARS`, read with a mean confidence of at least ``plate_threshold`` (default
:data:`DEFAULT_THRESHOLD`); the bounds were chosen on European plates and ImageNet photos
(``bench/plates.py``). The kept text box is grown to the plate around it
(:data:`PLATE_GROW`: a plate's border and its national band lie outside the text) before
``box_scale`` applies. The score is the recognizer's confidence.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np

from adaptanon.regions.detectors.common import Detector, DetectorOptions, nms
from adaptanon.regions.detectors.ppocr import TextDetector, TextRecognizer

DEFAULT_THRESHOLD = 0.5
"""Smallest mean recognizer confidence of a plate's characters."""
ASPECT = (2.0, 10.0)
"""Width over height a plate's line of text may have."""
CHARS = (4, 10)
"""Fewest and most characters (``0-9 A-Z``) a plate's text may have."""
MIN_HEIGHT = 6
"""Lowest text line, in detection pixels, read as a plate."""
PLATE_GROW = (1.2, 1.4)
"""A plate's width and height over its text's (around the centre)."""
TILE = 640
"""Side of the tiles (detection pixels) searched at twice the resolution."""
TILE_OVERLAP = 96
DUPLICATE_IOU = 0.5


def tiles(height: int, width: int, size: int, overlap: int) -> Iterator[tuple[int, int, int, int]]:
    """Windows ``(x0, y0, x1, y1)`` of at most ``size x size`` covering the image, each
    overlapping its neighbours by at least ``overlap`` pixels."""
    step = max(1, size - overlap)

    def starts(n: int) -> list[int]:
        if n <= size:
            return [0]
        count = -(-(n - size) // step) + 1
        return [round(i * (n - size) / (count - 1)) for i in range(count)]

    for y0 in starts(height):
        for x0 in starts(width):
            yield x0, y0, min(width, x0 + size), min(height, y0 + size)


def same_line(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether boxes ``a`` and ``b`` are words of one line: heights within a factor 1.5,
    overlapping vertically by more than half the lower one, and a horizontal gap below the
    taller one's height."""
    ha, hb = a[3] - a[1], b[3] - b[1]
    overlap = min(a[3], b[3]) - max(a[1], b[1])
    gap = max(a[0], b[0]) - min(a[2], b[2])
    return max(ha, hb) < 1.5 * min(ha, hb) and overlap > 0.5 * min(ha, hb) and gap < max(ha, hb)


def join_lines(boxes: np.ndarray) -> np.ndarray:
    """``(n, 4)`` boxes with the words of each line (:func:`same_line`) joined into one."""
    merged = [[float(v) for v in box] for box in boxes]
    joined = True
    while joined:
        joined = False
        for i, j in itertools.combinations(range(len(merged)), 2):
            a, b = merged[i], merged[j]
            if same_line(a, b):
                merged[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                del merged[j]
                joined = True
                break
    return np.asarray(merged, dtype=np.float32).reshape(-1, 4)


def grow(boxes: np.ndarray, fx: float, fy: float, height: int, width: int) -> np.ndarray:
    """``(n, 4)`` boxes with width times ``fx`` and height times ``fy`` around their
    centres, clipped to a ``height x width`` image."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * np.array([fx, fy], dtype=np.float32)
    out = np.concatenate([c - half, c + half], 1)
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out


class TextPlates(Detector):
    """Plates found as plate-shaped text; label ``plate``, score the reading confidence.

    Args:
        options: detector options; ``plate_threshold`` is the confidence in ``(0, 1)``.
        small: also search overlapping tiles at twice the resolution, for small plates.
    """

    label = "plate"

    def __init__(self, options: DetectorOptions | None = None, small: bool = True) -> None:
        super().__init__(options or DetectorOptions())
        threshold = self.options.plate_threshold
        self.threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        if not 0 < self.threshold < 1:
            raise ValueError(f"plates takes a plate threshold in (0, 1), got {self.threshold:g}")
        self.small = small
        self.detector = TextDetector(self.options.device)
        self.recognizer = TextRecognizer(self.options.device)

    def text_boxes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Text boxes ``(n, 4)`` of one ``(h, w, 3)`` uint8 RGB image at its resolution
        and, with ``small``, on tiles at twice it; duplicates suppressed; and scores."""
        found = [self.detector.boxes(image)]
        if self.small:
            height, width = image.shape[:2]
            for x0, y0, x1, y1 in tiles(height, width, TILE, TILE_OVERLAP):
                boxes, scores = self.detector.boxes(image[y0:y1, x0:x1], 2.0)
                found.append((boxes + np.array([x0, y0, x0, y0], np.float32), scores))
        boxes = np.concatenate([f[0] for f in found])
        scores = np.concatenate([f[1] for f in found])
        keep = nms(boxes, scores, DUPLICATE_IOU)
        return boxes[keep], scores[keep]

    def plates(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Plate boxes ``(n, 4)`` in one image's pixels, their scores and the text read
        in each."""
        boxes, _ = self.text_boxes(image)
        lines = join_lines(boxes)
        size = lines[:, 2:] - lines[:, :2]
        shaped = (
            (size[:, 1] >= MIN_HEIGHT)
            & (size[:, 0] >= ASPECT[0] * size[:, 1])
            & (size[:, 0] <= ASPECT[1] * size[:, 1])
        )
        lines = lines[shaped]
        crops = [
            image[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))]
            for x0, y0, x1, y1 in lines
        ]
        read = self.recognizer.read(crops)
        keep = [CHARS[0] <= len(t) <= CHARS[1] and c >= self.threshold for t, c in read]
        plates = grow(lines[keep], *PLATE_GROW, *image.shape[:2])
        scores = np.asarray([c for (_, c), k in zip(read, keep, strict=True) if k], np.float32)
        return plates, scores, [t for (t, _), k in zip(read, keep, strict=True) if k]

    def detect(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.plates(image)[:2] for image in images]

    def describe(self) -> str:
        tiles_note = "+tiles" if self.small else ""
        return f"plates(text{tiles_note}>{self.threshold:g},x{self.options.box_scale:g})"
