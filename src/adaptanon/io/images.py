"""Finding input images and reading them as upright 8-bit RGB; what a library user holds
(path, PIL image, numpy array, tensor) as the engine's image (:func:`as_image`)."""

from __future__ import annotations

import glob
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from adaptanon.io.codecs import to_image, to_pixels

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm"}

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image read by default, in pixels (``--max-pixels``): four times a 24-megapixel
photo. Reading and correcting take about 30 bytes per pixel, so this bounds one image's
memory at a few GB."""

READ_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "AVIF")
"""The Pillow formats :func:`read_image` decodes, recognised by content (not by extension).
Every other format Pillow knows is refused, so that no rarely used decoder (or EPS, which
hands the file to Ghostscript) ever sees an untrusted file."""


@dataclass(frozen=True)
class InputImage:
    """An input file and its path relative to the root it was found under."""

    path: Path
    relative: Path


def collect_inputs(
    specs: list[str], exclude: Path | None = None, extensions: Collection[str] = IMAGE_EXTENSIONS
) -> list[InputImage]:
    """Expand files, directories (recursively) and glob patterns into input images.

    Directories contribute their files with one of ``extensions`` (images by default;
    ``anonymize`` adds videos); a file named explicitly is
    taken whatever its extension, so a broken or misnamed file is reported, not skipped.
    Files found in folders or by globs under ``exclude`` (the output folder, which may
    hold earlier outputs) are left out. Duplicates are dropped.

    Raises:
        FileNotFoundError: a spec matches nothing (a folder holds no image file), or
            everything the specs match lies inside ``exclude``.
    """
    found: list[InputImage] = []
    seen: set[Path] = set()
    excluded = exclude.resolve() if exclude else None

    def add(path: Path, root: Path, explicit: bool = False) -> None:
        resolved = path.resolve()
        inside = excluded is not None and resolved.is_relative_to(excluded)
        if resolved in seen or (inside and not explicit):
            return
        seen.add(resolved)
        found.append(InputImage(path, path.relative_to(root)))

    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            images = [
                f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in extensions
            ]
            if not images:
                kinds = ", ".join(sorted(extensions))
                raise FileNotFoundError(f"no images found in {spec} (looked for {kinds})")
            for f in images:
                add(f, p)
        elif p.is_file():
            add(p, p.parent, explicit=True)
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            root = _glob_root(spec)
            files = [m for m in matches if m.is_file()]
            if not files:
                raise FileNotFoundError(f"no files match {spec}")
            for f in files:
                add(f, root)
        else:
            raise FileNotFoundError(f"no such file or directory: {spec}")
    if specs and not found and excluded:
        raise FileNotFoundError(f"every input lies inside the output folder {exclude}")
    return found


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]]
    return Path(*fixed) if fixed else Path(".")


_max_pixels = DEFAULT_MAX_PIXELS


@contextmanager
def pixel_limit(max_pixels: int) -> Iterator[int]:
    """Within the block, :func:`read_image` refuses images of more than ``max_pixels``
    pixels unless it is given its own limit.

    This is how ``--max-pixels`` reaches the readers that ``anonymize`` and ``evaluate``
    run in a background thread. The limit is process-wide (not per thread) and restored
    on leaving the block.
    """
    global _max_pixels
    if max_pixels < 1:
        raise ValueError(f"the pixel limit must be >= 1, got {max_pixels}")
    previous, _max_pixels = _max_pixels, max_pixels
    try:
        yield max_pixels
    finally:
        _max_pixels = previous


def current_pixel_limit() -> int:
    """The limit :func:`read_image` applies when it is given none (see :func:`pixel_limit`)."""
    return _max_pixels


class _Refused(ValueError):
    """A readable file that :func:`read_image` declines, with the reason."""


_ORIENTATION_TAG = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the transpose that makes the image upright (as Pillow's
``ImageOps.exif_transpose``)."""

