"""Anonymization filters, applied inside regions only.

Each operation exists as a plain function on tensors (``(C, H, W)`` or ``(B, C, H, W)``
floats in ``[0, 1]``) and as a small filter object that knows how much image context it
needs and how to scale itself to the input's resolution. Parameters are given at the
classifier's view (e.g. the paper's 9x9 blur with sigma 10 at 224x224); ``scale`` is the
number of input pixels per view pixel (see :class:`~adaptanon.preprocessing.ViewGeometry`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptanon.records import Box
from adaptanon.regions import region_mask


def gaussian_kernel1d(ksize: int, sigma: float, device: torch.device | None = None) -> Tensor:
    """Normalised 1-D Gaussian, shape ``(ksize,)``; ``ksize`` must be odd."""
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {ksize}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    x = torch.arange(ksize, dtype=torch.float32, device=device) - (ksize - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(image: Tensor, ksize: int, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflected borders.

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)``.
        ksize: odd kernel size; sigma: standard deviation, in pixels.

    Returns:
        Tensor of the same shape; differentiable.
    """
    batched = image if image.dim() == 4 else image.unsqueeze(0)
    b, c, h, w = batched.shape
    k = gaussian_kernel1d(ksize, sigma, batched.device).to(batched.dtype)
    pad = ksize // 2
    mode = "reflect" if min(h, w) > pad else "replicate"
    # Channels as batch entries: a one-channel convolution is faster than a grouped one.
    x = F.pad(batched.reshape(b * c, 1, h, w), (pad, pad, pad, pad), mode=mode)
    x = F.conv2d(F.conv2d(x, k.view(1, 1, 1, ksize)), k.view(1, 1, ksize, 1))
    x = x.reshape(b, c, h, w)
    return x if image.dim() == 4 else x.squeeze(0)


def pixelate(image: Tensor, block: int) -> Tensor:
    """Mosaic: every ``block x block`` cell (from the top-left corner) becomes its mean.

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)``; partial cells at the border average
            what they cover.

    Returns:
        Tensor of the same shape.
    """
    if block < 1:
        raise ValueError(f"mosaic block must be >= 1, got {block}")
    batched = image if image.dim() == 4 else image.unsqueeze(0)
    h, w = batched.shape[-2:]
    cells = F.avg_pool2d(batched, block, stride=block, ceil_mode=True, count_include_pad=False)
    x = cells.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)[..., :h, :w]
    return x if image.dim() == 4 else x.squeeze(0)


def solid(image: Tensor, value: float | tuple[float, float, float]) -> Tensor:
    """Every pixel set to ``value`` (one value, or one per channel), same shape as ``image``."""
    v = torch.as_tensor(value, dtype=image.dtype, device=image.device)
    if v.dim() == 1:
        v = v.view(-1, 1, 1)
    return torch.zeros_like(image) + v


def _odd(x: float) -> int:
    return max(1, 2 * int(round((x - 1) / 2)) + 1)


class Filter(ABC):
    """An anonymization filter: computes the replacement pixels for one region box."""

    name: str

    def context(self, scale: float) -> int:
        """Pixels of surrounding image the filter reads on each side of a box."""
        return 0

    @abstractmethod
    def patch(self, window: Tensor, scale: float) -> Tensor:
        """Filter a ``(C, h, w)`` window (the box plus its context) into the same shape."""

    def describe(self) -> str:
        """Short text for manifests and reports."""
        return self.name


@dataclass
class Blur(Filter):
    """Gaussian blur (paper: kernel 9x9, sigma 10 at the 224x224 view).

    With ``scale_to_input`` (default) the kernel and sigma grow with the input's
    resolution so a large photograph is blurred as strongly as the classifier's view.
    """

    kernel: int = 9
    sigma: float = 10.0
    scale_to_input: bool = True
    name: str = "blur"

    def _params(self, scale: float) -> tuple[int, float]:
        s = scale if self.scale_to_input else 1.0
        return _odd(self.kernel * s), self.sigma * s

    def context(self, scale: float) -> int:
        return self._params(scale)[0] // 2

    def patch(self, window: Tensor, scale: float) -> Tensor:
        ksize, sigma = self._params(scale)
        return gaussian_blur(window, ksize, sigma)

    def describe(self) -> str:
        return f"blur(kernel={self.kernel},sigma={self.sigma},scaled={self.scale_to_input})"


@dataclass
class Mask(Filter):
    """Solid fill: one value for every pixel (the paper's masking experiment)."""

    value: float = 0.5
    name: str = "mask"

    def patch(self, window: Tensor, scale: float) -> Tensor:
        return solid(window, self.value)

    def describe(self) -> str:
        return f"mask(value={self.value})"


@dataclass
class Mosaic(Filter):
    """Pixelation with ``block``-pixel cells at the classifier's view, aligned to the box."""

    block: int = 8
    scale_to_input: bool = True
    name: str = "mosaic"

    def patch(self, window: Tensor, scale: float) -> Tensor:
        s = scale if self.scale_to_input else 1.0
        return pixelate(window, max(1, int(round(self.block * s))))

    def describe(self) -> str:
        return f"mosaic(block={self.block},scaled={self.scale_to_input})"


FILTERS: dict[str, type[Filter]] = {"blur": Blur, "mask": Mask, "mosaic": Mosaic}
"""Filters by name, as ``--filter`` accepts them."""


def parse_filter(name: str, **params: Any) -> Filter:
    """Build a filter by name (see :data:`FILTERS`) with keyword parameters."""
    if name not in FILTERS:
        raise ValueError(f"unknown filter {name!r}; choose from {', '.join(FILTERS)}")
    return FILTERS[name](**params)


def anonymize(
    image: Tensor, boxes: list[Box], filt: Filter, scale: float = 1.0, shape: str = "rect"
) -> tuple[Tensor, Tensor]:
    """Apply ``filt`` inside ``boxes`` and nowhere else.

    Args:
        image: ``(C, H, W)`` in ``[0, 1]``.
        boxes: half-open ``[x0, y0, x1, y1]`` boxes in pixels.
        scale: input pixels per classifier-view pixel.
        shape: ``rect`` or ``ellipse`` (the ellipse inscribed in each box).

    Returns:
        ``(anonymized, mask)``: the ``(C, H, W)`` image and the ``(1, H, W)`` bool mask of
        changed pixels. Every patch is computed from the original image, so overlapping
        boxes do not filter twice.
    """
    _, h, w = image.shape
    out = image.clone()
    mask = region_mask(h, w, boxes, shape).to(image.device)
    ctx = filt.context(scale)
    for x0, y0, x1, y1 in boxes:
        wx0, wy0 = max(0, x0 - ctx), max(0, y0 - ctx)
        wx1, wy1 = min(w, x1 + ctx), min(h, y1 + ctx)
        patch = filt.patch(image[:, wy0:wy1, wx0:wx1], scale)
        inner = patch[:, y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
        m = mask[y0:y1, x0:x1]
        out[:, y0:y1, x0:x1] = torch.where(m, inner.clamp(0, 1), out[:, y0:y1, x0:x1])
    return out, mask.unsqueeze(0)


__all__ = [
    "Blur",
    "Filter",
    "Mask",
    "Mosaic",
    "anonymize",
    "gaussian_blur",
    "gaussian_kernel1d",
    "FILTERS",
    "parse_filter",
    "pixelate",
    "solid",
]
