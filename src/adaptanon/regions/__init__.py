"""Regions to anonymize: the batched :class:`RegionSource` interface (:mod:`.base`), boxes
given by the user (:mod:`.boxes`) and the paper's saliency square (:mod:`.saliency`)."""

from adaptanon.regions.base import (
    Detection,
    RegionQuery,
    Regions,
    RegionSource,
    region_mask,
    validate_boxes,
)
from adaptanon.regions.boxes import ExplicitBoxes, load_boxes_file
from adaptanon.regions.saliency import SaliencyBox, best_square


def parse_region_source(spec: str) -> RegionSource:
    """``saliency``, ``saliency:SIZE`` or ``boxes=FILE`` as a region source."""
    if spec == "saliency" or spec.startswith("saliency:"):
        size = spec.partition(":")[2]
        try:
            return SaliencyBox(int(size)) if size else SaliencyBox()
        except ValueError as exc:
            raise ValueError(f"bad saliency size in {spec!r}: {exc}") from exc
    if spec.startswith("boxes="):
        return load_boxes_file(spec.partition("=")[2])
    raise ValueError(f"unknown regions {spec!r}: use saliency, saliency:SIZE or boxes=FILE")


__all__ = [
    "Detection",
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
