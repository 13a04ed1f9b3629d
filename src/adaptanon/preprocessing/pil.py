"""torchvision's usual ImageNet loader on a PIL image, as a declared preprocessing.

:class:`Preprocess` is ``Resize(resize)`` (Pillow bilinear, shorter side) +
``CenterCrop(crop)`` + ``ToTensor()`` + ``Normalize(mean, std)``: the ``torchvision-pil``
spec (:mod:`.spec`) with its own sizes and normalisation, computed by the one
implementation of Pillow's resampling (:mod:`.resample`). :func:`pil_resize` is Pillow's
bilinear ``Image.resize`` alone.

Images are ``(3, H, W)`` float tensors with values in ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from torch import Tensor, nn

from adaptanon.preprocessing.geometry import MAX_RESIZED_PIXELS, ViewGeometry
from adaptanon.preprocessing.resample import pil_order, pil_plan, run_plan
from adaptanon.preprocessing.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessSpec,
    SpecGeometry,
    SpecPreprocess,
)

__all__ = [
    "MAX_RESIZED_PIXELS",
    "Preprocess",
    "PreprocessModule",
    "ViewGeometry",
    "pil_resize",
    "pil_vertical_first",
]


@lru_cache(maxsize=256)
def pil_vertical_first(in_h: int, in_w: int, out_h: int, out_w: int) -> bool:
    """Whether the installed Pillow resamples rows before columns for this bilinear resize
    (:func:`~.resample.pil_order`)."""
    return pil_order(in_h, in_w, out_h, out_w, "bilinear")


def pil_resize(
    image: Tensor,
    size: tuple[int, int],
    rows: slice | None = None,
    cols: slice | None = None,
    offset: tuple[int, int] = (0, 0),
    full_size: tuple[int, int] | None = None,
) -> Tensor:
    """Resize like ``PIL.Image.resize(size, BILINEAR)`` on the 8-bit image ``round(image*255)``.

    Args:
        image: ``(C, H, W)`` float tensor in ``[0, 1]``.
        size: output ``(height, width)``.
        rows, cols: optional slices (step 1) of the output to compute, a crop, which is
            cheaper than resizing everything and cropping afterwards.
        offset, full_size: ``image`` is the crop at ``offset = (y0, x0)`` of an input of
            ``full_size = (H, W)`` (default: the whole input); only its pixels are read
            (``ValueError`` when the taps need others) and the result is the same.

    Returns:
        ``(C, h, w)`` tensor of 8-bit values (0..255) as float64; differentiable.
    """
    in_h, in_w = full_size or (image.shape[-2], image.shape[-1])
    plan = pil_plan(in_h, in_w, size[0], size[1], "bilinear")
    return run_plan(image, plan, rows, cols, offset)


@dataclass(frozen=True)
class _RowScale(SpecGeometry):
    @property
    def scale(self) -> float:
        """Input rows per resized row."""
        return self.scale_y


class Preprocess(SpecPreprocess):
    """Resize the shorter side to ``resize`` (PIL bilinear), centre crop ``crop``, normalise.

    Matches torchvision's ``Resize(resize)`` + ``CenterCrop(crop)`` + ``ToTensor()`` +
    ``Normalize(mean, std)`` on a PIL image, the usual loader for ImageNet classifiers:
    the ``torchvision-pil`` spec with these sizes and statistics.
    """

    def __init__(
        self,
        resize: int = 256,
        crop: int = 224,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        spec = PreprocessSpec(resize=resize, crop=crop, mean=mean, std=std)
        super().__init__(spec)

    def geometry(self, height: int, width: int) -> SpecGeometry:
        """The spec's geometry, whose :attr:`~.ViewGeometry.scale` is the rows' (as the
        built-in models' filters have always been scaled)."""
        g = super().geometry(height, width)
        return _RowScale(g.input_size, g.resized, g.top, g.left, g.crop, g.view)

    @property
    def resize(self) -> int:
        """The shorter side's size after resizing."""
        return int(self.spec.resize)  # type: ignore[arg-type]

    @property
    def crop(self) -> int:
        """The side of the centre crop."""
        return int(self.spec.crop)  # type: ignore[arg-type]

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean (0-1 units)."""
        return tuple(self.spec.mean)

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation (0-1 units)."""
        return tuple(self.spec.std)


class PreprocessModule(nn.Module):
    """A preprocessing (e.g. :class:`Preprocess`) as a module, for ``nn.Sequential``."""

    def __init__(self, spec: SpecPreprocess) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, image: Tensor) -> Tensor:
        return self.spec(image)
