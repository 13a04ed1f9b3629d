"""The stateful shell: read files in batches, run the pipeline, write outputs and the
manifest. Bad inputs are recorded and the run goes on; inputs are never overwritten."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adaptanon.classifiers import Classifier
from adaptanon.io.atomic import atomic_write
from adaptanon.io.codecs import to_image
from adaptanon.io.images import InputImage, read_image
from adaptanon.io.manifest import ManifestWriter
from adaptanon.method.pipeline import Outcome, Settings, process_batch
from adaptanon.records import ImageRecord, Status
from adaptanon.regions import RegionSource

FAILED_DIR = "_failed"
"""Outputs that could not be verified go under ``OUT/_failed/`` (still anonymized), so
every file elsewhere under ``OUT`` keeps the original class."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; other names pass to ``torch.device``.

    Raises:
        ValueError: the name is not a device, or names CUDA where none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this torch build sees no CUDA GPU")
    return device


def default_batch_size(device: torch.device) -> int:
    """Images per pass: 8 on CPU (measured fastest there: bench/throughput.py), 64 on CUDA."""
    return 64 if device.type == "cuda" else 8


@dataclass
class Summary:
    """Counts of a run, by status."""

    counts: Counter[Status] = field(default_factory=Counter)

    @property
    def images(self) -> int:
        """All images seen."""
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        """True when every image got a status whose output is among the finished files."""
        return all(status.ok for status, n in self.counts.items() if n)

    def add(self, status: Status) -> None:
        """Count one image."""
        self.counts[status] += 1


def output_path(out_dir: Path, item: InputImage, extension: str, failed: bool = False) -> Path:
    """Where the output for ``item`` goes: its relative path under ``out_dir`` (or under
    ``out_dir/_failed``), with the output format's extension."""
    base = out_dir / FAILED_DIR if failed else out_dir
    return base / item.relative.with_suffix(extension)


def _batches(items: Sequence[InputImage], size: int) -> Iterator[list[InputImage]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _load(item: InputImage) -> tuple[InputImage, np.ndarray | ValueError]:
    try:
        return item, read_image(item.path)
    except ValueError as exc:
        return item, exc


def _load_batch(batch: list[InputImage]) -> list[tuple[InputImage, np.ndarray | ValueError]]:
    return [_load(item) for item in batch]


def load_batches(
    items: Sequence[InputImage], batch_size: int
) -> Iterator[list[tuple[InputImage, np.ndarray | ValueError]]]:
    """Batches of ``(item, pixels)`` (or the error reading raised), read one batch ahead in
    a background thread while the caller works on the current one."""
    with ThreadPoolExecutor(1) as pool:
        batches = _batches(items, batch_size)
        first = next(batches, None)
        ahead = pool.submit(_load_batch, first) if first else None
        while ahead is not None:
            loaded = ahead.result()
            following = next(batches, None)
            ahead = pool.submit(_load_batch, following) if following else None
            yield loaded


def run(
    inputs: Sequence[InputImage],
    out_dir: Path,
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    batch_size: int = 8,
    on_record: Callable[[ImageRecord], None] | None = None,
) -> Summary:
    """Anonymize ``inputs`` into ``out_dir``, writing ``out_dir/manifest.jsonl``.

    Reading runs in a background thread while the classifier works on the previous batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    out_dir.mkdir(parents=True, exist_ok=True)
    input_paths = {item.path.resolve() for item in inputs}
    claimed: set[Path] = set()
    summary = Summary()
    described = {"model": classifier.name, "regions": source.describe(), **settings.describe()}

    def record(item: InputImage, out: Outcome) -> None:
        rec = out.record
        rec.input = str(item.path)
        rec.settings = described
        if out.data is not None and rec.status != Status.ERROR:
            failed = not rec.status.ok
            target = output_path(out_dir, item, settings.codec.extension, failed)
            resolved = target.resolve()
            if resolved in input_paths:
                rec.status, rec.error = Status.ERROR, f"refusing to overwrite the input {item.path}"
            elif resolved in claimed:
                rec.status, rec.error = Status.ERROR, f"another input already writes {target}"
            else:
                try:
                    atomic_write(target, out.data)
                    claimed.add(resolved)
                    rec.output = str(target)
                except OSError as exc:
                    rec.status, rec.error = Status.ERROR, f"cannot write {target}: {exc}"
        writer.write(rec)
        summary.add(rec.status)
        if on_record:
            on_record(rec)

    with ManifestWriter(out_dir / "manifest.jsonl") as writer:
        for loaded in load_batches(inputs, batch_size):
            for item, out in process_loaded(classifier, source, settings, loaded):
                record(item, out)
    return summary


def error_outcome(item: InputImage, message: str) -> Outcome:
    """The outcome of an image that could not be read or processed."""
    return Outcome(ImageRecord(input=item.relative.as_posix(), error=message))


def process_loaded(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    loaded: Sequence[tuple[InputImage, np.ndarray | Exception]],
    *,
    keep_images: bool = False,
) -> list[tuple[InputImage, Outcome]]:
    """Process a batch of read images (pixels, or the exception reading raised), in order.

    If the batch as a whole fails (e.g. out of memory), it is retried image by image so
    that one bad image does not take the others with it.
    """
    good = [(item, px) for item, px in loaded if not isinstance(px, Exception)]
    done: dict[int, Outcome] = {}
    if good:
        for (item, _), out in zip(
            good, _process_good(classifier, source, settings, good, keep_images), strict=True
        ):
            done[id(item)] = out
    return [
        (item, error_outcome(item, str(px)) if isinstance(px, Exception) else done[id(item)])
        for item, px in loaded
    ]


def _process_good(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    good: list[tuple[InputImage, np.ndarray]],
    keep_images: bool,
) -> list[Outcome]:
    names = [item.relative.as_posix() for item, _ in good]
    try:
        images = [to_image(px, classifier.device) for _, px in good]
        return process_batch(classifier, source, settings, names, images, keep_images=keep_images)
    except (RuntimeError, ValueError) as exc:
        if len(good) == 1:
            return [error_outcome(good[0][0], f"processing: {exc}")]
        return [
            out
            for one in good
            for out in _process_good(classifier, source, settings, [one], keep_images)
        ]
