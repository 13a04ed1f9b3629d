"""manifest records and writer; reading and writing files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from adaptanon.io import atomic_write, collect_inputs, read_image
from adaptanon.io.manifest import ManifestWriter, read_manifest
from adaptanon.records import REQUIRED_KEYS, ImageRecord, Status


def test_record_has_all_required_keys():
    rec = ImageRecord(input="a.jpg", output="out/a.png", status="corrected", regions=[[1, 2, 3, 4]])
    data = json.loads(rec.to_json())
    assert set(REQUIRED_KEYS) <= set(data)
    assert data["regions"] == [[1, 2, 3, 4]]
    assert data["status"] == "corrected"
    assert "\n" not in rec.to_json()


@pytest.mark.parametrize("status", [str(s) for s in Status])
def test_record_accepts_every_status(status):
    assert ImageRecord(input="a", output=None, status=status).status == status


@pytest.mark.parametrize("status", ["ok", "", "Corrected", "done"])
def test_record_rejects_invalid_status(status):
    with pytest.raises(ValueError):
        ImageRecord(input="a", output=None, status=status)


def test_manifest_writer_one_line_per_record(tmp_path):
    path = tmp_path / "deep" / "manifest.jsonl"
    recs = [
        ImageRecord(input="a.png", output="o/a.png", status="unchanged", steps=0, original_class=3),
        ImageRecord(input="ü b.png", output=None, status="error", error="cannot read"),
        ImageRecord(input="c.png", output="o/_failed/c.png", status="failed", steps=100),
    ]
    with ManifestWriter(path) as writer:
        for i, r in enumerate(recs):
            writer.write(r)
            # Each record is flushed as it is written.
            assert len(path.read_text(encoding="utf-8").splitlines()) == i + 1
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert all(set(REQUIRED_KEYS) <= set(json.loads(line)) for line in lines)
    back = read_manifest(path)
    assert [r["input"] for r in back] == ["a.png", "ü b.png", "c.png"]
    assert back[1]["error"] == "cannot read" and back[1]["output"] is None
    assert back[0]["original_class"] == 3


def test_read_manifest_skips_blank_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"input": "a"}\n\n{"input": "b"}\n')
    assert [r["input"] for r in read_manifest(path)] == ["a", "b"]


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "sub" / "x.png"
    atomic_write(target, b"first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(os.listdir(target.parent)) == ["x.png"]


def test_read_image_applies_exif_orientation_and_flattens_alpha(tmp_path):
    px = np.zeros((10, 20, 3), dtype=np.uint8)
    px[:, :5] = 255  # a white band on the left
    im = Image.fromarray(px)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif.tobytes(), quality=95)
    out = read_image(path)
    assert out.shape == (20, 10, 3)  # upright: portrait
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # the band is now on top
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    flat = read_image(tmp_path / "a.png")
    assert flat[0, 0].tolist() == [255, 0, 0]
    assert flat[3, 3].tolist() == [255, 255, 255]  # composited on white


@pytest.mark.parametrize("content", [b"", b"\x00not an image at all" * 10])
def test_read_image_errors_are_value_errors(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="cannot read image"):
        read_image(path)


def test_collect_inputs(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("in/a.png", "in/sub/b.JPG", "in/notes.txt", "in/out/c.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = collect_inputs([str(tmp_path / "in")], exclude=tmp_path / "in" / "out")
    assert sorted(i.relative.as_posix() for i in found) == ["a.png", "sub/b.JPG"]
    # A file named explicitly is taken whatever its extension; duplicates are dropped.
    found = collect_inputs([str(tmp_path / "in" / "notes.txt"), str(tmp_path / "in")])
    rel = [i.relative.as_posix() for i in found]
    assert rel.count("notes.txt") == 1 and "a.png" in rel and "out/c.png" in rel
    found = collect_inputs([str(tmp_path / "in" / "**" / "*.png")])
    assert sorted(i.relative.as_posix() for i in found) == ["a.png", "out/c.png"]
    with pytest.raises(FileNotFoundError):
        collect_inputs([str(tmp_path / "missing")])
    with pytest.raises(FileNotFoundError):
        collect_inputs([str(tmp_path / "in" / "*.gif")])
