"""Finding input images and reading them as upright 8-bit RGB."""

from __future__ import annotations

import glob
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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
