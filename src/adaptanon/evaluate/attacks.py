"""Inversion attacks: what an attacker who knows the filter recovers from a written region.

The filter and its parameters are in every manifest, and the pixels outside the regions are
the original's, so the attacker knows the forward model exactly. Each attack takes the
written image (``(3, H, W)`` in ``[0, 1]``), the regions' boxes and the filter with the
scale it ran at, and returns its best estimate of the original image with the attack's
name (:func:`invert`):

- blur, Yang et al.'s blur (any differentiable filter): regularized least squares through
  the known filter (:func:`invert_least_squares`): the region's pixels are solved for by
  conjugate gradients so that filtering them, with the known pixels around, gives the
  written region, with a small smoothness prior;
- mosaic: bicubic upsampling of the cells (:func:`invert_mosaic`), the cell grid being
  known; for the noisy face mosaic the cells are averaged first, which removes any noise
  that varies within a cell;
- mask: nothing to invert (the written image is returned, attack ``none``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptanon.method.filters import (
    Blur,
    ByLabel,
    FaceMosaic,
    Filter,
    Mask,
    Mosaic,
    Yang,
    anonymize,
    face_mosaic_box,
    face_mosaic_cell,
    gaussian_blur,
    mosaic_cells,
    yang_obfuscate,
    yang_params,
)
from adaptanon.records import Box
from adaptanon.regions import region_mask

LSQ_STEPS = 60
"""Conjugate-gradient iterations of the least-squares inversion."""

LSQ_SIDE = 128
"""A region whose longer side exceeds this is inverted at a lower resolution (an integer
area-averaging factor bringing it to at most this), then upsampled bicubically: the face
descriptor sees a 150-pixel chip, so the attack loses little and stays affordable for
large faces. Half of it for Yang's blur, whose kernel and window grow with the face."""

LSQ_SMOOTH = 1e-3
"""Weight of the smoothness prior (squared differences of neighbours) against the squared
residual."""


def _reach(filt: Filter, box: Box, scale: float) -> int:
    """How far around ``box`` the filter reads and writes, in pixels."""
    x0, y0, x1, y1 = box
    if isinstance(filt, Yang):
        _, margin, radius = yang_params(box)
        return margin + 2 * radius
    return filt.context(scale) + max(2, max(x1 - x0, y1 - y0) // 8)


def _problem(
    filt: Filter, seen: Tensor, rel: Box, scale: float, shape: str, factor: int
) -> tuple[Callable[[Tensor], Tensor], Tensor, Tensor]:
    """The inversion problem in a window, at ``1 / factor`` of its resolution (area
    average; 1 for a filter other than blur and yang): ``(forward, changed, observed)``,
    ``forward`` the filter as a linear function of the window's pixels (no clamping),
    ``changed`` the ``(1, h, w)`` mask of the pixels it changes, ``observed`` the window.
    The window holds the filter's whole context, so the blurred window where it changed
    equals :func:`anonymize` there."""
    if factor > 1:
        h, w = seen.shape[-2:]
        seen = F.avg_pool2d(seen[None], factor)[0]
        x0, y0, x1, y1 = (round(v / factor) for v in rel)
        rel = (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))
    lh, lw = seen.shape[-2:]
    if isinstance(filt, Blur):
        ksize, sigma = filt._params(scale)
        ksize, sigma = max(3, 2 * round((ksize / factor - 1) / 2) + 1), sigma / factor
        changed = region_mask(lh, lw, [rel], shape)[None].to(seen.device)
        blur = lambda x: torch.where(changed, gaussian_blur(x, ksize, sigma), x)  # noqa: E731
        return blur, changed, seen
    if isinstance(filt, Yang):
        changed = yang_obfuscate(seen, [rel], shape)[1]
        return lambda x: yang_obfuscate(x, [rel], shape, clamp=False)[0], changed, seen
    changed = anonymize(seen, [rel], filt, scale, shape)[1]
    return lambda x: anonymize(x, [rel], filt, scale, shape)[0], changed, seen


def _cg(matvec: Callable[[Tensor], Tensor], b: Tensor, steps: int) -> Tensor:
    """Conjugate gradients for ``matvec(u) = b`` (``matvec`` symmetric positive
    semi-definite), ``steps`` iterations from 0."""
    u = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum()
    for _ in range(steps):
        if float(rr) <= 1e-12:
            break
        ap = matvec(p)
        step = rr / (p * ap).sum().clamp_min(1e-20)
        u = u + step * p
        r = r - step * ap
        new = (r * r).sum()
        p = r + (new / rr) * p
        rr = new
    return u


def _smoothness(x: Tensor) -> Tensor:
    return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).sum() + ((x[..., 1:] - x[..., :-1]) ** 2).sum()


