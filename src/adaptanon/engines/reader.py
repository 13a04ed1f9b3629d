"""Stage A: read input files into batches bounded by images and pixels, ahead of the
model: in a background thread one batch ahead, or in worker processes (decode and EXIF
off the main process) a bounded number of images ahead."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import numpy as np

from adaptanon.engines.devices import DEFAULT_BATCH_PIXELS
from adaptanon.io.images import InputImage, current_pixel_limit, read_image

Loaded = tuple[InputImage, np.ndarray | ValueError]
"""An input and its pixels, or the error reading it raised."""


def read_one(item: InputImage, max_pixels: int | None = None) -> Loaded:
    """``item`` with its ``(H, W, 3)`` uint8 pixels, or the ``ValueError`` reading raised
    (``max_pixels``: as :func:`~adaptanon.io.images.read_image`)."""
    try:
        return item, read_image(item.path, max_pixels)
    except ValueError as exc:
        return item, exc


def _pixel_count(loaded: Loaded) -> int:
    pixels = loaded[1]
    return 0 if isinstance(pixels, Exception) else int(pixels.shape[0]) * int(pixels.shape[1])


def _read_in(pool: Executor, items: Iterable[InputImage], ahead: int) -> Iterator[Loaded]:
    """``items`` read by ``pool``, in order, at most ``ahead`` of them in flight."""
    limit = current_pixel_limit()  # the workers do not see this process's limit
    pending: deque[Future[Loaded]] = deque()
    source = iter(items)
    while True:
        while len(pending) < ahead:
            item = next(source, None)
            if item is None:
                break
            pending.append(pool.submit(read_one, item, limit))
        if not pending:
            return
        yield pending.popleft().result()


class BatchReader:
    """Groups read images, in order, into batches of at most ``batch_size`` images and
    ``batch_pixels`` pixels (an image larger than that alone). An image that does not fit
    the current batch is held for the next one, so each file is read once."""

    def __init__(self, loaded: Iterable[Loaded], batch_size: int, batch_pixels: int) -> None:
        if batch_size < 1 or batch_pixels < 1:
            raise ValueError(f"batch limits must be >= 1, got {batch_size}, {batch_pixels}")
        self.loaded = iter(loaded)
        self.batch_size = batch_size
        self.batch_pixels = batch_pixels
        self.held: Loaded | None = None

    def next_batch(self) -> list[Loaded]:
        """The next batch (empty at the end)."""
        batch: list[Loaded] = []
        pixels = 0
        while len(batch) < self.batch_size:
            one, self.held = self.held, None
            if one is None:
                one = next(self.loaded, None)
                if one is None:
                    break
            count = _pixel_count(one)
            if batch and pixels + count > self.batch_pixels:
                self.held = one
                break
            batch.append(one)
            pixels += count
        return batch


def load_batches(
    items: Iterable[InputImage],
    batch_size: int,
    batch_pixels: int | None = None,
    pool: Executor | None = None,
) -> Iterator[list[Loaded]]:
    """Batches of ``(item, pixels)`` (or the error reading raised) of at most
    ``batch_size`` images and ``batch_pixels`` pixels (default
    :data:`~adaptanon.engines.devices.DEFAULT_BATCH_PIXELS`).

    Without ``pool`` the next batch is read in a background thread while the caller works
    on the current one; with a pool of worker processes (:mod:`.workers`) up to two
    batches' worth of images are read ahead by the workers.
    """
    limit = batch_pixels or DEFAULT_BATCH_PIXELS
    if pool is not None:
        reader = BatchReader(_read_in(pool, items, 2 * batch_size), batch_size, limit)
        while batch := reader.next_batch():
            yield batch
        return
    reader = BatchReader(map(read_one, items), batch_size, limit)
    with ThreadPoolExecutor(1) as thread:
        ahead = thread.submit(reader.next_batch)
        while True:
            loaded = ahead.result()
            if not loaded:
                return
            ahead = thread.submit(reader.next_batch)
            yield loaded
