"""Identity measures of an evaluation: can the people in the written faces be recognized?

For every face region (label ``face``) of every image, with dlib's face descriptor
(:mod:`adaptanon.method.identity`, landmarks located on the original): the descriptors of
the original, the plainly anonymized and the corrected (written) face, and of both after
the inversion attack that knows the filter (:func:`adaptanon.evaluate.attacks.invert`).
They are kept per row (:func:`add_identity`); :func:`identity_summary` then identifies
each anonymized face among the run's originals (and an optional gallery): rank-1
identification, verification at dlib's 0.6, the median distance, and the chance level.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from adaptanon.evaluate.attacks import invert
from adaptanon.evaluate.rows import ImageRow
from adaptanon.io.codecs import to_image
from adaptanon.io.images import collect_inputs, read_image
from adaptanon.method import Filter, OutcomeImages
from adaptanon.method.identity import (
    VERIFY_THRESHOLD,
    FaceIdentity,
    available,
    face_identity,
    rank1,
)
from adaptanon.records import Box

KINDS = ("plain", "corrected", "plain_attacked", "corrected_attacked")
"""The anonymized versions of each face that are compared with the originals."""


def _rounded(d: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in d]


_ORIGINALS: dict[tuple[str, tuple[int, ...]], tuple[Any, list[float]]] = {}
"""Landmarks and descriptor of each original face seen in this process, by the image's
pixels and the box: the configurations of a sweep share the originals."""


def _original_face(model: FaceIdentity, image: Tensor, box: Box) -> tuple[Any, list[float]]:
    key = (hashlib.sha1(image.detach().cpu().numpy().tobytes()).hexdigest(), tuple(box))
    if key not in _ORIGINALS:
        if len(_ORIGINALS) > 4096:
            _ORIGINALS.clear()
        marks = model.landmarks(image, box)
        _ORIGINALS[key] = (marks, _rounded(model.descriptor(image, marks)))
    return _ORIGINALS[key]


def add_identity(
    rows: Sequence[ImageRow],
    images: Sequence[OutcomeImages | None],
    filt: Filter,
    shape: str,
    scale_of: Callable[[Tensor], float],
) -> None:
    """Fill each row's ``identity_faces`` (one dict per face region: ``box`` and the
    descriptors ``original`` and :data:`KINDS`) and ``identity_attack`` (the attack's
    name). Nothing happens without the ``privacy`` extra. ``scale_of(image)``: input
    pixels per view pixel of an image, as the filter ran."""
    if not available():
        return
    model = None
    for row, imgs in zip(rows, images, strict=True):
        faces = [tuple(d["box"]) for d in row.detections or [] if d.get("label") == "face"]
        if imgs is None or not faces:
            continue
        model = model or face_identity()
        scale = scale_of(imgs.original)
        boxes = [(int(a), int(b), int(c), int(d)) for a, b, c, d in faces]
        labels = ["face"] * len(boxes)
        plain_att, name = invert(filt, imgs.anonymized, boxes, scale, shape, labels)
        final_att, _ = invert(filt, imgs.final, boxes, scale, shape, labels)
        versions = dict(
            zip(KINDS, (imgs.anonymized, imgs.final, plain_att, final_att), strict=True)
        )
        out = []
        for box in boxes:
            marks, original = _original_face(model, imgs.original, box)
            entry: dict[str, Any] = {"box": list(box), "original": original}
            for kind, img in versions.items():
                entry[kind] = _rounded(model.descriptor(img, marks))
            out.append(entry)
        row.identity_faces, row.identity_attack = out, name


def gallery_descriptors(folder: Path) -> np.ndarray:
    """``(M, 128)`` descriptors of every face dlib's detector finds in the images under
    ``folder`` (unreadable files are skipped), for ``--gallery``."""
    model = face_identity()
    found = []
    for item in collect_inputs([str(folder)]):
        try:
            image = to_image(read_image(item.path))
        except Exception:  # a gallery photo that cannot be read is not a face
            continue
        for box in model.faces(image):
            found.append(model.descriptor(image, model.landmarks(image, box)))
    return np.stack(found) if found else np.zeros((0, 128))


def identity_summary(rows: Sequence[ImageRow], gallery: np.ndarray | None = None) -> dict[str, Any]:
    """Rank-1 identification and verification of the anonymized faces.

    The gallery is the originals of every face of ``rows`` plus ``gallery`` (``(M, 128)``
    descriptors of other people). For each of :data:`KINDS`: ``identity_rank1_<kind>_pct``
    (the face's nearest gallery descriptor is its own original), ``identity_verify_
    <kind>_pct`` (within :data:`VERIFY_THRESHOLD` of its own original) and
    ``identity_distance_<kind>_median``; ``identity_faces``, ``identity_gallery`` (its
    size), ``identity_chance_pct`` (100 / gallery size) and ``identity_attack``. All None
    when no face was measured.
    """
    entries = [e for r in rows for e in r.identity_faces or []]
    attacks = sorted({r.identity_attack for r in rows if r.identity_attack})
    out: dict[str, Any] = {"identity_faces": len(entries) if entries else None}
    extra = gallery if gallery is not None else np.zeros((0, 128))
    originals = np.array([e["original"] for e in entries]).reshape(-1, 128)
    everyone = np.concatenate([originals, extra]) if entries else extra
    out["identity_gallery"] = len(everyone) if entries else None
    out["identity_chance_pct"] = 100.0 / len(everyone) if entries else None
    out["identity_attack"] = "; ".join(attacks) if attacks else None
    truth = list(range(len(entries)))
    for kind in KINDS:
        if not entries:
            for key in ("rank1", "verify"):
                out[f"identity_{key}_{kind}_pct"] = None
            out[f"identity_distance_{kind}_median"] = None
            continue
        probes = np.array([e[kind] for e in entries])
        hits = rank1(probes, everyone, truth)
        dist = np.linalg.norm(probes - originals, axis=1)
        out[f"identity_rank1_{kind}_pct"] = 100.0 * sum(hits) / len(hits)
        out[f"identity_verify_{kind}_pct"] = 100.0 * float(np.mean(dist < VERIFY_THRESHOLD))
        out[f"identity_distance_{kind}_median"] = round(statistics.median(dist.tolist()), 4)
    return out


__all__ = ["KINDS", "add_identity", "gallery_descriptors", "identity_summary"]
