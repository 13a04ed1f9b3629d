"""Separable resampling on 8-bit values, as libraries do it, in differentiable torch code.

A resize that works on 8-bit images is two one-axis passes. Each output sample of a pass
is a weighted sum of a few input samples (its *taps*), after which the library rounds in
its own way. :class:`Taps` holds one axis's taps; :func:`linear_pass` computes the
weighted sums exactly (integer-valued fixed-point weights make every float64 partial sum
exact, so the order of summation does not matter) and the backends (Pillow's, below;
:mod:`.opencv`) add their rounding, with a straight-through gradient
(:func:`straight_through`): the gradient is that of the weighted sums.

Pillow's filters (``Resample.c``) live here too, the one implementation of Pillow's
resampling (:mod:`.pil` and :mod:`.spec` use it): :func:`pil_taps` gives the taps of box,
bilinear, hamming, bicubic and lanczos, and :func:`pil_nearest_taps` is
``Image.resize(..., NEAREST)`` (an affine transform with 16.16 fixed-point coordinates).

Images are ``(C, H, W)`` float64 tensors of 8-bit values (0..255) unless said otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch import Tensor

PIL_PRECISION_BITS = 22  # Pillow's fixed-point precision for 8-bit images (Resample.c)
_MAX_DENSE_ENTRIES = 1 << 22  # largest dense resampling matrix (float64: 32 MiB)


@dataclass(frozen=True, eq=False)
class Taps:
    """One axis of a separable resize: output ``i`` is ``sum_k in[index[i, k]] * weight[i, k]``.

    Attributes:
        index: ``(n, K)`` int64 input indices (each in ``0..in_size-1``).
        weight: ``(n, K)`` float64 weights; a padding tap has weight 0.
        in_size: the input length.
    """

    index: np.ndarray
    weight: np.ndarray
    in_size: int

    @property
    def out_size(self) -> int:
        """The number of output samples ``n``."""
        return int(self.index.shape[0])

    def reads(self, start: int, stop: int) -> tuple[int, int]:
        """The input range ``[first, last)`` that outputs ``start..stop-1`` read."""
        index = self.index[start:stop]
        return int(index.min()), int(index.max()) + 1

    def affected(self, lo: int, hi: int, start: int, stop: int) -> slice | None:
        """The outputs in ``start..stop-1`` whose taps (of non-zero weight) read inputs in
        ``lo..hi-1``, as one slice (the span from the first to the last such output), or
        None when there are none."""
        index, weight = self.index[start:stop], self.weight[start:stop]
        reads = ((index >= lo) & (index < hi) & (weight != 0)).any(1).nonzero()[0]
        if len(reads) == 0:
            return None
        return slice(start + int(reads[0]), start + int(reads[-1]) + 1)


def _move(array: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(array).to(like.device)


_DENSE_SPAN = 3  # a pass reading at most this many inputs per output uses a dense matrix
_DENSE_BAND = 4  # ...as does a band of at most this many times K outputs


def dense_weights(taps: Taps, start: int, stop: int) -> np.ndarray:
    """``(n, span)`` float64 matrix of outputs ``start..stop-1`` over the inputs
    :meth:`Taps.reads` gives for them (a padding tap adds a zero)."""
    first, last = taps.reads(start, stop)
    index = taps.index[start:stop] - first
    matrix = np.zeros((index.shape[0], last - first))
    rows = np.repeat(np.arange(index.shape[0]), index.shape[1])
    np.add.at(matrix, (rows, index.ravel()), taps.weight[start:stop].ravel())
    return matrix


@lru_cache(maxsize=1024)
def _pass_operands(
    taps: Taps, start: int, stop: int, device: torch.device
) -> tuple[Tensor | None, list[tuple[Tensor, Tensor]]]:
    """How :func:`linear_pass` computes outputs ``start..stop-1`` of ``taps`` on
    ``device``, made once: a dense ``(n, span)`` float64 matrix when that is cheaper (mild
    downscaling, or a narrow band such as a window's), else each tap's ``(n,)`` index
    (relative to the first input read) and ``(n,)`` weight."""
    first, last = taps.reads(start, stop)
    index = taps.index[start:stop] - first
    weight = taps.weight[start:stop]
    n, span, k = index.shape[0], last - first, index.shape[1]
    # Dense only while it stays small: an upscaled axis (a 10-pixel side resized to
    # 256000) would otherwise ask for an n x in_size matrix (20 GB), and a strong
    # downscale of a whole image multiplies mostly zeros. Both ways sum exactly.
    if (span <= _DENSE_SPAN * n or n <= _DENSE_BAND * k) and n * span <= _MAX_DENSE_ENTRIES:
        return torch.from_numpy(dense_weights(taps, start, stop)).to(device), []
    terms = [
        (
            torch.from_numpy(np.ascontiguousarray(index[:, j])).to(device),
            torch.from_numpy(np.ascontiguousarray(weight[:, j])).to(device),
        )
        for j in range(k)
    ]
    return None, terms


def linear_pass(x: Tensor, taps: Taps, dim: int, start: int, stop: int) -> Tensor:
    """The weighted sums of outputs ``start..stop-1`` of ``taps`` along ``dim``.

    Args:
        x: ``(C, H, W)`` float64; along ``dim`` it holds the inputs ``first..last-1`` of
            :meth:`Taps.reads` for the same outputs.
        dim: 1 (rows) or 2 (columns).

    Returns:
        ``(C, h, W)`` or ``(C, H, w)`` float64, exact when every product and partial sum is
        representable (fixed-point weights on 8-bit or integer values).
    """
    matrix, terms = _pass_operands(taps, start, stop, x.device)
    if matrix is not None:
        return x @ matrix.T if dim == 2 else matrix @ x
    shape = [1, 1, 1]
    shape[dim] = -1
    out = x.new_zeros(0)
    for k, (index, weight) in enumerate(terms):
        term = x.index_select(dim, index) * weight.to(x.dtype).reshape(shape)
        out = term if k == 0 else out + term
    return out


def _weight_view(w: np.ndarray, like: Tensor, dim: int) -> Tensor:
    shape = [1, 1, 1]
    shape[dim] = -1
    return _move(np.ascontiguousarray(w), like).to(like.dtype).reshape(shape)


def tap_terms(
    x: Tensor, taps: Taps, dim: int, start: int, stop: int
) -> list[tuple[Tensor, Tensor]]:
    """Each tap's input and weight for outputs ``start..stop-1``, in tap order: a list of
    ``(x_k, w_k)`` with ``x_k`` shaped like the output and ``w_k`` broadcastable to it
    (for backends whose rounding is per tap, or whose sums are sequential in float32)."""
    first, _ = taps.reads(start, stop)
    index = taps.index[start:stop] - first
    weight = taps.weight[start:stop]
    return [
        (x.index_select(dim, _move(index[:, k], x)), _weight_view(weight[:, k], x, dim))
        for k in range(index.shape[1])
    ]


class _To8bit(torch.autograd.Function):
    """``[0, 1]`` image -> float64 8-bit values ``round(255 x)`` (a new tensor, whatever
    the input dtype); straight-through gradient."""

    @staticmethod
    def forward(ctx: object, image: Tensor) -> Tensor:
        ctx.dtype = image.dtype  # type: ignore[attr-defined]
        return image.to(torch.float64).clamp(0.0, 1.0).mul_(255.0).round_()

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return (grad * 255.0).to(ctx.dtype)  # type: ignore[attr-defined]


def to_8bit(image: Tensor) -> Tensor:
    """``(C, H, W)`` in ``[0, 1]`` -> float64 8-bit values ``round(255 image)``, differentiable."""
    return _To8bit.apply(image)


class _StraightThrough(torch.autograd.Function):
    """Forward: ``exact``; backward: the gradient goes to ``linear`` unchanged."""

    @staticmethod
    def forward(ctx: object, linear: Tensor, exact: Tensor) -> Tensor:
        return exact.clone()

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def straight_through(linear: Tensor, exact: Tensor) -> Tensor:
    """``exact`` (computed without gradient) with the gradient of ``linear``: the rounding
    a library does after a weighted sum, made differentiable as the identity."""
    return _StraightThrough.apply(linear, exact.detach())


def crop_reads(
    image: Tensor, ys: tuple[int, int], xs: tuple[int, int], offset: tuple[int, int]
) -> Tensor:
    """Input rows ``ys = [y0, y1)`` and columns ``xs`` (input coordinates) of ``image``, a
    crop of the input whose top-left corner is at ``offset = (y0, x0)``.

    Raises:
        ValueError: the crop does not hold all of them.
    """
    oy, ox = offset
    h, w = image.shape[-2], image.shape[-1]
    if ys[0] < oy or xs[0] < ox or ys[1] > oy + h or xs[1] > ox + w:
        raise ValueError(
            f"the resampling taps read input rows {ys[0]}..{ys[1] - 1} and columns "
            f"{xs[0]}..{xs[1] - 1}, outside the {h}x{w} window at (y, x) = {offset}"
        )
    return image[:, ys[0] - oy : ys[1] - oy, xs[0] - ox : xs[1] - ox]


# A pass: (input window, taps, dim, start, stop) -> output.
Pass = Callable[[Tensor, Taps, int, int, int], Tensor]


def separable(
    image: Tensor,
    taps_v: Taps,
    taps_h: Taps,
    pass_v: Pass,
    pass_h: Pass,
    vertical_first: bool = False,
    rows: slice | None = None,
    cols: slice | None = None,
    offset: tuple[int, int] = (0, 0),
) -> Tensor:
    """Resize a ``(C, H, W)`` ``[0, 1]`` image on its 8-bit values ``round(255 x)``.

    Only the output ``rows`` x ``cols`` (slices of step 1; default all) are computed, from
    the input window their taps read.

    ``image`` may be a crop of the input (the taps' ``in_size``) whose top-left corner is
    at ``offset = (y0, x0)``: only its pixels are read (``ValueError`` when the taps need
    others), with the same arithmetic, so the result is the same.

    Returns:
        ``(C, h, w)`` float64 output of the two passes (8-bit values for 8-bit backends).
    """
    rows = rows or slice(0, taps_v.out_size)
    cols = cols or slice(0, taps_h.out_size)
    r0, r1 = rows.start or 0, rows.stop
    c0, c1 = cols.start or 0, cols.stop
    y0, y1 = taps_v.reads(r0, r1)
    x0, x1 = taps_h.reads(c0, c1)
    x = to_8bit(crop_reads(image, (y0, y1), (x0, x1), offset))
    if vertical_first:
        return pass_h(pass_v(x, taps_v, 1, r0, r1), taps_h, 2, c0, c1)
    return pass_v(pass_h(x, taps_h, 2, c0, c1), taps_v, 1, r0, r1)


# --- Pillow ----------------------------------------------------------------------------


def _box(x: float) -> float:
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _hamming(x: float) -> float:
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x = x * math.pi
    # Pillow writes 0.54f + 0.46f * cos(x): float constants, double arithmetic.
    return math.sin(x) / x * (float(np.float32(0.54)) + float(np.float32(0.46)) * math.cos(x))


def _bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


PIL_FILTERS: dict[str, tuple[Callable[[float], float], float, Image.Resampling]] = {
    "box": (_box, 0.5, Image.Resampling.BOX),
    "bilinear": (_bilinear, 1.0, Image.Resampling.BILINEAR),
    "hamming": (_hamming, 1.0, Image.Resampling.HAMMING),
    "bicubic": (_bicubic, 2.0, Image.Resampling.BICUBIC),
    "lanczos": (_lanczos, 3.0, Image.Resampling.LANCZOS),
}
"""Pillow's convolution filters: name -> (filter, support, Pillow's constant)."""


def _box_array(x: np.ndarray) -> np.ndarray:
    return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)


def _bilinear_array(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic_array(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


_ARRAY_FILTERS = {"box": _box_array, "bilinear": _bilinear_array, "bicubic": _bicubic_array}
"""The filters made of IEEE arithmetic only, as numpy functions that give the same doubles
as the scalar ones; the others call ``sin``/``cos``, whose numpy versions may differ from
libm's in the last bit, so their taps keep the C loop."""


@lru_cache(maxsize=256)
def pil_taps(in_size: int, out_size: int, name: str) -> Taps:
    """Pillow's taps for one axis (``precompute_coeffs`` + ``normalize_coeffs_8bpc``).

    The filter's support is scaled by the downscale factor; weights are normalised, then
    rounded to 22-bit fixed point (half away from zero) and returned divided by ``2**22``.
    The C loop's double arithmetic in the same order (the weights' sum taken tap by tap),
    so every weight is Pillow's: over all outputs at once with numpy for the arithmetic
    filters, output by output in Python floats (same libm) for the others.
    """
    if name in _ARRAY_FILTERS:
        return _array_taps(in_size, out_size, name)
    return _loop_taps(in_size, out_size, name)


def _support(in_size: int, out_size: int, name: str) -> tuple[float, float, float, int]:
    """``(scale, filterscale, support, ksize)`` of filter ``name`` for one axis, as Pillow
    computes them: the support grows with the downscale factor."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = PIL_FILTERS[name][1] * filterscale
    return scale, filterscale, support, int(math.ceil(support)) * 2 + 1


def _loop_taps(in_size: int, out_size: int, name: str) -> Taps:
    """:func:`pil_taps` as the C loop, output by output (any filter)."""
    fn = PIL_FILTERS[name][0]
    scale, filterscale, support, ksize = _support(in_size, out_size, name)
    index = np.zeros((out_size, ksize), np.int64)
    weight = np.zeros((out_size, ksize))
    one = float(1 << PIL_PRECISION_BITS)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [fn((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in k:
            ww += w
        if ww != 0.0:
            k = [w / ww for w in k]
        fixed = [int(-0.5 + w * one) if w < 0 else int(0.5 + w * one) for w in k]
        index[xx, :xmax] = np.arange(xmin, xmin + xmax)
        index[xx, xmax:] = xmin
        weight[xx, :xmax] = np.array(fixed, np.float64) / one
    return Taps(index, weight, in_size)


def _array_taps(in_size: int, out_size: int, name: str) -> Taps:
    """:func:`pil_taps` over all outputs at once (filters of :data:`_ARRAY_FILTERS`)."""
    scale, filterscale, support, ksize = _support(in_size, out_size, name)
    center = (np.arange(out_size) + 0.5) * scale
    ss = 1.0 / filterscale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    inside = taps[None, :] < xmax[:, None]
    k = _ARRAY_FILTERS[name]((taps[None, :] + xmin[:, None] - center[:, None] + 0.5) * ss)
    k = np.where(inside, k, 0.0)
    ww = np.zeros(out_size)
    for j in range(ksize):  # tap by tap, as the C loop sums (adding the zeros changes nothing)
        ww = ww + k[:, j]
    k = np.where(ww[:, None] != 0.0, k / np.where(ww == 0.0, 1.0, ww)[:, None], k)
    one = float(1 << PIL_PRECISION_BITS)
    fixed = np.where(k < 0, np.trunc(-0.5 + k * one), np.trunc(0.5 + k * one))
    index = np.where(inside, xmin[:, None] + taps[None, :], xmin[:, None])
    return Taps(index.astype(np.int64), np.where(inside, fixed / one, 0.0), in_size)


@lru_cache(maxsize=256)
def pil_nearest_taps(in_size: int, out_size: int) -> Taps:
    """``Image.resize(..., NEAREST)``: an affine scale in Pillow's ``ImagingScaleAffine``,
    whose source coordinate starts at ``scale/2`` and adds ``scale`` per pixel (a running
    double sum), truncated."""
    a = in_size / out_size
    xo = 0.0 + a * 0.5
    index = np.zeros((out_size, 1), np.int64)
    for x in range(out_size):
        index[x, 0] = min(-1 if xo < 0 else int(xo), in_size - 1)
        xo += a
    return Taps(index, np.ones((out_size, 1)), in_size)


def pil_round(linear: Tensor) -> Tensor:
    """Pillow's rounding of a pass's fixed-point sums: half up, clamped to 0..255, with a
    straight-through gradient (a no-op on whole values in range)."""
    with torch.no_grad():
        exact = linear.add(0.5).floor_().clamp_(0.0, 255.0)
    return straight_through(linear, exact)


def pil_pass(x: Tensor, taps: Taps, dim: int, start: int, stop: int) -> Tensor:
    """One Pillow pass: the fixed-point sum, rounded half up and clamped to 0..255."""
    return pil_round(linear_pass(x, taps, dim, start, stop))


def nearest_pass(x: Tensor, taps: Taps, dim: int, start: int, stop: int) -> Tensor:
    """A pass that copies one input sample per output (nearest neighbour)."""
    first, _ = taps.reads(start, stop)
    return x.index_select(dim, _move(taps.index[start:stop, 0] - first, x))


_PROBE_WINDOW = 64


@lru_cache(maxsize=4096)
def pil_order(in_h: int, in_w: int, out_h: int, out_w: int, name: str) -> bool:
    """Whether the installed Pillow runs the vertical pass first for this resize and filter.

    Pillow ran the horizontal pass first until version 13, which may run the vertical pass
    first when the height shrinks much more than the width (python-pillow/Pillow#9549).
    Rather than copy a rule that may change again, ask Pillow: resize a random image of
    this size once and see which order reproduces it. Only a central window of at most
    :data:`_PROBE_WINDOW` pixels square is emulated and compared (the orders differ by
    their intermediate rounding, which random pixels show everywhere), so that the probe
    costs about Pillow's own 8-bit resize even for an extreme upscale.
    """
    if in_h == out_h or in_w == out_w or in_h - out_h <= in_w - out_w:
        return False
    pixels = np.random.default_rng(in_h * 7919 + in_w).integers(0, 256, (in_h, in_w, 3), np.uint8)
    resized = np.asarray(Image.fromarray(pixels).resize((out_w, out_h), PIL_FILTERS[name][2]))
    r0, c0 = max(0, (out_h - _PROBE_WINDOW) // 2), max(0, (out_w - _PROBE_WINDOW) // 2)
    rows = slice(r0, min(out_h, r0 + _PROBE_WINDOW))
    cols = slice(c0, min(out_w, c0 + _PROBE_WINDOW))
    expected = torch.from_numpy(resized[rows, cols].copy()).permute(2, 0, 1).to(torch.float64)
    taps_v, taps_h = pil_taps(in_h, out_h, name), pil_taps(in_w, out_w, name)
    # Only the input window the central outputs read is emulated, whatever the sizes.
    (y0, y1), (x0, x1) = taps_v.reads(rows.start, rows.stop), taps_h.reads(cols.start, cols.stop)
    window = torch.from_numpy(pixels[y0:y1, x0:x1].copy()).permute(2, 0, 1) / 255.0
    with torch.no_grad():
        mismatches = [
            int(
                (
                    separable(window, taps_v, taps_h, pil_pass, pil_pass, o, rows, cols, (y0, x0))
                    != expected
                ).sum()
            )
            for o in (False, True)
        ]
    return mismatches[1] < mismatches[0]


Plan = tuple[Taps, Taps, Pass, Pass, bool]
"""How to resize: ``(taps_v, taps_h, pass_v, pass_h, vertical_first)`` for :func:`separable`."""


def pil_plan(in_h: int, in_w: int, out_h: int, out_w: int, name: str) -> Plan:
    """Pillow's resize of ``in_h x in_w`` to ``out_h x out_w`` with filter ``name``
    (``nearest`` or a key of :data:`PIL_FILTERS`). A pass whose axis keeps its size is
    skipped, as Pillow skips it."""
    if name == "nearest":
        tv, th = pil_nearest_taps(in_h, out_h), pil_nearest_taps(in_w, out_w)
        return tv, th, nearest_pass, nearest_pass, False
    tv, pv = (
        (pil_taps(in_h, out_h, name), pil_pass)
        if in_h != out_h
        else (_identity_axis(in_h), nearest_pass)
    )
    th, ph = (
        (pil_taps(in_w, out_w, name), pil_pass)
        if in_w != out_w
        else (_identity_axis(in_w), nearest_pass)
    )
    return tv, th, pv, ph, pil_order(in_h, in_w, out_h, out_w, name)


def run_plan(
    image: Tensor,
    plan: Plan,
    rows: slice | None = None,
    cols: slice | None = None,
    offset: tuple[int, int] = (0, 0),
) -> Tensor:
    """:func:`separable` with a plan: ``(C, H, W)`` in ``[0, 1]`` -> ``(C, h, w)`` float64
    (``image`` a crop at ``offset``, see :func:`separable`)."""
    tv, th, pv, ph, order = plan
    return separable(image, tv, th, pv, ph, order, rows, cols, offset)


def pil_resize_filter(
    image: Tensor,
    size: tuple[int, int],
    name: str,
    rows: slice | None = None,
    cols: slice | None = None,
) -> Tensor:
    """``PIL.Image.resize((w, h), filter)`` of the 8-bit image ``round(255 image)``.

    Args:
        image: ``(C, H, W)`` float in ``[0, 1]``.
        size: output ``(height, width)``.
        name: ``nearest`` or a key of :data:`PIL_FILTERS`.
        rows, cols: optional output slices to compute (a crop).

    Returns:
        ``(C, h, w)`` float64 8-bit values; differentiable (straight-through rounding).
    """
    plan = pil_plan(image.shape[-2], image.shape[-1], size[0], size[1], name)
    return run_plan(image, plan, rows, cols)


@lru_cache(maxsize=256)
def _identity_axis(n: int) -> Taps:
    return Taps(np.arange(n, dtype=np.int64)[:, None], np.ones((n, 1)), n)
