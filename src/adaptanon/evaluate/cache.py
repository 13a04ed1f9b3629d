"""The evaluation cache: per configuration, the rows computed so far (so an interrupted
evaluation resumes) and the example thumbnails."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from adaptanon.evaluate.rows import Config, Example, ImageRow
from adaptanon.io.atomic import atomic_write
from adaptanon.io.codecs import to_pixels
from adaptanon.io.images import InputImage
from adaptanon.method import OutcomeImages

THUMBNAIL = 384
"""Longest side, in pixels, of the example images kept for the report's figure."""


def image_key(item: InputImage) -> str:
    """How an image is identified in the cache: its resolved path."""
    return str(item.path.resolve())


def content_key(item: InputImage) -> str:
    """What identifies the file's content: its size and modification time (``""`` when it
    cannot be read), so that a cached row of a file that changed is not reused."""
    try:
        st = item.path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


class ConfigCache:
    """The per-image rows of one configuration: ``<dir>/<key>.jsonl`` (appended batch by
    batch, so an interruption loses at most the batch in flight), ``<dir>/<key>.json``
    (the configuration, for people) and ``<dir>/<key>/`` (example thumbnails)."""

    def __init__(self, directory: Path, config: Config) -> None:
        self.rows_path = directory / f"{config.key}.jsonl"
        self.examples_dir = directory / config.key
        directory.mkdir(parents=True, exist_ok=True)
        info = directory / f"{config.key}.json"
        if not info.exists():
            atomic_write(info, json.dumps(config.identity(), indent=2) + "\n")

    def read(self) -> dict[str, ImageRow]:
        """Rows by image path; the last line for an image wins; a torn line is skipped."""
        rows: dict[str, ImageRow] = {}
        if not self.rows_path.exists():
            return rows
        with open(self.rows_path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = ImageRow.from_dict(json.loads(line))
                except (json.JSONDecodeError, TypeError, AttributeError):
                    continue
                rows[row.path] = row
        return rows

    def _ends_with_newline(self) -> bool:
        with open(self.rows_path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def append(self, rows: Sequence[ImageRow]) -> None:
        """Add rows durably, on a fresh line even after a torn one (a crash mid-write)."""
        if not rows:
            return
        with open(self.rows_path, "ab") as f:
            torn = f.tell() > 0 and not self._ends_with_newline()
            text = ("\n" if torn else "") + "".join(r.to_json() + "\n" for r in rows)
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())


def thumbnail(pixels: np.ndarray, size: int = THUMBNAIL, mask: bool = False) -> np.ndarray:
    """Downscale ``(H, W, 3)`` uint8 (or ``(H, W)`` bool with ``mask``) so that the longest
    side is at most ``size``."""
    h, w = pixels.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale == 1.0:
        return pixels
    dims = (max(1, round(w * scale)), max(1, round(h * scale)))
    if mask:
        img = Image.fromarray(pixels.astype(np.uint8) * 255).resize(dims, Image.Resampling.NEAREST)
        return np.asarray(img) > 127
    return np.asarray(Image.fromarray(pixels).resize(dims, Image.Resampling.LANCZOS))


def save_example(directory: Path, index: int, images: OutcomeImages) -> str:
    """Store thumbnails of ``images`` for the figure; returns the file name."""
    name = f"example_{index:04d}.npz"
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        original=thumbnail(to_pixels(images.original)),
        anonymized=thumbnail(to_pixels(images.anonymized)),
        final=thumbnail(to_pixels(images.final)),
        mask=thumbnail(images.mask[0].cpu().numpy(), mask=True),
    )
    atomic_write(directory / name, buf.getvalue())
    return name


def load_examples(cache_dir: Path, config: Config, rows: Sequence[ImageRow]) -> list[Example]:
    """The example thumbnails stored for ``rows`` of ``config``, in row order."""
    out: list[Example] = []
    for row in rows:
        if not row.example:
            continue
        path = cache_dir / config.key / row.example
        try:
            with np.load(path) as data:
                out.append(
                    Example(row, data["original"], data["anonymized"], data["final"], data["mask"])
                )
        except (OSError, KeyError, ValueError):
            continue
    return out
