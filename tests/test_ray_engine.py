"""``--engine ray``: on a local Ray instance with 2 CPUs, the same outputs and manifest as
the local engine (tiny model, synthetic images)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TESTS_DIR, make_image, save_png

from adaptanon.cli import main
from adaptanon.io.manifest import read_manifest

pytest.importorskip("ray.data", reason="the Ray engine needs pip install 'adaptanon[ray]'")

pytestmark = pytest.mark.slow

OPTIONS = ["--model", "tiny_factory:make", "--device", "cpu", "--batch-size", "2"]
OPTIONS += ["--regions", "saliency:16", "--criterion", "margin:1", "--max-steps", "20"]


def by_input(out: Path) -> dict[str, dict]:
    return {Path(r["input"]).name: r for r in read_manifest(out / "manifest.jsonl")}


def test_ray_engine_writes_what_the_local_engine_writes(tmp_path):
    root = tmp_path / "in"
    for i in range(9):
        save_png(make_image(64 + i % 3 * 8, 80 + i % 2 * 8, i), root / f"p{i}.png")
    save_png(make_image(60, 50, 20), root / "sub" / "q.png")
    (root / "broken.png").write_bytes(b"not an image")
    local, distributed = tmp_path / "local", tmp_path / "ray"
    res = CliRunner().invoke(main, ["anonymize", str(root), "-o", str(local), "-q", *OPTIONS])
    assert res.exit_code == 1, res.output  # broken.png

    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    src = str(TESTS_DIR.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), src, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "adaptanon", "anonymize", str(root), "-o", str(distributed)]
    cmd += ["--engine", "ray", "--ray-actors", "2", *OPTIONS]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, done.stderr

    mine, theirs = by_input(distributed), by_input(local)
    assert sorted(mine) == sorted(theirs) and len(mine) == 11
    for name, rec in mine.items():
        ref = theirs[name]
        for key in ("status", "original_class", "anonymized_class", "final_class", "steps"):
            assert rec[key] == ref[key], (name, key)
        assert rec["regions"] == ref["regions"] and rec["settings"] == ref["settings"]
        if ref["output"] is None:
            assert rec["output"] is None and "cannot read" in rec["error"]
            continue
        assert Path(rec["output"]).relative_to(distributed) == Path(ref["output"]).relative_to(
            local
        )
        assert Path(rec["output"]).read_bytes() == Path(ref["output"]).read_bytes(), name
    files = {p.relative_to(distributed) for p in distributed.rglob("*") if p.is_file()}
    assert files == {p.relative_to(local) for p in local.rglob("*") if p.is_file()}

    # Resuming works the same: nothing left to do, so no Ray instance is even started.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "finished earlier" in again.stderr, again.stderr
    assert by_input(distributed) == mine


def test_ray_options_need_the_ray_engine(tmp_path):
    save_png(make_image(40, 40, 0), tmp_path / "a.png")
    res = CliRunner().invoke(
        main, ["anonymize", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--ray-actors", "2"]
    )
    assert res.exit_code == 2 and "--engine ray" in res.output
