"""Declared preprocessing (PreprocessSpec): every backend equals the library it imitates on
photographs, gradients reach the input, specs round-trip through JSON, and what cannot be
reproduced is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

from adaptanon.classifiers import TorchClassifier
from adaptanon.io.codecs import to_image
from adaptanon.preprocessing import (
    PRESETS,
    Preprocess,
    PreprocessSpec,
    SpecGeometry,
    parse_preprocess,
    parse_spec,
)
from adaptanon.preprocessing.opencv import cv_resize
from adaptanon.preprocessing.resample import pil_resize_filter
from adaptanon.preprocessing.spec import TORCH_TOLERANCE

cv2 = pytest.importorskip("cv2")

PHOTOS = {
    "astronaut": data.astronaut(),  # 512 x 512
    "chelsea": data.chelsea(),  # 300 x 451
    "coffee": data.coffee(),  # 400 x 600
}
PORTRAIT = np.ascontiguousarray(data.coffee()[:, 101:334])  # 400 x 233: tall, odd width


def photo(name: str) -> np.ndarray:
    return PORTRAIT if name == "portrait" else PHOTOS[name]


def as_uint8(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(1, 2, 0).numpy()


# (photo, output width, output height): downscale, upscale, odd sizes, tall and wide,
# one axis up and the other down.
CASES = [
    ("astronaut", 224, 224),
    ("chelsea", 149, 97),
    ("coffee", 613, 411),
    ("portrait", 61, 250),
    ("chelsea", 451, 100),
    ("portrait", 200, 100),  # the height shrinks much more: Pillow 13 resizes it first
]


@pytest.mark.parametrize("name,out_w,out_h", CASES)
@pytest.mark.parametrize("filt", ["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"])
def test_pil_filters_are_bit_exact(filt, name, out_w, out_h):
    pixels = photo(name)
    resample = getattr(Image.Resampling, filt.upper())
    expected = np.asarray(Image.fromarray(pixels).resize((out_w, out_h), resample))
    got = pil_resize_filter(to_image(pixels), (out_h, out_w), filt)
    assert got.shape == (3, out_h, out_w)
    assert np.array_equal(as_uint8(got), expected.astype(np.float64))


CV_CASES = [
    *CASES,
    ("astronaut", 256, 256),  # exactly half: INTER_LINEAR runs INTER_AREA's 2x2 path
    ("coffee", 200, 100),  # integer factors 3 and 4
    ("chelsea", 451, 100),  # width kept, height / 3
    ("coffee", 1201, 803),  # about 2x up
    ("portrait", 233, 400),  # same size: a copy
]


@pytest.mark.parametrize("name,out_w,out_h", CV_CASES)
@pytest.mark.parametrize("mode", ["nearest", "linear", "area"])
def test_opencv_is_bit_exact(mode, name, out_w, out_h):
    pixels = photo(name)
    flag = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}
    expected = cv2.resize(pixels, (out_w, out_h), interpolation=flag[mode])
    got = cv_resize(to_image(pixels), (out_h, out_w), mode)
    assert np.array_equal(as_uint8(got), expected.astype(np.float64))


def imagenet(pixels: np.ndarray, mean, std, bgr=False, unit=True) -> torch.Tensor:
    """The loader's last steps, by hand: channel order, range, normalisation (float64)."""
    x = torch.from_numpy(pixels.astype(np.float64)).permute(2, 0, 1)
    if bgr:
        x = x.flip(0)
    if unit:
        x = x / 255.0
    m = torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(3, 1, 1)
    return ((x - m) / s).to(torch.float32)


def centre_crop(pixels: np.ndarray, ch: int, cw: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return pixels[top : top + ch, left : left + cw]


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "portrait"])
def test_torchvision_pil_preset_is_the_old_default(name):
    image = to_image(photo(name))
    assert torch.equal(parse_preprocess("torchvision-pil")(image), Preprocess()(image))


@pytest.mark.parametrize("name", ["chelsea", "portrait"])
def test_bicubic_shorter_side_round_and_rectangular_crop(name):
    pixels = photo(name)
    spec = PreprocessSpec(interpolation="bicubic", resize=97, rounding="round", crop=(90, 80))
    h, w = pixels.shape[:2]
    size = (97, round(97 * w / h)) if h <= w else (round(97 * h / w), 97)
    resized = np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), Image.BICUBIC))
    expected = imagenet(centre_crop(resized, 90, 80), spec.mean, spec.std)
    got = spec.build()(to_image(pixels))
    assert got.shape == (3, 90, 80) and torch.equal(got, expected)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "portrait"])
