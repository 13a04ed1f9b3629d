"""filters: kernels, blur, mosaic, solid fill and region-limited anonymization."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_image

from adaptanon.method.filters import (
    Blur,
    Mask,
    Mosaic,
    anonymize,
    gaussian_blur,
    gaussian_kernel1d,
    parse_filter,
    pixelate,
    solid,
)
from adaptanon.regions import region_mask


@pytest.mark.parametrize("ksize,sigma", [(1, 1.0), (5, 1.0), (9, 10.0), (15, 2.5)])
def test_gaussian_kernel_is_normalised_symmetric_and_peaked(ksize, sigma):
    k = gaussian_kernel1d(ksize, sigma)
    assert k.shape == (ksize,)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(k, k.flip(0))
    assert int(k.argmax()) == ksize // 2
    assert bool((k > 0).all())


@pytest.mark.parametrize("ksize,sigma", [(0, 1.0), (4, 1.0), (-3, 1.0), (5, 0.0), (5, -1.0)])
def test_gaussian_kernel_rejects_bad_parameters(ksize, sigma):
    with pytest.raises(ValueError):
        gaussian_kernel1d(ksize, sigma)


def test_gaussian_blur_preserves_constant_and_shape():
    img = torch.full((3, 20, 17), 0.3)
    out = gaussian_blur(img, 9, 3.0)
    assert out.shape == img.shape
    assert torch.allclose(out, img, atol=1e-6)
    batch = torch.full((2, 3, 11, 13), 0.7)
    assert gaussian_blur(batch, 5, 1.0).shape == batch.shape


@pytest.mark.parametrize("h,w,ksize", [(37, 70, 9), (64, 64, 5), (100, 129, 31), (1, 1, 5)])
def test_gaussian_blur_equals_the_separable_sums(h, w, ksize):
    """Known answer: reflected borders, then the 1-D kernel along rows and columns, summed
    tap by tap in float64; the window's padding to a multiple of BLUR_SHAPE_STEP on the
    CPU changes nothing, the bottom and right edges included."""
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h + w))
    sigma = ksize / 3
    k = gaussian_kernel1d(ksize, sigma, image.device).double()
    pad = ksize // 2
    mode = "reflect" if min(h, w) > pad else "replicate"
    x = F.pad(image.double()[None], (pad, pad, pad, pad), mode=mode)[0]
    rows = sum(k[j] * x[:, :, j : j + w] for j in range(ksize))
    expected = sum(k[j] * rows[:, j : j + h, :] for j in range(ksize))
    got = gaussian_blur(image, ksize, sigma)
    assert got.shape == image.shape
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0)


def test_gaussian_blur_reduces_noise_variance():
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(3, 40, 40, generator=gen)
    out = gaussian_blur(noise, 9, 3.0)
    assert float(out.var()) < 0.25 * float(noise.var())
    assert float(out.mean()) == pytest.approx(float(noise.mean()), abs=0.02)


def test_gaussian_blur_kernel_larger_than_image_uses_replicate_padding():
    img = make_image(4, 5, seed=1)
    out = gaussian_blur(img, 11, 5.0)
    assert out.shape == img.shape and torch.isfinite(out).all()
    assert float(out.min()) >= float(img.min()) - 1e-6
    assert float(out.max()) <= float(img.max()) + 1e-6


def test_gradcheck_gaussian_blur():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gaussian_blur(t, 5, 1.5), (x,))


@pytest.mark.parametrize("block", [1, 2, 3])
def test_gradcheck_pixelate(block):
    gen = torch.Generator().manual_seed(block)
    x = torch.rand(2, 5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: pixelate(t, block), (x,))


@pytest.mark.parametrize("block", [2, 3, 4, 7])
def test_pixelate_cells_are_constant_and_equal_their_mean(block):
    img = make_image(17, 22, seed=block)
    out = pixelate(img, block)
    assert out.shape == img.shape
    h, w = img.shape[1:]
    for y0 in range(0, h, block):
        for x0 in range(0, w, block):
            cell_in = img[:, y0 : y0 + block, x0 : x0 + block]  # partial at the border
            cell_out = out[:, y0 : y0 + block, x0 : x0 + block]
            mean = cell_in.mean(dim=(1, 2), keepdim=True)
            assert torch.allclose(cell_out, mean.expand_as(cell_out), atol=1e-6)


def test_pixelate_block_one_is_identity_and_zero_rejected():
    img = make_image(9, 9, seed=0)
    assert torch.allclose(pixelate(img, 1), img)
    with pytest.raises(ValueError):
        pixelate(img, 0)


def test_solid_scalar_and_per_channel():
    img = make_image(5, 6, seed=0)
    assert torch.equal(solid(img, 0.25), torch.full_like(img, 0.25))
    out = solid(img, (0.1, 0.2, 0.3))
    for c, v in enumerate((0.1, 0.2, 0.3)):
        assert torch.allclose(out[c], torch.full_like(out[c], v))


FILTERS = [Blur(), Blur(5, 2.0, scale_to_input=False), Mask(0.25), Mosaic(4)]


@pytest.mark.parametrize("filt", FILTERS, ids=lambda f: f.describe())
@pytest.mark.parametrize("shape", ["rect", "ellipse"])
def test_anonymize_changes_only_pixels_inside_boxes(filt, shape):
    img = make_image(48, 64, seed=11)
    boxes = [(5, 6, 30, 28), (40, 20, 60, 45)]
    out, mask = anonymize(img, boxes, filt, scale=1.5, shape=shape)
    assert out.shape == img.shape and mask.shape == (1, 48, 64) and mask.dtype == torch.bool
    assert torch.equal(mask[0], region_mask(48, 64, boxes, shape))
    outside = ~mask.expand_as(img)
    assert torch.equal(out[outside], img[outside])  # bit-identical outside
    changed = (out != img).any(0)
    assert bool(changed.any())
    assert not bool((changed & ~mask[0]).any())
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_anonymize_ellipse_leaves_box_corners_untouched():
    img = make_image(40, 50, seed=2)
    box = (10, 8, 40, 32)
    out, mask = anonymize(img, [box], Mask(1.0), shape="ellipse")
    x0, y0, x1, y1 = box
    for y, x in [(y0, x0), (y0, x1 - 1), (y1 - 1, x0), (y1 - 1, x1 - 1)]:
        assert not bool(mask[0, y, x])
        assert torch.equal(out[:, y, x], img[:, y, x])
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    assert bool(mask[0, cy, cx]) and torch.allclose(out[:, cy, cx], torch.ones(3))
    # The ellipse is strictly smaller than the box but covers most of it (pi/4 ~ 0.785).
    frac = float(mask[0, y0:y1, x0:x1].float().mean())
    assert 0.7 < frac < 0.85


def test_anonymize_mask_fills_with_value():
    img = make_image(30, 30, seed=3)
    out, mask = anonymize(img, [(3, 4, 20, 25)], Mask(0.25))
    assert torch.allclose(out[:, 4:25, 3:20], torch.full((3, 21, 17), 0.25))
    assert int(mask.sum()) == 21 * 17


def test_anonymize_blur_reads_context_outside_the_box():
    """A blurred box next to a bright area gets some of its light (context is read), while
    the bright area itself stays untouched."""
    img = torch.zeros(3, 30, 40)
    img[:, :, 20:] = 1.0
    out, _ = anonymize(img, [(10, 5, 20, 25)], Blur(9, 3.0, scale_to_input=False))
    assert float(out[:, 5:25, 19].min()) > 0.05
    assert torch.equal(out[:, :, 20:], img[:, :, 20:])


def test_anonymize_overlapping_boxes_filter_from_the_original():
    img = make_image(40, 40, seed=4)
    filt = Blur(7, 2.0, scale_to_input=False)
    a, b = (2, 2, 25, 25), (15, 15, 38, 38)
    both, _ = anonymize(img, [a, b], filt)
    only_b, _ = anonymize(img, [b], filt)
    only_a, _ = anonymize(img, [a], filt)
    # The later box wins in the overlap, computed from the original (not filtered twice).
    assert torch.allclose(both[:, 15:38, 15:38], only_b[:, 15:38, 15:38])
    assert torch.allclose(both[:, 2:15, 2:25], only_a[:, 2:15, 2:25])


def test_anonymize_no_boxes_is_identity():
    img = make_image(20, 20, seed=5)
    out, mask = anonymize(img, [], Blur())
    assert torch.equal(out, img) and not bool(mask.any())


def test_blur_scaling_grows_kernel_with_scale():
    blur = Blur(9, 10.0)
    k1, s1 = blur._params(1.0)
    k3, s3 = blur._params(3.0)
    assert (k1, s1) == (9, 10.0)
    assert k3 > k1 and k3 % 2 == 1 and s3 == pytest.approx(30.0)
    assert blur.context(3.0) > blur.context(1.0) == 4
    fixed = Blur(9, 10.0, scale_to_input=False)
    assert fixed._params(3.0) == (9, 10.0)
    assert fixed.context(3.0) == fixed.context(1.0)


def test_blur_with_larger_scale_smooths_more():
    gen = torch.Generator().manual_seed(1)
    noise = torch.rand(3, 60, 60, generator=gen)
    box = [(10, 10, 50, 50)]
    small, _ = anonymize(noise, box, Blur(5, 1.0), scale=1.0)
    large, _ = anonymize(noise, box, Blur(5, 1.0), scale=3.0)
    assert float(large[:, 10:50, 10:50].var()) < float(small[:, 10:50, 10:50].var())


def test_mosaic_scales_block_with_input_resolution():
    img = make_image(32, 32, seed=6)
    out, _ = anonymize(img, [(0, 0, 32, 32)], Mosaic(4), scale=2.0)
    # 8x8 cells at scale 2: each is constant.
    cell = out[:, 8:16, 16:24]
    assert torch.allclose(cell, cell[:, :1, :1].expand_as(cell))
    unscaled, _ = anonymize(img, [(0, 0, 32, 32)], Mosaic(4, scale_to_input=False), scale=2.0)
    # Without scaling the cells are 4x4: neighbouring 4x4 cells differ.
    assert not torch.allclose(unscaled[:, 0:4, 0:4], unscaled[:, 0:4, 4:8])
    assert torch.allclose(unscaled[:, 0:4, 0:4], unscaled[:, :1, :1].expand(3, 4, 4))


def test_parse_filter_and_descriptions():
    assert isinstance(parse_filter("blur", kernel=5, sigma=2.0), Blur)
    assert parse_filter("mask", value=0.1).describe() == "mask(value=0.1)"
    assert isinstance(parse_filter("mosaic", block=3), Mosaic)
    assert "kernel=9" in Blur().describe()
    with pytest.raises(ValueError):
        parse_filter("smudge")
