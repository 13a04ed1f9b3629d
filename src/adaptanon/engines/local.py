"""The stateful shell: read files in batches, run the pipeline, write outputs and the
manifest. Bad inputs are recorded and the run goes on; inputs, files outside the output
folder and files no earlier run wrote are never overwritten; a full or read-only disk
stops the run."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptanon.classifiers import Classifier
from adaptanon.engines.verify import Verify
from adaptanon.io.atomic import FolderLock, atomic_write, is_fatal_write_error
from adaptanon.io.codecs import to_image
from adaptanon.io.images import InputImage, read_image
from adaptanon.io.manifest import ManifestWriter, read_earlier_manifest, save_records
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


class OutputRefused(Exception):
    """The output folder cannot be used as asked, and nothing was written: another run
    holds it, or its ``manifest.jsonl`` is not adaptanon's (a usage error)."""


class RunStopped(Exception):
    """Writing failed in a way that no later write can avoid (disk full, read-only or
    unwritable folder, I/O error): the run stopped. The manifest is valid up to the last
    finished image."""


MANIFEST_NAME = "manifest.jsonl"
EARLIER_NAME = ".manifest.earlier.jsonl"
"""While a run goes on, the records of earlier runs are kept in this hidden file, so that
a run killed before it could carry them over (see :class:`OutputFolder`) loses nothing."""


def _stopped(what: str, exc: OSError) -> RunStopped:
    reason = exc.strerror or str(exc)
    return RunStopped(f"cannot {what}: {reason}")


class OutputFolder:
    """The output folder of one run, and what it may write there.

    An output is written only inside the folder (after resolving ``..`` and symbolic
    links), never over an input, and never over an existing file that an earlier run did
    not write (listed as ``output`` in the folder's manifest) unless ``overwrite``. When an
    image's result moves (now ``error``, or between ``OUT`` and ``OUT/_failed``), the file
    an earlier run wrote for it is removed. Records of earlier runs whose images this run
    does not process and whose files remain are carried over into the new manifest, so it
    describes every file adaptanon wrote in the folder.
    """

    def __init__(self, out_dir: Path, overwrite: bool = False) -> None:
        self.out_dir = out_dir
        self.root = out_dir.resolve()
        self.overwrite = overwrite
        self.earlier: list[dict[str, Any]] = []
        self.owned: set[Path] = set()
        self.by_input: dict[Path, set[Path]] = {}
        self.claimed: set[Path] = set()
        self.targets: set[Path] = set()
        self.done_inputs: set[Path] = set()

    @staticmethod
    def real(path: Path) -> Path:
        """``path`` with its folder resolved (``..`` and links), its last name kept: the
        directory entry a write to ``path`` replaces."""
        return path.parent.resolve() / path.name

    def inside(self, real: Path) -> bool:
        """True when the resolved ``real`` lies inside the folder (not the folder itself)."""
        return real != self.root and real.is_relative_to(self.root)

    def load_earlier(self) -> None:
        """Read what earlier runs wrote, before the manifest is rewritten.

        Raises:
            OutputRefused: ``manifest.jsonl`` exists but is not an adaptanon manifest (and
                not ``overwrite``).
        """
        manifest, kept = self.out_dir / MANIFEST_NAME, self.out_dir / EARLIER_NAME
        records: list[dict[str, Any]] = []
        if kept.is_file() and not kept.is_symlink():
            try:
                records += read_earlier_manifest(kept)  # left by a run that was killed
            except (OSError, ValueError):
                pass
        if os.path.lexists(manifest):
            try:
                records += read_earlier_manifest(manifest)
            except (OSError, ValueError) as exc:
                if not self.overwrite:
                    raise OutputRefused(
                        f"{manifest} exists and is not an adaptanon manifest ({exc}); "
                        "move it away or pass --overwrite to replace it"
                    ) from exc
        self.earlier = records
        for rec in records:
            output, source = rec.get("output"), rec.get("input")
            if not isinstance(output, str) or not output:
                continue
            real = self.real(Path(output))
            if not self.inside(real):
                continue
            self.owned.add(real)
            if isinstance(source, str) and source:
                self.by_input.setdefault(Path(source).resolve(), set()).add(real)
        if records:
            save_records(kept, records)

    def refusal(self, target: Path, inputs: set[Path]) -> str | None:
        """Why ``target`` must not be written, or None when it may."""
        real = self.real(target)
        self.targets.add(real)
        if not self.inside(real):
            return f"refusing to write {target}: it lies outside the output folder {self.out_dir}"
        if real in inputs:
            return f"refusing to overwrite the input {target}"
        if real in self.claimed:
            return f"another input already writes {target}"
        if os.path.lexists(real) and real not in self.owned and not self.overwrite:
            return (
                f"{target} already exists and was not written by an earlier run into "
                f"{self.out_dir}; pass --overwrite to replace it"
            )
        return None

    def claim(self, target: Path) -> None:
        """Note that this run wrote ``target``."""
        self.claimed.add(self.real(target))

    def retire(self, item: InputImage, rec: ImageRecord, inputs: set[Path]) -> None:
        """Remove the files earlier runs wrote for ``item`` that no longer hold its result
        (a note goes into ``rec.error`` if one cannot be removed).

        Raises:
            RunStopped: removing failed for a reason that stops the run.
        """
        key = item.path.resolve()
        self.done_inputs.add(key)
        current = self.real(Path(rec.output)) if rec.output else None
        for old in sorted(self.by_input.get(key, ())):
            if old == current or old in self.claimed or old in inputs:
                continue
            try:
                old.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                if is_fatal_write_error(exc):
                    raise _stopped(f"remove the earlier output {old}", exc) from exc
                note = f"its earlier output {old} could not be removed: {exc.strerror or exc}"
                rec.error = f"{rec.error}; {note}" if rec.error else note

    def carried_over(self) -> list[dict[str, Any]]:
        """Records of earlier runs whose images this run did not process and whose files
        are still there (the latest record per file)."""
        kept: dict[Path, dict[str, Any]] = {}
        for rec in self.earlier:
            output, source = rec.get("output"), rec.get("input")
            if not isinstance(output, str) or not output:
                continue
            real = self.real(Path(output))
            if isinstance(source, str) and source and Path(source).resolve() in self.done_inputs:
                continue
            if real in self.claimed or real in self.targets or not self.inside(real):
                continue
            if real.is_file() and not real.is_symlink():
                kept.pop(real, None)
                kept[real] = rec
        return list(kept.values())

    def finish(self, writer: ManifestWriter) -> None:
        """Carry earlier records over into ``writer`` and drop the hidden copy of them.
        A write that fails leaves the copy for the next run."""
        try:
            for rec in self.carried_over():
                writer.write(rec)
            (self.out_dir / EARLIER_NAME).unlink(missing_ok=True)
        except OSError:
            pass


