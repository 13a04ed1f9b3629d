"""Run ``adaptanon anonymize`` as a user types it and read back its manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
    cmd = ["adaptanon", "anonymize", *inputs, "-o", shown(out), *options]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.run(
        [str(ROOT / ".venv/bin/adaptanon"), *cmd[1:]],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"command failed: {' '.join(cmd)}\n{proc.stderr}")
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], seconds, " ".join(cmd)
