"""Run ``adaptanon anonymize`` as a user types it and read back its manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (as docs show commands)."""
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def run_anonymize(
    inputs: list[str], out: Path, options: list[str], threads: int | None = None
) -> tuple[list[dict], float, str]:
    """Run ``adaptanon anonymize INPUTS -o OUT OPTIONS`` from the repository root (with
    ``OMP_NUM_THREADS=threads`` when given); returns (manifest records, seconds, the
    command as a user types it). Exits on a usage error or crash (exit code not 0 or 1)."""
    records, seconds, command, _ = run_anonymize_usage(inputs, out, options, threads)
    return records, seconds, command


def status_counts(records: list[dict]) -> dict[str, int]:
    """How many manifest records have each status, in order of first appearance."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    return counts


TIMED = (
    "import resource, subprocess, sys, time; start = time.perf_counter(); "
    "code = subprocess.call(sys.argv[1:]); seconds = time.perf_counter() - start; "
    "print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)
"""Runs a command and prints, as the last line of its stderr, its wall seconds (this
wrapper's own start-up not included) and the peak resident size in KiB of the largest
process among it and its children (Linux's ``ru_maxrss``)."""


def run_anonymize_usage(
    inputs: list[str],
    out: Path,
    options: list[str],
    threads: int | None = None,
    env: dict[str, str] | None = None,
) -> tuple[list[dict], float, str, float]:
    """:func:`run_anonymize` with ``env`` added to the command's environment; also returns
    the peak resident memory in MiB of its largest process (the command or a worker)."""
    cmd = ["adaptanon", "anonymize", *inputs, "-o", shown(out), *options]
    environment = {**os.environ, **(env or {})}
    if threads is not None:
        environment["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(
        [sys.executable, "-c", TIMED, str(ROOT / ".venv/bin/adaptanon"), *cmd[1:]],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
    )
    if proc.returncode not in (0, 1):
        sys.exit(f"command failed: {' '.join(cmd)}\n{proc.stderr}")
    seconds_text, kib = proc.stderr.strip().splitlines()[-1].split()
    seconds, peak_mib = float(seconds_text), int(kib) / 1024
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], seconds, " ".join(cmd), peak_mib
