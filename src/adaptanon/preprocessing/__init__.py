"""Differentiable preprocessing that reproduces a loader exactly, and the geometry of the
classifier's view inside the input image.

:class:`Preprocess` is torchvision's ``Resize`` (PIL bilinear, shorter side) +
``CenterCrop`` + ``Normalize`` on a PIL image, bit for bit (:mod:`.pil`)."""

from adaptanon.preprocessing.pil import (
    Preprocess,
    PreprocessModule,
    ViewGeometry,
    pil_resize,
    pil_vertical_first,
)

__all__ = ["Preprocess", "PreprocessModule", "ViewGeometry", "pil_resize", "pil_vertical_first"]
