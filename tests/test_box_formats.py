"""Detections made elsewhere: COCO JSON, YOLO folders, Pascal VOC folders, CSV; label
filters; malformed files are usage errors naming the file and line or entry, before any
work; the manifest records each region's label and score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import make_image, save_png

from adaptanon.cli import main
from adaptanon.io.manifest import read_manifest
from adaptanon.regions import (
    Combined,
    ExplicitBoxes,
    RegionQuery,
    RegionSource,
    parse_region_source,
)
from adaptanon.regions.formats import load_coco, load_csv, load_voc, load_yolo

TINY = ["--model", "tiny_factory:make", "--device", "cpu", "-q"]


def found(source: RegionSource, name: str, height: int = 60, width: int = 80):
    """``[(box, label, score)]`` found in a ``height x width`` image called ``name``."""
    (regions,) = source.find([RegionQuery(name, torch.zeros(3, height, width))])
    if regions.error is not None:
        raise ValueError(regions.error)
    return [(d.box, d.label, d.score) for d in regions.detections]


COCO = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": 80, "height": 60},
        {"id": 2, "file_name": "sub/b.png", "width": 80, "height": 60},
        {"id": 3, "file_name": "empty.png"},
    ],
    "annotations": [
        {"image_id": 1, "bbox": [10, 5, 20, 10], "category_id": 1, "score": 0.9},
        {"image_id": 1, "bbox": [40, 30, 10, 10], "category_id": 2},
        {"image_id": 2, "bbox": [0.5, 0.5, 30, 20], "category_id": 2},
    ],
    "categories": [{"id": 1, "name": "face"}, {"id": 2, "name": "plate"}],
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_coco_boxes_labels_scores_and_lookup(tmp_path):
    src = load_coco(write(tmp_path / "c.json", json.dumps(COCO)))
    assert isinstance(src, ExplicitBoxes) and src.describe() == "coco"
    assert found(src, "a.png") == [((10, 5, 30, 15), "face", 0.9), ((40, 30, 50, 40), "plate", 1.0)]
    assert found(src, "x/sub/b.png") == []  # relative path, then file name: b.png is unknown
    assert found(src, "sub/b.png") == [((0, 0, 30, 20), "plate", 1.0)]  # rounded half to even
    assert found(src, "empty.png") == [] and found(src, "other.png") == []
    assert src.unmatched(["a.png", "sub/b.png"]) == ["empty.png"]


def test_coco_category_filter_by_name_or_id(tmp_path):
    path = write(tmp_path / "c.json", json.dumps(COCO))
    src = parse_region_source(f"coco={path}:plate")
    assert [f[1] for f in found(src, "a.png")] == ["plate"]
    src = parse_region_source(f"coco={path}:1")
    assert [f[1] for f in found(src, "a.png")] == ["face"]
    with pytest.raises(ValueError, match="no label person.*face, plate"):
        parse_region_source(f"coco={path}:person")


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d["annotations"][1].update(bbox=[1, 2, 3]), r"annotations\[1\]: bbox"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), r"annotations\[0\]: empty"),
        (lambda d: d["annotations"][2].update(image_id=9), r"annotations\[2\]: image_id 9"),
        (lambda d: d["annotations"][0].update(bbox=[1, "x", 3, 4]), r"annotations\[0\]: bbox"),
        (lambda d: d["annotations"][0].update(score=True), r"annotations\[0\]: score"),
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\]"),
        (lambda d: d.pop("annotations"), "annotations"),
    ],
)
def test_coco_malformed_entries_name_the_entry(tmp_path, change, match):
    data = json.loads(json.dumps(COCO))
    change(data)
    path = write(tmp_path / "c.json", json.dumps(data))
    with pytest.raises(ValueError, match=match) as info:
        load_coco(path)
    assert str(path) in str(info.value)


def test_coco_unreadable(tmp_path):
    with pytest.raises(ValueError, match="cannot read COCO file"):
        load_coco(write(tmp_path / "c.json", "{not json"))
    with pytest.raises(ValueError, match="cannot read COCO file"):
        load_coco(tmp_path / "missing.json")


def test_yolo_folder_converts_per_image_size(tmp_path):
    labels = tmp_path / "labels"
    write(labels / "a.txt", "0 0.5 0.5 0.25 0.5\n\n1 0.1 0.1 0.2 0.2 0.7\n")
    write(labels / "sub" / "b.txt", "")
    src = load_yolo(labels)
    # In an 80x60 image: centre (40, 30), 20 x 30 -> [30, 15, 50, 45].
    assert found(src, "a.jpg", 60, 80) == [((30, 15, 50, 45), "0", 1.0), ((0, 0, 16, 12), "1", 0.7)]
    # The same label in a 160x120 image scales with it.
    assert found(src, "other/a.png", 120, 160)[0][0] == (60, 30, 100, 90)
    assert found(src, "sub/b.png") == []
    assert src.unmatched(["a.jpg", "x/b.png"]) == ["sub/b"]  # relative path without extension
    assert src.unmatched(["a.jpg", "sub/b.png"]) == []


def test_yolo_class_names_and_filter(tmp_path):
    labels = tmp_path / "labels"
    write(labels / "classes.txt", "face\nplate\n")
    write(labels / "a.txt", "0 0.5 0.5 0.25 0.5\n1 0.1 0.1 0.2 0.2\n")
    assert [f[1] for f in found(load_yolo(labels), "a.png")] == ["face", "plate"]
    assert [f[1] for f in found(parse_region_source(f"yolo={labels}:plate"), "a.png")] == ["plate"]
    assert [f[1] for f in found(parse_region_source(f"yolo={labels}:0"), "a.png")] == ["face"]


@pytest.mark.parametrize(
    "line,match",
    [
        ("0 0.5 0.5 0.2", "expected 'class cx cy width height"),
        ("x 0.5 0.5 0.2 0.2", "class must be a whole number"),
        ("0 0.5 0.5 0.2 nan", "must be finite"),
        ("0 50 40 20 20", "fractions of the image size"),
        ("0 0.5 0.5 0 0.2", "fractions of the image size"),
        ("0 0.5 0.5 0.2 0.2 high", "score must be a number"),
    ],
)
def test_yolo_malformed_line_names_file_and_line(tmp_path, line, match):
    file = write(tmp_path / "labels" / "a.txt", f"0 0.5 0.5 0.2 0.2\n{line}\n")
    with pytest.raises(ValueError, match=match) as info:
        load_yolo(tmp_path / "labels")
    assert f"{file} line 2" in str(info.value)


def test_yolo_needs_a_folder(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        load_yolo(tmp_path / "nope")


VOC = """<annotation><filename>a.jpg</filename>
<object><name>face</name><bndbox><xmin>11</xmin><ymin>6</ymin><xmax>30</xmax><ymax>15</ymax></bndbox></object>
<object><name>plate</name><bndbox><xmin>41</xmin><ymin>31</ymin><xmax>50.0</xmax><ymax>40</ymax></bndbox></object>
</annotation>"""


def test_voc_folder_one_based_corners_and_filter(tmp_path):
    write(tmp_path / "ann" / "a.xml", VOC)
    src = load_voc(tmp_path / "ann")
    assert src.describe() == "voc"
    # VOC counts from 1: xmin 11 is column 10, xmax 30 the last column (half-open end 30).
    assert found(src, "pics/a.jpg") == [
        ((10, 5, 30, 15), "face", 1.0),
        ((40, 30, 50, 40), "plate", 1.0),
    ]
    src = parse_region_source(f"voc={tmp_path / 'ann'}:face")
    assert [f[1] for f in found(src, "a.png")] == ["face"]


@pytest.mark.parametrize(
    "text,match",
    [
        ("<annotation><object>", "cannot read VOC file"),
        ("<annotation><object><name>f</name></object></annotation>", "object 1 has no <bndbox>"),
        (VOC.replace("<ymin>31</ymin>", ""), "object 2: <ymin> must be a number"),
        (VOC.replace("<xmax>30</xmax>", "<xmax>5</xmax>"), "object 1: empty box"),
    ],
)
def test_voc_malformed_names_file_and_object(tmp_path, text, match):
    file = write(tmp_path / "ann" / "a.xml", text)
    with pytest.raises(ValueError, match=match) as info:
        load_voc(tmp_path / "ann")
    assert str(file) in str(info.value)


def test_csv_with_and_without_header(tmp_path):
    plain = write(tmp_path / "b.csv", "a.png,10,5,30,15,face\nsub/b.png, 0,0,8,8\n\n")
    src = load_csv(plain)
    assert found(src, "a.png") == [((10, 5, 30, 15), "face", 1.0)]
    assert found(src, "sub/b.png") == [((0, 0, 8, 8), "box", 1.0)]
    # A header names the label column; other extra columns (here a plate's text, which
    # must not reach the manifest) are ignored.
    headed = write(tmp_path / "h.csv", "file,x0,y0,x1,y1,text\na.png,10,5,30,15,AB123\n")
    assert found(load_csv(headed), "a.png") == [((10, 5, 30, 15), "box", 1.0)]
    labelled = write(tmp_path / "l.csv", "file,x0,y0,x1,y1,label\na.png,1,2,3,4,plate\n")
    assert found(load_csv(labelled), "a.png")[0][1] == "plate"
    src = parse_region_source(f"csv={plain}:face")
    assert found(src, "a.png") and found(src, "sub/b.png") == []
    assert src.unmatched(["a.png"]) == ["sub/b.png"]


@pytest.mark.parametrize(
    "text,line,match",
    [
        ("a.png,1,2,3,4\nb.png,1,2,3\n", 2, "expected file,x0,y0,x1,y1"),
        ("file,x0,y0,x1,y1\na.png,1,2,3,4\nb.png,1,y,3,4\n", 3, "must be a number"),
        ("a.png,5,2,3,4\n", 1, "empty box"),
        ("a.png,1,2,inf,4\n", 1, "must be finite"),
        (",1,2,3,4\n", 1, "expected file"),
    ],
)
def test_csv_malformed_names_file_and_line(tmp_path, text, line, match):
    path = write(tmp_path / "b.csv", text)
    with pytest.raises(ValueError, match=match) as info:
        load_csv(path)
    assert f"{path} line {line}" in str(info.value)


def test_parse_specs_combine_and_paths_with_plus_or_colon(tmp_path):
    odd = write(tmp_path / "a+b:c.csv", "a.png,1,2,3,4\n")
    assert isinstance(parse_region_source(f"csv={odd}"), ExplicitBoxes)  # existing path whole
    both = parse_region_source(f"saliency+csv={odd}")
    assert isinstance(both, Combined) and both.uses_saliency
    assert both.describe() == "saliency(50)+csv"
    with pytest.raises(ValueError, match="needs a path"):
        parse_region_source("csv=")
    with pytest.raises(ValueError, match="unknown regions"):
        parse_region_source("xml=a.xml")


def test_combined_unions_detections_and_errors():
    a = ExplicitBoxes({"a.png": [[0, 0, 10, 10]]})
    b = ExplicitBoxes({"a.png": [[5, 5, 20, 20]], "b.png": [[100, 100, 120, 120]]}, name="other")
    src = Combined([a, b])
    out = src.find(
        [RegionQuery("a.png", torch.zeros(3, 50, 50)), RegionQuery("b.png", torch.zeros(3, 50, 50))]
    )
    assert out[0].boxes == [(0, 0, 10, 10), (5, 5, 20, 20)]
    assert out[1].error is not None and "outside" in out[1].error
    assert src.unmatched(["a.png"]) == ["b.png"]


@pytest.fixture
def inputs(tmp_path) -> Path:
    root = tmp_path / "in"
    save_png(make_image(60, 80, 0), root / "a.png")
    save_png(make_image(60, 80, 1), root / "sub" / "b.png")
    return root


def test_cli_coco_regions_reach_the_manifest_with_labels(inputs, tmp_path):
    coco = write(tmp_path / "c.json", json.dumps(COCO))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main, ["anonymize", str(inputs), "-o", str(out), *TINY, "--regions", f"coco={coco}"]
    )
    assert res.exit_code in (0, 1), res.output
    recs = {Path(r["input"]).name: r for r in read_manifest(out / "manifest.jsonl")}
    a = recs["a.png"]
    assert a["regions"] == [[10, 5, 30, 15], [40, 30, 50, 40]]
    assert a["detections"] == [
        {"box": [10, 5, 30, 15], "label": "face", "score": 0.9},
        {"box": [40, 30, 50, 40], "label": "plate", "score": 1.0},
    ]
    assert recs["b.png"]["detections"][0]["label"] == "plate"
    assert recs["a.png"]["settings"]["regions"] == "coco"


@pytest.mark.parametrize(
    "spec_file",
    [
        (
            "coco",
            "c.json",
            '{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 2}]}',
        ),
        ("csv", "b.csv", "a.png,1,2,3\n"),
    ],
)
def test_cli_malformed_file_is_a_usage_error_before_any_work(inputs, tmp_path, spec_file):
    kind, name, text = spec_file
    path = write(tmp_path / name, text)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main, ["anonymize", str(inputs), "-o", str(out), *TINY, "--regions", f"{kind}={path}"]
    )
    assert res.exit_code == 2, res.output
    assert name in res.output
    assert not out.exists()  # nothing written, not even a manifest
