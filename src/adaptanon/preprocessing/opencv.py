"""``cv2.resize`` on 8-bit images, reproduced in differentiable torch code.

OpenCV (``modules/imgproc/src/resize.cpp``) resizes ``uint8`` images with its own
fixed-point and float32 arithmetic, which :func:`cv_resize` repeats step for step:

* ``nearest``: ``src[floor(x * (1 / (dst/src)))]``, clamped (``resizeNN``).
* ``linear`` (and ``area`` when enlarging): horizontal sums with 11-bit coefficients
  (``saturate_cast<short>(w * 2048)`` of float32 weights), kept as integers; vertical
  pass ``((b0 * (S0 >> 4)) >> 16) + ((b1 * (S1 >> 4)) >> 16) + 2) >> 2``. Exactly halving
  both sides runs ``area`` instead, as OpenCV does.
* ``area`` when shrinking: by an integer factor on both axes, block sums times the float32
  ``1/area`` rounded half to even (``(sum + 2) >> 2`` for 2x2); otherwise float32 sums over
  the covered pixels with fractional border weights, in OpenCV's order (``resizeArea_``).

Not reproduced, so refused: ``cubic`` (``cv2.INTER_CUBIC``) on 8-bit images runs Intel IPP
code in the opencv-python wheels (OpenCV's own integer arithmetic matches only with
``cv2.ipp.setUseIPP(False)``), ``lanczos4``, and the ``*_EXACT`` variants.

Gradients are straight through every rounding (the gradient of the weighted sums).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from adaptanon.preprocessing.resample import (
    Pass,
    Plan,
    Taps,
    linear_pass,
    nearest_pass,
    run_plan,
    straight_through,
    tap_terms,
)

CV_INTERPOLATIONS = ("nearest", "linear", "area")
"""The ``cv2.INTER_*`` modes reproduced (``INTER_NEAREST``, ``INTER_LINEAR``, ...)."""

_COEF_SCALE = 2048  # INTER_RESIZE_COEF_SCALE: 11-bit coefficients
_f32 = np.float32


@lru_cache(maxsize=256)
def cv_nearest_taps(in_size: int, out_size: int) -> Taps:
    """``resizeNN``: ``min(floor(x * ifx), in_size - 1)`` with ``ifx = 1 / (out/in)``."""
    ifx = 1.0 / (out_size / in_size)
    index = np.array([min(math.floor(x * ifx), in_size - 1) for x in range(out_size)])
    return Taps(index[:, None].astype(np.int64), np.ones((out_size, 1)), in_size)


@lru_cache(maxsize=256)
def cv_generic_taps(in_size: int, out_size: int, mode: str, horizontal: bool) -> Taps:
    """The taps of ``resizeGeneric_`` for ``linear`` (or ``area`` enlarging) on
    one axis, weights as the 11-bit integers OpenCV uses (not divided by 2048).

    Horizontally OpenCV moves linear taps that fall outside the image to the border
    sample with weight (1, 0); vertically it keeps the weights and clamps the rows read.
    """
    inv_scale = out_size / in_size
    scale = 1.0 / inv_scale
    ksize, ksize2 = 2, 1
    index = np.zeros((out_size, ksize), np.int64)
    weight = np.zeros((out_size, ksize))
    for d in range(out_size):
        if mode != "area":
            f = _f32((d + 0.5) * scale - 0.5)
            s = math.floor(f)
            f = _f32(f - _f32(s))
        else:
            s = math.floor(d * scale)
            f = _f32((d + 1) - (s + 1) * inv_scale)
            f = _f32(0.0) if f <= 0 else _f32(f - _f32(math.floor(f)))
        if horizontal:
            if s < ksize2 - 1 and s < 0:
                f, s = _f32(0.0), 0
            if s + ksize2 >= in_size and s >= in_size - 1:
                f, s = _f32(0.0), in_size - 1
        cbuf = [_f32(1.0) - f, f]
        for k in range(ksize):
            index[d, k] = min(max(s - ksize2 + 1 + k, 0), in_size - 1)
            weight[d, k] = np.rint(_f32(cbuf[k] * _f32(_COEF_SCALE)))  # cvRound: half to even
    return Taps(index, weight, in_size)


@lru_cache(maxsize=256)
def cv_area_taps(in_size: int, out_size: int) -> Taps:
    """``computeResizeAreaTab``: each output's covered inputs and float32 weights
    (fraction of the cell), in OpenCV's order."""
    scale = 1.0 / (out_size / in_size)
    rows: list[list[tuple[int, float]]] = []
    for dx in range(out_size):
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, in_size - fsx1)
        sx1, sx2 = math.ceil(fsx1), math.floor(fsx2)
        sx2 = min(sx2, in_size - 1)
        sx1 = min(sx1, sx2)
        taps: list[tuple[int, float]] = []
        if sx1 - fsx1 > 1e-3:
            taps.append((sx1 - 1, float(_f32((sx1 - fsx1) / cell))))
        for sx in range(sx1, sx2):
            taps.append((sx, float(_f32(1.0 / cell))))
        if fsx2 - sx2 > 1e-3:
            taps.append((sx2, float(_f32(min(min(fsx2 - sx2, 1.0), cell) / cell))))
        rows.append(taps)
    k = max(len(t) for t in rows)
    index = np.zeros((out_size, k), np.int64)
    weight = np.zeros((out_size, k))
    for d, taps in enumerate(rows):
        index[d] = taps[-1][0]  # padding taps: weight 0 at a sample already read
        for j, (i, w) in enumerate(taps):
            index[d, j], weight[d, j] = i, w
    return Taps(index, weight, in_size)


