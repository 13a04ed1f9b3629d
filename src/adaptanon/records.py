"""What the pipeline says about one image: its :class:`Status` and a light
:class:`ImageRecord` (no pixels), the one record that the manifest, ``evaluate`` and the
engines share.

This module is the bottom layer: it imports nothing else from adaptanon.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, Self

Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in integer input pixels, half-open: columns ``x0 .. x1-1``."""


class Status(StrEnum):
    """What happened to an image.

    ``unchanged``: plain anonymization kept the decision; ``corrected``: the correction
    restored it; ``no_regions``: the region source found nothing to anonymize (the file is
    re-encoded and checked, nothing is hidden); ``weak``: the decision is kept but a region
    of the written file is not measurably anonymized (too similar to the original, see
    ``strength_final``); ``failed``: the criterion was not met, or meeting it would undo
    the anonymization; ``partial`` (videos): the video is written whole with every region
    anonymized, but the decision of the frames it lists (``frame_records``) could not be
    kept; ``error``: the image could not be read or processed.
    """

    UNCHANGED = "unchanged"
    CORRECTED = "corrected"
    NO_REGIONS = "no_regions"
    WEAK = "weak"
    FAILED = "failed"
    PARTIAL = "partial"
    ERROR = "error"

    @property
    def ok(self) -> bool:
        """True for statuses whose output is written among the finished files."""
        return self in (Status.UNCHANGED, Status.CORRECTED, Status.NO_REGIONS, Status.PARTIAL)


@dataclass
class ImageRecord:
    """One image's result, as written to ``manifest.jsonl`` (one JSON object per line).

    Classes are the classifier's integer indices; ``regions`` are half-open
    ``[x0, y0, x1, y1]`` boxes in input pixels; ``detections`` says where each came from,
    one ``{"box", "label", "score"}`` per region in the same order (label ``face``,
    ``plate``, ``box``, ``saliency`` or a category of an external file; score the
    detector's confidence, 1 for given boxes). ``psnr_plain``/``psnr_final`` are the PSNR
    in dB between the original and the plainly anonymized / written pixels inside the
    regions (None without regions or when equal). ``strength_plain``/``strength_final``
    hold one ``{"psnr", "ssim", "detail"}`` dict per region (same order as ``regions``)
    comparing the original with the plainly anonymized / written pixels (``psnr`` None:
    identical; ``detail`` None: the original region has no fine detail).
    ``worst_variant_margin``/``worst_variant`` (``--robust`` only, else None): the
    smallest logit margin of the written pixels over the loader variants, each measured
    against the class that variant gives the original, and that variant's name.
    ``queries`` (``--black-box`` only, else None): the classifier queries the correction
    used, the check of the plainly anonymized file included.
    ``identity_distance`` (with the face identity check, else empty): per region, the
    face descriptor distance between the written face and the original (None for regions
    that are not faces: not labelled ``face``, or not confirmed as a face by the
    recognizer's own detector on the original). ``settings`` describes the run.
    """

    input: str
    status: Status = Status.ERROR
    output: str | None = None
    regions: list[list[int]] = field(default_factory=list)
    detections: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    original_class: int | None = None
    anonymized_class: int | None = None
    final_class: int | None = None
    error: str | None = None
    original_name: str | None = None
    anonymized_name: str | None = None
    final_name: str | None = None
    original_confidence: float | None = None
    anonymized_confidence: float | None = None
    final_confidence: float | None = None
    final_margin: float | None = None
    worst_variant_margin: float | None = None
    worst_variant: str | None = None
    queries: int | None = None
    psnr_plain: float | None = None
    psnr_final: float | None = None
    strength_plain: list[dict[str, float | None]] = field(default_factory=list)
    strength_final: list[dict[str, float | None]] = field(default_factory=list)
    identity_distance: list[float | None] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (status as its string)."""
        data = asdict(self)
        data["status"] = str(self.status)
        return data

    def to_json(self) -> str:
        """The record as one line of JSON."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from a decoded JSON object (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


REQUIRED_KEYS = (
    "input",
    "output",
    "regions",
    "status",
    "steps",
    "original_class",
    "anonymized_class",
    "final_class",
    "error",
)
"""Keys every manifest record has."""
