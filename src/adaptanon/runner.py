"""The stateful shell: read files in batches, run the pipeline, write outputs and the
manifest. Bad inputs are recorded and the run goes on; inputs are never overwritten."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adaptanon.classifiers import Classifier
from adaptanon.encoding import to_image
from adaptanon.files import InputImage, atomic_write, read_image
from adaptanon.manifest import ManifestWriter, Record
from adaptanon.pipeline import ERROR, FAILED, Outcome, Settings, process_batch
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
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this torch build sees no CUDA GPU")
    return device


def default_batch_size(device: torch.device) -> int:
    """Images per pass: 8 on CPU (measured fastest there: bench/throughput.py), 64 on CUDA."""
    return 64 if device.type == "cuda" else 8


@dataclass
class Summary:
    """Counts of a run, by status."""

    counts: dict[str, int] = field(
        default_factory=lambda: {"unchanged": 0, "corrected": 0, "failed": 0, "error": 0}
    )

    @property
    def images(self) -> int:
        """All images seen."""
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        """True when no image failed or errored."""
        return self.counts["failed"] == 0 and self.counts["error"] == 0

    def add(self, status: str) -> None:
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
    on_record: Callable[[Record], None] | None = None,
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
    described = {
        "model": classifier.name,
        "regions": source.describe(),
        "filter": settings.filter.describe(),
        "shape": settings.shape,
        "criterion": settings.criterion.describe(),
        "alpha": settings.alpha,
        "max_steps": settings.max_steps,
        "delta": settings.delta,
        "format": settings.codec.format,
        "quality": None if settings.codec.lossless else settings.codec.quality,
    }

    def record(item: InputImage, out: Outcome | None, error: str | None = None) -> None:
        status = out.status if out else ERROR
        message = error or (out.message if out else None)
        written: Path | None = None
        if out is not None and out.data is not None and status != ERROR:
            target = output_path(out_dir, item, settings.codec.extension, status == FAILED)
            resolved = target.resolve()
            if resolved in input_paths:
                status, message = ERROR, f"refusing to overwrite the input {item.path}"
            elif resolved in claimed:
                status, message = ERROR, f"another input already writes {target}"
            else:
                try:
                    atomic_write(target, out.data)
                    claimed.add(resolved)
                    written = target
                except OSError as exc:
                    status, message = ERROR, f"cannot write {target}: {exc}"
        rec = Record(
            input=str(item.path),
            output=str(written) if written else None,
            status=status,
            regions=[list(b) for b in out.regions] if out else [],
            steps=out.steps if out else 0,
            original_class=out.original_class if out else None,
            anonymized_class=out.anonymized_class if out else None,
            final_class=out.final_class if out else None,
            error=message if status in (ERROR, FAILED) else None,
            original_name=_name(classifier, out.original_class if out else None),
            anonymized_name=_name(classifier, out.anonymized_class if out else None),
            final_name=_name(classifier, out.final_class if out else None),
            original_confidence=out.original_confidence if out else None,
            final_confidence=out.final_confidence if out else None,
            final_margin=out.final_margin if out else None,
            settings=described,
        )
        writer.write(rec)
        summary.add(status)
        if on_record:
            on_record(rec)

    with ManifestWriter(out_dir / "manifest.jsonl") as writer:
        for loaded in load_batches(inputs, batch_size):
            for item, px in loaded:
                if isinstance(px, Exception):
                    record(item, None, str(px))
            good = [(item, px) for item, px in loaded if not isinstance(px, Exception)]
            for item, out in process_loaded(classifier, source, settings, good):
                record(item, out)
    return summary


def process_loaded(
    classifier: Classifier, source: RegionSource, settings: Settings, good: list
) -> list[tuple[InputImage, Outcome | None]]:
    """Process a batch of read images; if the batch as a whole fails (e.g. out of memory), retry image by
    image so that one bad image does not take the others with it."""
    if not good:
        return []
    device = classifier.device
    names = [item.relative.as_posix() for item, _ in good]
    try:
        images = [to_image(px, device) for _, px in good]
        outs = process_batch(classifier, source, settings, names, images)
        return [(item, out) for (item, _), out in zip(good, outs, strict=True)]
    except (RuntimeError, ValueError) as exc:
        if len(good) == 1:
            item = good[0][0]
            return [(item, Outcome(name=names[0], status=ERROR, message=f"processing: {exc}"))]
        results = []
        for one in good:
            results += process_loaded(classifier, source, settings, [one])
        return results


def _name(classifier: Classifier, index: int | None) -> str | None:
    return None if index is None else classifier.class_name(index)