def test_opencv_squash_and_caffe_presets(name):
    pixels = photo(name)
    resized = cv2.resize(pixels, (224, 224), interpolation=cv2.INTER_LINEAR)
    spec = PRESETS["opencv-squash"]
    assert torch.equal(
        parse_preprocess("opencv-squash")(to_image(pixels)), imagenet(resized, spec.mean, spec.std)
    )
    caffe = PRESETS["caffe-opencv"]
    # The caffe loader reads BGR with cv2.imread; resizing is per channel.
    bgr = cv2.resize(pixels[:, :, ::-1].copy(), (224, 224), interpolation=cv2.INTER_LINEAR)
    expected = imagenet(bgr, caffe.mean, caffe.std, unit=False)
    assert torch.equal(parse_preprocess("caffe-opencv")(to_image(pixels)), expected)


def yolo_letterbox(pixels: np.ndarray, box=(640, 640), fill=114) -> np.ndarray:
    """YOLOv5's letterbox (auto=False), written out."""
    h, w = pixels.shape[:2]
    r = min(box[0] / h, box[1] / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (box[1] - new_w) / 2, (box[0] - new_h) / 2
    resized = cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return cv2.copyMakeBorder(
        resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(fill,) * 3
    )


@pytest.mark.parametrize("name,box", [("coffee", (640, 640)), ("portrait", (320, 257))])
def test_letterbox_equals_yolo(name, box):
    pixels = photo(name)
    spec = PreprocessSpec.from_dict({"preset": "yolo-letterbox", "resize": list(box)})
    got = spec.build()(to_image(pixels))
    expected = imagenet(yolo_letterbox(pixels, box), (0.0,) * 3, (1.0,) * 3)
    assert got.shape == (3, *box) and torch.equal(got, expected)


def tensor_loader(pixels: np.ndarray, size, mode="bilinear", antialias=True) -> torch.Tensor:
    """to_tensor + F.interpolate, as a tensor loader runs it (float32, CPU)."""
    x = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255)
    return F.interpolate(x[None], size=size, mode=mode, antialias=antialias, align_corners=False)[0]


@pytest.mark.parametrize("mode,antialias", [("bilinear", True), ("bicubic", False)])
@pytest.mark.parametrize("name", ["chelsea", "portrait"])
def test_torch_backend_equals_f_interpolate(name, mode, antialias):
    pixels = photo(name)
    spec = PreprocessSpec(
        backend="torch", interpolation=mode, antialias=antialias, resize=(150, 120), crop=None
    )
    resized = tensor_loader(pixels, (150, 120), mode, antialias)
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    assert torch.equal(spec.build()(to_image(pixels)), (resized - mean) / std)
    # With round8 the result is the 8-bit image a loader would save.
    rounded = PreprocessSpec.from_dict({**spec.to_dict(), "round8": True, "std": [1, 1, 1]})
    got = rounded.build()(to_image(pixels)) + mean
    expected = (resized * 255).round().clamp(0, 255) / 255
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)


def test_torch_backend_in_float64_is_within_the_stated_tolerance():
    """Another dtype (or device) than the loader's gives float differences only."""
    pixels = photo("chelsea")
    pre = parse_preprocess("torchvision-tensor")
    f32 = pre(to_image(pixels))
    f64 = pre(to_image(pixels).double())
    std = torch.tensor(PRESETS["torchvision-tensor"].std).view(3, 1, 1)
    assert float(((f32 - f64) * std).abs().max()) <= TORCH_TOLERANCE


# --- gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "torchvision-pil",
        '{"interpolation": "lanczos", "resize": 30, "crop": 24}',
        '{"interpolation": "nearest", "resize": 30, "crop": 24}',
        '{"backend": "opencv", "interpolation": "area", "resize": [20, 26], "crop": null}',
        '{"backend": "opencv", "interpolation": "linear", "resize": [70, 90], "crop": null}',
        '{"preset": "yolo-letterbox", "resize": [40, 40]}',
        "torchvision-tensor",
    ],
)
def test_gradients_reach_the_input(spec):
    image = to_image(photo("chelsea")[::5, ::5].copy()).requires_grad_(True)  # 60 x 91
    pre = parse_preprocess(spec)
    out = pre(image)
    assert out.dtype == torch.float32
    out.square().sum().backward()
    assert torch.isfinite(image.grad).all()
    assert float(image.grad.abs().sum()) > 0


