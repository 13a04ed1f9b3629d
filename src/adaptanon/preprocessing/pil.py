"""Differentiable classifier preprocessing that reproduces the usual PIL pipeline.

Users classify stored files with loaders such as ``PIL.Image.resize(..., BILINEAR)``
followed by a centre crop. To promise that a written file keeps its class under such a
loader, the correction must see exactly the pixels that loader produces. PIL resamples in
two separable passes with fixed-point weights and rounds to 8 bits after each pass; :func:`pil_resize` does the same arithmetic in float64 torch code, with a
straight-through gradient for the rounding.

Images are ``(3, H, W)`` float tensors with values in ``[0, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from adaptanon.preprocessing.resample import crop_reads, to_8bit

_PRECISION_BITS = 22  # Pillow's fixed-point precision for 8-bit images (Resample.c)
_MAX_DENSE_ENTRIES = 1 << 22  # largest dense resampling matrix (float64: 32 MiB)
_DENSE_BAND = 4  # a band of up to this many times K outputs resamples with a dense matrix

MAX_RESIZED_PIXELS = 100_000_000
"""Largest image :meth:`Preprocess.geometry` resizes to before cropping. Only the crop is
computed, but Pillow's resize order is found by resizing a random image of the full size
once (:func:`pil_vertical_first`), about 4 bytes per resized pixel."""


@lru_cache(maxsize=256)
def _pil_bilinear_taps(in_size: int, out_size: int) -> tuple[Tensor, Tensor]:
    """Pillow's bilinear resampling taps for one axis.

    Returns ``(index, weight)``, both ``(out_size, K)``: output sample ``i`` is
    ``sum_k in[index[i, k]] * weight[i, k]`` before rounding. Weights are Pillow's
    fixed-point coefficients divided by ``2**22``, so the sum is exact in float64.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    # Pillow's precompute_coeffs, vectorised; every operation in the same order as its C.
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    x = np.arange(ksize)
    arg = np.abs(((x[None, :] + xmin[:, None]) - center[:, None] + 0.5) * (1.0 / filterscale))
    valid = x[None, :] < xmax[:, None]
    w = np.where(valid & (arg < 1.0), 1.0 - arg, 0.0)
    total = np.cumsum(w, axis=1)[:, -1:]  # a sequential sum, as in C
    w = np.where(total != 0, w / np.where(total != 0, total, 1.0), w)
    fixed = np.trunc(0.5 + w * (1 << _PRECISION_BITS))  # bilinear weights are >= 0
    index = torch.from_numpy(np.where(valid, xmin[:, None] + x[None, :], xmin[:, None]))
    weight = torch.from_numpy(fixed / (1 << _PRECISION_BITS))
    return index, weight


class _Round8bit(torch.autograd.Function):
    """Pillow's ``clip8`` (round half up, clamp to [0, 255]); gradient passes straight through.

    Bilinear weights are non-negative and their fixed-point sum exceeds 1 by at most
    ``K * 2**-23``, so a pass over 0..255 stays within [0, 255.5) and needs no clamp.
    """

    @staticmethod
    def forward(ctx: object, values: Tensor) -> Tensor:
        return values.add(0.5).floor_()

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return grad


