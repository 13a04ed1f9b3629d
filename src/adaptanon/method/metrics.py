"""How much of the original a region still shows: measures on ``(3, H, W)`` images in
``[0, 1]`` restricted to a region, and the per-region strength record built from them.

Three measures, each comparing an anonymized image with its original inside one region:

- :func:`region_psnr`: PSNR in dB over the region's pixels (higher: closer to the
  original);
- :func:`region_ssim`: SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
  ``K1 = 0.01``, ``K2 = 0.03``, data range 1), per channel, averaged over the windows
  centred in the region (1: the same structure);
- :func:`region_detail`: how much of the original's high-frequency (Laplacian) detail the
  anonymized region still carries, ``max(0, <L(x), L(y)>) / max(|L(x)|^2, |L(y)|^2)``
  (1: all the fine detail is there, 0: none; noise or block edges that do not follow the
  original's detail do not count).

SSIM and detail are measured at a *normalised resolution*: a region whose shorter side
exceeds :data:`MEASURE_SIDE` pixels is first area-averaged by the integer factor that
brings that side to between ``MEASURE_SIDE`` and ``2 * MEASURE_SIDE - 1`` pixels, so that a
blur too small to matter at a large region's scale is not counted as anonymizing it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from adaptanon.io.codecs import optional_module
from adaptanon.records import Box
from adaptanon.regions import region_mask

MEASURE_SIDE = 64
"""Regions are measured (SSIM, detail) with their shorter side at most ``2 * 64 - 1``."""

DETAIL_MIN_SIDE = 5
"""Regions narrower than this get no detail measure (fewer than 3x3 Laplacian windows)."""

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_C1 = 0.01**2
_C2 = 0.03**2
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


def region_psnr(reference: Tensor, other: Tensor, mask: Tensor) -> float | None:
    """PSNR in dB between two ``(3, H, W)`` images in ``[0, 1]``, over the pixels where the
    ``(1, H, W)`` or ``(H, W)`` bool ``mask`` is set (all channels). ``inf`` when they are
    equal there, None when the mask is empty."""
    m = mask.reshape(reference.shape[-2:]).to(reference.device)
    count = int(m.sum())
    if count == 0:
        return None
    diff = reference.double() - other.to(reference.device).double()
    if count < m.numel():  # a rectangle (the usual region) needs no gathering
        diff = diff[:, m]
    # numpy's pairwise sum adds in the same order on any number of threads, so the value
    # does not depend on the process that measures it (worker or main).
    mse = float(np.mean(np.square(diff.cpu().numpy().ravel())))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def _window1d(size: int, sigma: float, like: Tensor) -> Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def ssim_map(x: Tensor, y: Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """Local SSIM of every full window (no padding), per channel.

    Args:
        x, y: ``(C, H, W)`` images in ``[0, 1]`` (data range 1), ``H, W >= window``.
        window: odd size of the Gaussian window; sigma: its standard deviation.

    Returns:
        ``(C, H - window + 1, W - window + 1)``; entry ``[c, i, j]`` is the SSIM of the
        window whose top-left pixel is ``(i, j)`` (centred on ``(i + r, j + r)``,
        ``r = window // 2``). Equals scikit-image's ``structural_similarity`` map with
        ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1``
        away from the borders.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"SSIM window must be odd and positive, got {window}")
    xs = torch.stack([x.double(), y.double().to(x.device)])  # (2, C, H, W)
    c = xs.shape[1]
    k = _window1d(window, sigma, xs)
    feats = torch.cat([xs, xs * xs, (xs[0] * xs[1])[None]])  # (5, C, H, W)
    flat = valid_filter(feats.reshape(5 * c, *feats.shape[-2:]), k[None], k[:, None])
    mx, my, sxx, syy, sxy = flat.reshape(5, c, *flat.shape[-2:])
    vx, vy, cov = sxx - mx * mx, syy - my * my, sxy - mx * my
    num = (2 * mx * my + _C1) * (2 * cov + _C2)
    den = (mx * mx + my * my + _C1) * (vx + vy + _C2)
    return num / den