@lru_cache(maxsize=256)
def _block_taps(in_size: int, factor: int) -> Taps:
    out = in_size // factor
    index = np.arange(out)[:, None] * factor + np.arange(factor)[None, :]
    return Taps(index.astype(np.int64), np.ones((out, factor)), in_size)


# --- passes: (x, taps, dim, start, stop) -> output -----------------------------------


def _int_pass(x: Tensor, taps: Taps, dim: int, start: int, stop: int) -> Tensor:
    """Horizontal integer sums ``sum S * alpha`` (kept as integers, 11 fractional bits)."""
    return linear_pass(x, taps, dim, start, stop)


def _linear_vertical(x: Tensor, taps: Taps, dim: int, start: int, stop: int) -> Tensor:
    """``VResizeLinear`` (8U): per tap ``(b * (S >> 4)) >> 16``, then ``(sum + 2) >> 2``."""
    terms = tap_terms(x, taps, dim, start, stop)
    linear = sum((xk * wk for xk, wk in terms), x.new_zeros(())) / float(1 << 22)
    with torch.no_grad():
        acc = sum(
            (torch.floor(wk * torch.floor(xk / 16.0) / 65536.0) for xk, wk in terms),
            x.new_zeros(()),
        )
        exact = torch.floor((acc + 2.0) / 4.0).clamp_(0.0, 255.0)
    return straight_through(linear, exact)


def _sum_pass(x: Tensor, taps: Taps, dim: int, start: int, stop: int) -> Tensor:
    """Integer block sums (exact)."""
    return linear_pass(x, taps, dim, start, stop)


def _fast_area_final(area: int) -> Pass:
    """Pass that finishes an integer-factor area resize from block sums."""

    def final(x: Tensor, taps: Taps, dim: int, start: int, stop: int) -> Tensor:
        total = linear_pass(x, taps, dim, start, stop)
        with torch.no_grad():
            if area == 4 and taps.index.shape[1] == 2:  # the 2x2 fast path: (sum + 2) >> 2
                exact = torch.floor((total + 2.0) / 4.0)
            else:
                scale = torch.tensor(1.0 / area, dtype=torch.float32).item()
                exact = torch.round((total.to(torch.float32) * scale).double())
            exact = exact.clamp_(0.0, 255.0)
        return straight_through(total / area, exact)

    return final


