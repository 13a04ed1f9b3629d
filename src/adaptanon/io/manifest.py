"""``OUT/manifest.jsonl``: one :class:`~adaptanon.records.ImageRecord` per input image,
one JSON line each (schema in the README)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from adaptanon.io.atomic import atomic_write, create_new
from adaptanon.records import ImageRecord


class ManifestWriter:
    """Writes records to a new JSONL file, one line per ``write``, so a crash loses
    nothing already processed.

    The file is created afresh (mode ``0666 & ~umask``): whatever ``path`` named before,
    a symbolic link included, is replaced, never written through. A line that cannot be
    written whole (disk full) is cut off again, so the file stays valid JSONL up to the
    last record written.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd: int | None = create_new(path)
        self._size = 0

    def write(self, record: ImageRecord | dict[str, Any]) -> None:
        """Append one record (an :class:`ImageRecord`, or a record already as a dict).

        Raises:
            OSError: the line could not be written; the file ends after the previous one.
        """
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        text = (
            record.to_json()
            if isinstance(record, ImageRecord)
            else json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        )
        line = memoryview((text + "\n").encode("utf-8"))
        written = 0
        try:
            while written < len(line):
                written += os.write(self._fd, line[written:])
        except BaseException:
            try:
                os.ftruncate(self._fd, self._size)
                os.lseek(self._fd, self._size, os.SEEK_SET)
            except OSError:
                pass
            raise
        self._size += written

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """All records of a manifest file, as dicts."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_earlier_manifest(path: Path) -> list[dict[str, Any]]:
    """The records of a manifest an earlier run left, checked to be one.

    A last line cut short (a run killed while writing it) is ignored.

    Raises:
        ValueError: ``path`` is not a regular file (a symbolic link, a folder, a pipe) or
            not an adaptanon manifest (a line that is not a JSON object with ``input`` and
            ``status``); the message says which.
    """
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise ValueError(f"it is {kind}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        raw = f.read()
    lines = [line for line in raw.split(b"\n") if line.strip()]
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:
            if number == len(lines) and not raw.endswith(b"\n"):
                break  # cut short by a crash
            raise ValueError(f"line {number} is not JSON") from None
        if not isinstance(record, dict) or "input" not in record or "status" not in record:
            raise ValueError(f"line {number} is not a manifest record")
        records.append(record)
    return records


def save_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` (dicts) as a JSONL file, atomically."""
    atomic_write(
        path,
        "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records),
    )
