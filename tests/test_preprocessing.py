"""preprocessing: PIL-exact differentiable resize, Preprocess, ViewGeometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_image, to_uint8
from PIL import Image

from adaptanon.classifiers.efficientnet_lite import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
from adaptanon.io.codecs import to_image
from adaptanon.preprocessing import Preprocess, PreprocessModule, pil_resize
from adaptanon.preprocessing.resample import _array_taps, _loop_taps, pil_taps


def load_rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def pil_reference(pixels: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """torchvision's Resize(resize) + CenterCrop(crop) on a PIL image, written out by hand."""
    h, w = pixels.shape[:2]
    if w <= h:
        new_w, new_h = resize, int(resize * h / w)
    else:
        new_h, new_w = resize, int(resize * w / h)
    resized = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), Image.BILINEAR))
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    return resized[top : top + crop, left : left + crop]


def normalised(pixels: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(pixels.astype(np.float64)).permute(2, 0, 1) / 255.0
    m = torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(3, 1, 1)
    return ((x - m) / s).to(torch.float32)


# (width factor, height factor) of the output relative to the input: downscale, upscale,
# width-only/height-only changes and both shrinking with the width shrinking more.
SCALES = [(0.5, 0.5), (0.37, 0.41), (0.23, 0.23), (1.6, 1.3), (2.0, 2.0), (1.0, 0.8), (0.8, 1.0)]


@pytest.mark.parametrize("fx,fy", SCALES)
@pytest.mark.parametrize("name", ["chelsea.png", "rocket.jpg", "astronaut.png"])
def test_pil_resize_is_bit_exact_on_photos(demo_photo, name, fx, fy):
    pixels = load_rgb(demo_photo(name))
    h, w = pixels.shape[:2]
    size = (max(1, round(w * fx)), max(1, round(h * fy)))
    expected = np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR))
    got = pil_resize(to_image(pixels), (size[1], size[0]))
    assert got.dtype == torch.float64
    assert got.shape == (3, size[1], size[0])
    assert np.array_equal(got.permute(1, 2, 0).numpy().astype(np.uint8), expected)
    assert torch.equal(got, got.round())  # 8-bit values


@pytest.mark.parametrize("h,w,out_h,out_w", [(48, 64, 40, 53), (60, 50, 96, 80), (7, 9, 30, 31)])
def test_pil_resize_is_bit_exact_on_synthetic(h, w, out_h, out_w):
    image = make_image(h, w, seed=h * w)
    expected = np.asarray(Image.fromarray(to_uint8(image)).resize((out_w, out_h), Image.BILINEAR))
    got = pil_resize(image, (out_h, out_w)).permute(1, 2, 0).numpy()
    assert np.array_equal(got, expected.astype(np.float64))


@pytest.mark.parametrize(
    "w,h,out_w,out_h",
    [
        (451, 300, 452, 299),  # width enlarged by one pixel, height reduced by one
        (300, 451, 150, 150),  # height reduced much more than width
        (100, 100, 200, 50),
    ],
)
def test_pil_resize_bit_exact_when_height_shrinks_more_than_width(w, h, out_w, out_h):
    """Pillow 13 (python-pillow/Pillow#9549) runs the vertical pass first when the height is
    reduced much more than the width; the result differs from horizontal-first by 1 level."""
    rng = np.random.default_rng(w * out_h)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(pixels).resize((out_w, out_h), Image.BILINEAR))
    got = pil_resize(to_image(pixels), (out_h, out_w)).permute(1, 2, 0).numpy()
    differ = int((got != expected).sum())
    assert differ == 0, f"{differ} values differ from PIL"


def test_pil_resize_crop_slices_equal_crop_of_full_resize():
    image = make_image(53, 71, seed=3)
    full = pil_resize(image, (45, 60))
    part = pil_resize(image, (45, 60), rows=slice(5, 37), cols=slice(11, 43))
    assert torch.equal(part, full[:, 5:37, 11:43])


@pytest.mark.parametrize("in_size,out_size", [(100, 37), (37, 100), (64, 64), (5, 3), (3, 11)])
def test_bilinear_taps_are_normalised_and_in_range(in_size, out_size):
    taps = pil_taps(in_size, out_size, "bilinear")
    index, weight = torch.from_numpy(taps.index), torch.from_numpy(taps.weight)
    assert index.shape == weight.shape and index.shape[0] == out_size
    assert int(index.min()) >= 0 and int(index.max()) < in_size
    # Fixed-point weights of each output sample sum to 1 up to Pillow's rounding (2**-22 each).
    assert torch.allclose(weight.sum(1), torch.ones(out_size, dtype=torch.float64), atol=1e-5)
    assert bool((weight >= 0).all())


