"""Licence plates: the plate-shaped-text detector (``--regions plates``) on synthetic
plates drawn on scikit-image's photographs, small plates found on the upscaled tiles, no
plate on photos without text, the Haar cascade still selectable, missing extras, and the
readability measure (OCR on ground-truth plate boxes) on known cases and in
``adaptanon evaluate``."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFont
from skimage import data

from adaptanon.cli import main
from adaptanon.regions import DetectorOptions, RegionQuery, parse_region_source

pytest.importorskip("onnxruntime", reason="the 'plates' extra is not installed")
pytest.importorskip("cv2", reason="the 'plates' extra is not installed")
if importlib.util.find_spec("rapidocr_onnxruntime") is None:
    pytest.skip("rapidocr-onnxruntime (PP-OCR's models) is not installed", allow_module_level=True)

from adaptanon.evaluate.readability import (  # noqa: E402
    Plate,
    PlateReader,
    correct_chars,
    edit_distance,
    find_plate_truth,
    normalize,
    read_plate_truth,
)
from adaptanon.io.codecs import to_image  # noqa: E402
from adaptanon.io.images import collect_inputs  # noqa: E402
from adaptanon.regions.detectors.haar_plates import HaarPlates  # noqa: E402
from adaptanon.regions.detectors.text_plates import TextPlates, join_lines, tiles  # noqa: E402

TINY = ["--model", "tiny_factory:make", "--device", "cpu", "-q"]


def plate_on(
    photo: np.ndarray, text: str, xy: tuple[int, int], size: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``photo`` with a white plate holding ``text`` in black at ``xy`` (font ``size``
    pixels), and the plate's box."""
    im = Image.fromarray(photo)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=size)
    x, y = xy
    box = (
        x - size // 3,
        y - size // 5,
        x + round(draw.textlength(text, font=font)) + size // 3,
        y + size + size // 4,
    )
    draw.rectangle(box, fill=(245, 245, 245), outline=(20, 20, 20))
    draw.text((x, y), text, fill=(15, 15, 15), font=font)
    return np.asarray(im), box


def find(source, image: np.ndarray) -> list:
    (found,) = source.find([RegionQuery("x.png", to_image(image))])
    assert found.error is None, found.error
    return list(found.detections)


def inside(box, outer) -> float:
    """Share of ``box``'s area inside ``outer``."""
    w = max(0, min(box[2], outer[2]) - max(box[0], outer[0]))
    h = max(0, min(box[3], outer[3]) - max(box[1], outer[1]))
    return w * h / ((box[2] - box[0]) * (box[3] - box[1]))


@pytest.fixture(scope="module")
def plates() -> TextPlates:
    return TextPlates(DetectorOptions())


@pytest.fixture(scope="module")
def reader() -> PlateReader:
    return PlateReader()


# --- the detector --------------------------------------------------------------------


def test_finds_and_reads_a_plate_on_a_photo(plates):
    image, box = plate_on(data.rocket(), "AB 123 CD", (300, 350), 24)
    (found,) = find(plates, image)
    assert found.label == "plate" and 0.5 < found.score <= 1
    assert inside(box, found.box) >= 0.9, (box, found.box)
    boxes, scores, texts = plates.plates(image)
    assert texts == ["AB123CD"] and scores[0] == pytest.approx(found.score, abs=1e-3)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_no_plate_on_photos_without_text(plates, name):
    image = getattr(data, name)()
    assert find(plates, image) == []


def test_small_plates_are_found_on_upscaled_tiles(plates):
    image, _ = plate_on(data.rocket(), "AB 123 CD", (300, 350), 12)
    small = np.asarray(Image.fromarray(image).resize((320, 213), Image.BILINEAR))  # a 30x8 plate
    assert find(TextPlates(DetectorOptions(), small=False), small) == []
    (found,) = find(plates, small)
    assert 140 < (found.box[0] + found.box[2]) / 2 < 190, found.box


def test_threshold_is_the_reading_confidence(plates):
    image, _ = plate_on(data.rocket(), "AB 123 CD", (300, 350), 24)
    (found,) = find(plates, image)
    strict = TextPlates(DetectorOptions(plate_threshold=min(0.999999, found.score + 1e-4)))
    assert find(strict, image) == []
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        TextPlates(DetectorOptions(plate_threshold=3))


def test_words_of_a_line_are_joined_and_tiles_cover_the_image():
    words = np.array([[10, 10, 40, 30], [48, 11, 90, 31], [10, 60, 40, 80]], np.float32)
    assert join_lines(words).tolist() == [[10, 10, 90, 31], [10, 60, 40, 80]]
    far = np.array([[10, 10, 40, 30], [80, 10, 120, 30]], np.float32)  # a gap of 2 heights
    assert len(join_lines(far)) == 2
    windows = list(tiles(700, 1500, 640, 96))
    covered = np.zeros((700, 1500), bool)
    for x0, y0, x1, y1 in windows:
        assert x1 - x0 <= 640 and y1 - y0 <= 640
        covered[y0:y1, x0:x1] = True
    assert covered.all() and list(tiles(300, 400, 640, 96)) == [(0, 0, 400, 300)]


