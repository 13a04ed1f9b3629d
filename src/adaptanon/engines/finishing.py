"""Stage C: finish each image off the model's process: strength metrics, status rules,
encoding, the verification decode (:func:`~adaptanon.method.finish.finish_image`) and
``--verify-with``, in worker processes (:mod:`.workers`) or in this process. The outcomes
come back in input order, so the manifest is the same whichever way they were finished."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from adaptanon.engines.batches import error_outcome, finish_here
from adaptanon.engines.output_folder import output_path
from adaptanon.engines.verify import FileCheck, Verify
from adaptanon.io.atomic import write_temporary
from adaptanon.io.images import InputImage
from adaptanon.method.finish import FinishRules
from adaptanon.method.pipeline import Computed, Outcome
from adaptanon.records import Status


@dataclass
class Staged(Outcome):
    """An outcome whose file stage C already wrote next to its target, as the hidden
    temporary ``staged`` (``data`` is then None), or failed to write (``write_error``).
    The writer puts it in place (or removes it) under the output folder's rules."""

    staged: Path | None = None
    write_error: OSError | None = None

    def discard(self) -> None:
        """Remove the temporary file (the writer refused it, or the run stopped)."""
        if self.staged is not None:
            self.staged.unlink(missing_ok=True)
            self.staged = None


@dataclass(frozen=True)
class Finishing:
    """How stage C finishes an image: ``rules`` of the run's settings, the ``verify``
    check (``--verify-with``) if any, the output format's ``extension``, and with
    ``stage_into`` (the output folder) the file is written there as a temporary
    (:class:`Staged`), off the main process."""

    rules: FinishRules
    verify: Verify | None
    extension: str
    stage_into: Path | None = None

    def __call__(self, item: InputImage, computed: Computed) -> tuple[Outcome, int, int]:
        """The image's outcome, and how many files ``verify`` checked and disagreed on
        (a worker's counts, which the main process adds to its own :class:`FileCheck`)."""
        out = finish_here(item, computed, self.rules)
        rec, verify = out.record, self.verify
        counts = (0, 0)
        if verify is not None and out.data is not None and rec.status.ok:
            before = (verify.checked, verify.disagreed) if isinstance(verify, FileCheck) else (0, 0)
            verify(rec, out.data, self.extension)
            if isinstance(verify, FileCheck):
                counts = (verify.checked - before[0], verify.disagreed - before[1])
        return self._stage(item, out), *counts

    def _stage(self, item: InputImage, out: Outcome) -> Outcome:
        """``out``'s file written as a temporary next to its target, when this stage
        writes and the target lies inside the output folder (else the writer decides)."""
        if self.stage_into is None or out.data is None or out.record.status == Status.ERROR:
            return out
        target = output_path(self.stage_into, item, self.extension, not out.record.status.ok)
        root = self.stage_into.resolve()
        real = target.parent.resolve() / target.name
        if real == root or not real.is_relative_to(root):
            return out
        try:
            return Staged(out.record, None, out.images, write_temporary(target, out.data))
        except OSError as exc:
            return Staged(out.record, None, out.images, write_error=exc)


_finishing: Finishing | None = None
"""A worker's :class:`Finishing`, set once when it starts."""


def set_finishing(finishing: Finishing) -> None:
    """Worker setup: keep ``finishing`` for every :func:`finish_in_worker` call."""
    global _finishing
    _finishing = finishing


def finish_in_worker(item: InputImage, computed: Computed) -> tuple[Outcome, int, int]:
    """In a worker process: :class:`Finishing` as set up by :func:`set_finishing`."""
    if _finishing is None:
        raise RuntimeError("finish_in_worker called in a process that set_finishing did not set up")
    return _finishing(item, computed)


class Finisher:
    """Finishes images as they come from the model, in ``pool`` (set up with
    :func:`set_finishing`) or, without one, here; yields the outcomes in the order the
    images were given. At most ``limit`` images wait to be finished (the caller blocks on
    the oldest beyond that), which bounds the memory their pixels take."""

    def __init__(self, finishing: Finishing, pool: Executor | None = None, limit: int = 16) -> None:
        self.finishing = finishing
        self.pool = pool
        self.limit = max(1, limit)
        self.pending: deque[tuple[InputImage, Future[tuple[Outcome, int, int]] | Outcome]] = deque()

    def add(self, item: InputImage, computed: Computed) -> Iterator[tuple[InputImage, Outcome]]:
        """Hand one image over; yields the outcomes that are ready (in order)."""
        if self.pool is None or computed.job is None:
            self.pending.append((item, self.finishing(item, computed)[0]))
        else:
            try:
                self.pending.append((item, self.pool.submit(finish_in_worker, item, computed)))
            except BrokenProcessPool:
                self.pool = None  # a worker died: finish the rest here
                self.pending.append((item, self.finishing(item, computed)[0]))
        while self.pending and (len(self.pending) > self.limit or self._ready()):
            yield self._pop()

    def drain(self) -> Iterator[tuple[InputImage, Outcome]]:
        """The outcomes of every image still waiting, in order."""
        while self.pending:
            yield self._pop()

    def discard(self) -> None:
        """Drop the images still waiting (the run stopped), removing the temporary files
        their finishing wrote; call after the pool has shut down."""
        while self.pending:
            _, head = self.pending.popleft()
            if isinstance(head, Future):
                if not head.done() or head.cancelled() or head.exception() is not None:
                    continue
                head = head.result()[0]
            if isinstance(head, Staged):
                head.discard()

    def _ready(self) -> bool:
        head = self.pending[0][1]
        return not isinstance(head, Future) or head.done()

    def _pop(self) -> tuple[InputImage, Outcome]:
        item, head = self.pending.popleft()
        if not isinstance(head, Future):
            return item, head
        try:
            return item, self._count(head.result())
        except BrokenProcessPool as exc:
            return item, error_outcome(item, f"processing: a worker process died ({exc})")

    def _count(self, finished: tuple[Outcome, int, int]) -> Outcome:
        """A worker's outcome, after adding its ``--verify-with`` counts to this
        process's check."""
        out, checked, disagreed = finished
        verify = self.finishing.verify
        if isinstance(verify, FileCheck):
            verify.checked += checked
            verify.disagreed += disagreed
        return out
