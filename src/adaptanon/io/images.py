"""Finding input images and reading them as upright 8-bit RGB."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm"}


@dataclass(frozen=True)
class InputImage:
    """An input file and its path relative to the root it was found under."""

    path: Path
    relative: Path


def collect_inputs(specs: list[str], exclude: Path | None = None) -> list[InputImage]:
    """Expand files, directories (recursively) and glob patterns into input images.

    Directories contribute their image files (by extension); a file named explicitly is
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
                f
                for f in sorted(p.rglob("*"))
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
            ]
            if not images:
                kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
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


def read_image(path: Path) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB, upright according to its EXIF orientation.

    Raises:
        ValueError: the file cannot be decoded as an image.
    """
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                # Composite on white, as most viewers show transparent pixels.
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            return np.asarray(img.convert("RGB")).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