def test_plates_is_text_and_haar_stays_selectable():
    text = parse_region_source("plates")
    assert isinstance(text, TextPlates)
    assert text.describe() == "plates(text+tiles>0.5,x1.3)"
    haar = parse_region_source("plates:haar")
    assert isinstance(haar, HaarPlates) and haar.describe() == "plates(haar>=3,x1.3)"
    image, box = plate_on(data.rocket(), "AB 123 CD", (300, 350), 24)
    assert all(d.label == "plate" for d in find(haar, image))
    fused = parse_region_source("plates+plates:haar")
    assert fused.describe() == "plates(text+tiles>0.5,x1.3)+plates(haar>=3,x1.3)"


def test_missing_models_or_extra_name_the_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match=r"--no-deps rapidocr-onnxruntime"):
        parse_region_source("plates")
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ValueError, match=r"pip install 'adaptanon\[plates\]'"):
        parse_region_source("plates")
    with pytest.raises(ValueError, match=r"pip install 'adaptanon\[plates\]'"):
        PlateReader()


# --- readability ---------------------------------------------------------------------


def test_correct_characters_on_known_cases():
    assert normalize("ab-12 c") == "AB12C"
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "ABC") == 3
    assert correct_chars("AB 123 CD", "AB123CD") == 7
    assert correct_chars("", "AB123CD") == 0
    assert correct_chars("AB123CO", "AB123CD") == 6  # one character misread
    assert correct_chars("AB123", "AB123CD") == 5  # two not read
    assert correct_chars("XXXXXXXXXXXXXX", "AB123CD") == 0  # never below 0


def test_a_plate_is_read_exactly_and_a_masked_one_as_nothing(reader):
    image, box = plate_on(data.rocket(), "AB 123 CD", (300, 350), 24)
    plate = Plate(box, "AB123CD")
    original = to_image(image)
    assert reader.read(original, [box]) == ["AB123CD"]
    assert reader.score(original, [plate]) == 7
    masked = original.clone()
    masked[:, box[1] : box[3], box[0] : box[2]] = 0.5
    assert reader.read(masked, [box]) == [""] and reader.score(masked, [plate]) == 0


def test_plate_truth_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "plates.csv").write_text("file,x0,y0,x1,y1,text\na.png,1,2,30,12,ab-12 c\n")
    assert read_plate_truth(tmp_path / "plates.csv") == {"a.png": [Plate((1, 2, 30, 12), "AB12C")]}
    Image.new("RGB", (40, 20)).save(tmp_path / "a.png")
    items = collect_inputs([str(tmp_path)])
    assert list(find_plate_truth(items).values()) == [[Plate((1, 2, 30, 12), "AB12C")]]
    for bad, match in [
        ("file,x0,y0,x1,text\n", "columns"),
        ("file,x0,y0,x1,y1,text\na.png,1,2,x,12,AB\n", ":2: a box"),
        ("file,x0,y0,x1,y1,text\na.png,5,2,5,12,AB\n", ":2: empty"),
        ("file,x0,y0,x1,y1,text\na.png,1,2,5,12,--\n", ":2: empty"),
    ]:
        (tmp_path / "bad.csv").write_text(bad)
        with pytest.raises(ValueError, match=match):
            read_plate_truth(tmp_path / "bad.csv")


def test_evaluate_reports_characters_read(tmp_path):
    inputs = tmp_path / "cars"
    inputs.mkdir()
    image, box = plate_on(data.rocket(), "AB 123 CD", (300, 350), 24)
    Image.fromarray(image).save(inputs / "car.png")
    Image.fromarray(data.coffee()).save(inputs / "coffee.png")
    (inputs / "plates.csv").write_text(
        "file,x0,y0,x1,y1,text\ncar.png,{},{},{},{},AB 123 CD\n".format(*box)
    )
    out = tmp_path / "eval"
    args = ["evaluate", str(inputs), "--out", str(out), *TINY, "--regions", "plates"]
    res = CliRunner().invoke(main, [*args, "--filter", "blur,mask", "--max-steps", "5"])
    assert res.exit_code == 0, res.output
    rows = {r["filter"]: r for r in json.loads((out / "results.json").read_text())}
    for r in rows.values():
        assert r["plates_checked"] == 1 and r["plate_chars"] == 7
        assert r["plate_chars_read_original_pct"] == 100.0
    assert rows["mask"]["plate_chars_read_plain_pct"] == 0.0
    assert rows["mask"]["plate_chars_read_corrected_pct"] <= 100 / 7
    assert "Plates: characters read by OCR" in (out / "results.md").read_text()
    # A truth file naming no input is a usage error.
    (tmp_path / "other.csv").write_text("file,x0,y0,x1,y1,text\nx.png,1,1,9,9,AB\n")
    bad = CliRunner().invoke(main, [*args, "--plates-truth", str(tmp_path / "other.csv")])
    assert bad.exit_code == 2 and "names none of the inputs" in bad.output
    # Regions from a file (whatever its name): measured with --plates-truth only.
    boxes = tmp_path / "plates.json"
    boxes.write_text(json.dumps({"car.png": [list(box)]}))
    base = ["evaluate", str(inputs), *TINY, "--max-steps", "2", "--regions", f"boxes={boxes}"]
    for extra, checked in (([], None), (["--plates-truth", str(inputs / "plates.csv")], 1)):
        out = tmp_path / f"e{len(extra)}"
        res = CliRunner().invoke(main, [*base, "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        (row,) = json.loads((out / "results.json").read_text())
        assert row["plates_checked"] == checked