def test_gradcheck_torch_backend_float64():
    spec = PreprocessSpec(
        backend="torch", interpolation="bicubic", antialias=True, resize=(5, 4), crop=None
    )
    pre = spec.build()

    def f(x):
        return pre(x).double()  # float32 output: compare in float64 with a loose tolerance

    x = torch.rand(3, 9, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x,), eps=1e-3, atol=1e-3, rtol=1e-2)


def test_straight_through_gradient_is_the_weighted_sum():
    """For an 8-bit backend, d(output)/d(input) is that of the resize before rounding: one
    output pixel's gradient sums to 255 (to 8-bit values) times its weights' sum, 1."""
    image = to_image(photo("chelsea")[:40, :50].copy()).requires_grad_(True)
    out = cv_resize(image, (17, 23), "area")
    out[1, 8, 11].backward()
    assert float(image.grad[0].abs().sum()) == 0
    assert float(image.grad.sum()) == pytest.approx(255.0, rel=1e-5)


# --- geometry, update, classifier ----------------------------------------------------------


@pytest.mark.parametrize(
    "spec,size,expected",
    [
        ("opencv-squash", (300, 451), ((300, 451), (224, 224), 0, 0, (224, 224))),
        ("yolo-letterbox", (300, 451), ((300, 451), (426, 640), -107, 0, (640, 640))),
        ("torchvision-pil", (300, 451), ((300, 451), (256, 384), 16, 80, (224, 224))),
    ],
)
def test_geometry(spec, size, expected):
    g = parse_preprocess(spec).geometry(*size)
    assert isinstance(g, SpecGeometry)
    assert (g.input_size, g.resized, g.top, g.left, g.view) == expected
    # The whole view maps to the input the view shows (all of it for squash and letterbox).
    x0, y0, x1, y1 = g.view_box_to_input((0, 0, g.view[1], g.view[0]))
    if spec != "torchvision-pil":
        assert (x0, y0, x1, y1) == (0, 0, size[1], size[0])
    assert g.scale == pytest.approx((g.scale_x * g.scale_y) ** 0.5)


@pytest.mark.parametrize(
    "spec",
    [
        '{"interpolation": "bicubic", "resize": 100, "crop": [90, 80]}',
        '{"backend": "opencv", "interpolation": "area", "resize": [70, 90], "crop": null}',
        '{"backend": "opencv", "interpolation": "linear", "resize": [180, 260], "crop": null, '
        '"channels": "BGR"}',
        '{"preset": "yolo-letterbox", "resize": [96, 96]}',
    ],
)
def test_update_equals_full_preprocessing(spec):
    pre = parse_preprocess(spec)
    reference = to_image(photo("chelsea")[::2, ::2].copy())  # 150 x 226
    base = pre(reference)
    box = (60, 40, 95, 70)
    image = reference.clone()
    image[:, box[1] : box[3], box[0] : box[2]] = torch.rand(3, 30, 35)
    a, b = image.clone().requires_grad_(True), image.clone().requires_grad_(True)
    full, part = pre(a), pre.update(b, base, box)
    assert torch.equal(full, part)
    w = torch.randn(full.shape, generator=torch.Generator().manual_seed(0))
    (full * w).sum().backward()
    (part * w).sum().backward()
    inside = (slice(None), slice(box[1], box[3]), slice(box[0], box[2]))
    assert torch.allclose(a.grad[inside], b.grad[inside])
    assert float(b.grad[inside].abs().sum()) > 0


def test_works_with_torch_classifier():
    net = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 5)
    )
    clf = TorchClassifier(net.eval(), parse_preprocess('{"preset": "yolo-letterbox"}'))
    images = [to_image(photo("chelsea")), to_image(PORTRAIT)]
    assert clf.logits(images).shape == (2, 5)
    assert clf.geometry(300, 451).view == (640, 640)


@pytest.mark.parametrize(
    "spec",
    [
        *[name for name, spec in PRESETS.items() if spec.backend != "torch"],
        '{"preset": "torchvision-pil", "interpolation": "nearest", "resize": [97, 131], "crop": null}',
        '{"preset": "torchvision-pil", "interpolation": "lanczos", "resize": 300, "crop": [250, 170]}',
        '{"backend": "opencv", "interpolation": "area", "resize": 150, "crop": 101}',
    ],
)
@pytest.mark.parametrize("name", ["astronaut", "chelsea", "portrait"])
def test_from_pixels_equals_the_differentiable_preprocessing(spec, name):
    """The originals' inputs by Pillow or OpenCV themselves are the declared loader's, to
    the bit (also through a classifier, batched)."""
    pre = parse_preprocess(spec)
    pixels = photo(name)
    got = pre.from_pixels(pixels)
    assert got is not None
    assert torch.equal(got, pre(to_image(pixels)))
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    clf = TorchClassifier(net.eval(), pre)
    batch = clf.pixel_inputs([pixels, PORTRAIT])
    assert batch is not None
    assert torch.equal(batch, clf.inputs([to_image(pixels), to_image(PORTRAIT)]))