_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def read_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB, upright according to its EXIF orientation.

    Every failure is contained: whatever a decoder, the EXIF parser or the conversion
    raises becomes a ``ValueError`` with a one-line reason, so one bad file is one
    ``error`` record and the run goes on.

    - Only :data:`READ_FORMATS` are decoded, whatever the file's extension.
    - The size is checked from the header, before decoding: more than ``max_pixels``
      (default: :func:`current_pixel_limit`) is refused.
    - Multi-frame files (animated GIF, WebP or PNG, multi-page TIFF) are refused rather
      than silently reduced to their first frame. A JPEG carrying MPO extra images
      (previews, depth maps) is read as its primary image, which is what viewers show.
    - The orientation is read from the EXIF IFD0 alone and applied without rewriting the
      EXIF block, so damage elsewhere in it (GPS, maker notes) does not matter (Pillow's
      ``ImageOps.exif_transpose`` re-serialises the whole block and can fail there). When
      the EXIF block cannot be parsed at all the image is refused rather than read
      unrotated: boxes refer to the upright image, and a guessed orientation would
      anonymize the wrong place. An orientation tag that Pillow's lenient parser skips,
      or a value outside 1..8, means no rotation, as in Pillow and common viewers.
    - Transparent images are composited on white; 16-bit and 32-bit images are reduced
      to 8 bits by :func:`_to_8bit`.

    Raises:
        ValueError: the file cannot be read as one image, or is refused, with the reason.
    """
    limit = _max_pixels if max_pixels is None else max_pixels
    try:
        with Image.open(path, formats=_read_formats()) as img:
            _check_header(img, limit)
            exif = img.getexif()
            upright = _UPRIGHT.get(_orientation(exif))
            img.load()
            return _to_rgb8(img.transpose(upright) if upright is not None else img)
    except _Refused as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ValueError(f"cannot read image {path}: {_unidentified(path)}") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this image's error
        raise ValueError(f"cannot read image {path}: {_one_line(exc)}") from exc


@cache
def _read_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in READ_FORMATS if f in Image.OPEN)


def _unidentified(path: Path) -> str:
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False
    if empty:
        return "empty file"
    return f"not a {', '.join(_read_formats())} image, or damaged beyond recognition"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``exc`` as one line of at most ``limit`` characters, its type named unless it is an
    ordinary I/O or format error."""
    text = " ".join(str(exc).split()) or "no message"
    if not isinstance(exc, OSError | SyntaxError | ValueError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_header(img: Image.Image, max_pixels: int) -> None:
    """Refuse, before decoding, an image that is empty, too large or has several frames."""
    width, height = img.size
    if width < 1 or height < 1:
        raise _Refused(f"empty image ({width}x{height})")
    if width * height > max_pixels:
        raise _Refused(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (--max-pixels)"
        )
    frames = 1 if img.format == "MPO" else getattr(img, "n_frames", 1)
    if frames > 1:
        raise _Refused(
            f"multi-frame image ({frames} frames): not supported, split the frames first"
        )


def _orientation(exif: Image.Exif) -> int:
    """The EXIF orientation (1 when absent or not an integer)."""
    value = exif.get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) else 1


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """A decoded image of any mode as ``(H, W, 3)`` uint8 RGB."""
    if img.mode in _UINT16_MODES or img.mode in ("I", "F"):
        grey = _to_8bit(np.asarray(img), img.mode)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        # Composite on white, as most viewers show transparent pixels.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB")).copy()