def invert_least_squares(
    filt: Filter,
    written: Tensor,
    boxes: list[Box],
    scale: float = 1.0,
    shape: str = "rect",
    steps: int = LSQ_STEPS,
) -> Tensor:
    """Solve for each region's pixels through the known (linear) filter.

    For each box, in a window around it that holds everything the filter reads, with
    ``F`` the filter and ``C`` the pixels it changed: minimise
    ``|C (F(x) - written)|^2 + LSQ_SMOOTH |grad x|^2`` over the pixels in ``C``, the
    others fixed to the written ones (the original's), by ``steps`` conjugate-gradient
    iterations on the normal equations (products with ``F^T`` by autograd); a region
    larger than :data:`LSQ_SIDE` is solved at a lower resolution (:func:`_problem`) and
    upsampled bicubically.

    Args:
        written: ``(3, H, W)`` in ``[0, 1]``, the anonymized (or corrected) image.

    Returns:
        ``(3, H, W)``: the estimate of the original (equal to ``written`` outside).
    """
    out = written.detach().clone()
    _, h, w = written.shape
    for box in boxes:
        r = _reach(filt, box, scale)
        x0, y0, x1, y1 = box
        wx0, wy0, wx1, wy1 = max(0, x0 - r), max(0, y0 - r), min(w, x1 + r), min(h, y1 + r)
        window = written[:, wy0:wy1, wx0:wx1].detach().float()
        rel = (x0 - wx0, y0 - wy0, x1 - wx0, y1 - wy0)
        full = anonymize(window, [rel], filt, scale, shape)[1]
        if not bool(full.any()):
            continue
        factor = 1
        if isinstance(filt, Blur | Yang):
            side = LSQ_SIDE // 2 if isinstance(filt, Yang) else LSQ_SIDE
            factor = max(1, -(-max(x1 - x0, y1 - y0) // side))
        forward, changed, seen = _problem(filt, window, rel, scale, shape, factor)
        inside = changed.expand_as(seen).to(seen.dtype)
        known = seen * (1 - inside)

        def grad(x: Tensor, target: Tensor | None, forward=forward, inside=inside) -> Tensor:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                res = forward(x) * inside if target is None else (forward(x) - target) * inside
                q = 0.5 * (res**2).sum() + 0.5 * LSQ_SMOOTH * _smoothness(x)
                (g,) = torch.autograd.grad(q, [x])
            return g * inside

        u = _cg(lambda v: grad(v, None), -grad(known, seen), steps)
        est = known + u
        if factor > 1:
            est = F.interpolate(est[None], size=window.shape[-2:], mode="bicubic")[0]
        region = out[:, wy0:wy1, wx0:wx1]
        out[:, wy0:wy1, wx0:wx1] = torch.where(full, est.clamp(0, 1).to(out), region)
    return out


def _upsample_cells(window: Tensor, block: int) -> Tensor:
    """Cell means of ``window`` (``(C, h, w)``, cells of :func:`mosaic_cells`) upsampled
    bicubically back to ``(C, h, w)``."""
    h, w = window.shape[-2:]
    rows, cols = mosaic_cells(h, block), mosaic_cells(w, block)
    ny, nx = int(rows[-1]) + 1, int(cols[-1]) + 1
    ay = F.one_hot(rows, ny).to(window) / torch.bincount(rows, minlength=ny).to(window)
    ax = F.one_hot(cols, nx).to(window) / torch.bincount(cols, minlength=nx).to(window)
    means = ay.T @ window @ ax  # (C, ny, nx)
    up = F.interpolate(means[None], size=(h, w), mode="bicubic", align_corners=False)[0]
    return up.clamp(0, 1)


def invert_mosaic(
    filt: Mosaic | FaceMosaic, written: Tensor, boxes: list[Box], scale: float = 1.0
) -> Tensor:
    """Bicubic upsampling of each region's cells (averaged from the written pixels, which
    removes within-cell noise and most of a correction). Returns ``(3, H, W)``."""
    out = written.detach().clone()
    _, h, w = written.shape
    for box in boxes:
        if isinstance(filt, FaceMosaic):
            box = face_mosaic_box(box, h, w, filt.grow)
            block = face_mosaic_cell(box, filt.cells)
        else:
            block = filt.cell(scale)
        x0, y0, x1, y1 = box
        out[:, y0:y1, x0:x1] = _upsample_cells(written[:, y0:y1, x0:x1].float(), block).to(out)
    return out


def attack_name(filt: Filter) -> str:
    """The attack :func:`invert` runs against ``filt``."""
    if isinstance(filt, Mosaic | FaceMosaic):
        return "bicubic upsampling of the cells"
    if isinstance(filt, Mask):
        return "none"
    if isinstance(filt, Blur | Yang):
        return f"least squares through the known filter ({LSQ_STEPS} conjugate-gradient steps)"
    return "none"


def invert(
    filt: Filter,
    written: Tensor,
    boxes: list[Box],
    scale: float = 1.0,
    shape: str = "rect",
    labels: list[str] | None = None,
) -> tuple[Tensor, str]:
    """The strongest attack we have against ``filt`` on ``written``: ``(estimate of the
    original (3, H, W), attack name)``. A :class:`ByLabel` filter is attacked per label
    (face boxes through its face filter, the others through the other)."""
    if isinstance(filt, ByLabel):
        names = labels or ["region"] * len(boxes)
        est, used = written.detach().clone(), []
        for part in (filt.other, filt.face):
            mine = [b for b, lab in zip(boxes, names, strict=True) if filt.pick(lab) is part]
            if mine:
                est, name = invert(part, est, mine, scale, shape)
                used.append(name)
        return est, " + ".join(dict.fromkeys(used)) or "none"
    name = attack_name(filt)
    if isinstance(filt, Mosaic | FaceMosaic):
        return invert_mosaic(filt, written, boxes, scale), name
    if isinstance(filt, Blur | Yang):
        return invert_least_squares(filt, written, boxes, scale, shape), name
    return written.detach().clone(), name


__all__ = [
    "LSQ_STEPS",
    "attack_name",
    "invert",
    "invert_least_squares",
    "invert_mosaic",
]
