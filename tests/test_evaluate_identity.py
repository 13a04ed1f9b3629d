"""The evaluation cache is keyed by everything that decides the regions: the spec, the
detector options and the content of every file the spec names."""

from __future__ import annotations

import json

from adaptanon.cli.evaluate import regions_identity


def kw(regions: str, **extra) -> dict:
    return {"regions": regions, "device": "cpu", **extra}


def test_editing_a_boxes_or_coco_file_changes_the_identity(tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"a.png": [[1, 2, 3, 4]]}))
    coco = tmp_path / "det.json"
    coco.write_text(json.dumps({"images": [], "annotations": []}))
    before = regions_identity(kw(f"boxes={boxes}")), regions_identity(kw(f"coco={coco}"))
    boxes.write_text(json.dumps({"a.png": [[1, 2, 3, 5]]}))
    coco.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    after = regions_identity(kw(f"boxes={boxes}")), regions_identity(kw(f"coco={coco}"))
    assert before[0] != after[0] and before[1] != after[1]
    assert str(tmp_path) not in after[0]  # the key does not depend on where the file lies


def test_detector_options_change_the_identity():
    base = regions_identity(kw("faces", face_threshold=0.3))
    assert base != regions_identity(kw("faces", face_threshold=0.5))
    assert base != regions_identity(kw("faces", face_threshold=0.3, box_scale=2.0))
    assert regions_identity(kw("saliency")) == "saliency"
