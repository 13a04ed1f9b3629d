"""Licence plates with ``platedet`` (``plates:platedet``): a YOLO segmentation model
exported to ONNX (640x640, float16), trained mostly on Brazilian plates.

**AGPL-3.0.** adaptanon does not depend on it, ship it or install it: users who accept
its licence install it themselves (``pip install --no-deps platedet==0.0.2`` plus
``onnxruntime``); this module only finds its weights inside the installed package and
runs them with onnxruntime. The image is letterboxed to 640x640 (grey 114 padding), RGB
in ``[0, 1]``; output ``(1, 4 + classes + 32, 8400)``: centre, size, class scores and
mask coefficients (masks are not used). Boxes are kept above ``plate_threshold`` (a
score in ``(0, 1)``, default 0.25) and suppressed at IoU 0.45 in numpy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adaptanon.regions.detectors.common import (
    Detector,
    DetectorOptions,
    nms,
    onnx_session,
)

DEFAULT_THRESHOLD = 0.25
NMS_IOU = 0.45
MASK_COEFFICIENTS = 32
INSTALL = "pip install --no-deps platedet==0.0.2 onnxruntime (AGPL-3.0: read its licence first)"


def platedet_path() -> Path:
    """``artifacts/platedet.onnx`` inside the installed ``platedet`` package."""
    spec = importlib.util.find_spec("platedet")
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "artifacts" / "platedet.onnx"
        if path.is_file():
            return path
    raise ValueError(f"--regions plates:platedet needs the platedet package: {INSTALL}")


class Platedet(Detector):
    """Plates found by platedet's YOLO model; label ``plate``, score the class score."""

    label = "plate"

    def __init__(self, options: DetectorOptions | None = None, model_path: str | None = None):
        super().__init__(options or DetectorOptions())
        threshold = self.options.plate_threshold
        self.threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        if not 0 < self.threshold < 1:
            raise ValueError(
                f"plates:platedet takes a plate threshold in (0, 1), got {self.threshold:g}"
            )
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"--regions plates:platedet needs onnxruntime: {INSTALL}") from exc
        path = Path(model_path) if model_path else platedet_path()
        self.session = onnx_session(path, self.options.device)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.size = int(inp.shape[-1])

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """``(1, 3, S, S)`` float16 input and the scale and padding that placed the image."""
        h, w = image.shape[:2]
        r = min(self.size / h, self.size / w)
        nh, nw = max(1, round(h * r)), max(1, round(w * r))
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
        t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)
        top, left = (self.size - nh) // 2, (self.size - nw) // 2
        blob = torch.full((1, 3, self.size, self.size), 114 / 255)
        blob[:, :, top : top + nh, left : left + nw] = t
        return blob.numpy().astype(np.float16), r, left, top

    def detect(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for image in images:
            blob, r, left, top = self.letterbox(image)
            preds = self.session.run(None, {self.input_name: blob})[0][0].astype(np.float32).T
            scores = preds[:, 4:-MASK_COEFFICIENTS].max(1)
            keep = scores > self.threshold
            cx, cy, w, h = preds[keep, :4].T
            boxes = (
                np.stack(
                    [cx - w / 2 - left, cy - h / 2 - top, cx + w / 2 - left, cy + h / 2 - top], 1
                )
                / r
            )
            chosen = nms(boxes, scores[keep], NMS_IOU)
            out.append((boxes[chosen].reshape(-1, 4), scores[keep][chosen]))
        return out

    def describe(self) -> str:
        return f"plates(platedet>{self.threshold:g},x{self.options.box_scale:g})"
