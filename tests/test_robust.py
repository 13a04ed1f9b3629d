"""``--robust``: written files keep their class under loaders near the declared one,
checked with loaders written out here (Pillow, OpenCV, numpy, F.interpolate), not the
package's own preprocessing; the default mode is unchanged."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import make_image, save_png
from PIL import Image

from adaptanon.classifiers import TorchClassifier
from adaptanon.classifiers.robust import RobustClassifier, robust
from adaptanon.cli import main
from adaptanon.io import Codec
from adaptanon.method import Settings, process_batch
from adaptanon.method.filters import parse_filter
from adaptanon.method.solvers import GradientSolver
from adaptanon.preprocessing import PreprocessSpec, parse_preprocess
from adaptanon.preprocessing.variants import jpeg_resave, variants_of
from adaptanon.regions import ExplicitBoxes

RESIZE, CROP = 40, 32  # the tiny classifier's loader (tests/tiny_factory.py)
Loader = Callable[[np.ndarray], np.ndarray]  # (H, W, 3) uint8 -> (3, 32, 32) float32


def _sizes(h: int, w: int, rounding: Callable[[float], int] = int) -> tuple[int, int]:
    if w <= h:
        return rounding(RESIZE * h / w), RESIZE
    return RESIZE, rounding(RESIZE * w / h)


def _crop(x: np.ndarray) -> np.ndarray:
    """Centre crop of ``(h, w, 3)`` in [0, 1] -> normalised ``(3, 32, 32)``."""
    h, w = x.shape[:2]
    top, left = int(round((h - CROP) / 2.0)), int(round((w - CROP) / 2.0))
    x = x[top : top + CROP, left : left + CROP]
    return ((x - 0.5) / 0.5).transpose(2, 0, 1).astype(np.float32)


def _pil(resample: Image.Resampling, rounding: Callable[[float], int] = int) -> Loader:
    def load(rgb: np.ndarray) -> np.ndarray:
        new_h, new_w = _sizes(rgb.shape[0], rgb.shape[1], rounding)
        out = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), resample))
        return _crop(out.astype(np.float64) / 255.0)

    return load


def _cv(mode: int) -> Loader:
    def load(rgb: np.ndarray) -> np.ndarray:
        new_h, new_w = _sizes(*rgb.shape[:2])
        return _crop(cv2.resize(rgb, (new_w, new_h), interpolation=mode) / 255.0)

    return load


def _torch_antialias(rgb: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()[None] / 255.0
    new_h, new_w = _sizes(*rgb.shape[:2])
    x = F.interpolate(x, (new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    return _crop(x[0].permute(1, 2, 0).numpy())


def _jpeg(quality: int) -> Loader:
    def load(rgb: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
        with Image.open(io.BytesIO(buf.getvalue())) as img:
            return DECLARED(np.asarray(img.convert("RGB")))

    return load


DECLARED = _pil(Image.Resampling.BILINEAR)
LOADERS: dict[str, Loader] = {
    "declared": DECLARED,
    "pil-bicubic": _pil(Image.Resampling.BICUBIC),
    "pil-bilinear-round": _pil(Image.Resampling.BILINEAR, round),
    "opencv-linear": _cv(cv2.INTER_LINEAR),
    "opencv-area": _cv(cv2.INTER_AREA),
    "torch-bilinear-antialias": _torch_antialias,
    "jpeg75": _jpeg(75),
    "jpeg90": _jpeg(90),
}


def _classes(tiny: TorchClassifier, rgb: np.ndarray) -> dict[str, int]:
    with torch.no_grad():
        x = torch.from_numpy(np.stack([load(rgb) for load in LOADERS.values()]))
        return dict(zip(LOADERS, tiny.model(x).argmax(1).tolist(), strict=True))


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _pixels(image: torch.Tensor) -> np.ndarray:
    return np.round(image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


IMAGES = [make_image(h, w, seed) for seed, (h, w) in enumerate([(48, 64), (64, 48)] * 12)]
NAMES = [str(i) for i in range(len(IMAGES))]
MASK = parse_filter("mask")  # grey boxes: the tiny model needs corrections for some
BOXES = ExplicitBoxes(
    {n: [[4, 4, img.shape[2] - 4, img.shape[1] - 4]] for n, img in zip(NAMES, IMAGES, strict=True)}
)


def test_variants_are_the_loaders_written_here(tiny: TorchClassifier) -> None:
    """The package's variants compute what the independent loaders compute (so the check
    below tests the promise, not a copy of the code)."""
    rc = robust(tiny)
    assert sorted(rc.variant_names) == sorted(LOADERS) and rc.variant_names[0] == "declared"
    for image in IMAGES[:4]:
        rgb = _pixels(image)
        mine = rc.variant_inputs([image])[0]
        for k, name in enumerate(rc.variant_names):
            theirs = torch.from_numpy(LOADERS[name](rgb))
            assert torch.allclose(mine[k], theirs, atol=1e-5), name


def test_robust_files_keep_their_class_under_every_variant(tiny: TorchClassifier) -> None:
    solver = GradientSolver(alpha=0.05, max_steps=200)
    settings = Settings(filter=MASK, robust=True, solver=solver)
    outcomes = process_batch(tiny, BOXES, settings, NAMES, IMAGES)
    done = [(img, o) for img, o in zip(IMAGES, outcomes, strict=True) if o.status.ok]
    assert len(done) >= len(IMAGES) - 2
    assert any(o.record.steps > 0 for _, o in done), "nothing needed a correction"
    for image, outcome in done:
        assert outcome.data is not None
        before, after = _classes(tiny, _pixels(image)), _classes(tiny, _decode(outcome.data))
        assert after == before, outcome.record.input
        rec = outcome.record
        assert rec.worst_variant in LOADERS and rec.worst_variant_margin is not None
        assert rec.worst_variant_margin >= 0.01
        assert settings.describe()["robust"] is True


def test_default_mode_keeps_the_declared_class_only(tiny: TorchClassifier) -> None:
    """Why the option exists: the default correction keeps the declared class only."""
    changed = 0
    outcomes = process_batch(tiny, BOXES, Settings(filter=MASK), NAMES, IMAGES)
    for o, image in zip(outcomes, IMAGES, strict=True):
        if o.status.ok and o.data is not None:
            before, after = _classes(tiny, _pixels(image)), _classes(tiny, _decode(o.data))
            assert after["declared"] == before["declared"]
            changed += after != before
    assert changed > 0


def test_default_mode_unchanged(tiny: TorchClassifier, monkeypatch: pytest.MonkeyPatch) -> None:
    """No variant is computed, the records and settings say nothing of them, and the
    result is that of a run without the option."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("variants computed in the default mode")

    monkeypatch.setattr(RobustClassifier, "variant_inputs", forbidden)
    assert "robust" not in Settings().describe()
    outcomes = process_batch(tiny, BOXES, Settings(), NAMES[:6], IMAGES[:6])
    again = process_batch(tiny, BOXES, Settings(robust=False), NAMES[:6], IMAGES[:6])
    for a, b in zip(outcomes, again, strict=True):
        assert a.record.worst_variant_margin is None and a.record.worst_variant is None
        assert a.data == b.data and a.record.steps == b.record.steps