def run(
    inputs: Sequence[InputImage],
    out_dir: Path,
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    batch_size: int = 8,
    on_record: Callable[[ImageRecord], None] | None = None,
    *,
    overwrite: bool = False,
    verify: Verify | None = None,
) -> Summary:
    """Anonymize ``inputs`` into ``out_dir``, writing ``out_dir/manifest.jsonl``.

    ``verify`` (e.g. :class:`~adaptanon.engines.verify.FileCheck`, ``--verify-with``) is
    called with each done image's record and encoded bytes before they are written; an
    image it marks failed goes under ``OUT/_failed/``.

    Reading runs in a background thread while the classifier works on the previous batch.
    One run at a time may write into ``out_dir`` (``out_dir/.adaptanon.lock``). Existing
    files that no earlier run wrote are replaced only with ``overwrite`` (see
    :class:`OutputFolder` for every rule); inputs never are.

    Raises:
        OutputRefused: another run holds ``out_dir``, or its manifest is not adaptanon's.
        RunStopped: the disk is full, read-only or not writable; the manifest lists the
            images finished.
        KeyboardInterrupt: passed on, after the manifest is closed.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _stopped(f"create the output folder {out_dir}", exc) from exc
    lock = FolderLock(out_dir)
    try:
        lock.acquire()
    except BlockingIOError as exc:
        raise OutputRefused(
            f"another adaptanon run is writing into {out_dir} (it holds {lock.path}); "
            "wait for it to finish or choose another output folder"
        ) from exc
    except OSError as exc:
        raise _stopped(f"lock the output folder {out_dir}", exc) from exc
    try:
        return _run_locked(
            inputs, OutputFolder(out_dir, overwrite), classifier, source, settings, batch_size,
            on_record, verify,
        )  # fmt: skip
    finally:
        lock.release()


def _run_locked(
    inputs: Sequence[InputImage],
    folder: OutputFolder,
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    batch_size: int,
    on_record: Callable[[ImageRecord], None] | None,
    verify: Verify | None = None,
) -> Summary:
    out_dir = folder.out_dir
    input_paths = {item.path.resolve() for item in inputs}
    summary = Summary()
    described = {"model": classifier.name, "regions": source.describe(), **settings.describe()}
    try:
        folder.load_earlier()
        writer = ManifestWriter(out_dir / MANIFEST_NAME)
    except OSError as exc:
        raise _stopped(f"write the manifest in {out_dir}", exc) from exc

    def record(item: InputImage, out: Outcome) -> None:
        rec = out.record
        rec.input = str(item.path)
        rec.settings = described
        if out.data is not None and rec.status != Status.ERROR:
            if verify is not None and rec.status.ok:
                verify(rec, out.data, settings.codec.extension)
            failed = not rec.status.ok
            target = output_path(out_dir, item, settings.codec.extension, failed)
            refusal = folder.refusal(target, input_paths)
            if refusal:
                rec.status, rec.error = Status.ERROR, refusal
            else:
                try:
                    atomic_write(target, out.data)
                except OSError as exc:
                    if is_fatal_write_error(exc):
                        raise _stopped(f"write {target}", exc) from exc
                    rec.status, rec.error = Status.ERROR, f"cannot write {target}: {exc}"
                else:
                    folder.claim(target)
                    rec.output = str(target)
        folder.retire(item, rec, input_paths)
        try:
            writer.write(rec)
        except OSError as exc:
            raise _stopped(f"write the manifest {writer.path}", exc) from exc
        summary.add(rec.status)
        if on_record:
            on_record(rec)

    with writer:
        try:
            for loaded in load_batches(inputs, batch_size):
                for item, out in process_loaded(classifier, source, settings, loaded):
                    record(item, out)
        except RunStopped as exc:
            raise RunStopped(
                f"{exc}; the run stopped, {writer.path} lists the {summary.images} "
                "image(s) finished"
            ) from exc.__cause__
        finally:
            folder.finish(writer)
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