def valid_filter(maps: Tensor, *kernels: Tensor) -> Tensor:
    """Correlate each of ``N`` float64 maps ``(N, H, W)`` with the 2-D ``kernels`` in turn
    (each ``(kh, kw)``), keeping only outputs whose windows lie inside:
    ``(N, H - sum(kh - 1), W - sum(kw - 1))``.

    On the CPU with OpenCV installed each map goes through ``cv2.filter2D`` (vectorised in
    float64, where torch's convolutions are not; ``bench/host_stages.py`` measures the
    metrics); otherwise one depthwise convolution per kernel. Both add the same products in
    float64, in different orders: they agree to about 1e-15.
    """
    if maps.dim() != 3 or maps.dtype != torch.float64:
        raise ValueError(f"expected (N, H, W) float64 maps, got {tuple(maps.shape)} {maps.dtype}")
    cv2 = optional_module("cv2") if maps.device.type == "cpu" else None
    if cv2 is not None:
        planes = maps.detach().contiguous().numpy()
        for kernel in kernels:
            kh, kw = kernel.shape
            taps = kernel.cpu().numpy()
            planes = np.stack(
                [
                    cv2.filter2D(p, -1, taps, anchor=(0, 0))[
                        : p.shape[0] - kh + 1, : p.shape[1] - kw + 1
                    ]
                    for p in planes
                ]
            )
        return torch.from_numpy(planes)
    n = maps.shape[0]
    out = maps[None]
    for kernel in kernels:
        weights = kernel.to(maps)[None, None].expand(n, 1, *kernel.shape).contiguous()
        out = F.conv2d(out, weights, groups=n)
    return out[0]


def _masked_mean(values: Tensor, centres: Tensor) -> float:
    """Mean of ``(C, h, w)`` ``values`` over the ``(h, w)`` bool ``centres`` (all when
    none is set)."""
    if not bool(centres.any()):
        return float(values.mean())
    return float(values[:, centres].mean())


def region_ssim(
    reference: Tensor, other: Tensor, mask: Tensor | None = None, window: int = SSIM_WINDOW
) -> float:
    """Mean SSIM of ``other`` against ``reference`` over the windows centred in ``mask``.

    Args:
        reference, other: ``(C, H, W)`` in ``[0, 1]``, usually the region's box.
        mask: optional ``(H, W)`` or ``(1, H, W)`` bool region inside the box (e.g. an
            ellipse); windows are averaged where their centre is set.
        window: largest window; a region smaller than it uses the largest odd window
            that fits (1 for a one-pixel-wide region).

    Returns:
        The mean over channels and windows; 1.0 for identical images.
    """
    h, w = reference.shape[-2:]
    size = min(window, h if h % 2 else h - 1, w if w % 2 else w - 1)
    values = ssim_map(reference, other, size)
    r = size // 2
    if mask is None:
        return float(values.mean())
    centres = mask.reshape(h, w)[r : h - r, r : w - r].to(values.device)
    return _masked_mean(values, centres)


def laplacian(image: Tensor) -> Tensor:
    """4-neighbour Laplacian of a ``(C, H, W)`` image over full 3x3 windows:
    ``(C, H - 2, W - 2)`` (empty when ``H`` or ``W`` < 3)."""
    x = image.double()
    c, h, w = x.shape
    if h < 3 or w < 3:
        return x.new_zeros(c, max(0, h - 2), max(0, w - 2))
    return valid_filter(x, _LAPLACIAN)