def _area_h(x: Tensor, taps: Taps, dim: int, start: int, stop: int) -> Tensor:
    """``resizeArea_`` horizontal: ``buf += S * alpha`` in float32, tap by tap."""
    terms = tap_terms(x.to(torch.float32), taps, dim, start, stop)
    acc = terms[0][0] * terms[0][1]
    for xk, wk in terms[1:]:
        acc = acc + xk * wk
    return acc


def _area_v(x: Tensor, taps: Taps, dim: int, start: int, stop: int) -> Tensor:
    """``resizeArea_`` vertical: ``sum += beta * buf`` in float32, then round half even."""
    terms = tap_terms(x, taps, dim, start, stop)
    acc = terms[0][1] * terms[0][0]
    for xk, wk in terms[1:]:
        acc = acc + wk * xk
    linear = acc.to(torch.float64)
    with torch.no_grad():
        exact = torch.round(acc).clamp_(0.0, 255.0).to(torch.float64)
    return straight_through(linear, exact)


def check_cv_mode(mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` is reproduced bit-exactly."""
    if mode in CV_INTERPOLATIONS:
        return
    why = {
        "cubic": "on 8-bit images the opencv-python wheels run Intel IPP code for it, "
        "whose rounding is not reproduced",
        "lanczos4": "it is not implemented",
    }.get(mode, "it is not an interpolation adaptanon knows")
    raise ValueError(
        f"OpenCV interpolation {mode!r} cannot be reproduced bit-exactly ({why}); "
        f"use one of {', '.join(CV_INTERPOLATIONS)}"
    )


def cv_resize(
    image: Tensor,
    size: tuple[int, int],
    mode: str,
    rows: slice | None = None,
    cols: slice | None = None,
) -> Tensor:
    """``cv2.resize(img, (w, h), interpolation=INTER_<mode>)`` of the 8-bit image
    ``round(255 image)`` (any channel order: every channel is resized alike).

    Args:
        image: ``(C, H, W)`` float in ``[0, 1]``.
        size: output ``(height, width)``.
        mode: one of :data:`CV_INTERPOLATIONS`.
        rows, cols: optional output slices to compute (a crop).

    Returns:
        ``(C, h, w)`` float64 8-bit values; differentiable (straight-through rounding).
    """
    check_cv_mode(mode)
    plan = cv_plan(image.shape[-2], image.shape[-1], size[0], size[1], mode)
    return run_plan(image, plan, rows, cols)


def cv_plan(in_h: int, in_w: int, out_h: int, out_w: int, mode: str) -> Plan:
    """OpenCV's resize of ``in_h x in_w`` to ``out_h x out_w`` as a :data:`.resample.Plan`."""
    check_cv_mode(mode)
    if (out_h, out_w) == (in_h, in_w):  # cv2.resize copies
        return (
            cv_nearest_taps(in_h, in_h),
            cv_nearest_taps(in_w, in_w),
            nearest_pass,
            nearest_pass,
            False,
        )
    if mode == "nearest":
        tv, th = cv_nearest_taps(in_h, out_h), cv_nearest_taps(in_w, out_w)
        return tv, th, nearest_pass, nearest_pass, False
    scale_x, scale_y = 1.0 / (out_w / in_w), 1.0 / (out_h / in_h)
    ix, iy = max(0, round(scale_x)), max(0, round(scale_y))
    eps = 2.220446049250313e-16  # DBL_EPSILON
    fast = abs(scale_x - ix) < eps and abs(scale_y - iy) < eps and ix >= 1 and iy >= 1
    if mode == "linear" and fast and ix == 2 and iy == 2:
        mode = "area"  # OpenCV: halving with INTER_LINEAR is INTER_AREA
    if mode == "area" and scale_x >= 1 and scale_y >= 1:
        if fast:
            tv, th = _block_taps(in_h, iy), _block_taps(in_w, ix)
            return tv, th, _fast_area_final(ix * iy), _sum_pass, False
        return cv_area_taps(in_h, out_h), cv_area_taps(in_w, out_w), _area_v, _area_h, False
    tv = cv_generic_taps(in_h, out_h, mode, False)
    th = cv_generic_taps(in_w, out_w, mode, True)
    return tv, th, _linear_vertical, _int_pass, False
