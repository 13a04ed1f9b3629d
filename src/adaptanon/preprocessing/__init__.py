"""Differentiable preprocessing that reproduces a loader exactly, and the geometry of the
classifier's view inside the input image.

:class:`Preprocess` is torchvision's ``Resize`` (PIL bilinear, shorter side) +
``CenterCrop`` + ``Normalize`` on a PIL image, bit for bit (:mod:`.pil`): the
``torchvision-pil`` spec with its sizes and statistics.
:class:`PreprocessSpec` declares any loader adaptanon reproduces (Pillow, OpenCV or
``F.interpolate`` resizing; crop, squash or letterbox; channel order, range, mean and std);
:func:`parse_preprocess` makes one from a preset name or JSON (:mod:`.spec`)."""

from adaptanon.preprocessing.geometry import ViewGeometry
from adaptanon.preprocessing.pil import (
    Preprocess,
    PreprocessModule,
    pil_resize,
    pil_vertical_first,
)
from adaptanon.preprocessing.spec import (
    PRESETS,
    PreprocessSpec,
    SpecGeometry,
    SpecPreprocess,
    parse_preprocess,
    parse_spec,
)

__all__ = [
    "PRESETS",
    "Preprocess",
    "PreprocessModule",
    "PreprocessSpec",
    "SpecGeometry",
    "SpecPreprocess",
    "ViewGeometry",
    "parse_preprocess",
    "parse_spec",
    "pil_resize",
    "pil_vertical_first",
]
