"""Nothing of the user's is destroyed: existing files, symbolic links, paths outside -o,
disk faults, a second writer, reruns, Ctrl-C, file modes (tiny model, synthetic images)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_image, save_png, to_uint8
from PIL import Image

import adaptanon.engines.batches as batches
import adaptanon.engines.output_folder as output_folder
import adaptanon.engines.writer as writer
from adaptanon.cli import main
from adaptanon.io.atomic import LOCK_NAME, FolderLock
from adaptanon.io.manifest import ManifestWriter, read_manifest
from adaptanon.records import ImageRecord

TINY = ["--model", "tiny_factory:make", "--device", "cpu", "-q"]


def anonymize_cmd(inputs, out, *extra):
    ins = inputs if isinstance(inputs, list | tuple) else [inputs]
    return CliRunner().invoke(main, ["anonymize", *map(str, ins), "-o", str(out), *TINY, *extra])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def records(out: Path) -> dict[str, dict]:
    return {Path(r["input"]).name: r for r in read_manifest(out / "manifest.jsonl")}


def all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


@pytest.fixture
def inputs(tmp_path) -> Path:
    """in/a.png, in/b.png, in/sub/c.png, in/sub/d.jpg."""
    root = tmp_path / "in"
    save_png(make_image(48, 64, 0), root / "a.png")
    save_png(make_image(60, 50, 1), root / "b.png")
    save_png(make_image(64, 64, 2), root / "sub" / "c.png")
    Image.fromarray(to_uint8(make_image(50, 70, 3))).save(root / "sub" / "d.jpg", quality=90)
    return root


def boxes_file(tmp_path: Path, boxes: dict) -> str:
    path = tmp_path / f"boxes{len(list(tmp_path.glob('boxes*.json')))}.json"
    path.write_text(json.dumps(boxes))
    return f"boxes={path}"


# 1. Existing files that no earlier run wrote ------------------------------------------


def test_users_own_file_beside_the_input_survives(tmp_path, monkeypatch):
    """QA's case: `adaptanon anonymize photo.jpg -o .` beside the user's own photo.png."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(to_uint8(make_image(48, 64, 0))).save("photo.jpg", quality=90)
    save_png(make_image(48, 64, 7), tmp_path / "photo.png")
    mine = digest(tmp_path / "photo.png")
    res = anonymize_cmd("photo.jpg", ".", "--regions", "saliency:8")
    assert res.exit_code == 1, res.output
    assert digest(tmp_path / "photo.png") == mine
    rec = records(tmp_path)["photo.jpg"]
    assert rec["status"] == "error" and rec["output"] is None
    assert "photo.png" in rec["error"] and "--overwrite" in rec["error"]
    # --overwrite replaces it.
    res = anonymize_cmd("photo.jpg", ".", "--regions", "saliency:8", "--overwrite")
    assert res.exit_code == 0, res.output
    assert digest(tmp_path / "photo.png") != mine
    assert records(tmp_path)["photo.jpg"]["output"] == "photo.png"
    # Now the file is adaptanon's: a plain rerun may replace it.
    res = anonymize_cmd("photo.jpg", ".", "--regions", "saliency:8")
    assert res.exit_code == 0, res.output


def test_rerun_replaces_its_own_outputs_without_overwrite(inputs, tmp_path):
    out = tmp_path / "out"
    assert anonymize_cmd(inputs, out, "--regions", "saliency:8").exit_code == 0
    res = anonymize_cmd(inputs, out, "--regions", "saliency:8", "--filter", "mask")
    assert res.exit_code == 0, res.output
    recs = records(out)
    assert len(recs) == 4 and all(r["settings"]["filter"].startswith("mask") for r in recs.values())
    assert all_files(out) == {"a.png", "b.png", "sub/c.png", "sub/d.png", "manifest.jsonl"}


