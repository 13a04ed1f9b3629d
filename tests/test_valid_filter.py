"""The float64 filtering behind SSIM and the detail measure: known sums, both backends."""

from __future__ import annotations

import pytest
import torch

from adaptanon.method import metrics
from adaptanon.method.metrics import laplacian, valid_filter

BACKENDS = ["opencv", "torch"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "torch":
        monkeypatch.setattr(metrics, "optional_module", lambda module: None)
    else:
        pytest.importorskip("cv2")
    return request.param


def test_box_sums_of_a_ramp(backend):
    """Row index times 10 plus column index: a 1x3 then a 2x1 box sum has a closed form."""
    h, w = 5, 7
    rows = torch.arange(h, dtype=torch.float64)[:, None]
    cols = torch.arange(w, dtype=torch.float64)[None, :]
    maps = torch.stack([10 * rows + cols, -(10 * rows + cols)])
    out = valid_filter(
        maps, torch.ones(1, 3, dtype=torch.float64), torch.ones(2, 1, dtype=torch.float64)
    )
    assert out.shape == (2, h - 1, w - 2)
    i = torch.arange(h - 1, dtype=torch.float64)[:, None]
    j = torch.arange(w - 2, dtype=torch.float64)[None, :]
    expected = 3 * (10 * i + 10 * (i + 1)) + 2 * (3 * j + 3)
    assert torch.equal(out[0], expected) and torch.equal(out[1], -expected)


def test_an_asymmetric_kernel_is_correlated_not_convolved(backend):
    maps = torch.arange(6, dtype=torch.float64).view(1, 1, 6)
    out = valid_filter(maps, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert out.tolist() == [[[0.0, 1.0, 2.0, 3.0, 4.0]]]


def test_laplacian_of_a_quadratic_is_constant(backend):
    y, x = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="ij")
    image = torch.stack([x**2 + y**2, 3 * x**2, -(y**2)]).double()
    out = laplacian(image)
    assert out.shape == (3, 4, 6)
    assert torch.equal(
        out, torch.tensor([4.0, 6.0, -2.0], dtype=torch.float64).view(3, 1, 1).expand(3, 4, 6)
    )


def test_the_backends_agree_on_random_maps(monkeypatch):
    pytest.importorskip("cv2")
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 37, 53, generator=gen, dtype=torch.float64)
    k = torch.rand(11, generator=gen, dtype=torch.float64)
    fast = valid_filter(maps, k[None], k[:, None])
    monkeypatch.setattr(metrics, "optional_module", lambda module: None)
    plain = valid_filter(maps, k[None], k[:, None])
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-13)


def test_maps_must_be_float64_and_three_dimensional():
    with pytest.raises(ValueError, match=r"\(N, H, W\) float64"):
        valid_filter(torch.zeros(2, 4, 4), torch.ones(1, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(N, H, W\) float64"):
        valid_filter(torch.zeros(4, 4, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))
