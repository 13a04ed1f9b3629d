"""The host half of the method for one image: strength metrics, PSNR, encoding, the
verification decode and the status rules. It works on numpy arrays alone (no model, no
device), so an engine can run it in a worker process while the model works on the next
batch; :func:`~adaptanon.method.pipeline.process_batch` runs it in this process.

Only the regions' window travels as floats: outside it every metric is zero by
construction, and the whole image is needed only as the 8-bit pixels to encode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from adaptanon.io.codecs import Codec
from adaptanon.method.metrics import (
    RegionStrength,
    StrengthLimits,
    image_strength,
    region_psnr,
)
from adaptanon.records import Box, ImageRecord, Status


@dataclass(frozen=True)
class FinishRules:
    """What finishing needs of the settings: how to store, the strength limits, the region
    shape and the criterion's description (for messages)."""

    codec: Codec
    strength: StrengthLimits
    shape: str
    criterion: str


@dataclass
class FinishJob:
    """One corrected image, ready to finish on the host.

    Attributes:
        record: the image's record with the model's fields filled in (classes,
            confidences, margin, steps); finishing sets its PSNR, strength, status, error.
        boxes: the regions in input pixels.
        window: ``(x0, y0, x1, y1)`` the crop the float arrays hold (covers every pixel
            the anonymization may change).
        original, plain, final: ``(3, h, w)`` float32 crops over ``window`` of the
            original, the plainly anonymized image as stored and the corrected one as
            stored.
        mask: ``(h, w)`` bool crop of the changed pixels.
        pixels: ``(H, W, 3)`` uint8, the corrected image to encode.
        checked: ``(H, W, 3)`` uint8, the pixels the classifier last checked (what the file
            must decode to); None when equal to ``pixels``.
        success: the criterion held on ``checked``.
        failure: why the solver stopped short (e.g. a spent query budget), when the
            criterion's own message would not say it.
        identity_weak: why a face is still recognizable (the face identity check,
            computed with the model on the device side); None when it passed or was off.
    """

    record: ImageRecord
    boxes: list[Box]
    window: Box
    original: np.ndarray
    plain: np.ndarray
    final: np.ndarray
    mask: np.ndarray
    pixels: np.ndarray
    checked: np.ndarray | None
    success: bool
    failure: str | None = None
    identity_weak: str | None = None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def finish_image(job: FinishJob, rules: FinishRules) -> tuple[ImageRecord, bytes]:
    """Measure, encode and judge one image; returns its record (status set) and the
    encoded file.

    Every region of the stored result is compared with the original (after plain
    anonymization and on the written pixels): an image whose correction brought a region
    back toward the original by more than ``rules.strength``'s tolerances is ``failed``,
    one with a region that is not measurably anonymized is ``weak``; the file must decode
    to the checked pixels, and the criterion must have held.
    """
    rec = job.record
    plain_s, final_s = measure_regions(job, rules.shape)
    rec.strength_plain = [s.to_dict() for s in plain_s]
    rec.strength_final = [s.to_dict() for s in final_s]
    data, problem = encode_checked(rules.codec, job.pixels, job.checked)
    undone = rules.strength.undone(job.boxes, plain_s, final_s)
    weak = rules.strength.weak(job.boxes, final_s) or job.identity_weak
    # Nothing to anonymize and a lossless file: its pixels are the input's, so its
    # decision is the original's whatever margin the original itself had.
    as_input = not rec.regions and rules.codec.lossless
    if problem:
        rec.status, rec.error = Status.FAILED, problem
    elif not job.success and not as_input:
        rec.status = Status.FAILED
        rec.error = job.failure or f"criterion {rules.criterion} not met after {rec.steps} steps"
        if rec.worst_variant is not None:
            rec.error += f" under every loader variant (worst: {rec.worst_variant})"
    elif undone:
        rec.status, rec.error = Status.FAILED, undone
    elif not rec.regions:
        rec.status = Status.NO_REGIONS
    elif weak:
        rec.status, rec.error = Status.WEAK, weak
    else:
        rec.status = Status.UNCHANGED if rec.steps == 0 else Status.CORRECTED
    return rec, data


def measure_regions(
    job: FinishJob, shape: str
) -> tuple[list[RegionStrength], list[RegionStrength]]:
    """The strength of every region after plain anonymization and on the written pixels;
    sets the record's ``psnr_plain`` and ``psnr_final``. Measured once when no step
    changed the stored pixels."""
    rec, (x0, y0) = job.record, job.window[:2]
    original, plain, final = (torch.from_numpy(a) for a in (job.original, job.plain, job.final))
    mask = torch.from_numpy(job.mask)
    local = [(bx0 - x0, by0 - y0, bx1 - x0, by1 - y0) for bx0, by0, bx1, by1 in job.boxes]
    rec.psnr_plain = _finite(region_psnr(original, plain, mask))
    plain_s = image_strength(original, plain, local, shape)
    if np.array_equal(job.plain, job.final):
        rec.psnr_final = rec.psnr_plain
        return plain_s, plain_s
    rec.psnr_final = _finite(region_psnr(original, final, mask))
    return plain_s, image_strength(original, final, local, shape)


def encode_checked(
    codec: Codec, pixels: np.ndarray, checked: np.ndarray | None = None
) -> tuple[bytes, str | None]:
    """Encode ``(H, W, 3)`` uint8 ``pixels`` and confirm the file decodes to ``checked``
    (default: ``pixels``), the pixels the classifier saw. Returns the bytes and a problem
    description (None when it matches)."""
    data = codec.encode(pixels)
    expected = pixels if checked is None else checked
    if not np.array_equal(codec.decode(data), expected):
        return data, "the encoded file does not decode to the verified pixels"
    return data, None
