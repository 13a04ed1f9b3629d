"""The face obfuscation of Yang et al. (``--filter yang``): values computed independently
with numpy on small images, the privacy floor, the pixels it may change, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data

from adaptanon.method import Settings, process_batch
from adaptanon.method.filters import (
    BLUR_MIN_KERNEL,
    BLUR_MIN_SIGMA,
    FILTERS,
    Yang,
    anonymize,
    parse_filter,
    yang_obfuscate,
    yang_params,
)
from adaptanon.regions import ExplicitBoxes


def np_kernel(sigma: float, radius: int) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def np_blur(img: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """Separable Gaussian of a 2-D array with reflected borders (numpy only)."""
    k = np_kernel(sigma, radius)
    p = np.pad(img, radius, mode="reflect")
    rows = np.stack([np.convolve(r, k, mode="valid") for r in p])
    return np.stack([np.convolve(c, k, mode="valid") for c in rows.T]).T


def np_yang(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Yang et al.'s composite for one face, written out: enlarge the box by 0.1 of its
    longer side, blur the image and the enlarged box's indicator with sigma 0.1 * side
    (at least 2), blend."""
    x0, y0, x1, y1 = box
    sigma = max(0.1 * max(x1 - x0, y1 - y0), 2.0)
    m, r = round(sigma), math.ceil(3 * sigma)
    ind = np.zeros_like(img)
    ind[max(0, y0 - m) : y1 + m, max(0, x0 - m) : x1 + m] = 1.0
    w = np_blur(ind, sigma, r)
    return img + w * (np_blur(img, sigma, r) - img)


def test_step_image_by_hand() -> None:
    """A 1-channel step (0 left of x=20, 1 from it): d=10 -> sigma 2 (the floor; 0.1 * 10 =
    1), margin 2, radius 6. At the box's centre the soft mask is exactly 1 (the enlarged
    box covers the whole kernel) and the value is the blurred step, 0.5 + k0 / 2."""
    img = np.zeros((40, 40))
    img[:, 20:] = 1.0
    box = (15, 15, 25, 25)
    assert yang_params(box) == (2.0, 2, 6)
    out, mask = yang_obfuscate(torch.from_numpy(img)[None], [box])
    k0 = np_kernel(2.0, 6)[6]
    assert out[0, 20, 20].item() == pytest.approx(0.5 + k0 / 2, abs=1e-6)
    # Every value matches the numpy composite; the pixels it may change are the box
    # grown by margin + radius = 8 on each side.
    np.testing.assert_allclose(out[0].numpy(), np_yang(img, box), atol=1e-6)
    expected = np.zeros((40, 40), dtype=bool)
    expected[7:33, 7:33] = True
    np.testing.assert_array_equal(mask[0].numpy(), expected)


def test_impulse_and_box_at_the_border_by_hand() -> None:
    """An impulse beside a face box that touches the image's corner (borders reflected,
    as a blur of the whole image), and a larger face: d=40 -> sigma 4, margin 4."""
    img = np.zeros((48, 56))
    img[6, 8] = 1.0
    img[30, 40] = 1.0
    for box in [(0, 0, 10, 12), (20, 4, 60, 44)]:
        box = (box[0], box[1], min(box[2], 56), min(box[3], 48))
        out, mask = yang_obfuscate(torch.from_numpy(img)[None], [box])
        np.testing.assert_allclose(out[0].numpy(), np_yang(img, box), atol=1e-6)
        changed = np.abs(np_yang(img, box) - img) > 1e-12
        assert mask[0].numpy()[changed].all()
    assert yang_params((20, 4, 60, 44)) == (4.0, 4, 12)


def test_per_face_sigma_and_the_privacy_floor() -> None:
    """Sigma follows each face (0.1 of its longer side, input pixels, whatever the scale)
    and never goes below the blur floor; the kernel is always wider than the floor's."""
    for box, sigma in [((0, 0, 3, 2), BLUR_MIN_SIGMA), ((0, 0, 200, 120), 20.0)]:
        s, margin, radius = yang_params(box)
        assert s == sigma and s >= BLUR_MIN_SIGMA
        assert 2 * radius + 1 >= max(BLUR_MIN_KERNEL, 6 * s)
        assert margin == round(s)
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    boxes = [(20, 20, 30, 34)]
    small, _ = anonymize(image, boxes, Yang(), scale=0.1)
    large, _ = anonymize(image, boxes, Yang(), scale=10.0)
    assert torch.equal(small, large)
    # A 2x2 face (0.1 * 2 = 0.2) still gets the floor's sigma 2 and a 2-pixel margin: an
    # impulse there keeps 0.04 after the blur, and the soft mask (0.72 at the centre, as
    # at the corners of a large face) leaves 0.31 of it.
    spike = np.zeros((32, 32))
    spike[16, 16] = 1.0
    out, _ = yang_obfuscate(torch.from_numpy(spike)[None], [(15, 15, 17, 17)])
    assert out[0, 16, 16].item() == pytest.approx(np_yang(spike, (15, 15, 17, 17))[16, 16])
    assert out[0, 16, 16] < 0.32


def test_changes_only_inside_its_mask_and_several_faces_blend() -> None:
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    boxes = [(170, 40, 290, 190), (250, 100, 330, 180), (10, 10, 40, 40)]
    for shape in ("rect", "ellipse"):
        out, mask = anonymize(photo, boxes, Yang(), shape=shape)
        assert mask.shape == (1, 512, 512)
        assert torch.equal(out[:, ~mask[0]], photo[:, ~mask[0]])
        assert float(out.min()) >= 0 and float(out.max()) <= 1
    # One face alone equals the single-face composite; overlapping ones stay in [0, 1]
    # and each face is at least as blurred as alone (the soft masks' union).
    alone, _ = yang_obfuscate(photo, boxes[:1])
    both, _ = yang_obfuscate(photo, boxes[:2])
    x0, y0, x1, y1 = boxes[0]
    face = (slice(None), slice(y0, y1), slice(x0, x1))
    assert (both[face] - photo[face]).abs().mean() >= 0.9 * (alone[face] - photo[face]).abs().mean()


def test_gradients() -> None:
    x = (0.1 + 0.8 * torch.rand(2, 14, 18, dtype=torch.float64)).requires_grad_(True)
    boxes = [(4, 3, 9, 8), (7, 6, 12, 11)]
    assert torch.autograd.gradcheck(lambda t: yang_obfuscate(t, boxes)[0], (x,))


def test_registered_and_in_the_pipeline(tiny) -> None:
    assert FILTERS["yang"] is Yang
    filt = parse_filter("yang")
    assert filt.describe() == "yang(margin=0.1,sigma=0.1,truncate=3.0)"
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    photo = torch.nn.functional.avg_pool2d(photo[None], 4)[0]
    photo = torch.round(photo * 255) / 255
    source = ExplicitBoxes({"a.png": [(42, 10, 72, 48)]})
    (out,) = process_batch(
        tiny, source, Settings(filter=filt), ["a.png"], [photo], keep_images=True
    )
    assert out.status.value in ("unchanged", "corrected"), out.record.error
    assert out.images is not None
    mask = out.images.mask[0]
    assert int(mask.sum()) > 30 * 38  # the margin and the fade are part of the region
    assert torch.equal(out.images.final[:, ~mask], photo[:, ~mask])