def region_detail(reference: Tensor, other: Tensor, mask: Tensor | None = None) -> float | None:
    """Share of the reference's Laplacian energy that ``other`` still carries.

    Args:
        reference, other: ``(C, H, W)``; mask: optional ``(H, W)`` bool region.

    Returns:
        ``max(0, <L(ref), L(other)>) / max(<L(ref), L(ref)>, <L(other), L(other)>)`` over
        the 3x3 windows centred in ``mask``, in ``[0, 1]`` (Cauchy-Schwarz): 1.0 for an
        identical region, the gain for an attenuated copy of the detail (0.5 at half the
        contrast), 0.0 for a solid fill or detail unrelated to the original's (noise,
        block edges), and sharpening does not raise it. None when the reference has no
        detail there, or the region is narrower than :data:`DETAIL_MIN_SIDE` pixels
        (too few 3x3 windows for a stable ratio; SSIM still measures it).
    """
    h, w = reference.shape[-2:]
    if min(h, w) < DETAIL_MIN_SIDE:
        return None
    lx, ly = laplacian(reference), laplacian(other.to(reference.device))
    if mask is not None:
        centres = mask.reshape(h, w)[1 : h - 1, 1 : w - 1].to(lx.device)
        if bool(centres.any()) and not bool(centres.all()):
            lx, ly = lx[:, centres], ly[:, centres]
    energy = float((lx**2).sum())
    if energy <= 1e-12:
        return None
    shared = float((lx * ly).sum())
    return max(0.0, shared) / max(energy, float((ly**2).sum()))


