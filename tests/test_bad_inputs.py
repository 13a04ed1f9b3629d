"""Hardening (issue 7): every bad input contained to its own image, unusual but legitimate
images read correctly, bounded resources, validated options, untrusted models documented."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_image, save_png, to_uint8
from PIL import ExifTags, Image, ImageFile, ImageOps

from adaptanon.cli import main
from adaptanon.io.images import (
    DEFAULT_MAX_PIXELS,
    current_pixel_limit,
    pixel_limit,
    read_image,
)
from adaptanon.io.manifest import read_manifest
from adaptanon.preprocessing import Preprocess, resample
from adaptanon.preprocessing.pil import MAX_RESIZED_PIXELS, pil_vertical_first

TINY = ["--model", "tiny_factory:make", "--device", "cpu", "-q"]

# Pillow warns about the damage these tests make on purpose ("Corrupt EXIF data", ...).
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:PIL"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]


def run_cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def png_bytes(width: int, height: int, bit_depth: int, colour: int, raw: bytes) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB): ``raw`` is the unfiltered
    scanline data, without the filter bytes (empty: a header with no image data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = len(raw) // height
    lines = b"".join(b"\x00" + raw[i * row : (i + 1) * row] for i in range(height)) if raw else b""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(lines))
        + chunk(b"IEND", b"")
    )


def refusal(path: Path, **kw: object) -> str:
    with pytest.raises(ValueError) as info:
        read_image(path, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- wide and float modes


def test_16bit_grey_png_keeps_its_high_byte(tmp_path):
    """A 16-bit greyscale PNG used to come out 100% white (values clipped at 255)."""
    values = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 54).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode == "I;16"
    px = read_image(tmp_path / "g16.png")
    assert px.shape == (30, 40, 3) and px.dtype == np.uint8
    expected = (values >> 8).astype(np.uint8)
    for c in range(3):
        assert np.array_equal(px[:, :, c], expected)
    assert px.min() == 0 and 200 < px.max() < 255


def test_16bit_big_endian_mode(tmp_path):
    values = np.array([[0, 255, 256, 65535], [4660, 32768, 65280, 1]], dtype=">u2")
    im = Image.frombytes("I;16B", (4, 2), values.tobytes())
    im.save(tmp_path / "b.tif")
    px = read_image(tmp_path / "b.tif")
    assert px[:, :, 0].tolist() == [[0, 0, 1, 255], [18, 128, 255, 0]]


def test_16bit_rgb_png(tmp_path):
    rgb = np.array([[[0, 65535, 4660], [257 * 128, 100, 65280]]], dtype=">u2")
    (tmp_path / "rgb16.png").write_bytes(png_bytes(2, 1, 16, 2, rgb.tobytes()))
    px = read_image(tmp_path / "rgb16.png")
    assert px.tolist() == [[[0, 255, 18], [128, 0, 255]]]


def test_32bit_integer_in_16bit_range_is_16bit(tmp_path):
    """16-bit PGM decodes to mode I: read like 16-bit, not clipped."""
    values = np.array([[0, 1000, 40000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "p.pgm")
    with Image.open(tmp_path / "p.pgm") as im:
        assert im.mode == "I"
    assert read_image(tmp_path / "p.pgm")[:, :, 1].tolist() == [[0, 3, 156, 255]]


def test_32bit_integer_outside_16bit_range_is_stretched(tmp_path):
    values = np.array([[-100, 0, 100, 1_000_000]], dtype=np.int32)
    Image.fromarray(values, "I").save(tmp_path / "i.tif")
    px = read_image(tmp_path / "i.tif")[:, :, 0]
    assert px.tolist() == [[0, 0, 0, 255]]


def test_float_image_in_unit_range_scales_by_255(tmp_path):
    values = np.array([[0.0, 0.5, 1.0, 0.2]], dtype=np.float32)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    assert read_image(tmp_path / "f.tif")[:, :, 2].tolist() == [[0, 128, 255, 51]]


def test_float_image_outside_unit_range_is_stretched(tmp_path):
    values = np.array([[-2.0, 0.0, 2.0, 6.0]], dtype=np.float32)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    assert read_image(tmp_path / "f.tif")[:, :, 0].tolist() == [[0, 64, 128, 255]]


def test_float_image_with_nan_is_refused(tmp_path):
    values = np.array([[0.0, np.nan], [0.5, 1.0]], dtype=np.float32)
    Image.fromarray(values, "F").save(tmp_path / "nan.tif")
    assert "NaN" in refusal(tmp_path / "nan.tif")


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "RGB", "LA", "RGBA"])
def test_ordinary_modes_read_as_rgb(tmp_path, mode):
    img = Image.fromarray(to_uint8(make_image(9, 11, 3))).convert(mode)
    fmt = "tiff" if mode == "CMYK" else "png"
    img.save(tmp_path / f"x.{fmt}")
    px = read_image(tmp_path / f"x.{fmt}")
    assert px.shape == (9, 11, 3) and px.dtype == np.uint8


def test_transparent_pixels_are_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    px = read_image(tmp_path / "t.png")
    assert px[0, 0].tolist() == [10, 20, 30] and px[1, 1].tolist() == [255, 255, 255]


# ---------------------------------------------------------------- multi-frame


def frames(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (8, 6), (40 * i, 255 - 40 * i, 0)) for i in range(n)]


@pytest.mark.parametrize("name", ["anim.gif", "anim.webp", "anim.png", "pages.tif"])
def test_multi_frame_images_are_refused(tmp_path, name):
    first, *rest = frames(3)
    first.save(tmp_path / name, save_all=True, append_images=rest)
    message = refusal(tmp_path / name)
    assert "multi-frame image (3 frames): not supported, split the frames first" in message


def test_single_frame_gif_is_read(tmp_path):
    frames(1)[0].save(tmp_path / "one.gif")
    assert read_image(tmp_path / "one.gif").shape == (6, 8, 3)


def test_mpo_jpeg_is_read_as_its_primary_image(tmp_path):
    first, second = frames(2)
    first.save(tmp_path / "stereo.jpg", "MPO", save_all=True, append_images=[second])
    with Image.open(tmp_path / "stereo.jpg") as im:
        assert im.format == "MPO" and im.n_frames == 2
    px = read_image(tmp_path / "stereo.jpg")
    assert px.shape == (6, 8, 3) and px[..., 1].mean() > 200  # the first (green) frame


# ---------------------------------------------------------------- decoder failures


def exif_jpeg() -> tuple[bytes, int, int]:
    """A 20x30 JPEG with EXIF orientation 6 (rotate) and a GPS IFD; returns the file and
    the range of bytes holding the GPS IFD and its data."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 30.0, 1.5)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 2.0)
    block = exif.tobytes()
    buf = io.BytesIO()
    Image.fromarray(to_uint8(make_image(20, 30, 1))).save(buf, "JPEG", exif=block)
    data = buf.getvalue()
    tiff = data.index(b"Exif\x00\x00") + 6
    reread = Image.Exif()
    reread.load(block)
    gps_offset = reread[ExifTags.IFD.GPSInfo]
    return data, tiff + gps_offset, tiff + len(block) - 6


