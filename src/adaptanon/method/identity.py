"""Can the person be recognized? Face descriptors, distances and identification.

A face-recognition model maps an aligned face to a 128-d descriptor; two photos of the same
person lie within :data:`VERIFY_THRESHOLD` (0.6, dlib's) of each other. The model is dlib's
ResNet face descriptor (LFW 99.38%) with dlib's 5-point landmark model, both from the
PyPI package ``face-recognition-models`` (CC0) run by ``dlib-bin`` (Boost licence):
``pip install 'adaptanon[privacy]'``. The 68-point landmark model is never used (its
training data forbids commercial use).

The attacker is assumed to align as well as possible: landmarks are located on the
*original* photo and the same landmarks cut the face chip from the anonymized one
(:meth:`FaceIdentity.landmarks`, :meth:`FaceIdentity.descriptor`). Images are ``(H, W, 3)``
uint8 RGB arrays or ``(3, H, W)`` float tensors in ``[0, 1]``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adaptanon.records import Box

VERIFY_THRESHOLD = 0.6
"""dlib's same-person threshold on the Euclidean distance of two descriptors."""

DEFAULT_MIN_DISTANCE = 0.4
"""Default ``--min-identity-distance``: a written face closer than this to its original
is still the person. Not dlib's 0.6: a face chip whose face is gone (a solid mask) still
lies within 0.6 of its original about half the time (outline, hair and background stay
in the chip, and such descriptors sit near 0.6 from most faces). At 0.4 the paper's blur
is flagged about as often as its faces are identified rank-1, the default face filter and
the mask rarely (docs/results.md, bench/identity.py)."""

LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
INSTALL_HINT = "pip install 'adaptanon[privacy]' (dlib-bin and face-recognition-models)"


class IdentityUnavailable(RuntimeError):
    """The face-recognition model (the ``privacy`` extra) is not installed."""


def model_dir() -> Path:
    """The folder holding the two model files of ``face-recognition-models``.

    The package is located without importing it (its ``__init__`` needs ``pkg_resources``,
    gone from recent setuptools). Raises :class:`IdentityUnavailable` when it is missing.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        folder = Path(root) / "models"
        if (folder / LANDMARKS_FILE).is_file() and (folder / DESCRIPTOR_FILE).is_file():
            return folder
    raise IdentityUnavailable(f"face-recognition-models is not installed: {INSTALL_HINT}")


def available() -> bool:
    """True when dlib and the model files are installed."""
    try:
        model_dir()
    except IdentityUnavailable:
        return False
    return importlib.util.find_spec("dlib") is not None


def to_rgb8(image: Tensor | np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` contiguous uint8 from a ``(3, H, W)`` float tensor in ``[0, 1]`` (or
    such an array already)."""
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) image, got {tuple(image.shape)}")
        arr = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        return np.ascontiguousarray(arr.permute(1, 2, 0).numpy())
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


