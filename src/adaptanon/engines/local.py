"""The stateful shell: read files in batches, run the pipeline, write outputs and the
manifest. Bad inputs are recorded and the run goes on; inputs, files outside the output
folder and files no earlier run wrote are never overwritten; a full or read-only disk
stops the run."""

from __future__ import annotations

import gc
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
from adaptanon.records import REQUIRED_KEYS, ImageRecord, Status
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


DEFAULT_BATCH_PIXELS = 24_000_000
"""Most input pixels in one batch (``--batch-pixels 24``, in megapixels), besides the image
count: one 24-megapixel photo, or two 12-megapixel ones. Processing takes about 110-125
bytes per input pixel on top of the model (``bench/batch_memory.py``), so a batch stays
near 3 GB; an image larger than this goes through alone. ImageNet-sized images (0.2
megapixels) are limited by the image count alone."""


@dataclass
class Summary:
    """Counts of a run, by status; ``skipped`` of them were finished by an earlier run with
    the same settings and not processed again."""

    counts: Counter[Status] = field(default_factory=Counter)
    skipped: int = 0

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


Loaded = tuple[InputImage, np.ndarray | ValueError]
"""An input and its pixels, or the error reading it raised."""


def _load(item: InputImage) -> Loaded:
    try:
        return item, read_image(item.path)
    except ValueError as exc:
        return item, exc


def _pixel_count(loaded: Loaded) -> int:
    pixels = loaded[1]
    return 0 if isinstance(pixels, Exception) else int(pixels.shape[0]) * int(pixels.shape[1])


class _BatchReader:
    """Reads items in order into batches of at most ``batch_size`` images and
    ``batch_pixels`` pixels (an image larger than that alone). An image that does not fit
    the current batch is held for the next one, so each file is read once."""

    def __init__(self, items: Iterable[InputImage], batch_size: int, batch_pixels: int) -> None:
        if batch_size < 1 or batch_pixels < 1:
            raise ValueError(f"batch limits must be >= 1, got {batch_size}, {batch_pixels}")
        self.items = iter(items)
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
                item = next(self.items, None)
                if item is None:
                    break
                one = _load(item)
            count = _pixel_count(one)
            if batch and pixels + count > self.batch_pixels:
                self.held = one
                break
            batch.append(one)
            pixels += count
        return batch


def load_batches(
    items: Iterable[InputImage], batch_size: int, batch_pixels: int | None = None
) -> Iterator[list[Loaded]]:
    """Batches of ``(item, pixels)`` (or the error reading raised) of at most
    ``batch_size`` images and ``batch_pixels`` pixels (default
    :data:`DEFAULT_BATCH_PIXELS`), read one batch ahead in a background thread while the
    caller works on the current one."""
    reader = _BatchReader(items, batch_size, batch_pixels or DEFAULT_BATCH_PIXELS)
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(reader.next_batch)
        while True:
            loaded = ahead.result()
            if not loaded:
                return
            ahead = pool.submit(reader.next_batch)
            yield loaded


def local_outcomes(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    items: Iterable[InputImage],
    batch_size: int = 8,
    batch_pixels: int | None = None,
) -> Iterator[tuple[InputImage, Outcome]]:
    """The local engine's producer: each item with its outcome, in order, computed in this
    process (see :func:`load_batches` and :func:`process_loaded`)."""
    for loaded in load_batches(items, batch_size, batch_pixels):
        yield from process_loaded(classifier, source, settings, loaded)


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


_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
"""What :func:`~adaptanon.io.atomic.atomic_write` names its temporary files
(``.NAME.XXXXXXXX.tmp``): a run killed while writing leaves one behind."""


