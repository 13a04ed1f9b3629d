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


def test_no_regions_is_not_failed_for_a_margin_the_original_lacks(tiny, synth_batch):
    """An image with nothing to anonymize, stored losslessly, is the input itself: a
    criterion the original misses (here a 50-logit margin) cannot make it `failed`; a lossy
    re-encode, which changes the pixels, is still checked."""
    from adaptanon import Codec, SameClass, Settings, Status
    from adaptanon.method import process_batch
    from adaptanon.regions import ExplicitBoxes

    names = ["a.png", "b.png"]
    png = Settings(criterion=SameClass(50.0))
    outs = process_batch(tiny, ExplicitBoxes({}), png, names, synth_batch[:2])
    assert [o.status for o in outs] == [Status.NO_REGIONS, Status.NO_REGIONS]
    jpg = Settings(criterion=SameClass(50.0), codec=Codec("jpg", 75))
    outs = process_batch(tiny, ExplicitBoxes({}), jpg, names, synth_batch[:2])
    assert [o.status for o in outs] == [Status.FAILED, Status.FAILED]