class FaceIdentity:
    """dlib's 5-point landmarks and ResNet face descriptor (load with :func:`face_identity`)."""

    def __init__(self) -> None:
        folder = model_dir()
        try:
            import dlib
        except ImportError as exc:
            raise IdentityUnavailable(f"dlib is not installed: {INSTALL_HINT}") from exc
        self._dlib: Any = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(folder / LANDMARKS_FILE))
        self._descriptor = dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_FILE))

    def confirmed_rect(self, original: np.ndarray, box: Box) -> tuple[int, int, int, int] | None:
        """dlib's own (HOG) face detection near ``box`` on the original, ``(x0, y0, x1,
        y1)``, when it finds one overlapping ``box`` (IoU >= 0.2) on a crop padded by half
        the box's side (upsampled for small boxes); None when it finds no face there."""
        x0, y0, x1, y1 = box
        h, w = original.shape[:2]
        side = max(x1 - x0, y1 - y0)
        cx0, cy0 = max(0, x0 - side // 2), max(0, y0 - side // 2)
        cx1, cy1 = min(w, x1 + side // 2), min(h, y1 + side // 2)
        crop = np.ascontiguousarray(original[cy0:cy1, cx0:cx1])
        up = 1 if side >= 80 else (2 if side >= 40 else 3)
        best, best_iou = None, 0.0
        if crop.size:
            for r in self._detector(crop, up):
                cand = (r.left() + cx0, r.top() + cy0, r.right() + cx0, r.bottom() + cy0)
                overlap = _iou(cand, box)
                if overlap > best_iou:
                    best, best_iou = cand, overlap
        return best if best is not None and best_iou >= 0.2 else None

    def face_rect(self, original: np.ndarray, box: Box) -> tuple[int, int, int, int]:
        """The face rectangle the landmark model starts from, ``(x0, y0, x1, y1)``: the
        :meth:`confirmed_rect` when there is one, else ``box`` shrunk to ``1 / 1.3`` of its
        size about its centre (detector boxes are usually enlarged by 1.3)."""
        found = self.confirmed_rect(original, box)
        if found is not None:
            return found
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        hw, hh = (x1 - x0) / 2.6, (y1 - y0) / 2.6
        return (round(cx - hw), round(cy - hh), round(cx + hw), round(cy + hh))

    def landmarks(self, original: Tensor | np.ndarray, box: Box) -> Any:
        """dlib's 5-point landmarks of the face in ``box``, located on the original image."""
        rgb = to_rgb8(original)
        return self.landmarks_at(rgb, self.face_rect(rgb, box))

    def landmarks_at(self, original: np.ndarray, rect: tuple[int, int, int, int]) -> Any:
        """dlib's 5-point landmarks of the face in the ``(x0, y0, x1, y1)`` rectangle of the
        ``(H, W, 3)`` uint8 original."""
        return self._landmarks(original, self._dlib.rectangle(*rect))

    def chip(self, image: Tensor | np.ndarray, landmarks: Any) -> np.ndarray:
        """The aligned ``(150, 150, 3)`` uint8 face chip the descriptor sees (dlib's
        ``get_face_chip``, padding 0.25) cut from ``image`` with ``landmarks``."""
        return np.asarray(self._dlib.get_face_chip(to_rgb8(image), landmarks))

    def descriptor(self, image: Tensor | np.ndarray, landmarks: Any) -> np.ndarray:
        """The ``(128,)`` float64 descriptor of the face at ``landmarks`` in ``image``."""
        chip = np.ascontiguousarray(self.chip(image, landmarks))
        return np.asarray(self._descriptor.compute_face_descriptor(chip), dtype=np.float64)

    def faces(self, image: Tensor | np.ndarray) -> list[Box]:
        """Faces dlib's own (HOG) detector finds in ``image`` (upsampled once), for
        galleries of face photos."""
        rgb = to_rgb8(image)
        return [(r.left(), r.top(), r.right(), r.bottom()) for r in self._detector(rgb, 1)]


@lru_cache(maxsize=1)
def face_identity() -> FaceIdentity:
    """The loaded model (once per process); :class:`IdentityUnavailable` names the extra
    to install when it is missing."""
    return FaceIdentity()


def distance(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> float:
    """Euclidean distance of two descriptors (below :data:`VERIFY_THRESHOLD`: the same
    person)."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, np.float64)))


def rank1(probes: np.ndarray, gallery: np.ndarray, truth: Sequence[int]) -> list[bool]:
    """Whether each probe's nearest gallery descriptor is its own.

    Args:
        probes: ``(N, 128)`` descriptors (e.g. anonymized faces).
        gallery: ``(M, 128)`` descriptors (the originals, and any others).
        truth: for each probe, the index of its own original in ``gallery``.

    Returns:
        ``N`` booleans; a tie with another gallery face counts as not identified.
    """
    if len(probes) == 0:
        return []
    d = np.linalg.norm(probes[:, None, :] - gallery[None, :, :], axis=2)  # (N, M)
    out = []
    for i, own in enumerate(truth):
        others = np.delete(d[i], own)
        out.append(bool(others.size == 0 or d[i, own] < others.min()))
    return out


@dataclass(frozen=True)
class IdentityLimit:
    """When a written face is still the person: its descriptor within ``min_distance`` of
    the original's (``--min-identity-distance``, default :data:`DEFAULT_MIN_DISTANCE`)."""

    min_distance: float = DEFAULT_MIN_DISTANCE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_distance) and self.min_distance >= 0):
            raise ValueError(f"identity distance must be finite and >= 0, got {self.min_distance}")

    def describe(self) -> dict[str, float]:
        """The limit, for manifests and caches."""
        return {"min_identity_distance": self.min_distance}

    def distances(
        self, original: Tensor, written: Tensor, boxes: Sequence[Box], faces: Sequence[bool]
    ) -> list[float | None]:
        """Per region: the descriptor distance between the written face and the original
        (landmarks on the original), None for regions that are not faces: not labelled
        ``face``, or not confirmed as one by the recognizer's own detector on the original
        (:meth:`FaceIdentity.confirmed_rect`; a detector's false alarm on a lamp or a
        wheel is anonymized like any region, but there is no person to recognize)."""
        model = face_identity()
        orig, out = to_rgb8(original), to_rgb8(written)
        result: list[float | None] = []
        for box, face in zip(boxes, faces, strict=True):
            rect = model.confirmed_rect(orig, box) if face else None
            if rect is None:
                result.append(None)
                continue
            marks = model.landmarks_at(orig, rect)
            d = distance(model.descriptor(orig, marks), model.descriptor(out, marks))
            result.append(round(d, 6))
        return result

    def weak(self, boxes: Sequence[Box], distances: Sequence[float | None]) -> str | None:
        """Why a face is still recognizable (None when none is)."""
        problems = [
            f"region {k} {list(box)}: face descriptor distance {d:.3f} < {self.min_distance:g}"
            for k, (box, d) in enumerate(zip(boxes, distances, strict=True))
            if d is not None and d < self.min_distance
        ]
        if not problems:
            return None
        return "face still recognizable (too close to the original): " + "; ".join(problems)


__all__ = [
    "DEFAULT_MIN_DISTANCE",
    "VERIFY_THRESHOLD",
    "FaceIdentity",
    "IdentityLimit",
    "IdentityUnavailable",
    "available",
    "distance",
    "face_identity",
    "model_dir",
    "rank1",
    "to_rgb8",
]
