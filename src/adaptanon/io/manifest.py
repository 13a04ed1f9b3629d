"""``OUT/manifest.jsonl``: one :class:`~adaptanon.records.ImageRecord` per input image,
one JSON line each (schema in the README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from adaptanon.records import ImageRecord


class ManifestWriter:
    """Appends records to a JSONL file, one flushed line each, so a crash loses nothing
    already processed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = path.open("w", encoding="utf-8")

    def write(self, record: ImageRecord) -> None:
        """Append one record."""
        self._file.write(record.to_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """All records of a manifest file, as dicts."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
