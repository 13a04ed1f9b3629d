"""The engine end to end on the device ``pytest --device`` names (``--device cuda`` on a
GPU): files are read and decoded, corrected on the device (fixed-shape model batches,
fp32 decisions), encoded, verified and written; an independent CPU loader (Pillow and the
tiny model on the CPU) then gives every written file its original class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_factory
import torch
from click.testing import CliRunner
from conftest import make_image, save_png, to_uint8
from PIL import Image

from adaptanon.cli import main
from adaptanon.io.codecs import to_image
from adaptanon.io.manifest import read_manifest

SIZES = [(48, 64), (60, 50), (64, 64), (50, 70), (56, 48), (72, 54), (90, 120), (130, 80)]


@pytest.fixture
def photos(tmp_path) -> Path:
    """Eleven synthetic PNG files of varied sizes and one JPEG."""
    root = tmp_path / "in"
    for i in range(11):
        h, w = SIZES[i % len(SIZES)]
        save_png(make_image(h, w, seed=i), root / f"p{i:02d}.png")
    Image.fromarray(to_uint8(make_image(66, 77, seed=99))).save(root / "q.jpg", quality=90)
    return root


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize(
    "filter_name,model",
    [
        ("blur", "tiny_factory:make"),
        ("mask", "tiny_factory:make"),
        ("mask", "tiny_factory:make_tuned"),  # the CUDA defaults, on whatever device
    ],
)
def test_engine_end_to_end_on_the_device(photos, tmp_path, device, filter_name, model):
    out = tmp_path / "out"
    args = ["anonymize", str(photos), "-o", str(out), "--model", model]
    args += ["--device", str(device), "--regions", "saliency:8", "--filter", filter_name]
    args += ["--batch-size", "5", "-q"]  # batches of 5, 5, 2: shapes change as images leave
    res = CliRunner().invoke(main, args)
    assert res.exit_code in (0, 1), res.output
    records = read_manifest(out / "manifest.jsonl")
    assert len(records) == 12
    done = [r for r in records if r["status"] in ("unchanged", "corrected")]
    assert len(done) >= 10, [(r["input"], r["status"], r["error"]) for r in records]
    if filter_name == "mask":
        assert any(r["status"] == "corrected" for r in done)  # the solver ran on the device
    checker = tiny_factory.make()  # a fresh model on the CPU, as a user's own loader
    for r in done:
        written = read_rgb(Path(r["output"]))
        with torch.no_grad():
            cls = int(checker.logits([to_image(written)]).argmax())
        assert cls == r["original_class"] == r["final_class"], r
        source = read_rgb(photos / r["input"])
        assert written.shape == source.shape
        if r["input"].endswith(".png"):
            outside = np.ones(source.shape[:2], bool)
            for x0, y0, x1, y1 in r["regions"]:
                outside[y0:y1, x0:x1] = False
            assert np.array_equal(written[outside], source[outside])


def test_tuned_batches_write_the_same_files(photos, tmp_path, device):
    """Buckets and batched windows change how the work is laid out, not its result."""
    runs = {}
    for model in ("tiny_factory:make", "tiny_factory:make_tuned"):
        out = tmp_path / model.split(":")[1]
        args = ["anonymize", str(photos), "-o", str(out), "--model", model, "--device"]
        args += [str(device), "--regions", "saliency:8", "--filter", "mask", "--batch-size", "5"]
        res = CliRunner().invoke(main, [*args, "-q"])
        assert res.exit_code in (0, 1), res.output
        runs[model] = {
            r["input"]: (r["status"], r["steps"], r["final_class"], Path(r["output"]).read_bytes())
            for r in read_manifest(out / "manifest.jsonl")
        }
    plain, tuned = runs.values()
    assert any(steps > 0 for _, steps, _, _ in plain.values())
    assert plain == tuned