@pytest.mark.parametrize("name", ["box", "bilinear", "bicubic"])
def test_array_taps_equal_the_c_loop(name):
    """The numpy taps are the C loop's doubles, to the bit, up and down, odd and extreme."""
    sizes = [1, 2, 3, 7, 31, 100, 224, 256, 333, 375, 500, 641, 3000, 4032]
    outs = [1, 2, 7, 97, 224, 256, 299, 500, 1111]
    for in_size in sizes:
        for out_size in outs:
            a, b = _array_taps(in_size, out_size, name), _loop_taps(in_size, out_size, name)
            assert np.array_equal(a.index, b.index), (in_size, out_size)
            assert np.array_equal(a.weight, b.weight), (in_size, out_size)


@pytest.mark.parametrize("resize,crop", [(256, 224), (40, 32)])
@pytest.mark.parametrize(
    "name", ["chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "motorcycle_left.png"]
)
def test_preprocess_equals_pil_loader_on_photos(demo_photo, name, resize, crop):
    pixels = load_rgb(demo_photo(name))
    spec = Preprocess(resize, crop, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    got = spec(to_image(pixels))
    expected = normalised(
        pil_reference(pixels, resize, crop), EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
    )
    assert got.dtype == torch.float32 and got.shape == (3, crop, crop)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "h,w",
    [(48, 64), (60, 50), (32, 32), (20, 90), (255, 300), (400, 300)],  # upscale and downscale
)
def test_preprocess_equals_pil_loader_on_synthetic_sizes(h, w):
    image = make_image(h, w, seed=h + w)
    spec = Preprocess(40, 32, (0.5,) * 3, (0.5,) * 3)
    expected = normalised(pil_reference(to_uint8(image), 40, 32), (0.5,) * 3, (0.5,) * 3)
    assert torch.equal(spec(image), expected)


@pytest.mark.parametrize("h,w", [(750, 300), (1000, 257)])
def test_preprocess_equals_pil_loader_on_tall_portraits(h, w):
    """Portraits taller than 2:1 (panoramas, phone screenshots): with Pillow 13 the PIL loader
    resizes vertically first, so Preprocess must too (see the pil_resize test above)."""
    rng = np.random.default_rng(h)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    spec = Preprocess(256, 224, (0.0,) * 3, (1.0,) * 3)
    got = np.round(spec(to_image(pixels)).double().permute(1, 2, 0).numpy() * 255)
    expected = pil_reference(pixels, 256, 224).astype(np.float64)
    differ = int((got != expected).sum())
    assert differ == 0, f"{differ} values differ from the PIL loader"


def test_preprocess_gradient_is_finite_nonzero_and_local():
    image = make_image(60, 50, seed=1).requires_grad_(True)
    spec = Preprocess(40, 32, (0.5,) * 3, (0.5,) * 3)
    out = spec(image)
    out.sum().backward()
    g = image.grad
    assert torch.isfinite(g).all()
    assert float(g.abs().sum()) > 0
    # The centre crop only reads the middle of the image: the first/last columns of a tall
    # image are cropped away after resizing, so they must get no gradient at all.
    image2 = make_image(50, 90, seed=2).requires_grad_(True)
    spec(image2).sum().backward()
    assert float(image2.grad[:, :, :3].abs().sum()) == 0.0
    assert float(image2.grad[:, :, 40:50].abs().sum()) > 0.0


def test_pil_resize_gradient_of_one_output_pixel_is_its_tap_weights():
    image = make_image(30, 40, seed=5).requires_grad_(True)
    out = pil_resize(image, (12, 16))
    out[1, 6, 9].backward()
    g = image.grad
    assert torch.isfinite(g).all()
    # Only channel 1 and a small neighbourhood around the mapped position get gradient.
    assert float(g[0].abs().sum()) == 0 and float(g[2].abs().sum()) == 0
    ys, xs = torch.nonzero(g[1], as_tuple=True)
    cy, cx = (6 + 0.5) * 30 / 12, (9 + 0.5) * 40 / 16
    assert ys.numel() > 0
    assert float((ys.double() + 0.5 - cy).abs().max()) <= 30 / 12 + 1
    assert float((xs.double() + 0.5 - cx).abs().max()) <= 40 / 16 + 1
    # Straight-through rounding: d out / d image = 255 * (weights), which sum to 255.
    assert float(g.sum()) == pytest.approx(255.0, rel=1e-4)


def test_preprocess_module_matches_spec():
    spec = Preprocess(40, 32, (0.5,) * 3, (0.5,) * 3)
    image = make_image(48, 64, seed=7)
    assert torch.equal(PreprocessModule(spec)(image), spec(image))


@pytest.mark.parametrize(
    "h,w,resize,expected",
    [
        (300, 451, 256, (256, 384)),  # landscape: height is the shorter side
        (451, 300, 256, (384, 256)),
        (50, 50, 40, (40, 40)),
        (60, 50, 40, (48, 40)),
    ],
)
def test_geometry_resized_size_follows_torchvision(h, w, resize, expected):
    g = Preprocess(resize, 32).geometry(h, w)
    assert g.resized == expected
    assert g.input_size == (h, w)
    assert g.top == int(round((expected[0] - 32) / 2))
    assert g.left == int(round((expected[1] - 32) / 2))
    assert g.scale == pytest.approx(h / expected[0])


def test_geometry_rejects_resize_smaller_than_crop():
    with pytest.raises(ValueError):
        Preprocess(resize=20, crop=32).geometry(64, 64)


@pytest.mark.parametrize("h,w", [(48, 64), (60, 50), (300, 451), (872, 1000), (33, 200)])
def test_view_box_to_input_full_view_covers_footprint(h, w):
    spec = Preprocess(40, 32)
    g = spec.geometry(h, w)
    x0, y0, x1, y1 = g.view_box_to_input((0, 0, g.crop, g.crop))
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    # Every input pixel whose centre lands inside the view (in resized coordinates) is covered.
    sy, sx = h / g.resized[0], w / g.resized[1]
    cols = [x for x in range(w) if g.left <= (x + 0.5) / sx < g.left + g.crop]
    rows = [y for y in range(h) if g.top <= (y + 0.5) / sy < g.top + g.crop]
    assert cols and rows
    assert x0 <= min(cols) and max(cols) < x1
    assert y0 <= min(rows) and max(rows) < y1
    # ...and it is not much larger than the footprint (at most one input pixel per side, plus
    # a rounding pixel).
    assert min(cols) - x0 <= math.ceil(sx) and x1 - 1 - max(cols) <= math.ceil(sx)
    assert min(rows) - y0 <= math.ceil(sy) and y1 - 1 - max(rows) <= math.ceil(sy)


def test_view_box_to_input_sub_box_is_inside_full_box_and_monotone():
    g = Preprocess(40, 32).geometry(300, 451)
    full = g.view_box_to_input((0, 0, 32, 32))
    a = g.view_box_to_input((4, 6, 12, 14))
    b = g.view_box_to_input((5, 7, 12, 14))
    assert full[0] <= a[0] < a[2] <= full[2] and full[1] <= a[1] < a[3] <= full[3]
    assert b[0] >= a[0] and b[1] >= a[1]
    # The box is scaled: 8 view pixels span about 8 * scale input pixels.
    assert a[2] - a[0] >= 8 * g.scale - 1


@pytest.mark.parametrize("h,w", [(375, 500), (500, 375), (900, 300), (64, 80), (1200, 1600)])
def test_update_equals_full_preprocessing_and_its_gradient(h, w):
    spec = Preprocess(256, 224, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    base_image = make_image(h, w, seed=h)
    base = spec(base_image)
    box = (w // 3, h // 4, w // 3 + w // 7, h // 4 + h // 6)
    image = base_image.clone()
    patch = make_image(box[3] - box[1], box[2] - box[0], seed=w)
    image[:, box[1] : box[3], box[0] : box[2]] = patch
    a = image.clone().requires_grad_(True)
    b = image.clone().requires_grad_(True)
    full, part = spec(a), spec.update(b, base, box)
    assert torch.equal(full, part)
    weights = torch.randn(full.shape, generator=torch.Generator().manual_seed(0))
    (full * weights).sum().backward()
    (part * weights).sum().backward()
    inside = (slice(None), slice(box[1], box[3]), slice(box[0], box[2]))
    assert torch.allclose(a.grad[inside], b.grad[inside])
    assert float(b.grad[inside].abs().sum()) > 0


def test_update_outside_the_view_returns_the_base():
    spec = Preprocess(40, 32, (0.5,) * 3, (0.5,) * 3)
    image = make_image(40, 80, seed=1)  # the crop drops the left and right ends
    base = spec(image)
    assert spec.update(image, base, (0, 0, 3, 40)) is base


def test_preprocess_leaves_a_float64_input_untouched():
    img = torch.rand(3, 30, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    before = img.clone()
    Preprocess(32, 24)(img)
    assert torch.equal(img, before)