def test_from_pixels_has_no_torch_backend():
    assert parse_preprocess("torchvision-tensor").from_pixels(photo("chelsea")) is None


# --- JSON and refusals ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_json(name, tmp_path):
    spec = PRESETS[name]
    assert parse_spec(spec.to_json()) == spec
    path = tmp_path / "loader.json"
    path.write_text(json.dumps(spec.to_dict(), indent=2))
    assert parse_spec(str(path)) == spec
    assert parse_preprocess(str(path)).spec == spec
    assert spec.describe() and name in PRESETS


def test_inline_json_overrides_a_preset_and_normalises_names():
    spec = parse_spec('{"preset": "opencv-squash", "interpolation": "INTER_AREA", "mean": 0.5}')
    assert spec.interpolation == "area" and spec.mean == (0.5, 0.5, 0.5)
    assert spec.resize == (224, 224) and parse_spec(spec.to_json()) == spec


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"backend": "opencv", "interpolation": "cubic"}', "Intel IPP"),
        ('{"backend": "opencv", "interpolation": "lanczos4"}', "cannot be reproduced"),
        ('{"interpolation": "linear"}', "does not reproduce"),
        ('{"antialias": true}', "torch backend"),
        ('{"backend": "torch", "interpolation": "nearest", "antialias": true}', "antialias"),
        ('{"letterbox": true, "resize": [64, 64]}', "letterbox and crop"),
        ('{"letterbox": true, "crop": null}', "fixed resize"),
        ('{"resize": 256, "crop": null}', "its own input size"),
        ('{"resize": [224, 224], "rounding": "round"}', "rounding applies"),
        ('{"fill": 114}', "letterbox padding only"),
        ('{"channels": "RGBA"}', "channels"),
        ('{"std": [1, 0, 1]}', "non-zero"),
        ('{"crop": 0}', "positive"),
        ('{"colour": "rgb"}', "unknown key"),
        ('{"preset": "keras"}', "unknown preset"),
        ("{not json", "not valid JSON"),
        ("torchvision", "neither a preset"),
    ],
)
def test_refusals_are_clear(text, message):
    with pytest.raises(ValueError, match=message):
        parse_preprocess(text)


def test_crop_larger_than_the_resized_image_is_refused():
    pre = parse_preprocess('{"resize": [100, 100], "crop": 120}')
    with pytest.raises(ValueError, match="smaller than the crop"):
        pre(torch.rand(3, 50, 50))


# --- command line ---------------------------------------------------------------------------


def run_cli(*args):
    from click.testing import CliRunner

    from adaptanon.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def one_photo(tmp_path):
    path = tmp_path / "in" / "cat.png"
    path.parent.mkdir()
    Image.fromarray(photo("chelsea")[::4, ::4].copy()).save(path)  # 75 x 113
    return path


def test_cli_preprocess_applies_to_a_bare_module_factory(one_photo, tmp_path):
    spec = tmp_path / "loader.json"
    spec.write_text(json.dumps({"preset": "opencv-squash", "resize": [32, 32]}))
    out = tmp_path / "out"
    args = ["anonymize", one_photo.parent, "-o", out, "--model", "tiny_factory:tiny_net"]
    result = run_cli(*args, "--preprocess", spec, "--device", "cpu", "-q", "--max-steps", "2")
    assert result.exit_code in (0, 1), result.output
    assert (out / "manifest.jsonl").is_file()


@pytest.mark.parametrize(
    "model,spec,message",
    [
        ("efficientnet_lite0", "opencv-squash", "has its own preprocessing"),
        ("tiny_factory:make", "opencv-squash", "its own preprocessing"),
        ("tiny_factory:tiny_net", '{"backend": "opencv", "interpolation": "cubic"}', "IPP"),
    ],
)
def test_cli_preprocess_usage_errors(one_photo, tmp_path, model, spec, message):
    out = tmp_path / "out"
    result = run_cli(
        "anonymize",
        one_photo.parent,
        "-o",
        out,
        "--model",
        model,
        "--preprocess",
        spec,
        "--device",
        "cpu",
        "-q",
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