def _to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """One channel of a 16-bit, 32-bit integer or floating-point image as uint8.

    - 16-bit (``I;16*``): the high byte, ``v >> 8``, as Pillow reduces 16-bit RGB(A).
    - 32-bit integer (``I``): values within 0..65535 are 16-bit samples (what 16-bit PGM
      and some TIFF files decode to), reduced as above; any other range is stretched
      linearly from its minimum (0) to its maximum (255).
    - Floating point (``F``): values within [0, 1] are scaled by 255 and rounded; any
      other range is stretched like ``I``. NaN or infinite values are refused.
    """
    if mode in _UINT16_MODES:
        return (values.astype(np.uint16) >> 8).astype(np.uint8)
    if mode == "F" and not np.isfinite(values).all():
        raise _Refused("floating-point image with NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if mode == "I" and low >= 0 and high <= 65535:
        return (values.astype(np.uint16) >> 8).astype(np.uint8)
    if mode == "F" and low >= 0 and high <= 1:
        return np.round(values.astype(np.float64) * 255).astype(np.uint8)
    span = high - low
    stretched = (values.astype(np.float64) - low) * (255 / span) if span > 0 else values * 0.0
    return np.round(stretched).clip(0, 255).astype(np.uint8)


ImageLike = str | PathLike[str] | Image.Image | np.ndarray | Tensor
"""What :func:`as_image` takes: a file path, a PIL image, a numpy array or a torch tensor."""

ARRAY_SHAPES = "(H, W) or (H, W, 1) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA"
"""The numpy array shapes :func:`as_image` accepts, as its messages name them."""


def as_image(image: ImageLike, device: torch.device | str | None = None) -> Tensor:
    """What a user holds as the engine's ``(3, H, W)`` float32 image in ``[0, 1]``, holding
    8-bit values ``k / 255`` (a tensor is passed through).

    - A path (``str`` or ``os.PathLike``): read by :func:`read_image`, so upright by its
      EXIF orientation, transparency composited on white, the file's checks applied.
    - A PIL image, any mode: its pixels as they are (no EXIF rotation: boxes refer to the
      image the caller holds; apply ``ImageOps.exif_transpose`` first to rotate it).
      Converted as :func:`read_image` converts a decoded file: ``L``, ``P``, ``CMYK``,
      ``YCbCr``... to RGB by Pillow; ``RGBA``, ``LA``, ``PA`` and ``P`` with transparency
      composited on white (not alpha dropped: a transparent pixel shows as white, as in
      most viewers, and the image equals the same PNG read from a file); 16-bit ``I;16``,
      32-bit ``I`` and float ``F`` reduced to 8 bits by :func:`_to_8bit`, greyscale.
    - A numpy array, channel-last (:data:`ARRAY_SHAPES`): ``uint8`` values as they are,
      or floating-point values in ``[0, 1]`` rounded to 8 bits (``round(v * 255)``);
      greyscale is replicated to three channels, RGBA composited on white as above.
      Floats outside ``[0, 1]`` or NaN, other dtypes (``int64``, ``uint16``, ``bool``)
      and channel-first ``(3, H, W)`` arrays are refused rather than guessed at.
    - A torch tensor: returned unchanged (moved when ``device`` is given); the engine
      checks that it is a float ``(3, H, W)`` tensor in ``[0, 1]``.

    ``device``: where the result lies (default: the CPU, or the tensor's own device).

    Raises:
        ValueError: anything else, naming what is accepted; a file that cannot be read.
    """
    if isinstance(image, Tensor):
        return image if device is None else image.to(device)
    device = "cpu" if device is None else device
    if isinstance(image, str | PathLike):
        return to_image(read_image(Path(image)), device)
    if isinstance(image, Image.Image):
        return to_image(_pil_to_rgb8(image), device)
    if isinstance(image, np.ndarray):
        return to_image(_array_to_rgb8(image), device)
    raise ValueError(
        f"expected an image as a file path, a PIL image, a numpy array ({ARRAY_SHAPES}) or "
        f"a (3, H, W) float torch tensor in [0, 1], got {type(image).__name__}"
    )


def _pil_to_rgb8(img: Image.Image) -> np.ndarray:
    """A PIL image of any mode as ``(H, W, 3)`` uint8 RGB, as :func:`read_image` converts."""
    width, height = img.size
    if width < 1 or height < 1:
        raise ValueError(f"empty PIL image ({width}x{height})")
    try:
        return _to_rgb8(img)
    except _Refused as exc:
        raise ValueError(f"cannot convert the PIL image (mode {img.mode}): {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow's conversions raise many kinds
        raise ValueError(
            f"cannot convert the PIL image (mode {img.mode}) to RGB: {_one_line(exc)}"
        ) from exc


def _array_to_rgb8(array: np.ndarray) -> np.ndarray:
    """A channel-last numpy image (:data:`ARRAY_SHAPES`, ``uint8`` or floats in ``[0, 1]``)
    as ``(H, W, 3)`` uint8 RGB."""
    shape = tuple(array.shape)
    channels = shape[2] if array.ndim == 3 else 1
    if array.ndim not in (2, 3) or channels not in (1, 3, 4):
        hint = ""
        if array.ndim == 3 and shape[0] in (1, 3, 4):
            hint = (
                "; channel-first arrays are not accepted (numpy images are channel-last): "
                "pass array.transpose(1, 2, 0)"
            )
        raise ValueError(f"expected a numpy image of shape {ARRAY_SHAPES}, got {shape}{hint}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"empty numpy image of shape {shape}")
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("float numpy image has NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise ValueError(
                f"float numpy image must hold values in [0, 1], got [{low:g}, {high:g}] "
                "(for 0..255 values pass array.astype(numpy.uint8))"
            )
        pixels = np.round(array.astype(np.float64) * 255).astype(np.uint8)
    else:
        raise ValueError(
            f"expected a uint8 numpy image or floats in [0, 1], got dtype {array.dtype} "
            "(convert it: array.astype(numpy.uint8) for 0..255 values)"
        )
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    if pixels.shape[2] == 4:
        return _to_rgb8(Image.fromarray(np.ascontiguousarray(pixels), "RGBA"))
    return np.ascontiguousarray(pixels)


def like_input(image: Tensor, original: ImageLike) -> Tensor | Image.Image | np.ndarray:
    """The ``(3, H, W)`` 8-bit-valued ``image`` in the kind :func:`as_image` was given as
    ``original``: a tensor as it is; a numpy array or a path as ``(H, W, 3)`` uint8 pixels
    (greyscale, RGBA and float arrays too: the result is the stored 8-bit RGB); a PIL
    image as an RGB PIL image."""
    if isinstance(original, Tensor):
        return image
    pixels = to_pixels(image)
    if isinstance(original, Image.Image):
        return Image.fromarray(pixels, "RGB")
    return pixels
