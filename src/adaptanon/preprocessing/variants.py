"""Loaders near the declared one, for ``--robust``: the same geometry and normalisation
with another interpolation kernel, the other rounding of the long side, another backend
(OpenCV, ``F.interpolate`` with antialias), or a JPEG re-save before the declared loader.

:func:`variants_of` builds them from a :class:`~adaptanon.preprocessing.PreprocessSpec`;
each :class:`Variant` is a differentiable preprocessing like the declared one (the same
view size), exact in its forward pass like every spec (:mod:`.spec`); the JPEG re-save is
Pillow's encoder and decoder with a straight-through gradient.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from adaptanon.preprocessing.spec import PreprocessSpec, SpecPreprocess

JPEG_QUALITIES = (75, 90)
"""Qualities of the JPEG re-save variants (Pillow's encoder, its default 4:2:0 subsampling)."""

Box = tuple[int, int, int, int]


def jpeg_resave(image: Tensor, quality: int) -> Tensor:
    """``image`` rounded to 8 bits, saved as JPEG by Pillow at ``quality`` and decoded,
    with a straight-through gradient. ``(3, H, W)`` in ``[0, 1]``."""
    q = torch.round(image.detach().clamp(0, 1) * 255.0).to(torch.uint8)
    pixels = q.permute(1, 2, 0).contiguous().cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as img:
        decoded = np.array(img.convert("RGB"))
    stored = torch.from_numpy(decoded).to(image.device).permute(2, 0, 1)
    stored = stored.to(image.dtype) / 255.0
    return image + (stored - image).detach()


@dataclass(frozen=True)
class Variant:
    """One loader: an optional JPEG re-save at ``jpeg`` quality, then ``preprocess``
    (``(3, H, W)`` in ``[0, 1]`` -> model input)."""

    name: str
    preprocess: Callable[[Tensor], Tensor]
    jpeg: int | None = None

    def __call__(self, image: Tensor) -> Tensor:
        if self.jpeg is not None:
            image = jpeg_resave(image, self.jpeg)
        return self.preprocess(image)

    def update(self, image: Tensor, base: Tensor, box: Box) -> Tensor:
        """``self(image)`` given ``base = self(reference)`` for an image equal to ``image``
        outside ``box``: partial when the preprocessing allows (never after a JPEG
        re-save, whose blocks reach past the box)."""
        update = getattr(self.preprocess, "update", None)
        if self.jpeg is not None or update is None:
            return self(image)
        out: Tensor = update(image, base, box)
        return out

    def describe(self) -> str:
        """The variant in words."""
        inner = getattr(self.preprocess, "describe", None)
        text = inner() if inner is not None else self.name
        return f"JPEG q{self.jpeg} re-save, then {text}" if self.jpeg is not None else text


def spec_of(preprocess: object) -> PreprocessSpec | None:
    """The :class:`PreprocessSpec` of a declared preprocessing (a :class:`SpecPreprocess`,
    the built-in models' :class:`~.pil.Preprocess` among them), None for any other
    callable."""
    if isinstance(preprocess, SpecPreprocess):
        return preprocess.spec
    return None


Make = Callable[[], PreprocessSpec]


def _kernels(spec: PreprocessSpec) -> list[tuple[str, Make]]:
    """The same geometry resized by the other usual kernels and backends."""

    def make(backend: str, interpolation: str, antialias: bool = False) -> Make:
        return lambda: replace(
            spec, backend=backend, interpolation=interpolation, antialias=antialias, round8=False
        )

    return [
        ("pil-bilinear", make("pil", "bilinear")),
        ("pil-bicubic", make("pil", "bicubic")),
        ("opencv-linear", make("opencv", "linear")),
        ("opencv-area", make("opencv", "area")),
        ("torch-bilinear-antialias", make("torch", "bilinear", antialias=True)),
    ]


def variants_of(
    spec: PreprocessSpec, declared: Callable[[Tensor], Tensor] | None = None
) -> list[Variant]:
    """The declared loader (first, named ``declared``) and the loaders near it.

    Near: the same resize, crop or letterbox, channels and normalisation, with Pillow
    bilinear and bicubic, OpenCV ``INTER_LINEAR`` and ``INTER_AREA``, ``F.interpolate``
    bilinear with antialias (each unless it is the declared one); a shorter-side resize
    also with the other rounding of the long side (``floor``/``round``); and the declared
    loader after a JPEG re-save at each of :data:`JPEG_QUALITIES`.

    Args:
        declared: the declared preprocessing object, used as is for the declared variant
            and before the JPEG re-saves (default: ``spec.build()``).
    """
    base = declared if declared is not None else spec.build()
    out = [Variant("declared", base)]
    seen = {spec}
    candidates = _kernels(spec)
    if isinstance(spec.resize, int):
        other = "round" if spec.rounding == "floor" else "floor"
        name = f"{spec.backend}-{spec.interpolation}-{other}"
        candidates.append((name, lambda: replace(spec, rounding=other)))
    for name, make in candidates:
        try:
            candidate = make()
        except ValueError:
            continue  # not expressible for this spec (e.g. a fractional letterbox fill)
        if candidate in seen:
            continue
        seen.add(candidate)
        out.append(Variant(name, candidate.build()))
    out += [Variant(f"jpeg{q}", base, jpeg=q) for q in JPEG_QUALITIES]
    return out
