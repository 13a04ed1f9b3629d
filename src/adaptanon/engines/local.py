"""The local engine, wired from its stages: read (:mod:`.reader`, stage A), the model
(:mod:`.batches`, stage B, in this process), finish (:mod:`.finishing`, stage C) and write
(:mod:`.writer`, the only writer of the manifest). With worker processes
(:mod:`.workers`), reading and finishing run beside the model; without, in this process
(reading one batch ahead in a thread). The outputs and manifest are the same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from adaptanon.classifiers import Classifier
from adaptanon.engines.batches import compute_loaded
from adaptanon.engines.finishing import Finisher, Finishing, set_finishing
from adaptanon.engines.reader import load_batches
from adaptanon.engines.verify import Verify
from adaptanon.engines.workers import default_workers, worker_pool
from adaptanon.engines.writer import Summary, describe_run, write_outputs
from adaptanon.io.images import InputImage
from adaptanon.method.pipeline import Outcome, Settings
from adaptanon.records import ImageRecord
from adaptanon.regions import RegionSource


def local_outcomes(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    items: Iterable[InputImage],
    batch_size: int = 8,
    batch_pixels: int | None = None,
    *,
    workers: int = 0,
    verify: Verify | None = None,
    stage_into: Path | None = None,
) -> Iterator[tuple[InputImage, Outcome]]:
    """The local engine's producer: each item with its outcome, in order.

    ``workers`` processes read and finish the images (0: this process does everything);
    ``verify`` (``--verify-with``) checks each finished file before it is handed on. With
    workers and ``stage_into`` (the output folder) the workers also write each file, as a
    temporary next to its target that the writer puts in place
    (:class:`~adaptanon.engines.finishing.Staged`).
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    stage = stage_into if workers else None
    finishing = Finishing(settings.rules, verify, settings.codec.extension, stage)
    with ExitStack() as stack:
        pool = None
        if workers:
            pool = worker_pool(workers, set_finishing, (finishing,))
        finisher = Finisher(finishing, pool, limit=2 * batch_size + 2 * workers)
        stack.callback(finisher.discard)  # runs last: after the pool has stopped
        if pool is not None:
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        for loaded in load_batches(items, batch_size, batch_pixels, pool):
            for item, computed in compute_loaded(classifier, source, settings, loaded):
                yield from finisher.add(item, computed)
        yield from finisher.drain()


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
    workers: int | None = 0,
) -> Summary:
    """Anonymize ``inputs`` into ``out_dir``, writing ``out_dir/manifest.jsonl``.

    ``verify`` (e.g. :class:`~adaptanon.engines.verify.FileCheck`, ``--verify-with``) is
    called with each done image's record and encoded bytes before they are written; an
    image it marks failed goes under ``OUT/_failed/``.

    ``workers`` processes read the images and finish them (metrics, encoding, the
    verification decode, ``verify``) while the classifier works on the next batch (None:
    :func:`~adaptanon.engines.workers.default_workers`); with 0 this process does it all,
    reading one batch ahead in a thread. A batch holds at most ``batch_size`` images and
    ``batch_pixels`` input pixels. With
    ``resume``, an image that an earlier run into ``out_dir`` finished with the same
    settings (see
    :meth:`~adaptanon.engines.output_folder.OutputFolder.finished`) is not processed again: its record is
    kept. One run at a time may write into ``out_dir`` (``out_dir/.adaptanon.lock``).
    Existing files that no earlier run wrote are replaced only with ``overwrite`` (see
    :class:`~adaptanon.engines.output_folder.OutputFolder` for every rule); inputs never
    are.

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
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")

    def produce(todo: list[InputImage]) -> Iterator[tuple[InputImage, Outcome]]:
        pool = default_workers(len(todo), classifier.device) if workers is None else workers
        return local_outcomes(
            classifier, source, settings, todo, batch_size, batch_pixels,
            workers=pool, verify=verify, stage_into=out_dir,
        )  # fmt: skip

    return write_outputs(
        inputs,
        out_dir,
        produce,
        describe_run(classifier, source, settings, verify, extra_settings),
        settings.codec.extension,
        on_record,
        overwrite=overwrite,
        resume=resume,
    )
