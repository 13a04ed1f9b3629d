"""The pipelined local engine (worker processes read and finish the images) writes the
same files and the same manifest as the engine that does everything in this process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from adaptanon.cli import main
from adaptanon.engines import run
from adaptanon.engines.verify import FileCheck
from adaptanon.io.images import collect_inputs
from adaptanon.method import Blur, Mask, Settings
from adaptanon.regions import ExplicitBoxes

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"]


def class_zero(path: str) -> int:
    """A user's check that always answers class 0 (so other classes go to _failed/)."""
    assert Path(path).stat().st_size > 0
    return 0


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, demo_photos) -> Path:
    """Several photos, one without regions, a broken file and one in a subfolder."""
    folder = tmp_path_factory.mktemp("photos")
    by_name = {p.name: p for p in demo_photos}
    names = [n for n in PHOTOS if n in by_name]
    assert len(names) >= 4
    for n in names:
        shutil.copy(by_name[n], folder / n)
    (folder / "sub").mkdir()
    shutil.copy(by_name[names[0]], folder / "sub" / "again.png")
    shutil.copy(by_name[names[1]], folder / "nobox.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def boxes_for(folder: Path) -> ExplicitBoxes:
    boxes = {
        p.relative_to(folder).as_posix(): [(20, 30, 150, 140), (100, 120, 220, 260)]
        for p in folder.rglob("*")
        if p.is_file() and p.name != "nobox.png"
    }
    boxes["nobox.png"] = []
    return ExplicitBoxes(boxes)


def written(out: Path) -> tuple[dict[str, bytes], list[dict]]:
    """The files under ``out`` (by relative path) and the manifest records with paths
    made relative."""
    files = {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "manifest.jsonl" and not p.name.startswith(".")
    }
    records = []
    for line in (out / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["output"]:
            rec["output"] = Path(rec["output"]).relative_to(out).as_posix()
        records.append(rec)
    return files, records


@pytest.mark.parametrize(
    "settings", [Settings(), Settings(filter=Mask(1.0), shape="ellipse")], ids=["blur", "mask"]
)
def test_worker_processes_write_what_one_process_writes(photo_folder, tiny, tmp_path, settings):
    items = collect_inputs([str(photo_folder)])
    source = boxes_for(photo_folder)
    results = {}
    runs = [
        ("alone", 1, 0),
        ("alone, workers", 1, 2),
        ("batched", 3, 0),
        ("batched, workers", 3, 2),
    ]
    for name, batch, workers in runs:
        out = tmp_path / name
        verify = FileCheck(class_zero, "test_pipelined_engine:class_zero")
        summary = run(items, out, tiny, source, settings, batch, verify=verify, workers=workers)
        results[name] = (written(out), dict(summary.counts), verify.checked, verify.disagreed)
    # Byte for byte, record for record, one image at a time or in batches of 3.
    assert results["alone, workers"] == results["alone"]
    assert results["batched, workers"] == results["batched"]
    (files, records), counts, checked, disagreed = results["batched, workers"]
    # Across batch sizes the model's last float bits may differ (batched convolutions add
    # in another order), so the confidences may; the files and statuses may not.
    (alone_files, alone_records), alone_counts, _, _ = results["alone"]
    assert alone_files == files and alone_counts == counts
    assert [r["status"] for r in alone_records] == [r["status"] for r in records]
    statuses = {Path(r["input"]).name: r["status"] for r in records}
    assert statuses["broken.jpg"] == "error"
    assert statuses["nobox.png"] in ("no_regions", "failed")
    assert checked >= 1 and disagreed >= 1  # the workers' counts reach this process
    assert any(name.startswith("_failed/") for name in files)
    assert len(files) == len(items) - 1


def test_the_cli_takes_workers(photo_folder, tmp_path):
    outs = []
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        res = CliRunner().invoke(
            main,
            ["anonymize", str(photo_folder), "-o", str(out), "--model", "tiny_factory:make",
             "--regions", "saliency:8", "--workers", workers, "-q"],
        )  # fmt: skip
        assert res.exit_code == 1, res.output  # the broken file
        outs.append(written(out))
    assert outs[0] == outs[1]
    res = CliRunner().invoke(main, ["anonymize", str(photo_folder), "--workers", "-1"])
    assert res.exit_code == 2 and "--workers" in res.output


def test_workers_must_not_be_negative(photo_folder, tiny, tmp_path):
    with pytest.raises(ValueError, match="workers"):
        run(collect_inputs([str(photo_folder)]), tmp_path, tiny, boxes_for(photo_folder),
            Settings(filter=Blur()), workers=-1)  # fmt: skip


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp") if p.is_file()]


def test_workers_keep_the_writers_rules(photo_folder, tiny, tmp_path):
    """A file the workers wrote as a temporary is put in place only under the output
    folder's rules: a file no earlier run wrote stays, and no temporary is left."""
    items = collect_inputs([str(photo_folder)])
    out = tmp_path / "out"
    out.mkdir()
    foreign = out / "coffee.png"
    foreign.write_bytes(b"the user's own file")
    summary = run(items, out, tiny, boxes_for(photo_folder), Settings(), 3, workers=2)
    records = {Path(r["input"]).name: r for r in written(out)[1]}
    assert records["coffee.png"]["status"] == "error"
    assert "already exists" in records["coffee.png"]["error"]
    assert foreign.read_bytes() == b"the user's own file"
    assert temporaries(out) == []
    assert summary.counts["error"] == 2  # coffee.png and broken.jpg


def test_a_stopped_run_leaves_no_temporary(photo_folder, tiny, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from adaptanon.engines.batches import compute_loaded
    from adaptanon.engines.finishing import Finisher, Finishing, Staged, set_finishing
    from adaptanon.engines.reader import read_one

    items = [i for i in collect_inputs([str(photo_folder)]) if i.path.suffix == ".png"]
    out = tmp_path / "out"
    settings = Settings()
    finishing = Finishing(settings.rules, None, ".png", out)
    set_finishing(finishing)  # the pool is threads here: this process is its worker
    with ThreadPoolExecutor(2) as pool:
        finisher = Finisher(finishing, pool, limit=100)
        computed = compute_loaded(
            tiny, boxes_for(photo_folder), settings, list(map(read_one, items))
        )
        for item, one in computed:
            for _, ready in finisher.add(item, one):
                if isinstance(ready, Staged):
                    ready.discard()  # handed on: the writer's to put in place or discard
    assert len(temporaries(out)) >= 1  # finished and written, never put in place
    finisher.discard()
    assert temporaries(out) == []
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_auto_workers_leave_the_models_cores_alone():
    from adaptanon.engines.workers import AUTO_WORKERS_MIN_IMAGES, default_workers

    many = AUTO_WORKERS_MIN_IMAGES
    assert default_workers(many - 1) == 0  # a small job: starting workers does not pay
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        on_cpu = default_workers(many, torch.device("cpu"))
        torch.set_num_threads(2)
        assert default_workers(many, torch.device("cpu")) == max(0, on_cpu - 1)
        # With a GPU the model needs one core whatever torch's CPU threads.
        assert default_workers(many, torch.device("cuda")) == on_cpu
    finally:
        torch.set_num_threads(threads)
