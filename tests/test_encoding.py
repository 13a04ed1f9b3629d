"""encoding: 8-bit conversion, codecs and the straight-through stored round trip."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import make_image, to_uint8
from PIL import Image

from adaptanon.io.codecs import FORMATS, Codec, to_image, to_pixels


def random_pixels(h=37, w=53, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_to_pixels_rounds_and_clamps():
    img = torch.tensor([0.0, 1.0, -0.2, 1.7, 0.4 / 255, 0.6 / 255, 100.4 / 255, 254.6 / 255])
    img = img.view(1, 1, 8).expand(3, 1, 8)
    px = to_pixels(img)
    assert px.dtype == np.uint8 and px.shape == (1, 8, 3)
    assert px[0, :, 0].tolist() == [0, 255, 0, 255, 0, 1, 100, 255]


def test_to_image_to_pixels_round_trip():
    px = random_pixels()
    img = to_image(px)
    assert img.shape == (3, 37, 53) and img.dtype == torch.float32
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    assert np.array_equal(to_pixels(img), px)
    img2 = make_image(20, 30, seed=1)
    assert torch.equal(to_image(to_pixels(img2)), img2)
    # to_pixels does not keep a reference to the tensor's graph.
    leaf = img2.clone().requires_grad_(True)
    assert np.array_equal(to_pixels(leaf), to_uint8(img2))


def test_png_round_trip_is_lossless():
    px = random_pixels(seed=2)
    codec = Codec("png")
    assert codec.lossless and codec.extension == ".png"
    data = codec.encode(px)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(codec.decode(data), px)
    assert np.array_equal(codec.stored_pixels(to_image(px)), px)


@pytest.mark.parametrize("fmt,magic", [("jpg", b"\xff\xd8"), ("webp", b"RIFF")])
def test_lossy_encode_decode(fmt, magic):
    img = make_image(48, 64, seed=3)
    px = to_uint8(img)
    codec = Codec(fmt, 80)
    assert not codec.lossless and codec.extension == "." + fmt
    data = codec.encode(px)
    assert data.startswith(magic)
    back = codec.decode(data)
    assert back.shape == px.shape and back.dtype == np.uint8
    err = np.abs(back.astype(int) - px.astype(int))
    assert err.mean() < 10  # close, but
    assert err.max() > 0  # lossy
    # The stored pixels are exactly what decoding the encoded file gives.
    assert np.array_equal(codec.stored_pixels(img), back)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == FORMATS[fmt]


def test_lower_quality_is_smaller_and_worse():
    px = to_uint8(make_image(64, 64, seed=4))
    hi, lo = Codec("jpg", 95), Codec("jpg", 10)
    d_hi, d_lo = hi.encode(px), lo.encode(px)
    assert len(d_lo) < len(d_hi)
    e_hi = np.abs(hi.decode(d_hi).astype(int) - px).mean()
    e_lo = np.abs(lo.decode(d_lo).astype(int) - px).mean()
    assert e_lo > e_hi


@pytest.mark.parametrize("quality", [0, 101, -5])
def test_quality_bounds(quality):
    with pytest.raises(ValueError):
        Codec("jpg", quality)


def test_quality_extremes_and_aliases_accepted_and_unknown_format_rejected():
    Codec("jpg", 1)
    Codec("webp", 100)
    with pytest.raises(ValueError):
        Codec("gif")
    assert Codec("jpeg").format == Codec("JPG").format == "jpg"


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_output_has_no_exif(fmt):
    data = Codec(fmt, 90).encode(random_pixels(seed=5))
    with Image.open(io.BytesIO(data)) as im:
        assert len(im.getexif()) == 0
        assert "exif" not in im.info
        assert not any(k.lower().startswith(("xmp", "xml")) for k in im.info)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_roundtrip_forward_is_stored_backward_is_identity(fmt):
    codec = Codec(fmt, 70)
    img = make_image(24, 32, seed=6)
    x = (img + 0.3 / 255).clamp(0, 1).requires_grad_(True)  # not on the 8-bit grid
    y = codec.roundtrip(x)
    assert np.array_equal(to_pixels(y), codec.stored_pixels(x))
    assert torch.allclose(y.detach() * 255, (y.detach() * 255).round(), atol=1e-4)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    (y * w).sum().backward()
    assert torch.allclose(x.grad, w)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (37, 53), (300, 17)])
def test_png_files_hold_exactly_their_pixels_with_or_without_the_fast_codecs(monkeypatch, shape):
    import adaptanon.io.codecs as codecs

    px = random_pixels(*shape, seed=shape[0])
    fast = Codec("png").encode(px)
    # Whoever wrote it (fpng when adaptanon[fast] is installed), Pillow reads the pixels.
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(fast)).convert("RGB")), px)
    assert np.array_equal(Codec("png").decode(fast), px)
    monkeypatch.setattr(codecs, "optional_module", lambda module: None)
    plain = Codec("png").encode(px)
    assert np.array_equal(Codec("png").decode(plain), px)
    assert np.array_equal(Codec("png").decode(fast), px)


def test_the_fast_png_codecs_are_used_when_installed():
    pytest.importorskip("fpng")
    pytest.importorskip("pyspng")
    import adaptanon.io.codecs as codecs

    px = random_pixels(64, 64)
    data = Codec("png").encode(px)
    assert data == codecs._fast_png_encode(px)  # fpng's file, not Pillow's
    assert np.array_equal(codecs._fast_png_decode(data), px)
    # A file libspng cannot read is left to Pillow.
    assert codecs._fast_png_decode(b"not a png") is None
