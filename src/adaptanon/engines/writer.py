"""The writing half of every engine: lock the output folder, keep what earlier runs
finished, and write each outcome as it comes (the file atomically, then its manifest
record) under the rules of :class:`~adaptanon.engines.output_folder.OutputFolder`. The
main process is the only writer of the manifest."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from adaptanon.classifiers import Classifier
from adaptanon.engines.finishing import Staged
from adaptanon.engines.output_folder import (
    MANIFEST_NAME,
    OutputFolder,
    OutputRefused,
    RunStopped,
    as_json,
    output_path,
    stopped,
)
from adaptanon.engines.verify import Verify
from adaptanon.io.atomic import FolderLock, atomic_write, commit, is_fatal_write_error
from adaptanon.io.images import InputImage
from adaptanon.io.manifest import ManifestWriter
from adaptanon.method.pipeline import Outcome, Settings
from adaptanon.records import ImageRecord, Status
from adaptanon.regions import RegionSource

T = TypeVar("T")


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


Produce = Callable[[list[InputImage]], Iterable[tuple[InputImage, Outcome]]]
"""An engine's producer: given the inputs to process, yields each with its
:class:`~adaptanon.method.pipeline.Outcome` (in any order, each input once). The local
engine's is :func:`~adaptanon.engines.local.local_outcomes`; :mod:`adaptanon.engines.ray` runs a pool of actors."""


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
        raise stopped(f"create the output folder {out_dir}", exc) from exc
    lock = FolderLock(out_dir)
    try:
        lock.acquire()
    except BlockingIOError as exc:
        raise OutputRefused(
            f"another adaptanon run is writing into {out_dir} (it holds {lock.path}); "
            "wait for it to finish or choose another output folder"
        ) from exc
    except OSError as exc:
        raise stopped(f"lock the output folder {out_dir}", exc) from exc
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
        raise stopped(f"write the manifest in {out_dir}", exc) from exc

    def write_record(rec: ImageRecord | dict[str, Any]) -> None:
        try:
            writer.write(rec)
        except OSError as exc:
            raise stopped(f"write the manifest {writer.path}", exc) from exc

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
        staged = out if isinstance(out, Staged) else None
        if (out.data is not None or staged) and rec.status != Status.ERROR:
            if verify is not None and rec.status.ok and out.data is not None:
                verify(rec, out.data, extension)
            failed = not rec.status.ok
            target = output_path(out_dir, item, extension, failed)
            refusal = folder.refusal(target, input_paths)
            if refusal:
                if staged:
                    staged.discard()
                rec.status, rec.error = Status.ERROR, refusal
            else:
                try:
                    if staged is None:
                        atomic_write(target, out.data or b"")
                    else:
                        put_in_place(staged, target)
                except OSError as exc:
                    if is_fatal_write_error(exc):
                        raise stopped(f"write {target}", exc) from exc
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
                # Closed here, not when collected: a producer's worker processes stop now.
                with closing_iterator(produce(todo)) as produced:
                    for item, out in produced:
                        record(item, out)
        except RunStopped as exc:
            raise RunStopped(
                f"{exc}; the run stopped, {writer.path} lists the {summary.images} "
                "image(s) finished"
            ) from exc.__cause__
        finally:
            folder.finish(writer)
    return summary


@contextmanager
def closing_iterator(iterable: Iterable[T]) -> Iterator[Iterator[T]]:
    """An iterator over ``iterable`` that is closed on leaving the block when it is a
    generator (so its ``finally`` and ``with`` blocks run now)."""
    iterator = iter(iterable)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def put_in_place(staged: Staged, target: Path) -> None:
    """Put the file stage C wrote as a temporary at ``target``.

    Raises:
        OSError: writing the temporary failed, or replacing ``target`` did.
    """
    if staged.write_error is not None:
        raise staged.write_error
    if staged.staged is None:
        raise OSError(f"no file was written for {target}")
    tmp, staged.staged = staged.staged, None
    commit(tmp, target)