def as_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` as it reads back from the manifest (tuples as lists, ...)."""
    return dict(json.loads(json.dumps(value, ensure_ascii=False)))


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
        self.latest: dict[Path, dict[str, Any]] = {}

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
        for rec in records:
            source = rec.get("input")
            if isinstance(source, str) and source:
                self.latest[Path(source).resolve()] = rec
        if records:
            save_records(kept, records)

    def remove_temporaries(self) -> None:
        """Remove the temporary files that a run killed while writing left (hidden
        ``.NAME.XXXXXXXX.tmp`` files, never a finished output); only while the lock is
        held, so no running writer's file is touched."""
        for folder, _dirs, files in os.walk(self.out_dir):
            for name in files:
                if _TEMPORARY.fullmatch(name):
                    try:
                        os.unlink(os.path.join(folder, name))
                    except OSError:
                        pass

    def finished(
        self, item: InputImage, described: Mapping[str, Any], extension: str
    ) -> dict[str, Any] | None:
        """The latest earlier record of ``item`` when it need not be processed again, else
        None: the record is complete (every key of the schema), its status is not
        ``error``, its ``settings`` equal ``described``, and its output is still there, a
        regular file at the path this run would write, not older than the input."""
        rec = self.latest.get(item.path.resolve())
        if rec is None or any(key not in rec for key in REQUIRED_KEYS):
            return None
        try:
            status = Status(rec["status"])
        except ValueError:
            return None
        output = rec.get("output")
        if status == Status.ERROR or not isinstance(output, str) or not output:
            return None
        if rec.get("settings") != as_json(described):
            return None
        target = output_path(self.out_dir, item, extension, failed=not status.ok)
        real = self.real(Path(output))
        if real != self.real(target) or not self.inside(real) or real not in self.owned:
            return None
        try:
            written = os.lstat(real)
            source = os.stat(item.path)
        except OSError:
            return None
        if not os.path.isfile(real) or os.path.islink(real) or written.st_size == 0:
            return None
        return rec if written.st_mtime_ns >= source.st_mtime_ns else None

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
        by_input: dict[Path | int, dict[str, Any]] = {}
        for rec in kept.values():
            source = rec.get("input")
            key = Path(source).resolve() if isinstance(source, str) and source else id(rec)
            by_input.pop(key, None)
            by_input[key] = rec
        return list(by_input.values())

    def finish(self, writer: ManifestWriter) -> None:
        """Carry earlier records over into ``writer`` and drop the hidden copy of them.
        A write that fails leaves the copy for the next run."""
        try:
            for rec in self.carried_over():
                writer.write(rec)
            (self.out_dir / EARLIER_NAME).unlink(missing_ok=True)
        except OSError:
            pass


Produce = Callable[[list[InputImage]], Iterable[tuple[InputImage, Outcome]]]
"""An engine's producer: given the inputs to process, yields each with its
:class:`~adaptanon.method.pipeline.Outcome` (in any order, each input once). The local
engine's is :func:`local_outcomes`; :mod:`adaptanon.engines.ray` runs a pool of actors."""


def describe_run(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    verify: Verify | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What each record's ``settings`` says: the model, the region source, the method's
    settings, the ``--verify-with`` check if any, and ``extra`` (e.g. digests of the files
    the options named), as it reads back from the manifest. A rerun skips an image only
    when its record says exactly this."""
    described: dict[str, Any] = {
        "model": classifier.name,
        "regions": source.describe(),
        **settings.describe(),
    }
    if verify is not None:
        described["verify_with"] = getattr(verify, "name", None) or type(verify).__name__
    described.update(extra or {})
    return as_json(described)


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
    resume: bool = True,
    batch_pixels: int | None = None,
    extra_settings: Mapping[str, Any] | None = None,
) -> Summary:
    """Anonymize ``inputs`` into ``out_dir``, writing ``out_dir/manifest.jsonl``.

    ``verify`` (e.g. :class:`~adaptanon.engines.verify.FileCheck`, ``--verify-with``) is
    called with each done image's record and encoded bytes before they are written; an
    image it marks failed goes under ``OUT/_failed/``.

    Reading runs in a background thread while the classifier works on the previous batch;
    a batch holds at most ``batch_size`` images and ``batch_pixels`` input pixels. With
    ``resume``, an image that an earlier run into ``out_dir`` finished with the same
    settings (see :meth:`OutputFolder.finished`) is not processed again: its record is
    kept. One run at a time may write into ``out_dir`` (``out_dir/.adaptanon.lock``).
    Existing files that no earlier run wrote are replaced only with ``overwrite`` (see
    :class:`OutputFolder` for every rule); inputs never are.

    Raises:
        OutputRefused: another run holds ``out_dir``, or its manifest is not adaptanon's.
        RunStopped: the disk is full, read-only or not writable; the manifest lists the
            images finished.
        KeyboardInterrupt: passed on, after the manifest is closed.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if batch_pixels is not None and batch_pixels < 1:
        raise ValueError(f"batch pixels must be >= 1, got {batch_pixels}")

    def produce(todo: list[InputImage]) -> Iterator[tuple[InputImage, Outcome]]:
        return local_outcomes(classifier, source, settings, todo, batch_size, batch_pixels)

    return write_outputs(
        inputs,
        out_dir,
        produce,
        describe_run(classifier, source, settings, verify, extra_settings),
        settings.codec.extension,
        on_record,
        overwrite=overwrite,
        verify=verify,
        resume=resume,
    )


def write_outputs(
    inputs: Sequence[InputImage],
    out_dir: Path,
    produce: Produce,
    described: Mapping[str, Any],
    extension: str,
    on_record: Callable[[ImageRecord], None] | None = None,
    *,
    overwrite: bool = False,
    verify: Verify | None = None,
    resume: bool = True,
) -> Summary:
    """The writing half of every engine: lock ``out_dir``, keep what earlier runs finished
    (with ``resume``), hand the rest to ``produce`` and write each outcome it yields as it
    comes (the output file, atomically, then its manifest record), with every rule of
    :func:`run` and :class:`OutputFolder`. ``described`` is each record's ``settings``;
    ``extension`` the output format's.

    Raises:
        OutputRefused, RunStopped, KeyboardInterrupt: as :func:`run`.
    """
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
        return _write_locked(
            inputs, OutputFolder(out_dir, overwrite), produce, as_json(described), extension,
            on_record, verify, resume,
        )  # fmt: skip
    finally:
        lock.release()


def _write_locked(
    inputs: Sequence[InputImage],
    folder: OutputFolder,
    produce: Produce,
    described: dict[str, Any],
    extension: str,
    on_record: Callable[[ImageRecord], None] | None,
    verify: Verify | None,
    resume: bool,
) -> Summary:
    out_dir = folder.out_dir
    input_paths = {item.path.resolve() for item in inputs}
    summary = Summary()
    try:
        folder.load_earlier()
        folder.remove_temporaries()
        writer = ManifestWriter(out_dir / MANIFEST_NAME)
    except OSError as exc:
        raise _stopped(f"write the manifest in {out_dir}", exc) from exc

    def write_record(rec: ImageRecord | dict[str, Any]) -> None:
        try:
            writer.write(rec)
        except OSError as exc:
            raise _stopped(f"write the manifest {writer.path}", exc) from exc

    def keep(item: InputImage, earlier: dict[str, Any]) -> None:
        """An image an earlier run finished: its record goes into this manifest as is."""
        rec = ImageRecord.from_dict(earlier)
        folder.claim(Path(earlier["output"]))
        folder.retire(item, rec, input_paths)
        write_record({**earlier, "error": rec.error})
        summary.add(rec.status)
        summary.skipped += 1
        if on_record:
            on_record(rec)

    def record(item: InputImage, out: Outcome) -> None:
        rec = out.record
        rec.input = str(item.path)
        rec.settings = described
        if out.data is not None and rec.status != Status.ERROR:
            if verify is not None and rec.status.ok:
                verify(rec, out.data, extension)
            failed = not rec.status.ok
            target = output_path(out_dir, item, extension, failed)
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
        write_record(rec)
        summary.add(rec.status)
        if on_record:
            on_record(rec)

    with writer:
        try:
            todo: list[InputImage] = []
            for item in inputs:
                earlier = folder.finished(item, described, extension) if resume else None
                if earlier is None:
                    todo.append(item)
                else:
                    keep(item, earlier)
            if todo:
                for item, out in produce(todo):
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


def _out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` says the device (or the host) ran out of memory."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def free_device_memory(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error, so the retry finds them."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _process_good(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    good: list[tuple[InputImage, np.ndarray]],
    keep_images: bool,
) -> list[Outcome]:
    """Outcomes of read images. A batch that runs out of memory is split in halves and
    each half retried (after freeing the device's cache), down to single images; a batch
    that fails otherwise is retried image by image. An image that fails alone is an
    ``error``."""
    names = [item.relative.as_posix() for item, _ in good]
    try:
        images = [to_image(px, classifier.device) for _, px in good]
        return process_batch(classifier, source, settings, names, images, keep_images=keep_images)
    except (RuntimeError, ValueError, MemoryError) as exc:
        if len(good) == 1:
            return [error_outcome(good[0][0], f"processing: {exc}")]
        split = _out_of_memory(exc)
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
        for out in _process_good(classifier, source, settings, part, keep_images)
    ]