def test_a_foreign_manifest_is_not_replaced(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").write_text("my own notes\n")
    res = anonymize_cmd(inputs, out, "--regions", "saliency:8")
    assert res.exit_code == 2, res.output
    assert "not an adaptanon manifest" in res.output
    assert (out / "manifest.jsonl").read_text() == "my own notes\n"
    assert all_files(out) == {"manifest.jsonl"}


# 2. Symbolic links are replaced, never written through ---------------------------------


def test_manifest_symlink_to_an_input_is_never_written_through(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = inputs / "a.png"
    before = digest(victim)
    (out / "manifest.jsonl").symlink_to(victim)
    res = anonymize_cmd(inputs, out, "--regions", "saliency:8")
    assert res.exit_code == 2 and "symbolic link" in res.output, res.output
    assert digest(victim) == before
    res = anonymize_cmd(inputs, out, "--regions", "saliency:8", "--overwrite")
    assert res.exit_code == 0, res.output
    assert digest(victim) == before
    assert not (out / "manifest.jsonl").is_symlink()
    assert len(read_manifest(out / "manifest.jsonl")) == 4


def test_symlinked_output_file_is_replaced_not_followed(inputs, tmp_path):
    out = tmp_path / "out"
    victim = tmp_path / "precious.png"
    save_png(make_image(20, 20, 9), victim)
    before = digest(victim)
    out.mkdir()
    (out / "a.png").symlink_to(victim)
    res = anonymize_cmd(inputs / "a.png", out, "--regions", "saliency:8")
    assert res.exit_code == 1 and "already exists" in records(out)["a.png"]["error"]
    assert (out / "a.png").is_symlink() and digest(victim) == before
    # A link where an earlier run wrote its output: the link is replaced, the target kept.
    (out / "a.png").unlink()
    assert anonymize_cmd(inputs / "a.png", out, "--regions", "saliency:8").exit_code == 0
    (out / "a.png").unlink()
    (out / "a.png").symlink_to(victim)
    res = anonymize_cmd(inputs / "a.png", out, "--regions", "saliency:8")
    assert res.exit_code == 0, res.output
    assert not (out / "a.png").is_symlink() and digest(victim) == before


def test_symlinked_subfolder_does_not_lead_writes_outside(inputs, tmp_path):
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    res = anonymize_cmd(inputs, out, "--regions", "saliency:8")
    assert res.exit_code == 1, res.output
    recs = records(out)
    for name in ("c.png", "d.jpg"):
        assert (
            recs[name]["status"] == "error" and "outside the output folder" in recs[name]["error"]
        )
    assert recs["a.png"]["status"] in ("unchanged", "corrected")
    assert list(elsewhere.iterdir()) == []


# 3. Every output lies inside -o --------------------------------------------------------


def test_dotdot_in_a_glob_cannot_write_outside_the_output_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos" / "x").mkdir(parents=True)
    Image.fromarray(to_uint8(make_image(48, 64, 0))).save(tmp_path / "src_rk.jpg")
    (tmp_path / "src").mkdir()
    (tmp_path / "src_rk.jpg").rename(tmp_path / "src" / "rk.jpg")
    before = all_files(tmp_path)
    res = anonymize_cmd("photos/*/../../src/*.jpg", "out", "--regions", "saliency:8")
    assert res.exit_code == 1, res.output
    (rec,) = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert rec["status"] == "error" and "outside the output folder" in rec["error"]
    assert rec["output"] is None
    assert all_files(tmp_path) == before | {"out/manifest.jsonl"}


# 4. Faults of the disk -----------------------------------------------------------------


def failing_after(n: int, code: int, real=writer.atomic_write):
    calls = {"n": 0}

    def write(path, data):
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(code, os.strerror(code), str(path))
        real(path, data)

    return write


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_disk_faults_stop_the_run_with_one_line(inputs, tmp_path, monkeypatch, code):
    monkeypatch.setattr(writer, "atomic_write", failing_after(2, code))
    out = tmp_path / "out"
    res = anonymize_cmd(inputs, out, "--regions", "saliency:8", "--batch-size", "1")
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output
    [line] = [ln for ln in res.output.splitlines() if ln.strip()]
    assert line.startswith("error: cannot write") and os.strerror(code) in line
    assert line.endswith(f"the run stopped, {out / 'manifest.jsonl'} lists the 2 image(s) finished")
    recs = read_manifest(out / "manifest.jsonl")
    assert [Path(r["input"]).name for r in recs] == ["a.png", "b.png"]
    assert all(Path(r["output"]).is_file() for r in recs)
    assert not (out / LOCK_NAME).exists()


def test_unwritable_output_folder_stops_before_any_work(inputs, tmp_path, monkeypatch):
    def refuse(self):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(FolderLock, "acquire", refuse)
    res = anonymize_cmd(inputs, tmp_path / "out", "--regions", "saliency:8")
    assert res.exit_code == 1
    [line] = [ln for ln in res.output.splitlines() if ln.strip()]
    assert line == f"error: cannot lock the output folder {tmp_path / 'out'}: Read-only file system"


def test_an_error_of_one_file_is_recorded_and_the_run_goes_on(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "atomic_write", failing_after(1, errno.ENAMETOOLONG))
    out = tmp_path / "out"
    res = anonymize_cmd(inputs, out, "--regions", "saliency:8", "--batch-size", "1")
    assert res.exit_code == 1, res.output
    recs = read_manifest(out / "manifest.jsonl")
    assert [r["status"] == "error" for r in recs] == [False, True, True, True]
    assert "cannot write" in recs[1]["error"]


def test_manifest_stays_valid_when_a_line_cannot_be_written(tmp_path, monkeypatch):
    path = tmp_path / "manifest.jsonl"
    real_write = os.write
    with ManifestWriter(path) as writer:
        writer.write(ImageRecord(input="a.png", status="unchanged", output="a.png"))

        def half_then_full(fd, data):
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_full)
        with pytest.raises(OSError):
            writer.write(ImageRecord(input="b.png", status="unchanged", output="b.png"))
        monkeypatch.setattr(os, "write", real_write)
        writer.write(ImageRecord(input="c.png", status="unchanged", output="c.png"))
    assert [r["input"] for r in read_manifest(path)] == ["a.png", "c.png"]


def test_unwritable_manifest_stops_the_run(inputs, tmp_path, monkeypatch):
    def refuse(self, record):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(writer.ManifestWriter, "write", refuse)
    res = anonymize_cmd(inputs, tmp_path / "out", "--regions", "saliency:8")
    assert res.exit_code == 1
    assert "Read-only file system" in res.output and "Traceback" not in res.output


# 5. One writer per output folder -------------------------------------------------------


def test_a_second_writer_into_the_same_folder_is_refused(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with FolderLock(out):
        res = anonymize_cmd(inputs, out, "--regions", "saliency:8")
        assert res.exit_code == 2, res.output
        assert "another adaptanon run is writing into" in res.output
        assert not (out / "manifest.jsonl").exists()
    # Released: a run goes ahead and takes its lock away with it.
    assert anonymize_cmd(inputs, out, "--regions", "saliency:8").exit_code == 0
    assert not (out / LOCK_NAME).exists()
    # A lock file a crashed run left behind (no process holds it) does not block.
    (out / LOCK_NAME).write_text("")
    assert anonymize_cmd(inputs, out, "--regions", "saliency:8").exit_code == 0


def test_lock_is_held_for_the_run(inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    seen = []
    real = writer.atomic_write

    def write(path, data):
        with pytest.raises(BlockingIOError):
            FolderLock(out).acquire()
        seen.append(path)
        real(path, data)

    monkeypatch.setattr(writer, "atomic_write", write)
    assert anonymize_cmd(inputs, out, "--regions", "saliency:8").exit_code == 0
    assert len(seen) == 4


# 6. Reruns: no stale outputs beside a record that says otherwise -----------------------


def test_rerun_error_removes_the_earlier_output(inputs, tmp_path):
    out = tmp_path / "out"
    good = boxes_file(tmp_path, {"a.png": [[5, 5, 20, 20]], "b.png": [[5, 5, 20, 20]]})
    assert anonymize_cmd(inputs, out, "--regions", good).exit_code == 0
    assert (out / "a.png").is_file()
    bad = boxes_file(tmp_path, {"a.png": [[10, 10, 10, 20]], "b.png": [[5, 5, 20, 20]]})
    res = anonymize_cmd(inputs, out, "--regions", bad)
    assert res.exit_code == 1
    recs = records(out)
    assert recs["a.png"]["status"] == "error" and recs["a.png"]["output"] is None
    assert not (out / "a.png").exists()
    assert (out / "b.png").is_file()


def test_rerun_moves_an_image_between_failed_and_finished(tmp_path):
    from test_cli import flips_under_white_centre

    root = tmp_path / "in"
    img = make_image(48, 64, 0)
    assert flips_under_white_centre(img)
    save_png(img, root / "f.png")
    out = tmp_path / "out"
    mask = ["--filter", "mask", "--mask-value", "1.0", "--max-steps", "0"]
    failing = boxes_file(tmp_path, {"f.png": [[16, 12, 48, 36]]})
    assert anonymize_cmd(root, out, "--regions", failing, *mask).exit_code == 1
    assert records(out)["f.png"]["status"] == "failed"
    assert (out / "_failed" / "f.png").is_file()
    # Now without a region: written to OUT, the failed file goes.
    nothing = boxes_file(tmp_path, {})
    assert anonymize_cmd(root, out, "--regions", nothing).exit_code == 0
    assert records(out)["f.png"]["output"] == str(out / "f.png")
    assert all_files(out) == {"f.png", "manifest.jsonl"}
    # And back: the finished file goes.
    assert anonymize_cmd(root, out, "--regions", failing, *mask).exit_code == 1
    assert all_files(out) == {"_failed/f.png", "manifest.jsonl"}


def test_records_of_images_not_rerun_are_kept(inputs, tmp_path):
    out = tmp_path / "out"
    assert anonymize_cmd(inputs, out, "--regions", "saliency:8").exit_code == 0
    assert anonymize_cmd(inputs / "a.png", out, "--regions", "saliency:8").exit_code == 0
    recs = read_manifest(out / "manifest.jsonl")
    assert [Path(r["input"]).name for r in recs][0] == "a.png"
    assert sorted(Path(r["output"]).relative_to(out).as_posix() for r in recs) == [
        "a.png",
        "b.png",
        "sub/c.png",
        "sub/d.png",
    ]


# 7. Ctrl-C -----------------------------------------------------------------------------


def interrupt_on_call(monkeypatch, n: int) -> None:
    real = batches.compute_batch
    calls = {"n": 0}

    def process(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batches, "compute_batch", process)


def test_ctrl_c_exits_130_with_a_valid_manifest(inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    interrupt_on_call(monkeypatch, 3)
    res = anonymize_cmd(inputs, out, "--regions", "saliency:8", "--batch-size", "1")
    assert res.exit_code == 130, res.output
    assert "interrupted" in res.output and "rerun" in res.output
    recs = read_manifest(out / "manifest.jsonl")
    assert [Path(r["input"]).name for r in recs] == ["a.png", "b.png"]
    assert all_files(out) == {"a.png", "b.png", "manifest.jsonl"}


def test_interrupted_rerun_keeps_what_earlier_runs_wrote(inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert anonymize_cmd(inputs, out, "--regions", "saliency:8").exit_code == 0
    interrupt_on_call(monkeypatch, 2)
    res = anonymize_cmd(
        inputs, out, "--regions", "saliency:8", "--batch-size", "1", "--no-resume"
    )  # same settings: without --no-resume every image would be kept, none redone
    assert res.exit_code == 130
    recs = read_manifest(out / "manifest.jsonl")
    assert len(recs) == 4 and {Path(r["output"]) for r in recs} == {
        out / "a.png",
        out / "b.png",
        out / "sub" / "c.png",
        out / "sub" / "d.png",
    }
    monkeypatch.undo()
    # A run killed outright (no chance to carry records over) loses nothing either.
    (out / output_folder.EARLIER_NAME).write_text((out / "manifest.jsonl").read_text())
    (out / "manifest.jsonl").write_text((out / "manifest.jsonl").read_text().splitlines()[0])
    res = anonymize_cmd(inputs, out, "--regions", "saliency:8")
    assert res.exit_code == 0, res.output
    assert all(r["status"] != "error" for r in read_manifest(out / "manifest.jsonl"))
    assert not (out / output_folder.EARLIER_NAME).exists()


# 8. A folder with no images ------------------------------------------------------------


def test_folder_without_images_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    res = anonymize_cmd(tmp_path / "empty", tmp_path / "out")
    assert res.exit_code == 2
    assert "no images found in" in res.output
    assert "inside the output folder" not in res.output


# 9. File modes -------------------------------------------------------------------------


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_outputs_manifest_and_lock_follow_the_umask(inputs, tmp_path, umask_027):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").write_text("")
    os.chmod(out / "manifest.jsonl", 0o600)
    assert anonymize_cmd(inputs, out, "--regions", "saliency:8").exit_code == 0
    assert mode(out / "manifest.jsonl") == 0o640
    assert mode(out / "a.png") == 0o640 and mode(out / "sub" / "d.png") == 0o640
    with FolderLock(out) as lock:
        assert mode(lock.path) == 0o640
