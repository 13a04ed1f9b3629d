"""Encoding the stored file, and the round trip the correction checks against.

The promise holds on the written file, so the solver classifies each candidate the way it
will be stored: rounded to 8 bits, and for lossy formats encoded and decoded again. The
round trip passes gradients straight through to the float image.

Pixel arrays are ``(H, W, 3)`` ``uint8``; images are ``(3, H, W)`` floats in ``[0, 1]``.
"""

from __future__ import annotations

import importlib
import io
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}
FORMAT_ALIASES = {"jpeg": "jpg"}
"""Other names accepted for a format (any case)."""


def to_pixels(image: Tensor) -> np.ndarray:
    """``(3, H, W)`` float image -> ``(H, W, 3)`` uint8 array, rounding to nearest."""
    q = image.detach().clamp(0, 1).mul_(255.0).round_().to(torch.uint8)
    return q.permute(1, 2, 0).contiguous().cpu().numpy()


def to_image(pixels: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """``(H, W, 3)`` uint8 array -> ``(3, H, W)`` float32 image in ``[0, 1]``."""
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    t = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
    return t.to(torch.float32).div_(255.0).permute(2, 0, 1)


@cache
def optional_module(module: str) -> Any:
    """``module`` imported, or None when it is not installed (``adaptanon[fast]``)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _fast_png_encode(pixels: np.ndarray) -> bytes | None:
    """``(H, W, 3)`` uint8 pixels as a PNG file by fpng; None without fpng, or when it
    declines the image (then Pillow writes it)."""
    fpng = optional_module("fpng")
    if fpng is None or pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        return None
    try:
        data = fpng.from_ndarray(np.ascontiguousarray(pixels))
    except Exception:  # noqa: BLE001 - any refusal falls back to Pillow
        return None
    return bytes(data) if data else None


def _fast_png_decode(data: bytes) -> np.ndarray | None:
    """A PNG file's ``(H, W, 3)`` uint8 pixels by libspng; None without it, or when the
    file is not 8-bit RGB (then Pillow reads it)."""
    spng = optional_module("pyspng")
    if spng is None:
        return None
    try:
        pixels = spng.load(data)
    except Exception:  # noqa: BLE001 - Pillow reads it, or says why not
        return None
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        return None
    return np.asarray(pixels)


@dataclass(frozen=True)
class Codec:
    """An output format: ``png`` (lossless), ``jpg`` (or ``jpeg``) or ``webp`` with ``quality``.

    ``png_compression`` is zlib's level (0-9) for Pillow's PNG encoder; the default 1, as
    in OpenCV, trades a little file size for speed. With ``adaptanon[fast]`` installed,
    PNG files are written by fpng instead (``png_compression`` unused) and read back by
    libspng; the pixels are the same either way (speeds: ``bench/codecs.py``).
    """

    format: str = "png"
    quality: int = 95
    png_compression: int = 1

    def __post_init__(self) -> None:
        name = str(self.format).lower()
        object.__setattr__(self, "format", FORMAT_ALIASES.get(name, name))
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; choose from {', '.join(FORMATS)}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if not 0 <= self.png_compression <= 9:
            raise ValueError(f"PNG compression must be in 0..9, got {self.png_compression}")

    @property
    def lossless(self) -> bool:
        """Whether decoding returns exactly the encoded pixels."""
        return self.format == "png"

    @property
    def extension(self) -> str:
        """File extension with the dot."""
        return "." + self.format

    def encode(self, pixels: np.ndarray) -> bytes:
        """Encode ``(H, W, 3)`` uint8 pixels; no metadata (EXIF, GPS) is written."""
        if self.lossless:
            fast = _fast_png_encode(pixels)
            if fast is not None:
                return fast
        buf = io.BytesIO()
        img = Image.fromarray(pixels, "RGB")
        if self.lossless:
            img.save(buf, FORMATS[self.format], compress_level=self.png_compression)
        else:
            img.save(buf, FORMATS[self.format], quality=self.quality)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        """Decode bytes written by :meth:`encode` to ``(H, W, 3)`` uint8 pixels."""
        if self.lossless:
            fast = _fast_png_decode(data)
            if fast is not None:
                return fast
        with Image.open(io.BytesIO(data)) as img:
            return np.array(img.convert("RGB"))

    def stored_pixels(self, image: Tensor) -> np.ndarray:
        """The pixels a reader gets back from the file that ``image`` would be stored as."""
        pixels = to_pixels(image)
        return pixels if self.lossless else self.decode(self.encode(pixels))

    def roundtrip(self, image: Tensor) -> Tensor:
        """``image`` as stored and read back, with a straight-through gradient.

        Args:
            image: ``(3, H, W)`` float in ``[0, 1]``.

        Returns:
            ``(3, H, W)``: the stored pixels / 255 in the forward pass, identity backward.
        """
        with torch.no_grad():
            if self.lossless:
                stored = image.detach().clamp(0, 1).mul_(255.0).round_().div_(255.0)
            else:
                stored = to_image(self.stored_pixels(image), image.device).to(image.dtype)
            delta = stored.sub_(image.detach())
            if not image.requires_grad:
                return delta.add_(image)  # image + delta, without another copy
        return image + delta
