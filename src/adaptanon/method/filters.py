"""Anonymization filters, applied inside regions only.

Each operation exists as a plain function on tensors (``(C, H, W)`` or ``(B, C, H, W)``
floats in ``[0, 1]``) and as a small filter object that knows how much image context it
needs and how to scale itself to the input's resolution. Parameters are given at the
classifier's view (e.g. the paper's 9x9 blur with sigma 10 at 224x224); ``scale`` is the
number of input pixels per view pixel (see :class:`~adaptanon.preprocessing.ViewGeometry`).

**Privacy floor.** Scaling may make a filter stronger for large photos, never weaker than
a minimum that still anonymizes at the input's own resolution: whatever the parameters
and the scale, a blur has a kernel of at least :data:`BLUR_MIN_KERNEL` and a sigma of at
least :data:`BLUR_MIN_SIGMA` input pixels, a mosaic has cells of at least
:data:`MOSAIC_MIN_BLOCK` input pixels laid out so that no cell is narrower (a side too
short for two cells becomes one cell), and a mask always fills the whole region. No
parameter the command line accepts is an identity; whether a region really is
anonymized is then measured on the written file (:mod:`adaptanon.method.metrics`).
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
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


BLUR_SHAPE_STEP = 64
"""On the CPU the blurred window is padded to a multiple of this many pixels per side."""


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
    if x.device.type == "cpu":
        # oneDNN compiles a kernel for every new input shape (which costs more than a
        # small blur), and regions come in every size: zeros up to a multiple of
        # BLUR_SHAPE_STEP keep a run to a few shapes. They reach only outputs cut off below.
        x = F.pad(x, (0, -x.shape[-1] % BLUR_SHAPE_STEP, 0, -x.shape[-2] % BLUR_SHAPE_STEP))
    x = F.conv2d(F.conv2d(x, k.view(1, 1, 1, ksize)), k.view(1, 1, ksize, 1))
    x = x[..., :h, :w].reshape(b, c, h, w)
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


BLUR_MIN_KERNEL = 5
"""Smallest blur kernel, in input pixels: a 5x5 window mixes every pixel with its 24
neighbours (a 3x3 one keeps most of a region's fine detail, see docs/results.md)."""

BLUR_MIN_SIGMA = 2.0
"""Smallest blur sigma, in input pixels: with sigma 2 the 5x5 kernel is nearly flat (edge
taps 0.61 of the centre), so a too-small ``--blur-sigma`` cannot turn the blur into an
identity (sigma 0.3 leaves the centre tap at 0.99)."""

MOSAIC_MIN_BLOCK = 2
"""Smallest mosaic cell, in input pixels (a 1-pixel cell is the identity)."""


def mosaic_cells(length: int, block: int) -> Tensor:
    """Cell index of each of ``length`` pixels: ``max(1, length // block)`` cells of
    nearly equal size (``block`` to ``2 * block - 1`` pixels, or one cell for the whole
    length), so that no remainder cell is narrower than ``block``. Shape ``(length,)``."""
    n = max(1, length // max(1, block))
    return torch.div(torch.arange(length) * n, length, rounding_mode="floor")


def pixelate_fitted(image: Tensor, block: int) -> Tensor:
    """Mosaic fitted to the image: cells from :func:`mosaic_cells` on each axis, each set to
    its mean. ``image``: ``(C, H, W)`` or ``(B, C, H, W)``; returns the same shape."""
    if block < 1:
        raise ValueError(f"mosaic block must be >= 1, got {block}")
    h, w = image.shape[-2:]
    rows, cols = mosaic_cells(h, block).to(image.device), mosaic_cells(w, block).to(image.device)
    ny, nx = int(rows[-1]) + 1, int(cols[-1]) + 1
    ay = F.one_hot(rows, ny).to(image.dtype)  # (H, ny)
    ax = F.one_hot(cols, nx).to(image.dtype)  # (W, nx)
    ay = ay / ay.sum(0, keepdim=True)
    ax = ax / ax.sum(0, keepdim=True)
    means = ay.T @ image @ ax  # (..., ny, nx)
    return means[..., rows, :][..., cols]


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

    def apply_image(
        self, image: Tensor, boxes: list[Box], scale: float, shape: str
    ) -> tuple[Tensor, Tensor] | None:
        """The whole image at once, for a filter that changes pixels around its boxes or
        blends overlapping ones (:class:`Yang`): ``(anonymized, (1, H, W) mask of every
        pixel it may change)``. None (the default): :func:`anonymize` goes box by box with
        :meth:`patch`."""
        return None


@dataclass
class Blur(Filter):
    """Gaussian blur (paper: kernel 9x9, sigma 10 at the 224x224 view).

    With ``scale_to_input`` (default) the kernel and sigma grow with the input's
    resolution so a large photograph is blurred as strongly as the classifier's view.
    Either way they never go below :data:`BLUR_MIN_KERNEL` and :data:`BLUR_MIN_SIGMA`
    input pixels (the privacy floor): an input smaller than the model's view (scale < 1)
    or ``--blur-kernel 1`` still gets a 5x5, sigma-2 blur rather than an identity.
    """

    kernel: int = 9
    sigma: float = 10.0
    scale_to_input: bool = True
    name: str = "blur"

    def _params(self, scale: float) -> tuple[int, float]:
        s = scale if self.scale_to_input else 1.0
        return max(_odd(self.kernel * s), BLUR_MIN_KERNEL), max(self.sigma * s, BLUR_MIN_SIGMA)

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
    """Pixelation with ``block``-pixel cells at the classifier's view, aligned to the box.

    The cell size is scaled like :class:`Blur`'s kernel and never below
    :data:`MOSAIC_MIN_BLOCK` input pixels; the cells are fitted to the box
    (:func:`pixelate_fitted`), so none is narrower than that: a box side shorter than two
    cells is one cell (a 3-pixel box becomes its mean).
    """

    block: int = 8
    scale_to_input: bool = True
    name: str = "mosaic"

    def cell(self, scale: float) -> int:
        """The cell size in input pixels at ``scale``."""
        s = scale if self.scale_to_input else 1.0
        return max(int(round(self.block * s)), MOSAIC_MIN_BLOCK)

    def patch(self, window: Tensor, scale: float) -> Tensor:
        return pixelate_fitted(window, self.cell(scale))

    def describe(self) -> str:
        return f"mosaic(block={self.block},scaled={self.scale_to_input})"


YANG_MARGIN = 0.1
"""Yang et al.: each face box grows by this share of its longer side on every side."""

YANG_SIGMA = 0.1
"""Yang et al.: the Gaussian's sigma is this share of the face box's longer side."""

YANG_TRUNCATE = 3.0
"""The Gaussian of :func:`yang_obfuscate` is cut at this many sigmas (radius
``ceil(3 * sigma)``), so the pixels it changes are bounded."""


def yang_params(box: Box) -> tuple[float, int, int]:
    """``(sigma, margin, radius)`` in input pixels for one face box: ``sigma = max(0.1 *
    d, BLUR_MIN_SIGMA)`` with ``d`` the box's longer side, ``margin = round(sigma)`` (the
    enlargement on each side; Yang et al. use the same ``0.1 * d`` for both), ``radius =
    ceil(3 * sigma)`` (kernel ``2 * radius + 1 >= 13``, above :data:`BLUR_MIN_KERNEL`)."""
    x0, y0, x1, y1 = box
    sigma = max(YANG_SIGMA * max(x1 - x0, y1 - y0), BLUR_MIN_SIGMA)
    margin = max(int(round(YANG_MARGIN / YANG_SIGMA * sigma)), 1)
    return sigma, margin, int(math.ceil(YANG_TRUNCATE * sigma))


def _grow(box: Box, by: int, h: int, w: int) -> Box:
    x0, y0, x1, y1 = box
    return max(0, x0 - by), max(0, y0 - by), min(w, x1 + by), min(h, y1 + by)


def yang_obfuscate(
    image: Tensor, boxes: list[Box], shape: str = "rect", clamp: bool = True
) -> tuple[Tensor, Tensor]:
    """The face obfuscation of Yang et al. (ICML 2022, ``experiments/blurring.py`` of
    princetonvisualai/imagenet-face-obfuscation), one face at a time.

    For each box, with ``sigma, margin, radius`` from :func:`yang_params`:

    1. the *enlarged* box: ``margin`` pixels more on every side (clipped to the image);
    2. ``B``: the image blurred with a Gaussian of ``sigma`` (truncated at ``radius``,
       reflected borders, as :func:`gaussian_blur`);
    3. ``w``: the soft mask, the enlarged box's indicator (its inscribed ellipse with
       ``shape="ellipse"``) blurred with the same Gaussian, in ``[0, 1]``;
    4. ``out = x + w * (B - x)``, Yang et al.'s ``Image.composite`` of the blurred and
       the original image through the blurred mask.

    Several faces: ``out = x + W * (T - x)`` with ``W = 1 - prod(1 - w_k)`` and ``T`` the
    ``w``-weighted mean of the ``B_k``; one face gives exactly the formula above.
    Differences from Yang et al.'s code, which blurs the whole image once with the sigma of
    the image's *largest* face: here each face has its own sigma (with one sigma, a
    20-pixel face beside a 200-pixel one gets a mask blurred so much that its weight stays
    near 0.1, i.e. it is barely obfuscated), the Gaussian is exact and cut at 3 sigma
    (Pillow approximates it with box filters), and the privacy floor applies: sigma at
    least :data:`BLUR_MIN_SIGMA`, the margin at least 1 pixel.

    Args:
        image: ``(C, H, W)`` float.
        boxes: half-open ``[x0, y0, x1, y1]`` face boxes in pixels.

    ``clamp=False`` leaves the result unclamped: a linear function of ``image`` (for
    inversion attacks).

    Returns:
        ``(out, mask)``: the ``(C, H, W)`` result (differentiable in ``image``) and the
        ``(1, H, W)`` bool mask of the pixels it may change: each enlarged box grown by
        ``radius``, i.e. up to ``0.4 d`` around a box of longer side ``d``.
    """
    _, h, w = image.shape
    mask = torch.zeros(1, h, w, dtype=torch.bool, device=image.device)
    if not boxes:
        return image.clone(), mask
    parts = []
    for box in boxes:
        sigma, margin, radius = yang_params(box)
        big = _grow(box, margin, h, w)
        reach = _grow(big, radius, h, w)  # where the soft mask is above 0
        wx0, wy0, wx1, wy1 = _grow(reach, radius, h, w)  # what the blur there reads
        rel = (big[0] - wx0, big[1] - wy0, big[2] - wx0, big[3] - wy0)
        inside = region_mask(wy1 - wy0, wx1 - wx0, [rel], shape).to(image)[None]
        window = image[:, wy0:wy1, wx0:wx1]
        ksize = 2 * radius + 1
        crop = (slice(None), slice(reach[1] - wy0, reach[3] - wy0))
        cols = slice(reach[0] - wx0, reach[2] - wx0)
        blurred = gaussian_blur(window, ksize, sigma)[crop][..., cols]
        weight = gaussian_blur(inside, ksize, sigma)[crop][..., cols]
        parts.append((reach, blurred, weight))
    ux0, uy0 = min(p[0][0] for p in parts), min(p[0][1] for p in parts)
    ux1, uy1 = max(p[0][2] for p in parts), max(p[0][3] for p in parts)
    region = image[:, uy0:uy1, ux0:ux1]
    total = torch.zeros_like(region[:1])
    weighted = torch.zeros_like(region)
    keep = torch.ones_like(region[:1])
    for (x0, y0, x1, y1), blurred, weight in parts:
        at = (slice(None), slice(y0 - uy0, y1 - uy0), slice(x0 - ux0, x1 - ux0))
        total = _add(total, at, weight)
        weighted = _add(weighted, at, weight * blurred)
        keep = _mul(keep, at, 1 - weight)
        mask[0, y0:y1, x0:x1] = True
    target = weighted / total.clamp_min(torch.finfo(total.dtype).tiny)
    blended = region + (1 - keep) * (target - region)
    changed = mask[:, uy0:uy1, ux0:ux1]
    out = image.clone()
    blended = blended.clamp(0, 1) if clamp else blended
    out[:, uy0:uy1, ux0:ux1] = torch.where(changed, blended, region)
    return out, mask


def _add(t: Tensor, at: tuple[slice, ...], value: Tensor) -> Tensor:
    out = t.clone()
    out[at] = t[at] + value
    return out


def _mul(t: Tensor, at: tuple[slice, ...], value: Tensor) -> Tensor:
    out = t.clone()
    out[at] = t[at] * value
    return out


@dataclass
class Yang(Filter):
    """The face obfuscation of Yang et al., "A Study of Face Obfuscation in ImageNet"
    (ICML 2022), used by the paper's Table 4 (:func:`yang_obfuscate`): each face box
    enlarged by 0.1 of its longer side ``d`` on every side, a Gaussian blur with sigma
    ``0.1 d`` (at least :data:`BLUR_MIN_SIGMA`), blended into the image through the
    enlarged box's mask blurred with the same Gaussian.

    Its sizes follow each face, in input pixels, so ``scale`` plays no part. It changes
    pixels up to ``0.4 d`` around each box (the enlargement plus the fading blend): the
    mask it returns, which the correction may change, covers them.
    """

    name: str = "yang"

    def apply_image(
        self, image: Tensor, boxes: list[Box], scale: float, shape: str
    ) -> tuple[Tensor, Tensor]:
        return yang_obfuscate(image, boxes, shape)

    def patch(self, window: Tensor, scale: float) -> Tensor:
        """The window obfuscated as one face that fills it."""
        h, w = window.shape[-2:]
        return yang_obfuscate(window, [(0, 0, w, h)])[0]

    def describe(self) -> str:
        return f"yang(margin={YANG_MARGIN},sigma={YANG_SIGMA},truncate={YANG_TRUNCATE})"


FACE_CELLS = 4
"""Face mosaic: cells across the enlarged face box's longer side."""

FACE_GROW = 0.3
"""Face mosaic: each face box grows by this share of its longer side on every side (hair,
ears and the outline carry identity too)."""

FACE_NOISE = 0.15
"""Face mosaic: standard deviation of the Gaussian noise added to each cell, in ``[0, 1]``
units (the cell means alone still leak the face's coarse layout)."""


def region_seed(image: Tensor, box: Box) -> int:
    """A seed from the 8-bit pixels of ``box`` in ``image`` and the box itself: the same
    input always gets the same noise (reruns and resumed runs write the same bytes), while
    an attacker without the original cannot regenerate it."""
    x0, y0, x1, y1 = box
    pixels = (image[:, y0:y1, x0:x1].detach().float().cpu() * 255).round().to(torch.uint8)
    digest = hashlib.sha256(bytes(pixels.numpy().tobytes()) + repr(box).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def face_mosaic_box(box: Box, h: int, w: int, grow: float = FACE_GROW) -> Box:
    """The box :class:`FaceMosaic` covers: ``box`` grown by ``grow`` of its longer side on
    every side, clipped to the ``h x w`` image."""
    x0, y0, x1, y1 = box
    return _grow(box, int(round(grow * max(x1 - x0, y1 - y0))), h, w)


def face_mosaic_cell(box: Box, cells: int = FACE_CELLS) -> int:
    """The cell size in pixels for an (enlarged) face box: its longer side over ``cells``,
    at least :data:`MOSAIC_MIN_BLOCK`."""
    x0, y0, x1, y1 = box
    return max(int(round(max(x1 - x0, y1 - y0) / cells)), MOSAIC_MIN_BLOCK)


def noisy_mosaic(window: Tensor, block: int, noise: float, seed: int) -> Tensor:
    """:func:`pixelate_fitted` with Gaussian noise of std ``noise`` added to every cell
    (one draw per cell and channel, from a CPU generator seeded with ``seed``).
    ``window``: ``(C, H, W)``; returns the same shape, clamped to ``[0, 1]``."""
    h, w = window.shape[-2:]
    rows = mosaic_cells(h, block).to(window.device)
    cols = mosaic_cells(w, block).to(window.device)
    ny, nx = int(rows[-1]) + 1, int(cols[-1]) + 1
    gen = torch.Generator().manual_seed(seed)
    draw = torch.randn(window.shape[0], ny, nx, generator=gen) * noise
    cells = draw.to(window)[..., rows, :][..., cols]
    return (pixelate_fitted(window, block) + cells).clamp(0, 1)


@dataclass
class FaceMosaic(Filter):
    """The default face filter: a coarse mosaic with noise, sized by each face.

    Each face box is enlarged by ``grow`` of its longer side ``d`` on every side, divided
    into about ``cells`` cells along its longer side (:func:`face_mosaic_cell`, at least
    :data:`MOSAIC_MIN_BLOCK` pixels, fitted as :func:`pixelate_fitted`), and every cell
    becomes its mean plus Gaussian noise of std ``noise`` per channel, drawn from a
    generator seeded by the face's own pixels (:func:`region_seed`), so that the same input
    gives the same file. Sizes follow each face in input pixels; ``scale`` plays no part.
    The mask it returns (the enlarged boxes) is what the correction may change.
    """

    cells: int = FACE_CELLS
    grow: float = FACE_GROW
    noise: float = FACE_NOISE
    name: str = "facemosaic"

    def __post_init__(self) -> None:
        if self.cells < 1 or not (math.isfinite(self.grow) and self.grow >= 0):
            raise ValueError(f"face mosaic needs cells >= 1 and grow >= 0, got {self}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"face mosaic noise must be finite and >= 0, got {self.noise}")

    def apply_image(
        self, image: Tensor, boxes: list[Box], scale: float, shape: str
    ) -> tuple[Tensor, Tensor]:
        _, h, w = image.shape
        grown = [face_mosaic_box(b, h, w, self.grow) for b in boxes]
        mask = region_mask(h, w, grown, shape).to(image.device)
        out = image.clone()
        for box, (x0, y0, x1, y1) in zip(boxes, grown, strict=True):
            block = face_mosaic_cell((x0, y0, x1, y1), self.cells)
            patch = noisy_mosaic(image[:, y0:y1, x0:x1], block, self.noise, region_seed(image, box))
            m = mask[y0:y1, x0:x1]
            out[:, y0:y1, x0:x1] = torch.where(m, patch, out[:, y0:y1, x0:x1])
        return out, mask.unsqueeze(0)

    def patch(self, window: Tensor, scale: float) -> Tensor:
        """The window as one (not enlarged) face that fills it."""
        h, w = window.shape[-2:]
        block = face_mosaic_cell((0, 0, w, h), self.cells)
        return noisy_mosaic(window, block, self.noise, region_seed(window, (0, 0, w, h)))

    def describe(self) -> str:
        return f"facemosaic(cells={self.cells},grow={self.grow},noise={self.noise})"


@dataclass
class ByLabel(Filter):
    """One filter for face regions and another for every other region (``--filter
    auto``): regions whose label is ``face`` get ``face`` (:class:`FaceMosaic`), all others
    ``other`` (the paper's :class:`Blur`, so the saliency experiments stay comparable)."""

    face: Filter = field(default_factory=lambda: FaceMosaic())
    other: Filter = field(default_factory=lambda: Blur())
    name: str = "auto"

    def pick(self, label: str) -> Filter:
        """The filter for a region labelled ``label``."""
        return self.face if label == "face" else self.other

    def patch(self, window: Tensor, scale: float) -> Tensor:
        return self.other.patch(window, scale)

    def context(self, scale: float) -> int:
        return self.other.context(scale)

    def describe(self) -> str:
        return f"auto(face={self.face.describe()},other={self.other.describe()})"


FILTERS: dict[str, type[Filter]] = {
    "auto": ByLabel,
    "blur": Blur,
    "mask": Mask,
    "mosaic": Mosaic,
    "yang": Yang,
    "facemosaic": FaceMosaic,
}
"""Filters by name, as ``--filter`` accepts them."""


def parse_filter(name: str, **params: Any) -> Filter:
    """Build a filter by name (see :data:`FILTERS`) with keyword parameters."""
    if name not in FILTERS:
        raise ValueError(f"unknown filter {name!r}; choose from {', '.join(FILTERS)}")
    return FILTERS[name](**params)


def anonymize(
    image: Tensor,
    boxes: list[Box],
    filt: Filter,
    scale: float = 1.0,
    shape: str = "rect",
    labels: Sequence[str] | None = None,
) -> tuple[Tensor, Tensor]:
    """Apply ``filt`` inside ``boxes`` and nowhere else.

    Args:
        image: ``(C, H, W)`` in ``[0, 1]``.
        boxes: half-open ``[x0, y0, x1, y1]`` boxes in pixels.
        scale: input pixels per classifier-view pixel.
        shape: ``rect`` or ``ellipse`` (the ellipse inscribed in each box).
        labels: each box's label (``face``, ...), for a :class:`ByLabel` filter, which
            gives every box the filter of its label; None: every box is ``region``.

    Returns:
        ``(anonymized, mask)``: the ``(C, H, W)`` image and the ``(1, H, W)`` bool mask of
        changed pixels. Every patch is computed from the original image, so overlapping
        boxes do not filter twice.
    """
    if isinstance(filt, ByLabel):
        names = list(labels) if labels is not None else ["region"] * len(boxes)
        if len(names) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(names)} labels")
        out, mask = image.clone(), torch.zeros_like(image[:1], dtype=torch.bool)
        for part in (filt.other, filt.face):
            mine = [b for b, lab in zip(boxes, names, strict=True) if filt.pick(lab) is part]
            if mine:
                done, changed = anonymize(image, mine, part, scale, shape)
                out = torch.where(changed, done, out)
                mask = mask | changed
        return out, mask
    whole = filt.apply_image(image, boxes, scale, shape)
    if whole is not None:
        return whole
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
    "BLUR_MIN_KERNEL",
    "BLUR_MIN_SIGMA",
    "FACE_CELLS",
    "FACE_GROW",
    "FACE_NOISE",
    "MOSAIC_MIN_BLOCK",
    "Blur",
    "ByLabel",
    "FaceMosaic",
    "Filter",
    "Mask",
    "Mosaic",
    "YANG_MARGIN",
    "YANG_SIGMA",
    "YANG_TRUNCATE",
    "Yang",
    "anonymize",
    "gaussian_blur",
    "gaussian_kernel1d",
    "FILTERS",
    "parse_filter",
    "mosaic_cells",
    "face_mosaic_box",
    "face_mosaic_cell",
    "noisy_mosaic",
    "pixelate",
    "pixelate_fitted",
    "region_seed",
    "solid",
    "yang_obfuscate",
    "yang_params",
]