@lru_cache(maxsize=512)
def _axis_plan(
    in_size: int, out_size: int, start: int, stop: int, device: torch.device
) -> tuple[int, int, Tensor, Tensor | None]:
    """How to compute outputs ``start..stop-1`` of one axis.

    Returns ``(first, last, index, matrix)``: the input range ``[first, last)`` read, the
    taps' ``(n, K)`` index relative to ``first`` with the weights, as a dense
    ``(n, last-first)`` float64 matrix when that is cheaper (mild downscaling), else None.
    """
    index, weight = _pil_bilinear_taps(in_size, out_size)
    index, weight = index[start:stop], weight[start:stop]
    first, last = int(index.min()), int(index.max()) + 1
    index = index - first
    matrix = None
    n = stop - start
    # Dense only while it stays small: an upscaled axis (a 10-pixel side resized to 256000)
    # would otherwise ask for an n x in_size matrix (20 GB). Both paths sum exactly. A
    # strong downscale gathers K taps per output along the axis, slow along columns: a
    # narrow band (what update computes) is then cheaper as a product with n x span.
    span, k = last - first, index.shape[1]
    if (span <= 3 * n or n <= _DENSE_BAND * k) and n * span <= _MAX_DENSE_ENTRIES:
        matrix = torch.zeros(n, last - first, dtype=torch.float64)
        matrix.scatter_add_(1, index, weight)
        matrix = matrix.to(device)
    return first, last, torch.stack([index.to(torch.float64), weight]).to(device), matrix


def _resample_axis(image: Tensor, plan: tuple[int, int, Tensor, Tensor | None], dim: int) -> Tensor:
    """Resample ``(C, H, W)`` float64 8-bit values along ``dim`` (1: rows, 2: columns)."""
    _, _, taps, matrix = plan
    if matrix is not None:
        out = image @ matrix.T if dim == 2 else matrix @ image
        return _Round8bit.apply(out)
    index, weight = taps[0].to(torch.long), taps[1]
    picked = image.index_select(dim, index.reshape(-1))
    shape = list(image.shape)
    shape[dim : dim + 1] = list(index.shape)
    view = [1] * (image.dim() + 1)
    view[dim], view[dim + 1] = index.shape
    return _Round8bit.apply((picked.reshape(shape) * weight.reshape(view)).sum(dim + 1))


def _resize_8bit(x: Tensor, plan_v: tuple, plan_h: tuple, vertical_first: bool) -> Tensor:
    if vertical_first:
        return _resample_axis(_resample_axis(x, plan_v, dim=1), plan_h, dim=2)
    return _resample_axis(_resample_axis(x, plan_h, dim=2), plan_v, dim=1)


_PROBE_WINDOW = 512


