"""The output folder of a run: what may be written there and where, what earlier runs
wrote (resume), and the errors that refuse the folder or stop the run."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adaptanon.io.atomic import is_fatal_write_error
from adaptanon.io.images import InputImage
from adaptanon.io.manifest import ManifestWriter, read_earlier_manifest, save_records
from adaptanon.records import REQUIRED_KEYS, ImageRecord, Status

FAILED_DIR = "_failed"
"""Outputs that could not be verified go under ``OUT/_failed/`` (still anonymized), so
every file elsewhere under ``OUT`` keeps the original class."""


def output_path(out_dir: Path, item: InputImage, extension: str, failed: bool = False) -> Path:
    """Where the output for ``item`` goes: its relative path under ``out_dir`` (or under
    ``out_dir/_failed``), with the output format's extension."""
    base = out_dir / FAILED_DIR if failed else out_dir
    return base / item.relative.with_suffix(extension)


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


def stopped(what: str, exc: OSError) -> RunStopped:
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
                    raise stopped(f"remove the earlier output {old}", exc) from exc
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
