"""CLI with the tiny model (``--model tiny_factory:make``): bad inputs, failures, safety."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_image, save_png, to_uint8
from PIL import Image

from adaptanon.cli import main
from adaptanon.io.codecs import to_image
from adaptanon.io.manifest import read_manifest
from adaptanon.method.filters import Mask, anonymize
from adaptanon.records import REQUIRED_KEYS

TINY = ["--model", "tiny_factory:make", "--device", "cpu", "-q"]


def run_cli(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def anonymize_cmd(inputs, out, *extra):
    ins = inputs if isinstance(inputs, list | tuple) else [inputs]
    return run_cli("anonymize", *ins, "-o", out, *TINY, *extra)


def records_by_name(out: Path) -> dict[str, dict]:
    recs = read_manifest(out / "manifest.jsonl")
    for r in recs:
        assert set(REQUIRED_KEYS) <= set(r)
    return {Path(r["input"]).name: r for r in recs}


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def temp_leftovers(root: Path) -> list[str]:
    return [
        p.as_posix() for p in root.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")
    ]


@pytest.fixture
def inputs(tmp_path) -> Path:
    """in/a.png, in/b.png, in/sub/c.png and in/sub/d.jpg: synthetic images of varied sizes."""
    root = tmp_path / "in"
    save_png(make_image(48, 64, 0), root / "a.png")
    save_png(make_image(60, 50, 1), root / "b.png")
    save_png(make_image(64, 64, 2), root / "sub" / "c.png")
    Image.fromarray(to_uint8(make_image(50, 70, 3))).save(root / "sub" / "d.jpg", quality=90)
    return root


GOOD = {"a.png": "a.png", "b.png": "b.png", "c.png": "sub/c.png", "d.jpg": "sub/d.png"}


def check_good_outputs(out: Path, recs: dict[str, dict], names=GOOD) -> None:
    for name, rel in names.items():
        r = recs[name]
        assert r["status"] in ("unchanged", "corrected"), r
        assert r["error"] is None
        assert r["final_class"] == r["original_class"]
        assert Path(r["output"]) == out / rel
        assert (out / rel).is_file()


def test_help_and_models():
    res = run_cli("--help")
    assert res.exit_code == 0 and "anonymize" in res.output and "demo" in res.output
    res = run_cli("anonymize", "--help")
    assert res.exit_code == 0 and "--regions" in res.output and "--max-steps" in res.output
    res = run_cli("models")
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert any(line.startswith("efficientnet_lite0 (default)") for line in lines)
    assert any(line.startswith("efficientnet_lite2") for line in lines)


def test_tiny_run_writes_outputs_and_manifest(inputs, tmp_path):
    out = tmp_path / "out"
    res = anonymize_cmd(inputs, out, "--regions", "saliency:8")
    assert res.exit_code == 0, res.output
    recs = records_by_name(out)
    assert len(recs) == 4
    check_good_outputs(out, recs)
    assert recs["a.png"]["settings"]["model"] == "tiny"
    assert recs["a.png"]["settings"]["regions"] == "saliency(8)"
    assert not temp_leftovers(out)
    # The manifest lines are one JSON object each.
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)


def test_summary_is_printed_without_quiet(inputs, tmp_path):
    res = CliRunner().invoke(
        main,
        [
            "anonymize",
            str(inputs / "a.png"),
            "-o",
            str(tmp_path / "o"),
            "--model",
            "tiny_factory:make",
            "--regions",
            "saliency:8",
        ],
    )
    assert res.exit_code == 0
    assert "unchanged" in res.output and "manifest.jsonl" in res.output


def test_bad_files_are_recorded_and_the_rest_processed(inputs, tmp_path):
    rng = np.random.default_rng(0)
    (inputs / "x.jpg").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (inputs / "sub" / "empty.png").write_bytes(b"")
    # A truncated JPEG: the header is fine, the data is cut short.
    full = (inputs / "sub" / "d.jpg").read_bytes()
    (inputs / "trunc.jpg").write_bytes(full[: len(full) // 3])
    out = tmp_path / "out"
    res = anonymize_cmd(inputs, out, "--regions", "saliency:8")
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    recs = records_by_name(out)
    assert len(recs) == 7
    for bad in ("x.jpg", "empty.png", "trunc.jpg"):
        r = recs[bad]
        assert r["status"] == "error"
        assert r["error"] and isinstance(r["error"], str)
        assert r["output"] is None
    assert not (out / "x.png").exists() and not (out / "sub" / "empty.png").exists()
    check_good_outputs(out, recs)
    assert not temp_leftovers(out)


def test_invalid_box_is_an_error_for_that_image_only(inputs, tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(
        json.dumps(
            {
                "a.png": [[10, 10, 10, 20]],  # empty box
                "b.png": [[5, 5, 20, 20]],
                "sub/c.png": [[500, 500, 600, 600]],  # outside the 64x64 image
                "d.jpg": [[0, 0, 30, 30], [40, 10, 70, 50]],
            }
        )
    )
    out = tmp_path / "out"
    res = anonymize_cmd(inputs, out, "--regions", f"boxes={boxes}")
    assert res.exit_code == 1, res.output
    recs = records_by_name(out)
    for bad in ("a.png", "c.png"):
        assert recs[bad]["status"] == "error" and "box" in recs[bad]["error"]
        assert recs[bad]["output"] is None
    check_good_outputs(out, recs, {"b.png": "b.png", "d.jpg": "sub/d.png"})
    assert recs["b.png"]["regions"] == [[5, 5, 20, 20]]
    assert recs["d.jpg"]["regions"] == [[0, 0, 30, 30], [40, 10, 70, 50]]


def test_ellipse_regions_leave_box_corners_untouched(inputs, tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"a.png": [[10, 8, 50, 40]]}))
    out = tmp_path / "out"
    res = anonymize_cmd(
        inputs / "a.png",
        out,
        "--regions",
        f"boxes={boxes}",
        "--shape",
        "ellipse",
        "--filter",
        "mosaic",
        "--mosaic-block",
        "4",
    )
    assert res.exit_code == 0, res.output
    (rec,) = read_manifest(out / "manifest.jsonl")
    assert rec["settings"]["shape"] == "ellipse"
    before = np.asarray(Image.open(inputs / "a.png").convert("RGB"))
    after = np.asarray(Image.open(out / "a.png").convert("RGB"))
    outside = np.ones(before.shape[:2], dtype=bool)
    outside[8:40, 10:50] = False
    assert np.array_equal(before[outside], after[outside])
    for y, x in [(8, 10), (8, 49), (39, 10), (39, 49)]:
        assert np.array_equal(before[y, x], after[y, x])
    assert not np.array_equal(before[20:28, 26:34], after[20:28, 26:34])


def test_flat_box_list_is_an_error_for_that_image_only(inputs, tmp_path):
    """`"a.png": [1, 2, 3, 4]` (one box, not a list of boxes) is an invalid box: `error` for
    a.png, the other images processed, exit code 1 -- not a crash of the whole run."""
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"a.png": [1, 2, 3, 4], "b.png": [[5, 5, 20, 20]]}))
    out = tmp_path / "out"
    res = anonymize_cmd(inputs, out, "--regions", f"boxes={boxes}")
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 1
    recs = records_by_name(out)
    assert len(recs) == 4
    assert recs["a.png"]["status"] == "error"
    check_good_outputs(out, recs, {"b.png": "b.png"})
    assert recs["c.png"]["status"] == "no_regions" and recs["c.png"]["regions"] == []


def test_output_dir_equal_to_input_dir_never_overwrites_inputs(inputs):
    before = tree_digest(inputs)
    res = anonymize_cmd(inputs, inputs, "--regions", "saliency:8")
    assert res.exit_code == 2, res.output
    assert "inside the output folder" in res.output
    after = tree_digest(inputs)
    for rel, digest in before.items():
        assert after[rel] == digest, f"input {rel} was modified"
    assert not temp_leftovers(inputs)


def test_same_file_named_as_input_and_output_folder(inputs):
    """A single file given explicitly, written into its own folder in its own format."""
    a = inputs / "a.png"
    digest = hashlib.sha256(a.read_bytes()).hexdigest()
    res = anonymize_cmd(a, inputs, "--regions", "saliency:8")
    assert res.exit_code == 1, res.output
    assert hashlib.sha256(a.read_bytes()).hexdigest() == digest
    [rec] = read_manifest(inputs / "manifest.jsonl")
    assert rec["status"] == "error" and "refusing to overwrite" in rec["error"]
    assert rec["output"] is None


def test_two_inputs_with_the_same_output_name(tmp_path):
    root = tmp_path / "in"
    save_png(make_image(48, 64, 5), root / "p.png")
    Image.fromarray(to_uint8(make_image(48, 64, 6))).save(root / "p.jpg", quality=90)
    out = tmp_path / "out"
    res = anonymize_cmd(root, out, "--regions", "saliency:8")
    assert res.exit_code == 1
    recs = read_manifest(out / "manifest.jsonl")
    assert len(recs) == 2
    assert sorted(r["status"] == "error" for r in recs) == [False, True]
    err = next(r for r in recs if r["status"] == "error")
    assert "already writes" in err["error"]
    ok = next(r for r in recs if r["status"] != "error")
    assert Path(ok["output"]) == out / "p.png"


def flips_under_white_centre(img: torch.Tensor) -> bool:
    import tiny_factory

    clf = tiny_factory.make()
    h, w = img.shape[1:]
    anon, _ = anonymize(img, [(w // 4, h // 4, 3 * w // 4, 3 * h // 4)], Mask(1.0))
    with torch.no_grad():
        return int(clf.logits([img]).argmax()) != int(clf.logits([anon]).argmax())


def test_failed_image_goes_under_failed_dir(tmp_path):
    root = tmp_path / "in"
    img = make_image(48, 64, 0)
    assert flips_under_white_centre(img)
    save_png(img, root / "deep" / "f.png")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"f.png": [[16, 12, 48, 36]]}))
    out = tmp_path / "out"
    res = anonymize_cmd(
        root,
        out,
        "--regions",
        f"boxes={boxes}",
        "--filter",
        "mask",
        "--mask-value",
        "1.0",
        "--max-steps",
        "0",
    )
    assert res.exit_code == 1
    (rec,) = read_manifest(out / "manifest.jsonl")
    assert rec["status"] == "failed"
    assert rec["error"] and rec["final_class"] != rec["original_class"]
    assert Path(rec["output"]) == out / "_failed" / "deep" / "f.png"
    assert (out / "_failed" / "deep" / "f.png").is_file()
    assert not (out / "deep" / "f.png").exists()
    # The failed output is still anonymized: the box is white.
    px = np.asarray(Image.open(out / "_failed" / "deep" / "f.png"))
    assert (px[12:36, 16:48] == 255).all()
    assert not temp_leftovers(out)


def test_jpeg_output_format(inputs, tmp_path):
    import tiny_factory

    out = tmp_path / "out"
    res = anonymize_cmd(
        inputs / "a.png", out, "--regions", "saliency:8", "--format", "jpg", "--quality", "80"
    )
    assert res.exit_code == 0, res.output
    (rec,) = read_manifest(out / "manifest.jsonl")
    assert rec["output"].endswith("a.jpg") and rec["settings"]["quality"] == 80
    with Image.open(out / "a.jpg") as im:
        assert im.format == "JPEG"
        px = np.asarray(im.convert("RGB"))
    with torch.no_grad():
        pred = int(tiny_factory.make().logits([to_image(px)]).argmax())
    assert pred == rec["original_class"] == rec["final_class"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--regions", "eyes"],
        ["--regions", "boxes=/nonexistent/boxes.json"],
        ["--criterion", "closest"],
        ["--model", "no_such_model"],
        ["--blur-kernel", "4"],
        ["--mask-value", "2", "--filter", "mask"],
        ["--alpha", "0"],
        ["--max-steps", "-1"],
        ["--quality", "0"],
        ["--format", "gif"],
        ["--shape", "circle"],
    ],
)
def test_usage_errors_exit_2(inputs, tmp_path, extra):
    res = anonymize_cmd(inputs, tmp_path / "out", *extra)
    assert res.exit_code == 2, res.output


def test_bad_boxes_json_is_a_usage_error(inputs, tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text("{not json")
    res = anonymize_cmd(inputs, tmp_path / "out", "--regions", f"boxes={boxes}")
    assert res.exit_code == 2
    assert "boxes" in res.output


def test_nonexistent_input_is_a_usage_error(tmp_path):
    res = anonymize_cmd(tmp_path / "does_not_exist", tmp_path / "out")
    assert res.exit_code == 2
    assert "does_not_exist" in res.output
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_no_inputs_argument_is_a_usage_error(tmp_path):
    res = run_cli("anonymize", "-o", tmp_path / "out")
    assert res.exit_code == 2


def test_relative_paths_are_kept_with_png_extension(inputs, tmp_path):
    out = tmp_path / "out"
    res = anonymize_cmd(inputs, out, "--regions", "saliency:8")
    assert res.exit_code == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.png", "b.png", "sub/c.png", "sub/d.png"]
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "manifest.jsonl", "sub"]


@pytest.mark.parametrize(
    "device,message",
    [("banana", "unknown device"), ("cuda", "no CUDA GPU")],
)
def test_bad_device_is_a_usage_error(inputs, tmp_path, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    res = run_cli("anonymize", inputs, "-o", tmp_path / "out", "--model", "tiny_factory:make",
                  "--device", device, "-q")  # fmt: skip
    assert res.exit_code == 2
    assert "--device" in res.output and message in res.output
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_out_defaults_to_anonymized_in_the_working_directory(inputs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_cli("anonymize", inputs, *TINY, "--regions", "saliency:8")
    assert res.exit_code in (0, 1), res.output
    recs = read_manifest(tmp_path / "anonymized" / "manifest.jsonl")
    assert recs and all(Path(r["output"]).parts[0] == "anonymized" for r in recs if r["output"])
