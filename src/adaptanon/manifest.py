"""``OUT/manifest.jsonl``: one JSON object per input image.

Keys (see the README for the full schema): ``input``, ``output``, ``regions``, ``status``,
``steps``, ``original_class``, ``anonymized_class``, ``final_class``, ``error`` and a few
more for audits (class names, confidences, the final logit margin, the settings).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

STATUSES = ("unchanged", "corrected", "failed", "error")

REQUIRED_KEYS = (
    "input",
    "output",
    "regions",
    "status",
    "steps",
    "original_class",
    "anonymized_class",
    "final_class",
    "error",
)


@dataclass
class Record:
    """One manifest line. Classes are the classifier's integer indices; ``regions`` are
    half-open ``[x0, y0, x1, y1]`` boxes in input pixels."""

    input: str
    output: str | None
    status: str
    regions: list[list[int]] = field(default_factory=list)
    steps: int = 0
    original_class: int | None = None
    anonymized_class: int | None = None
    final_class: int | None = None
    error: str | None = None
    original_name: str | None = None
    anonymized_name: str | None = None
    final_name: str | None = None
    original_confidence: float | None = None
    final_confidence: float | None = None
    final_margin: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def to_json(self) -> str:
        """The record as one line of JSON."""
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=False)


class ManifestWriter:
    """Appends records to a JSONL file, one flushed line each, so a crash loses nothing
    already processed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = path.open("w", encoding="utf-8")

    def write(self, record: Record) -> None:
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
