"""No silent non-anonymization: an image without regions is `no_regions`, never
`unchanged`, and boxes-file keys that match no input are reported before any work."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import make_image, save_png

from adaptanon.cli import main
from adaptanon.io import read_manifest


def test_mistyped_boxes_key_is_reported_and_gives_no_regions(tmp_path):
    root = tmp_path / "in"
    save_png(make_image(48, 64, 0), root / "face.png")
    save_png(make_image(60, 50, 1), root / "car.png")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"fase.png": [[2, 2, 20, 20]], "car.png": [[5, 5, 30, 30]]}))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main,
        ["anonymize", str(root), "-o", str(out), "--model", "tiny_factory:make"]
        + ["--regions", f"boxes={boxes}", "-q"],
    )
    assert res.exit_code == 0, res.output
    assert "1 key(s)" in res.output and "'fase.png'" in res.output
    recs = {r["input"].rsplit("/", 1)[-1]: r for r in read_manifest(out / "manifest.jsonl")}
    assert recs["face.png"]["status"] == "no_regions" and recs["face.png"]["regions"] == []
    assert recs["car.png"]["status"] in ("unchanged", "corrected")
    assert not [r for r in recs.values() if r["status"] == "unchanged" and not r["regions"]]


def test_summary_counts_no_regions(tmp_path):
    root = tmp_path / "in"
    save_png(make_image(48, 64, 0), root / "a.png")
    boxes = tmp_path / "boxes.json"
    boxes.write_text("{}")
    res = CliRunner().invoke(
        main,
        ["anonymize", str(root), "-o", str(tmp_path / "out"), "--model", "tiny_factory:make"]
        + ["--regions", f"boxes={boxes}"],
    )
    assert res.exit_code == 0, res.output
    assert "no_regions" in res.output and "not anonymized" in res.output
