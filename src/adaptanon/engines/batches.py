"""Stage B: the model's work on batches of read images
(:func:`~adaptanon.method.pipeline.compute_batch`), with the out-of-memory retry: a batch
that runs out of memory is split in halves, one that fails otherwise is retried image by
image, so one bad image does not take the others with it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adaptanon.classifiers import Classifier
from adaptanon.engines.devices import free_device_memory, out_of_memory
from adaptanon.io.codecs import to_image
from adaptanon.io.images import InputImage
from adaptanon.method.finish import FinishRules
from adaptanon.method.pipeline import Computed, Outcome, Settings, compute_batch, finish_computed
from adaptanon.records import ImageRecord
from adaptanon.regions import RegionSource


def error_record(item: InputImage, message: str) -> ImageRecord:
    """The record of an image that could not be read or processed."""
    return ImageRecord(input=item.relative.as_posix(), error=message)


def error_outcome(item: InputImage, message: str) -> Outcome:
    """The outcome of an image that could not be read or processed."""
    return Outcome(error_record(item, message))


def compute_loaded(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    loaded: Sequence[tuple[InputImage, np.ndarray | Exception]],
    *,
    keep_images: bool = False,
) -> list[tuple[InputImage, Computed]]:
    """The device half for a batch of read images (pixels, or the exception reading
    raised), in order; an unreadable image is an ``error`` with nothing to finish."""
    good = [(item, px) for item, px in loaded if not isinstance(px, Exception)]
    done: dict[int, Computed] = {}
    if good:
        for (item, _), out in zip(
            good, _compute_good(classifier, source, settings, good, keep_images), strict=True
        ):
            done[id(item)] = out
    return [
        (
            item,
            Computed(error_record(item, str(px))) if isinstance(px, Exception) else done[id(item)],
        )
        for item, px in loaded
    ]


def process_loaded(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    loaded: Sequence[tuple[InputImage, np.ndarray | Exception]],
    *,
    keep_images: bool = False,
) -> list[tuple[InputImage, Outcome]]:
    """Process a batch of read images in this process, in order: :func:`compute_loaded`,
    then each image finished here."""
    rules = settings.rules
    return [
        (item, finish_here(item, computed, rules))
        for item, computed in compute_loaded(
            classifier, source, settings, loaded, keep_images=keep_images
        )
    ]


def finish_here(item: InputImage, computed: Computed, rules: FinishRules) -> Outcome:
    """:func:`~adaptanon.method.pipeline.finish_computed` in this process; an exception
    is this image's ``error``."""
    try:
        return finish_computed(computed, rules)
    except (RuntimeError, ValueError, MemoryError) as exc:
        return error_outcome(item, f"processing: {exc}")


def _compute_good(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    good: list[tuple[InputImage, np.ndarray]],
    keep_images: bool,
) -> list[Computed]:
    """The device half on read images, retried as the module says; an image that fails
    alone is an ``error``."""
    names = [item.relative.as_posix() for item, _ in good]
    try:
        images = [to_image(px, classifier.device) for _, px in good]
        return compute_batch(
            classifier, source, settings, names, images, keep_images=keep_images,
            originals_8bit=[px for _, px in good],
        )  # fmt: skip
    except (RuntimeError, ValueError, MemoryError) as exc:
        if len(good) == 1:
            return [Computed(error_record(good[0][0], f"processing: {exc}"))]
        split = out_of_memory(exc)
    # Out of the except block, so the failed attempt's tensors (held by the traceback)
    # are freed before the retry.
    images = []
    if split:
        free_device_memory(classifier.device)
        half = len(good) // 2
        parts = [good[:half], good[half:]]
    else:
        parts = [[one] for one in good]
    return [
        out
        for part in parts
        for out in _compute_good(classifier, source, settings, part, keep_images)
    ]
