"""Long runs: a rerun after Ctrl-C or ``kill -9`` keeps what was finished and redoes the
rest; batches are bounded by pixels; out-of-memory splits a batch (tiny model)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TESTS_DIR, make_image, save_png
from PIL import Image

import adaptanon.engines.batches as batches
import adaptanon.engines.output_folder as output_folder
import adaptanon.engines.reader as reader
from adaptanon.cli import main
from adaptanon.io.images import InputImage
from adaptanon.io.manifest import read_earlier_manifest, read_manifest
from adaptanon.records import REQUIRED_KEYS

SLOW = ["--regions", "saliency:16", "--criterion", "margin:1", "--max-steps", "40"]
"""Settings under which the tiny model needs correction steps, so a run takes seconds."""


def cli_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = str(TESTS_DIR.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), src, env.get("PYTHONPATH", "")])
    return env


def arguments(inputs: Path, out: Path, *extra: str) -> list[str]:
    return [
        "anonymize", str(inputs), "-o", str(out),
        "--model", "tiny_factory:make", "--device", "cpu", "--batch-size", "2", *SLOW, *extra,
    ]  # fmt: skip


def command(inputs: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "adaptanon", *arguments(inputs, out, *extra)]


STOP_AFTER_RECORDS = """
import os, sys
import adaptanon.io.atomic as atomic
from adaptanon.cli import main
from adaptanon.io.manifest import ManifestWriter

signal_fd, stop_after = int(sys.argv[1]), int(sys.argv[2])
write_record, write_temporary, records = ManifestWriter.write, atomic.write_temporary, []


def counted(self, record):
    write_record(self, record)
    records.append(record)


def stop_when_written(path, data):
    tmp = write_temporary(path, data)
    if len(records) >= stop_after:
        os.write(signal_fd, b"stopped")
        os.read(0, 1)  # stdin is a pipe nobody writes to: here the parent kills us
    return tmp