def measure_scale(height: int, width: int, side: int = MEASURE_SIDE) -> int:
    """Integer area-averaging factor for a ``height x width`` region: 1 up to a shorter
    side of ``2 * side - 1``, then ``shorter // side``."""
    return max(1, min(height, width) // side)


def _pool(x: Tensor, factor: int) -> Tensor:
    return x if factor == 1 else F.avg_pool2d(x[None].double(), factor)[0]


@dataclass(frozen=True)
class RegionStrength:
    """How anonymized one region is, compared with the original.

    Attributes:
        psnr: dB over the region's pixels at full resolution (``inf``: identical).
        ssim: mean SSIM at the normalised resolution (1: identical structure).
        detail: the original's Laplacian detail left, in ``[0, 1]`` (None: no detail to
            hide).
    """

    psnr: float
    ssim: float
    detail: float | None

    def to_dict(self, digits: int = 6) -> dict[str, float | None]:
        """JSON-ready: ``{"psnr", "ssim", "detail"}`` rounded; an infinite PSNR (an
        identical region) is None."""
        psnr = round(self.psnr, digits) if math.isfinite(self.psnr) else None
        detail = None if self.detail is None else round(self.detail, digits)
        return {"psnr": psnr, "ssim": round(self.ssim, digits), "detail": detail}


def region_strength(
    reference: Tensor, other: Tensor, box: Box, shape: str = "rect"
) -> RegionStrength:
    """The :class:`RegionStrength` of one region.

    Args:
        reference, other: ``(3, H, W)`` images in ``[0, 1]`` (original and anonymized).
        box: the region's half-open ``(x0, y0, x1, y1)`` in pixels.
        shape: ``rect`` or ``ellipse`` (the ellipse inscribed in the box).
    """
    x0, y0, x1, y1 = box
    # The box's own mask: the same pixels as the whole image's mask cropped to the box.
    mask = region_mask(y1 - y0, x1 - x0, [(0, 0, x1 - x0, y1 - y0)], shape).to(reference.device)
    ref = reference[:, y0:y1, x0:x1].double()
    oth = other[:, y0:y1, x0:x1].to(reference.device).double()
    psnr = region_psnr(ref, oth, mask)
    f = measure_scale(y1 - y0, x1 - x0)
    small_mask = _pool(mask[None].double(), f)[0] >= 0.5
    small_ref, small_oth = _pool(ref, f), _pool(oth, f)
    return RegionStrength(
        psnr=math.inf if psnr is None else psnr,
        ssim=region_ssim(small_ref, small_oth, small_mask),
        detail=region_detail(small_ref, small_oth, small_mask),
    )


def image_strength(
    reference: Tensor, other: Tensor, boxes: Sequence[Box], shape: str = "rect"
) -> list[RegionStrength]:
    """:func:`region_strength` of every box, in order."""
    return [region_strength(reference, other, box, shape) for box in boxes]


MAX_REGION_SSIM = 0.995
"""Default: a written region with SSIM above this against the original is ``weak``: it
catches regions left (nearly) as they were, flat or tiny ones included (an identity gives
1.0). It is not lower because a blur leaves low frequencies alone: a smooth region (a dark
gradient) keeps an SSIM up to 0.989 under the default blur on the ImageNet sample while
its fine detail is gone (detail 0.05); :data:`MAX_REGION_DETAIL` judges what a blur
removes."""

MAX_REGION_DETAIL = 0.5
"""Default: a written region keeping more than this share of the original's fine
(Laplacian) detail is ``weak``: the default blur leaves under 0.1 on scikit-image's photos,
a mask 0, a 3x3 blur of a large region up to 0.9."""

SSIM_TOLERANCE = 0.02
"""How much higher a region's SSIM may be after correction than after plain anonymization."""

PSNR_TOLERANCE_DB = 1.0
"""How much higher a region's PSNR may be after correction than after plain anonymization."""


@dataclass(frozen=True)
class StrengthLimits:
    """When a region counts as anonymized, and how far the correction may bring it back.

    Attributes:
        max_ssim: a region with SSIM above this is weakly anonymized.
        max_detail: a region keeping more than this share of the original's Laplacian
            energy is weakly anonymized.
        ssim_tolerance: the corrected region's SSIM may exceed the plainly anonymized one's
            by at most this much.
        psnr_tolerance: likewise for PSNR, in dB.
    """

    max_ssim: float = MAX_REGION_SSIM
    max_detail: float = MAX_REGION_DETAIL
    ssim_tolerance: float = SSIM_TOLERANCE
    psnr_tolerance: float = PSNR_TOLERANCE_DB

    def __post_init__(self) -> None:
        values = (self.max_ssim, self.max_detail, self.ssim_tolerance, self.psnr_tolerance)
        if not all(math.isfinite(v) and v >= 0 for v in values) or self.max_ssim > 1:
            raise ValueError(
                "strength limits must be finite and >= 0 (max_ssim at most 1), got "
                f"{self.describe()}"
            )

    def describe(self) -> dict[str, float]:
        """The limits, for manifests and caches."""
        return {
            "max_region_ssim": self.max_ssim,
            "max_region_detail": self.max_detail,
            "ssim_tolerance": self.ssim_tolerance,
            "psnr_tolerance_db": self.psnr_tolerance,
        }

    def weak(self, boxes: Sequence[Box], strengths: Sequence[RegionStrength]) -> str | None:
        """Why the regions are not measurably anonymized (None when every one is)."""
        problems = []
        for k, (box, s) in enumerate(zip(boxes, strengths, strict=True)):
            if s.ssim > self.max_ssim:
                problems.append(f"region {k} {list(box)}: SSIM {s.ssim:.3f} > {self.max_ssim:g}")
            elif s.detail is not None and s.detail > self.max_detail:
                problems.append(
                    f"region {k} {list(box)}: detail {s.detail:.3f} > {self.max_detail:g}"
                )
        if not problems:
            return None
        return "weakly anonymized (too similar to the original): " + "; ".join(problems)

    def undone(
        self,
        boxes: Sequence[Box],
        plain: Sequence[RegionStrength],
        final: Sequence[RegionStrength],
    ) -> str | None:
        """Why the correction brought a region back toward the original by more than the
        tolerances (None when it did not)."""
        problems = []
        for k, (box, p, f) in enumerate(zip(boxes, plain, final, strict=True)):
            if f.ssim > p.ssim + self.ssim_tolerance:
                problems.append(
                    f"region {k} {list(box)}: SSIM {f.ssim:.3f} > plain {p.ssim:.3f} + "
                    f"{self.ssim_tolerance:g}"
                )
            if f.psnr > p.psnr + self.psnr_tolerance:
                problems.append(
                    f"region {k} {list(box)}: PSNR {f.psnr:.2f} dB > plain {p.psnr:.2f} + "
                    f"{self.psnr_tolerance:g} dB"
                )
        if not problems:
            return None
        return "the correction would undo the anonymization: " + "; ".join(problems)
