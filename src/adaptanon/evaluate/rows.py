"""The data of an evaluation: a configuration of the sweep (:class:`Config`), what it did
to one image (:class:`ImageRow`, a manifest record plus what evaluation adds) and the
thumbnails kept for the report (:class:`Example`)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptanon.method import Settings
from adaptanon.records import ImageRecord

CACHE_SCHEMA = 5
"""Bump when the meaning of cached rows changes, so that old caches are not reused."""


@dataclass(frozen=True)
class Config:
    """One point of the sweep: a model, a filter and a step size (``settings.alpha``).

    Attributes:
        model: the model spec as given (built-in name, file, ``module:function``).
        filter: the filter's short name (``blur``, ``mask``, ``mosaic``).
        settings: the full method settings (filter parameters, alpha, criterion, codec...).
        regions: what identifies the regions (e.g. ``saliency`` or ``boxes=<sha256>``).
    """

    model: str
    filter: str
    settings: Settings
    regions: str = "saliency"

    @property
    def alpha(self) -> float:
        """The step size."""
        alpha = self.settings.solver.describe().get("alpha")
        return float(alpha) if alpha is not None else math.nan

    def identity(self) -> dict[str, Any]:
        """Everything that changes the per-image results (not the device or batch size)."""
        return {
            "schema": CACHE_SCHEMA,
            "model": self.model,
            "regions": self.regions,
            **self.settings.describe(),
        }

    @property
    def key(self) -> str:
        """Short hash of :meth:`identity`: the name of this configuration's cache."""
        text = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def step_free_key(self) -> str:
        """Hash of :meth:`identity` without the step size: configurations that share it
        anonymize identically, so an image unchanged by one is unchanged by all."""
        ident = {k: v for k, v in self.identity().items() if k != "alpha"}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``efficientnet_lite0 / blur / α=0.1``."""
        return f"{self.model} / {self.filter} / α={self.alpha:g}"


@dataclass
class ImageRow(ImageRecord):
    """What one configuration did to one image (a line of the cache): the image's
    :class:`~adaptanon.records.ImageRecord` (``input`` is its path relative to the input
    root) and

    Attributes:
        path: the resolved input path, which identifies the image.
        content: the file's size and modification time when it was evaluated, so that a
            changed file is evaluated again.
        seconds: this image's share of its batch's time.
        example: the file name of its thumbnails under ``cache/<key>/``, if kept.
        correction_mean, correction_max: the correction's own size, the mean and largest
            absolute change between the plainly anonymized and the final (stored) pixels
            inside the regions, all channels, in 0-255 levels (None without regions).
        faces_checked: faces the face detector found in the original (its ``face``
            detections), when the regions come from it; else None.
        faces_redetected_plain, faces_redetected_final: how many of them the same
            detector, at the same threshold, still finds (a box with IoU >= 0.5) in the
            plainly anonymized and in the final image.
        plates_checked: ground-truth plates of the image whose text was read (see
            :mod:`~adaptanon.evaluate.readability`); None without plate ground truth.
        plate_chars: the characters of their true texts.
        plate_chars_original, plate_chars_plain, plate_chars_final: characters read
            correctly in the plate boxes of the original, the plainly anonymized and the
            final image.

        identity_faces: per face region, with the ``privacy`` extra, the face descriptors
            of the original, plain, corrected and attacked faces
            (:func:`adaptanon.evaluate.identity.add_identity`); None otherwise.
        identity_attack: the inversion attack run on those faces.
    """

    input: str = ""
    path: str = ""
    content: str = ""
    seconds: float = 0.0
    example: str | None = None
    correction_mean: float | None = None
    correction_max: float | None = None
    faces_checked: int | None = None
    faces_redetected_plain: int | None = None
    faces_redetected_final: int | None = None
    plates_checked: int | None = None
    plate_chars: int | None = None
    plate_chars_original: int | None = None
    plate_chars_plain: int | None = None
    plate_chars_final: int | None = None

    identity_faces: list[dict[str, Any]] | None = None
    identity_attack: str | None = None

    @property
    def name(self) -> str:
        """The image's path relative to its input root."""
        return self.input


@dataclass
class Example:
    """Thumbnails of one example image for the report's figure (like the paper's Fig. 3).

    Images are ``(h, w, 3)`` uint8; ``mask`` is ``(h, w)`` bool (the anonymized region).
    """

    row: ImageRow
    original: np.ndarray
    anonymized: np.ndarray
    final: np.ndarray
    mask: np.ndarray