ManifestWriter.write, atomic.write_temporary = counted, stop_when_written
main(sys.argv[3:], prog_name="adaptanon")
"""
"""``python -c`` program: the command line, stopped for good once ``stop_after`` manifest
records are written, in the middle of writing the next output (its temporary file
written, not yet renamed into place), and saying so on ``signal_fd``: a kill lands there."""


def killed_after_records(args: list[str], records: int, env: dict[str, str], log: Path) -> int:
    """Run the command line with ``args`` and ``kill -9`` it in the middle of writing the
    output after ``records`` manifest records (waiting for its word on a pipe, not guessing
    with sleeps); its exit code."""
    read_end, write_end = os.pipe()
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", STOP_AFTER_RECORDS, str(write_end), str(records), *args],
            env=env, stdin=subprocess.PIPE, stdout=log_file, stderr=log_file,
            pass_fds=(write_end,),
        )  # fmt: skip
    os.close(write_end)
    try:
        # Bounded so that a hang fails the test; EOF (b"") when the run ended first.
        ready, _, _ = select.select([read_end], [], [], 300)
        word = os.read(read_end, 16) if ready else b""
        assert word == b"stopped", f"the run did not stop where asked: {log.read_text()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        return proc.wait()
    finally:
        os.close(read_end)
        proc.kill()  # nothing when it is dead already
        proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()


@pytest.fixture
def thirty(tmp_path) -> Path:
    """30 synthetic photos of varied sizes and one broken file."""
    root = tmp_path / "in"
    for i in range(30):
        save_png(make_image(96 + i % 5 * 8, 128 + i % 3 * 8, i), root / f"img{i:02d}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def outputs(out: Path) -> dict[str, Path]:
    return {
        p.relative_to(out).as_posix(): p
        for p in out.rglob("*")
        if p.is_file() and p.name not in ("manifest.jsonl", ".adaptanon.lock")
    }


def test_rerun_after_kill_9_finishes_the_job_without_redoing_finished_images(thirty, tmp_path):
    env = cli_env()
    reference = tmp_path / "reference"
    whole = subprocess.run(command(thirty, reference, "-q"), env=env, capture_output=True)
    assert whole.returncode == 1, whole.stderr.decode()  # broken.png is an error

    out = tmp_path / "out"
    code = killed_after_records(arguments(thirty, out, "-q"), 6, env, tmp_path / "killed.log")
    assert code == -signal.SIGKILL
    before = read_earlier_manifest(out / "manifest.jsonl")
    assert len(before) == 6, "the run was not killed after its sixth record"
    assert len(list(out.glob(".img*.png.*.tmp"))) == 1  # the output it was writing
    finished = {
        Path(r["output"]).relative_to(out).as_posix(): os.stat(r["output"]).st_mtime_ns
        for r in before
        if r["output"]
    }

    again = subprocess.run(command(thirty, out), env=env, capture_output=True, text=True)
    assert again.returncode == 1, again.stderr

    # One complete record per input, nothing torn or duplicated.
    recs = read_manifest(out / "manifest.jsonl")
    assert sorted(Path(r["input"]).name for r in recs) == sorted(p.name for p in thirty.iterdir())
    assert all(key in r for r in recs for key in REQUIRED_KEYS)
    ref = {Path(r["input"]).name: r for r in read_manifest(reference / "manifest.jsonl")}
    for rec in recs:
        name = Path(rec["input"]).name
        assert rec["status"] == ref[name]["status"], name
        assert (rec["output"] is None) == (ref[name]["output"] is None)
    assert not (out / output_folder.EARLIER_NAME).exists()
    # Every output decodes and is byte-identical to the uninterrupted run's; no
    # temporary file of the killed run is left.
    written, expected = outputs(out), outputs(reference)
    assert sorted(written) == sorted(expected) and len(written) == 30
    for name, path in written.items():
        with Image.open(path) as img:
            img.load()
        assert path.read_bytes() == expected[name].read_bytes(), name
    # The images finished before the kill were kept, not written again.
    assert {n: os.stat(out / n).st_mtime_ns for n in finished} == finished
    row = re.search(r"finished earlier\s*│\s*(\d+)", again.stderr)
    assert row and int(row.group(1)) == len(finished), again.stderr


def anonymize(inputs: Path, out: Path, *extra: str):
    return CliRunner().invoke(
        main,
        ["anonymize", str(inputs), "-o", str(out), "--model", "tiny_factory:make"]
        + ["--device", "cpu", "--regions", "saliency:8", *extra],
    )


PAST = 1_000_000_000 * 10**9
"""A time long gone (2001, in ns): :func:`stamp` dates the inputs to it and the outputs a
second later, so an output written again (now) is told from one kept by its time alone,
whatever the file system's time resolution, and an input saved again is newer than every
output without waiting for the clock to move on."""


def stamp(inputs: Path, out: Path) -> None:
    for path in inputs.rglob("*"):
        os.utime(path, ns=(PAST, PAST))
    for path in outputs(out).values():
        os.utime(path, ns=(PAST + 10**9, PAST + 10**9))


def rewritten(out: Path) -> set[str]:
    """The outputs written since the last :func:`stamp`."""
    return {name for name, p in outputs(out).items() if p.stat().st_mtime_ns != PAST + 10**9}


@pytest.fixture
def four(tmp_path) -> Path:
    root = tmp_path / "in"
    for i in range(4):
        save_png(make_image(48, 64, i), root / f"p{i}.png")
    return root


ALL_FOUR = {f"p{i}.png" for i in range(4)}


def test_rerun_keeps_finished_images_and_redoes_changed_settings(four, tmp_path):
    out = tmp_path / "out"
    assert anonymize(four, out, "-q").exit_code == 0
    stamp(four, out)
    res = anonymize(four, out)
    assert res.exit_code == 0 and "finished earlier" in res.output, res.output
    assert rewritten(out) == set()
    assert len(read_manifest(out / "manifest.jsonl")) == 4
    # Another setting: every image is processed again with it (and replaced).
    assert anonymize(four, out, "-q", "--max-steps", "7").exit_code == 0
    recs = read_manifest(out / "manifest.jsonl")
    assert len(recs) == 4 and all(r["settings"]["max_steps"] == 7 for r in recs)
    assert rewritten(out) == ALL_FOUR
    # --no-resume redoes them all; an input changed since is redone without it.
    stamp(four, out)
    assert anonymize(four, out, "-q", "--max-steps", "7", "--no-resume").exit_code == 0
    assert rewritten(out) == ALL_FOUR
    stamp(four, out)
    save_png(make_image(48, 64, 9), four / "p1.png")
    assert anonymize(four, out, "-q", "--max-steps", "7").exit_code == 0
    assert rewritten(out) == {"p1.png"}


def test_a_changed_boxes_file_redoes_the_images(four, tmp_path):
    out = tmp_path / "out"
    boxes = tmp_path / "boxes.json"
    boxes.write_text('{"p0.png": [[4, 4, 20, 20]]}')
    assert anonymize(four, out, "-q", "--regions", f"boxes={boxes}").exit_code == 0
    stamp(four, out)
    boxes.write_text('{"p0.png": [[8, 8, 30, 30]]}')
    assert anonymize(four, out, "-q", "--regions", f"boxes={boxes}").exit_code == 0
    assert rewritten(out) == ALL_FOUR
    recs = {Path(r["input"]).name: r for r in read_manifest(out / "manifest.jsonl")}
    assert recs["p0.png"]["regions"] == [[8, 8, 30, 30]]


def test_missing_or_replaced_outputs_and_leftovers_are_handled(four, tmp_path):
    out = tmp_path / "out"
    assert anonymize(four, out, "-q").exit_code == 0
    (out / "p0.png").unlink()
    (out / ".p2.png.abc_1234.tmp").write_bytes(b"half a png")  # left by a kill -9
    keep = out / "notes.tmp"
    keep.write_text("mine")
    stamp(four, out)
    assert anonymize(four, out, "-q").exit_code == 0
    now = outputs(out)
    assert "p0.png" in now and ".p2.png.abc_1234.tmp" not in now and keep.read_text() == "mine"
    assert rewritten(out) == {"p0.png"}
    assert len(read_manifest(out / "manifest.jsonl")) == 4


# Memory-bounded batches ------------------------------------------------------------------


def sized_items(tmp_path: Path, sizes: list[tuple[int, int]]) -> list[InputImage]:
    items = []
    for i, (h, w) in enumerate(sizes):
        path = save_png(make_image(h, w, i), tmp_path / f"s{i}.png")
        items.append(InputImage(path, Path(path.name)))
    return items


def test_batches_are_bounded_by_pixels_as_well_as_images(tmp_path):
    items = sized_items(tmp_path, [(10, 10), (10, 10), (20, 20), (10, 10), (30, 30), (10, 10)])
    (tmp_path / "bad.png").write_bytes(b"nope")
    items.insert(1, InputImage(tmp_path / "bad.png", Path("bad.png")))
    batches = list(reader.load_batches(items, batch_size=3, batch_pixels=500))
    names = [[item.relative.name for item, _ in batch] for batch in batches]
    # 100 + 0 + 100 | 400 | 100 | 900 (over the limit: alone) | 100
    assert names == [["s0.png", "bad.png", "s1.png"], ["s2.png", "s3.png"], ["s4.png"], ["s5.png"]]
    assert isinstance(batches[0][1][1], ValueError)
    assert [len(b) for b in reader.load_batches(items, batch_size=2)] == [2, 2, 2, 1]


def test_out_of_memory_splits_the_batch_in_halves(tmp_path, tiny, monkeypatch):
    items = sized_items(tmp_path, [(40, 48)] * 7)
    real, sizes = batches.compute_batch, []

    def process(classifier, source, settings, names, images, **kw):
        sizes.append(len(images))
        if len(images) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(classifier, source, settings, names, images, **kw)

    from adaptanon.method import Settings
    from adaptanon.regions import parse_region_source

    monkeypatch.setattr(batches, "compute_batch", process)
    freed = []
    monkeypatch.setattr(batches, "free_device_memory", lambda device: freed.append(device))
    loaded = [(item, np.asarray(Image.open(item.path).convert("RGB"))) for item in items]
    source = parse_region_source("saliency:8")
    results = batches.process_loaded(tiny, source, Settings(), loaded)
    assert [item for item, _ in results] == items
    assert all(out.status.ok for _, out in results)
    assert sizes == [7, 3, 1, 2, 4, 2, 2]  # 7 -> 3 + 4; 3 -> 1 + 2; 4 -> 2 + 2
    assert len(freed) == 3
    # An image that runs out of memory alone is an error, and the others go on.
    monkeypatch.setattr(
        batches, "compute_batch", lambda *a, **k: (_ for _ in ()).throw(MemoryError("no memory"))
    )
    results = batches.process_loaded(tiny, source, Settings(), loaded[:2])
    assert [out.status for _, out in results] == ["error", "error"]
    assert "no memory" in (results[0][1].record.error or "")