def test_cli_robust_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    for name, img in zip(NAMES[:6], IMAGES[:6], strict=True):
        save_png(img, folder / f"{name}.png")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({f"{n}.png": [[4, 4, 40, 40]] for n in NAMES[:6]}))
    for flag, out in (["--robust"], tmp_path / "robust"), ([], tmp_path / "default"):
        args = [
            "anonymize", str(folder), "-o", str(out), "--model", "tiny_factory:make",
            "--device", "cpu", "-q", "--regions", f"boxes={boxes}", *flag,
        ]  # fmt: skip
        res = CliRunner().invoke(main, args)
        assert res.exit_code in (0, 1), res.output
        records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        assert len(records) == 6
        for r in records:
            assert "worst_variant_margin" in r and "worst_variant" in r
            if flag:
                assert r["settings"]["robust"] is True
                assert isinstance(r["worst_variant_margin"], float) and r["worst_variant"]
            else:
                assert "robust" not in r["settings"] and r["worst_variant_margin"] is None


def test_variants_of_other_specs() -> None:
    spec = parse_preprocess("opencv-squash").spec
    names = [v.name for v in variants_of(spec)]
    assert names[0] == "declared" and "opencv-linear" not in names
    assert {"pil-bilinear", "pil-bicubic", "opencv-area", "jpeg75", "jpeg90"} <= set(names)
    assert not any(n.endswith("round") for n in names)  # a fixed size has no rounding
    letterbox = parse_preprocess("yolo-letterbox").spec
    assert len(variants_of(letterbox)) >= 5
    tensor = variants_of(PreprocessSpec(backend="torch", antialias=True))
    assert "torch-bilinear-antialias" not in [v.name for v in tensor]


def test_robust_needs_a_declared_loader() -> None:
    custom = TorchClassifier(torch.nn.Flatten().eval(), preprocess=lambda x: x)
    with pytest.raises(ValueError, match="declared preprocessing"):
        robust(custom)


def test_jpeg_resave_is_pillow_with_straight_gradient() -> None:
    image = IMAGES[0].clone().requires_grad_(True)
    out = jpeg_resave(image, 75)
    expected = Codec("jpg", 75).stored_pixels(IMAGES[0])
    assert np.array_equal(_pixels(out.detach()), expected)
    out.sum().backward()
    assert image.grad is not None and bool((image.grad == 1).all())
