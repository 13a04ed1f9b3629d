"""Built-in detectors behind the batched :class:`~adaptanon.regions.RegionSource` seam,
one module each: faces (:mod:`.centerface`), licence plates (:mod:`.text_plates`, plate-shaped
text found and read by PP-OCRv4 (:mod:`.ppocr`); :mod:`.haar_plates`, a weak fallback;
:mod:`.platedet`, an optional AGPL model the user installs). Their models ship
inside PyPI packages; nothing is downloaded at run time."""

from adaptanon.regions.detectors.centerface import CenterFace
from adaptanon.regions.detectors.common import (
    DEFAULT_BOX_SCALE,
    DEFAULT_FACE_THRESHOLD,
    DEFAULT_MAX_SIDE,
    DEFAULT_MIN_SIZE,
    DEFAULT_PLATE_THRESHOLD,
    Detector,
    DetectorOptions,
    detection_image,
    nms,
    onnx_providers,
    scale_box,
)

__all__ = [
    "DEFAULT_BOX_SCALE",
    "DEFAULT_FACE_THRESHOLD",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_MIN_SIZE",
    "DEFAULT_PLATE_THRESHOLD",
    "CenterFace",
    "Detector",
    "DetectorOptions",
    "detection_image",
    "nms",
    "onnx_providers",
    "scale_box",
]
