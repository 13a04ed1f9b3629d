"""A user's own inference code, as `--verify-with onnx_user:classify` calls it: PIL opens the
file, resizes the shorter side (bilinear), centre crops, normalizes with the ImageNet mean
and std, and onnxruntime runs the ONNX file named by $ADAPTANON_TEST_ONNX. No adaptanon code."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def load(path: str, resize: int, crop: int) -> np.ndarray:
    """``(1, 3, crop, crop)`` float32, as torchvision's Resize + CenterCrop + Normalize."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        im = im.resize(size, Image.BILINEAR)
        top, left = int(round((size[1] - crop) / 2.0)), int(round((size[0] - crop) / 2.0))
        px = np.asarray(im)[top : top + crop, left : left + crop].astype(np.float32) / 255.0
    return ((px - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


def scores(path: str, model: str, resize: int = 37, crop: int = 32) -> np.ndarray:
    """onnxruntime's output for the file."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: load(path, resize, crop)})[0][0]


def classify(path: str) -> int:
    """The class onnxruntime gives the file (the model in $ADAPTANON_TEST_ONNX)."""
    return int(np.argmax(scores(path, os.environ["ADAPTANON_TEST_ONNX"])))


def always_class_zero_plus_one(path: str) -> int:
    """A check that disagrees: the class after onnxruntime's."""
    return classify(path) + 1


def broken(path: str) -> int:
    """A check that raises."""
    raise RuntimeError("inference server unavailable")
