"""PP-OCRv4 text detection (DB) and recognition (CTC), Apache-2.0: the ONNX files inside
the ``rapidocr-onnxruntime`` wheel (``rapidocr_onnxruntime/models/``), run here with
onnxruntime and our own pre- and post-processing, so neither rapidocr's code nor its
dependencies (``opencv-python``, which would sit beside ``opencv-python-headless``;
``pyclipper``; ``shapely``) are needed: install it with ``pip install --no-deps``.

Detection: the image, RGB scaled to ``[-1, 1]``, resized so that its sides are multiples
of 32; the output is a text probability map at the input's size. Pixels above 0.3 form
text regions (dilated by 2x2, as PaddleOCR does); each region's minimum-area rectangle
is scored by the mean probability inside it and grown by ``area * 1.6 / perimeter`` on
every side (DB's unclip, exact for a rectangle). Recognition: each crop resized to height
48 (RGB in ``[-1, 1]``, zero-padded on the right to the batch's widest), a CTC output
over the model's 6623 characters (stored in the ONNX file's metadata) plus blank and
space, decoded greedily; an ``alphabet`` restricts the decoding to those characters.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptanon.regions.detectors.common import onnx_session

INSTALL = "pip install --no-deps rapidocr-onnxruntime==1.4.4"
DET_MODEL = "ch_PP-OCRv4_det_infer.onnx"
REC_MODEL = "ch_PP-OCRv4_rec_infer.onnx"
BINARY_THRESHOLD = 0.3
UNCLIP_RATIO = 1.6
REC_HEIGHT = 48
REC_BATCH = 8
PLATE_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""What a licence plate's text is read as (letters upper case)."""


def ppocr_path(name: str) -> Path:
    """``models/NAME`` inside the installed ``rapidocr_onnxruntime`` package (found
    without importing it, which needs its own dependencies)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise ValueError(
        "plates need PP-OCR's models from the rapidocr-onnxruntime package: "
        f"pip install 'adaptanon[plates]' && {INSTALL}"
    )


def _cv2() -> Any:
    """OpenCV, after checking that onnxruntime is there too."""
    try:
        import cv2
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            f"plates need the 'plates' extra ({exc.name or exc} is missing): "
            f"pip install 'adaptanon[plates]' && {INSTALL}"
        ) from exc
    return cv2


def _normalize(image: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB -> ``(3, h, w)`` float32 in ``[-1, 1]``."""
    return (image.astype(np.float32).transpose(2, 0, 1) / 255 - 0.5) / 0.5


class TextDetector:
    """PP-OCRv4's DB text detector.

    Args:
        device: where the classifier runs (``cpu``, ``cuda[:N]``); onnxruntime uses CUDA
            there when it can.
        box_threshold: smallest mean text probability inside a kept box.
    """

    def __init__(self, device: str = "cpu", box_threshold: float = 0.5) -> None:
        self.cv2 = _cv2()
        self.session = onnx_session(ppocr_path(DET_MODEL), device)
        self.input_name = self.session.get_inputs()[0].name
        self.box_threshold = box_threshold

    @property
    def provider(self) -> str:
        """The execution provider onnxruntime runs on."""
        return str(self.session.get_providers()[0])

    def probability(self, image: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Text probability ``(h', w')`` of a ``(h, w, 3)`` uint8 RGB image resized by
        about ``scale`` to sides that are multiples of 32 (at least 32)."""
        h, w = image.shape[:2]
        size = (max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32))
        resized = self.cv2.resize(np.ascontiguousarray(image), size)
        blob = _normalize(resized)[None]
        return np.asarray(self.session.run(None, {self.input_name: blob})[0][0, 0])

    def boxes(self, image: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned text boxes ``(n, 4)`` ``x0 y0 x1 y1`` in the pixels of the
        ``(h, w, 3)`` uint8 RGB ``image`` (detected at ``scale``), and their scores."""
        cv2 = self.cv2
        prob = self.probability(image, scale)
        mask = cv2.dilate((prob > BINARY_THRESHOLD).astype(np.uint8), np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        fy, fx = image.shape[0] / prob.shape[0], image.shape[1] / prob.shape[1]
        boxes, scores = [], []
        for contour in contours:
            centre, (rw, rh), angle = cv2.minAreaRect(contour)
            if min(rw, rh) < 3:
                continue
            corners = cv2.boxPoints((centre, (rw, rh), angle))
            x0, y0 = np.floor(corners.min(0)).astype(int).clip(0)
            x1, y1 = np.ceil(corners.max(0)).astype(int)
            x1, y1 = min(x1, prob.shape[1] - 1), min(y1, prob.shape[0] - 1)
            inside = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
            cv2.fillPoly(inside, [np.round(corners - (x0, y0)).astype(np.int32)], 1)
            score = float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], inside)[0])
            if score < self.box_threshold:
                continue
            grow = rw * rh * UNCLIP_RATIO / (2 * (rw + rh))
            corners = cv2.boxPoints((centre, (rw + 2 * grow, rh + 2 * grow), angle))
            (bx0, by0), (bx1, by1) = corners.min(0), corners.max(0)
            boxes.append([bx0 * fx, by0 * fy, bx1 * fx, by1 * fy])
            scores.append(score)
        out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        out[:, 0::2] = out[:, 0::2].clip(0, image.shape[1])
        out[:, 1::2] = out[:, 1::2].clip(0, image.shape[0])
        return out, np.asarray(scores, dtype=np.float32)


class TextRecognizer:
    """PP-OCRv4's CTC text recognizer.

    Args:
        device: as for :class:`TextDetector`.
        alphabet: read only these characters (case as given; None: all the model's).
    """

    def __init__(self, device: str = "cpu", alphabet: str | None = PLATE_ALPHABET) -> None:
        self.cv2 = _cv2()
        self.session = onnx_session(ppocr_path(REC_MODEL), device)
        self.input_name = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        self.characters = ["", *meta["character"].splitlines(), " "]
        allowed = np.ones(len(self.characters), dtype=bool)
        if alphabet is not None:
            allowed = np.array([c == "" or c in alphabet for c in self.characters])
        self.allowed = allowed

    def read(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """The text of each ``(h, w, 3)`` uint8 RGB crop (one line of text) and the mean
        probability of its characters (0 for no text)."""
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / crops[i].shape[0])
        for start in range(0, len(order), REC_BATCH):
            batch = order[start : start + REC_BATCH]
            widths = [
                max(1, math.ceil(REC_HEIGHT * crops[i].shape[1] / max(crops[i].shape[0], 1)))
                for i in batch
            ]
            blob = np.zeros((len(batch), 3, REC_HEIGHT, max(*widths, 320)), np.float32)
            for k, (i, width) in enumerate(zip(batch, widths, strict=True)):
                resized = self.cv2.resize(np.ascontiguousarray(crops[i]), (width, REC_HEIGHT))
                blob[k, :, :, :width] = _normalize(resized)
            probs = self.session.run(None, {self.input_name: blob})[0]
            for k, i in enumerate(batch):
                out[i] = self.decode(probs[k])
        return out

    def decode(self, probs: np.ndarray) -> tuple[str, float]:
        """Greedy CTC decoding of ``(T, classes)`` probabilities within the alphabet."""
        probs = np.where(self.allowed, probs, 0.0)
        best = probs.argmax(1)
        keep = (best != 0) & np.concatenate([[True], best[1:] != best[:-1]])
        text = "".join(self.characters[j] for j in best[keep])
        confidence = float(probs[keep, best[keep]].mean()) if keep.any() else 0.0
        return text, confidence