def test_damaged_gps_block_still_reads_upright(tmp_path):
    """Two bytes changed in the GPS block made Pillow's exif_transpose raise
    ``TypeError: can't concat str to bytes``; the orientation lives in IFD0 and is
    still applied."""
    data, start, stop = exif_jpeg()
    assert read_image_bytes(tmp_path, data).shape == (30, 20, 3)
    pillow_failed = 0
    for i in range(start, stop - 1):
        for flip in (0xFF, 0x41):
            damaged = bytearray(data)
            damaged[i] ^= flip
            damaged[i + 1] ^= 0x20
            try:
                with Image.open(io.BytesIO(bytes(damaged))) as im:
                    ImageOps.exif_transpose(im)
            except Exception:  # noqa: BLE001 - counting Pillow's own failures
                pillow_failed += 1
            assert read_image_bytes(tmp_path, bytes(damaged)).shape == (30, 20, 3), i
    assert pillow_failed > 0, "no damage that Pillow's exif_transpose fails on was made"


def read_image_bytes(tmp_path: Path, data: bytes, name: str = "x.jpg") -> np.ndarray:
    path = tmp_path / name
    path.write_bytes(data)
    return read_image(path)


def test_decoder_runtime_error_becomes_value_error(tmp_path):
    """An AVIF named .jpg with a damaged box raised ``RuntimeError: Failed to decode``."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(make_image(32, 48, 2))).save(buf, "AVIF")
    data = buf.getvalue()
    errors = set()
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x5A
        (tmp_path / "a.jpg").write_bytes(bytes(damaged))
        try:
            px = read_image(tmp_path / "a.jpg")  # a flip in a size field may decode
            assert px.ndim == 3 and px.shape[2] == 3 and px.dtype == np.uint8
        except ValueError as exc:
            assert "\n" not in str(exc)
            errors.add(str(exc).split(": ", 1)[1][:20])
    assert any(e.startswith("RuntimeError") for e in errors), errors


def test_unknown_format_and_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    assert refusal(tmp_path / "e.png").endswith("empty file")
    (tmp_path / "t.jpg").write_bytes(b"just some text, not an image")
    assert "not a JPEG, PNG" in refusal(tmp_path / "t.jpg")


def test_formats_outside_the_list_are_refused(tmp_path):
    """EPS would hand the file to Ghostscript; TGA and others are refused too."""
    Image.new("RGB", (4, 4)).save(tmp_path / "x.tga")
    assert "not a JPEG" in refusal(tmp_path / "x.tga")
    (tmp_path / "x.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\n")
    assert "not a JPEG" in refusal(tmp_path / "x.jpg")


# ---------------------------------------------------------------- bounded resources


def test_pixel_limit_is_checked_from_the_header(tmp_path, monkeypatch):
    """A 12000x10000 header over a few bytes of data: refused before anything is decoded
    (Pillow decodes in ``ImageFile.load``, which is never called for it)."""
    decoded: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        decoded.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    save_png(make_image(30, 40, 0), tmp_path / "small.png")
    read_image(tmp_path / "small.png")
    assert set(decoded) == {(40, 30)}  # the spy does see an image being decoded
    decoded.clear()
    (tmp_path / "big.png").write_bytes(png_bytes(12000, 10000, 8, 0, b""))
    message = refusal(tmp_path / "big.png")
    assert decoded == []
    assert "12000x10000 = 120,000,000 pixels, over the limit of 100,000,000" in message
    (tmp_path / "big.png").write_bytes(png_bytes(100000, 100000, 8, 0, b""))
    assert "exceeds limit" in refusal(tmp_path / "big.png")  # Pillow's own bomb guard


def test_pixel_limit_argument_and_context(tmp_path):
    save_png(make_image(30, 40, 0), tmp_path / "a.png")
    assert read_image(tmp_path / "a.png", max_pixels=1200).shape == (30, 40, 3)
    assert "1,200 pixels, over the limit of 1,199" in refusal(tmp_path / "a.png", max_pixels=1199)
    assert current_pixel_limit() == DEFAULT_MAX_PIXELS
    with pixel_limit(100):
        assert current_pixel_limit() == 100
        assert "over the limit of 100 " in refusal(tmp_path / "a.png")
        assert read_image(tmp_path / "a.png", max_pixels=10**6).shape == (30, 40, 3)
    assert current_pixel_limit() == DEFAULT_MAX_PIXELS


def test_max_pixels_option_makes_large_images_errors(tmp_path):
    root = tmp_path / "in"
    save_png(make_image(30, 40, 0), root / "big.png")
    save_png(make_image(20, 20, 1), root / "small.png")
    out = tmp_path / "out"
    res = run_cli("anonymize", root, "-o", out, *TINY, "--regions", "saliency:8",
                  "--max-pixels", 1000)  # fmt: skip
    assert res.exit_code == 1, res.output
    recs = {Path(r["input"]).name: r for r in read_manifest(out / "manifest.jsonl")}
    assert recs["big.png"]["status"] == "error"
    assert "over the limit of 1,000 (--max-pixels)" in recs["big.png"]["error"]
    assert recs["small.png"]["status"] != "error"
    assert current_pixel_limit() == DEFAULT_MAX_PIXELS  # restored after the command
    assert "--max-pixels" in run_cli("anonymize", "--help").output


def test_extreme_aspect_ratio_is_refused_by_the_view_bound():
    """A 10 x 40000 strip resizes (shorter side 256) to 256 x 1024000: refused."""
    with pytest.raises(ValueError, match="aspect ratio 4000:1 is too extreme"):
        Preprocess().geometry(10, 40000)
    g = Preprocess().geometry(10, 10000)  # 256 x 256000: under the bound
    assert g.resized == (256, 256000)
    assert 256 * 256000 <= MAX_RESIZED_PIXELS


def test_elongated_image_is_an_error_in_the_cli(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    Image.new("RGB", (70000, 1), (90, 120, 30)).save(root / "strip.png")
    save_png(make_image(20, 20, 1), root / "ok.png")
    out = tmp_path / "out"
    res = run_cli("anonymize", root, "-o", out, *TINY, "--regions", "saliency:8")
    assert res.exit_code == 1, res.output
    recs = {Path(r["input"]).name: r for r in read_manifest(out / "manifest.jsonl")}
    assert recs["strip.png"]["status"] == "error"
    assert "aspect ratio 70000:1 is too extreme" in recs["strip.png"]["error"]
    assert recs["ok.png"]["status"] != "error"


def test_upscaled_view_is_cheap_and_exact(monkeypatch):
    """A 10x10000 image made the default preprocessing ask for 20.5 GB: Pillow's resize
    order was found by emulating the full 256x256000 resize with a dense 256000x10000
    matrix. Now only a window is emulated (every pass computes at most a 64x64 window of
    outputs from the few inputs they read), and the crop still matches Pillow."""
    passes: list[tuple[int, int, int]] = []
    linear_pass = resample.linear_pass

    def spy(x: torch.Tensor, taps: resample.Taps, dim: int, start: int, stop: int) -> torch.Tensor:
        out = linear_pass(x, taps, dim, start, stop)
        passes.append((stop - start, x.numel(), out.numel()))
        return out

    monkeypatch.setattr(resample, "linear_pass", spy)
    pil_vertical_first.cache_clear()
    resample.pil_order.cache_clear()
    pil_vertical_first(10, 10000, 256, 256000)
    assert len(passes) == 4, passes  # the two passes, in both orders
    assert all(n <= 64 and max(a, b) <= 3 * 64 * 64 for n, a, b in passes), passes
    pixels = np.random.default_rng(3).integers(0, 256, (12, 3000, 3), dtype=np.uint8)
    spec = Preprocess()
    g = spec.geometry(12, 3000)
    resized = np.asarray(Image.fromarray(pixels).resize(g.resized[::-1], Image.BILINEAR))
    crop = resized[g.top : g.top + 224, g.left : g.left + 224]
    image = torch.from_numpy(pixels).permute(2, 0, 1).double() / 255
    ours = spec(image.float())
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    back = torch.round((ours * std + mean) * 255).permute(1, 2, 0).numpy().astype(np.uint8)
    assert np.array_equal(back, crop)


# ---------------------------------------------------------------- evaluate keeps going


def test_evaluate_writes_results_with_bad_files_in_the_folder(tmp_path):
    root = tmp_path / "in"
    save_png(make_image(40, 48, 0), root / "a.png")
    save_png(make_image(44, 40, 1), root / "b.png")
    data, start, _ = exif_jpeg()
    damaged = bytearray(data)
    damaged[start + 20] ^= 0xFF
    (root / "exif.jpg").write_bytes(bytes(damaged))
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, "AVIF")
    (root / "avif.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    first, *rest = frames(2)
    first.save(root / "anim.gif", save_all=True, append_images=rest)
    out = tmp_path / "eval"
    res = run_cli("evaluate", root, "--out", out, *TINY, "--regions", "saliency:8",
                  "--max-steps", 5)  # fmt: skip
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 0, res.output
    [row] = json.loads((out / "results.json").read_text())
    assert row["images"] == 3 and row["errors"] == 2, row  # the damaged EXIF one is read


# ---------------------------------------------------------------- options


BAD_OPTIONS = [
    (["--alpha", "nan"], "--alpha"),
    (["--alpha", "inf"], "--alpha"),
    (["--alpha", "-0.1"], "--alpha"),
    (["--blur-sigma", "0"], "--blur-sigma"),
    (["--blur-sigma", "nan"], "--blur-sigma"),
    (["--blur-kernel", "0"], "--blur-kernel"),
    (["--blur-kernel", "8"], "--blur-kernel"),
    (["--mask-value", "nan"], "--mask-value"),
    (["--mask-value", "-1"], "--mask-value"),
    (["--delta", "-1"], "--delta"),
    (["--delta", "nan"], "--delta"),
    (["--criterion", "prob:-1"], "--criterion"),
    (["--criterion", "margin:nan"], "--criterion"),
    (["--criterion", "margin:inf"], "--criterion"),
    (["--device", "meta"], "--device"),
    (["--mosaic-block", "0"], "--mosaic-block"),
    (["--mosaic-block", "-3"], "--mosaic-block"),
    (["--quality", "101"], "--quality"),
    (["--png-compression", "10"], "--png-compression"),
    (["--batch-size", "0"], "--batch-size"),
    (["--max-steps", "-1"], "--max-steps"),
    (["--max-pixels", "0"], "--max-pixels"),
    (["--regions", "saliency:0"], "--regions"),
    (["--regions", "saliency:nan"], "--regions"),
]


@pytest.fixture
def one_input(tmp_path) -> Path:
    return save_png(make_image(20, 24, 0), tmp_path / "in" / "a.png")


@pytest.mark.parametrize("command", ["anonymize", "evaluate"])
@pytest.mark.parametrize("extra,option", BAD_OPTIONS, ids=[" ".join(e) for e, _ in BAD_OPTIONS])
def test_bad_option_values_are_usage_errors_before_any_work(
    tmp_path, one_input, command, extra, option
):
    out = tmp_path / "out"
    flag = "-o" if command == "anonymize" else "--out"
    res = run_cli(command, one_input, flag, out, *TINY, *extra)
    assert res.exit_code == 2, res.output
    assert option in res.output
    assert "Traceback" not in res.output
    assert not out.exists(), "a usage error must not create the output folder"


def test_factory_that_raises_is_a_usage_error(tmp_path, monkeypatch):
    (tmp_path / "cwd_factory_for_tests.py").write_text(
        "import tiny_factory\n\n"
        "def make():\n    return tiny_factory.make()\n\n"
        "def boom():\n    raise RuntimeError('weights are missing here')\n"
    )
    save_png(make_image(20, 24, 0), tmp_path / "in" / "a.png")
    monkeypatch.chdir(tmp_path)
    res = run_cli("anonymize", "in", "-o", "out", "--model", "cwd_factory_for_tests:boom", "-q")
    assert res.exit_code == 2, res.output
    assert "--model" in res.output and "weights are missing here" in res.output
    assert not (tmp_path / "out").exists()
    # The same module in the current folder is found, and its good factory runs.
    res = run_cli("anonymize", "in", "-o", "out", "--model", "cwd_factory_for_tests:make",
                  "--regions", "saliency:8", "-q")  # fmt: skip
    assert res.exit_code in (0, 1), res.output
    [rec] = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert rec["settings"]["model"] == "tiny"


def test_model_help_says_model_files_and_factories_are_code():
    text = " ".join(run_cli("anonymize", "--help").output.split())
    assert "TorchScript file (needs --trust" in text and "load as data" in text
    assert "--trust-model Load a TorchScript or .pt2 model file" in text