def _central(size: int, window: int) -> slice:
    """The central ``window`` indices of ``range(size)`` (all of them when fewer)."""
    start = max(0, (size - window) // 2)
    return slice(start, min(size, start + window))


@lru_cache(maxsize=4096)
def pil_vertical_first(in_h: int, in_w: int, out_h: int, out_w: int) -> bool:
    """Whether the installed Pillow resamples rows before columns for this resize.

    Pillow ran the horizontal pass first until version 13, which runs the vertical pass
    first when the height shrinks much more than the width (python-pillow/Pillow#9549).
    Rather than copy a rule that may change again, ask Pillow: resize a random image of
    this size once and see which order reproduces it. Only a central window of at most
    :data:`_PROBE_WINDOW` pixels square is emulated and compared (the orders differ by their
    intermediate rounding, which random pixels show everywhere), so that the probe's cost
    stays that of Pillow's own 8-bit resize even for an extreme upscale.
    """
    if in_h == out_h or in_w == out_w:
        return False  # one pass only: the order does not matter
    if in_h - out_h <= in_w - out_w:
        return False  # the height shrinks no more than the width: every Pillow goes across first
    pixels = np.random.default_rng(in_h * 7919 + in_w).integers(0, 256, (in_h, in_w, 3), np.uint8)
    resized = np.asarray(Image.fromarray(pixels).resize((out_w, out_h), Image.Resampling.BILINEAR))
    rows, cols = _central(out_h, _PROBE_WINDOW), _central(out_w, _PROBE_WINDOW)
    expected = torch.from_numpy(resized[rows, cols].copy()).permute(2, 0, 1)
    plan_h = _axis_plan(in_w, out_w, cols.start, cols.stop, torch.device("cpu"))
    plan_v = _axis_plan(in_h, out_h, rows.start, rows.stop, torch.device("cpu"))
    window = pixels[plan_v[0] : plan_v[1], plan_h[0] : plan_h[1]]
    x = torch.from_numpy(window).permute(2, 0, 1).to(torch.float64)
    mismatches = [
        int((_resize_8bit(x, plan_v, plan_h, order) != expected).sum()) for order in (False, True)
    ]
    return mismatches[1] < mismatches[0]


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
    out_h, out_w = size
    in_h, in_w = full_size or (image.shape[-2], image.shape[-1])
    rows = rows or slice(0, out_h)
    cols = cols or slice(0, out_w)
    plan_h = _axis_plan(in_w, out_w, cols.start or 0, cols.stop, image.device)
    plan_v = _axis_plan(in_h, out_h, rows.start or 0, rows.stop, image.device)
    # Only the input rows and columns the two passes read are converted and resampled.
    x = to_8bit(crop_reads(image, plan_v[:2], plan_h[:2], offset))
    return _resize_8bit(x, plan_v, plan_h, pil_vertical_first(in_h, in_w, out_h, out_w))


@dataclass(frozen=True)
class ViewGeometry:
    """Where a classifier's input view lies in an input image.

    The view is the crop ``[top, top+crop) x [left, left+crop)`` of the input resized to
    ``resized = (height, width)``.
    """

    input_size: tuple[int, int]
    resized: tuple[int, int]
    top: int
    left: int
    crop: int

    def view_box_to_input(
        self, box: tuple[float, float, float, float]
    ) -> tuple[int, int, int, int]:
        """Map a half-open ``[x0, y0, x1, y1]`` box in view pixels to input pixels (covering)."""
        sy = self.input_size[0] / self.resized[0]
        sx = self.input_size[1] / self.resized[1]
        x0, y0, x1, y1 = box
        return (
            max(0, math.floor((x0 + self.left) * sx)),
            max(0, math.floor((y0 + self.top) * sy)),
            min(self.input_size[1], math.ceil((x1 + self.left) * sx)),
            min(self.input_size[0], math.ceil((y1 + self.top) * sy)),
        )

    @property
    def scale(self) -> float:
        """Input pixels per view pixel."""
        return self.input_size[0] / self.resized[0]


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize`` (PIL bilinear), centre crop ``crop``, normalise.

    Matches torchvision's ``Resize(resize)`` + ``CenterCrop(crop)`` + ``ToTensor()`` +
    ``Normalize(mean, std)`` on a PIL image, the usual loader for ImageNet classifiers.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def geometry(self, height: int, width: int) -> ViewGeometry:
        """The view geometry for an input of ``height x width`` pixels.

        Raises:
            ValueError: the input is so elongated that the resized image (shorter side
                ``resize``) would exceed :data:`MAX_RESIZED_PIXELS`: a 10 x 10000 image
                resizes to 256 x 256000.
        """
        if width <= height:
            new_w, new_h = self.resize, int(self.resize * height / width)
        else:
            new_h, new_w = self.resize, int(self.resize * width / height)
        if new_h * new_w > MAX_RESIZED_PIXELS:
            raise ValueError(
                f"aspect ratio {max(height, width) / min(height, width):.0f}:1 is too extreme: "
                f"the model's view resizes the {width}x{height} image to {new_w}x{new_h} = "
                f"{new_h * new_w:,} pixels, over the limit of {MAX_RESIZED_PIXELS:,}"
            )
        if new_h < self.crop or new_w < self.crop:
            raise ValueError(f"resize {self.resize} is smaller than crop {self.crop}")
        top = int(round((new_h - self.crop) / 2.0))
        left = int(round((new_w - self.crop) / 2.0))
        return ViewGeometry((height, width), (new_h, new_w), top, left, self.crop)

    def __call__(self, image: Tensor) -> Tensor:
        """``(3, H, W)`` in ``[0, 1]`` -> normalised ``(3, crop, crop)`` float32 model input."""
        g = self.geometry(image.shape[-2], image.shape[-1])
        pixels = pil_resize(
            image,
            g.resized,
            rows=slice(g.top, g.top + self.crop),
            cols=slice(g.left, g.left + self.crop),
        )
        return self._normalize(pixels)

    def _normalize(self, pixels: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, dtype=torch.float64, device=pixels.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float64, device=pixels.device).view(3, 1, 1)
        return ((pixels / 255.0 - mean) / std).to(torch.float32)

    def update(
        self,
        image: Tensor,
        base: Tensor,
        box: tuple[int, int, int, int],
        offset: tuple[int, int] = (0, 0),
        full_size: tuple[int, int] | None = None,
    ) -> Tensor:
        """``self(image)``, given ``base = self(reference)`` for an image equal to ``image``
        outside the half-open input box ``(x0, y0, x1, y1)``.

        Only the view pixels whose resampling taps reach into the box are recomputed (the
        same arithmetic, so the result is identical); the gradient reaches the box.

        Args:
            image: ``(3, H, W)``, or the crop at ``offset = (y0, x0)`` of an input of
                ``full_size = (H, W)`` holding :meth:`window` of the box (``box``, the
                geometry and the result refer to the whole input; ``ValueError`` when the
                crop lacks pixels the taps read).
            base: ``(3, crop, crop)`` from :meth:`__call__`.
        """
        height, width = full_size or (image.shape[-2], image.shape[-1])
        g = self.geometry(height, width)
        rows = _affected(height, g.resized[0], box[1], box[3], g.top, self.crop)
        cols = _affected(width, g.resized[1], box[0], box[2], g.left, self.crop)
        if rows is None or cols is None:
            return base
        pixels = pil_resize(image, g.resized, rows, cols, offset, (height, width))
        band = self._normalize(pixels)
        out = base.detach().clone()
        out[:, rows.start - g.top : rows.stop - g.top, cols.start - g.left : cols.stop - g.left] = (
            band
        )
        return out

    def window(
        self, height: int, width: int, box: tuple[int, int, int, int]
    ) -> tuple[int, int, int, int]:
        """The input box ``(x0, y0, x1, y1)`` that :meth:`update` reads for ``box`` in a
        ``height x width`` input (the taps of the view band the box reaches), joined with
        ``box``: a crop of the input there is enough for ``update`` and for the region."""
        g = self.geometry(height, width)
        rows = _affected(height, g.resized[0], box[1], box[3], g.top, self.crop)
        cols = _affected(width, g.resized[1], box[0], box[2], g.left, self.crop)
        if rows is None or cols is None:
            return box
        y0, y1 = _reads(height, g.resized[0], rows)
        x0, x1 = _reads(width, g.resized[1], cols)
        return min(box[0], x0), min(box[1], y0), max(box[2], x1), max(box[3], y1)


def _reads(in_size: int, out_size: int, outputs: slice) -> tuple[int, int]:
    """The input range ``[first, last)`` that ``outputs`` read (as :func:`_axis_plan`)."""
    index = _pil_bilinear_taps(in_size, out_size)[0][outputs]
    return int(index.min()), int(index.max()) + 1


def _affected(in_size: int, out_size: int, lo: int, hi: int, start: int, n: int) -> slice | None:
    """The outputs in ``start..start+n-1`` whose taps read inputs in ``lo..hi-1``, as a slice
    of resized coordinates (they are contiguous), or None."""
    index, weight = _pil_bilinear_taps(in_size, out_size)
    index, weight = index[start : start + n], weight[start : start + n]
    reads = ((index >= lo) & (index < hi) & (weight > 0)).any(1).nonzero()
    if len(reads) == 0:
        return None
    return slice(start + int(reads[0]), start + int(reads[-1]) + 1)


class PreprocessModule(nn.Module):
    """:class:`Preprocess` as a module, for composition with ``nn.Sequential``."""

    def __init__(self, spec: Preprocess) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, image: Tensor) -> Tensor:
        return self.spec(image)
