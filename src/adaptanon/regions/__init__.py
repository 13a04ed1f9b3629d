"""Regions to anonymize: the batched :class:`RegionSource` interface (:mod:`.base`), boxes
given by the user (:mod:`.boxes`) or made by another detector (:mod:`.formats`), the
paper's saliency square (:mod:`.saliency`), built-in face and plate detectors
(:mod:`.detectors`) and several of them at once (:mod:`.combined`)."""

from adaptanon.regions.base import (
    Detection,
    RegionQuery,
    Regions,
    RegionSource,
    region_mask,
    validate_boxes,
)
from adaptanon.regions.boxes import ExplicitBoxes, load_boxes_file
from adaptanon.regions.combined import Combined
from adaptanon.regions.detectors.common import DetectorOptions
from adaptanon.regions.formats import FORMATS, parse_format_spec
from adaptanon.regions.saliency import SaliencyBox, best_square

KINDS = ("saliency", "faces", "plates", "boxes", *FORMATS)
"""What a part of ``--regions`` starts with."""


def _parts(spec: str) -> list[str]:
    """``spec`` split at ``+`` into sources; a piece that does not start with a known kind
    belongs to the previous one (a file name may hold a ``+``)."""
    parts: list[str] = []
    for piece in spec.split("+"):
        kind = piece.partition("=")[0].partition(":")[0]
        if parts and kind not in KINDS:
            parts[-1] += "+" + piece
        else:
            parts.append(piece)
    return parts


def _one_source(spec: str, options: DetectorOptions) -> RegionSource:
    if spec == "saliency" or spec.startswith("saliency:"):
        size = spec.partition(":")[2]
        try:
            return SaliencyBox(int(size)) if size else SaliencyBox()
        except ValueError as exc:
            raise ValueError(f"bad saliency size in {spec!r}: {exc}") from exc
    if spec == "faces":
        from adaptanon.regions.detectors.centerface import CenterFace

        return CenterFace(options)
    if spec == "plates":
        from adaptanon.regions.detectors.text_plates import TextPlates

        return TextPlates(options)
    if spec == "plates:haar":
        from adaptanon.regions.detectors.haar_plates import HaarPlates

        return HaarPlates(options)
    if spec == "plates:platedet":
        from adaptanon.regions.detectors.platedet import Platedet

        return Platedet(options)
    if spec.startswith("boxes="):
        return load_boxes_file(spec.partition("=")[2])
    kind, sep, rest = spec.partition("=")
    if sep and kind in FORMATS:
        return parse_format_spec(kind, rest)
    raise ValueError(
        f"unknown regions {spec!r}: use saliency[:SIZE], faces, plates[:haar|:platedet], "
        "boxes=FILE, coco=FILE[:LABEL,...], yolo=DIR[:CLASS,...], voc=DIR[:LABEL,...] or "
        "csv=FILE[:LABEL,...], or several joined with + (faces+plates)"
    )


def parse_region_source(spec: str, options: DetectorOptions | None = None) -> RegionSource:
    """A ``--regions`` value as a region source: ``saliency``, ``saliency:SIZE``,
    ``faces``, ``plates`` (plate-shaped text), ``plates:haar``, ``plates:platedet``,
    ``boxes=FILE`` or ``FORMAT=PATH[:LABELS]``
    (:data:`~adaptanon.regions.formats.FORMATS`), or several joined by ``+``.
    ``options``: how the built-in detectors run.

    Raises:
        ValueError: an unknown or malformed spec, an unreadable or malformed file, or a
            detector whose optional dependencies are not installed.
    """
    options = options or DetectorOptions()
    parts = _parts(spec)
    if len(parts) == 1:
        return _one_source(parts[0], options)
    if len(set(parts)) != len(parts):
        raise ValueError(f"regions {spec!r} name the same source twice")
    return Combined([_one_source(part, options) for part in parts])


__all__ = [
    "Combined",
    "Detection",
    "DetectorOptions",
    "ExplicitBoxes",
    "RegionQuery",
    "RegionSource",
    "Regions",
    "SaliencyBox",
    "best_square",
    "load_boxes_file",
    "parse_region_source",
    "region_mask",
    "validate_boxes",
]
