"""Face identity (issue 17): dlib's face descriptor says whether an anonymized face is still
the person; inversion attacks that know the filter; the default face filter; the per-face
check that makes a recognizable face ``weak``; the keys ``evaluate`` reports.

Photos shipped by dependencies only: scikit-image's astronaut (Eileen Collins),
matplotlib's Grace Hopper and the 25x25 LFW faces in scikit-image's ``lfw_subset``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

from adaptanon.evaluate import Config, evaluate  # noqa: E402
from adaptanon.evaluate.attacks import invert, invert_mosaic  # noqa: E402
from adaptanon.io.images import collect_inputs  # noqa: E402
from adaptanon.method import Settings, anonymize, process_batch  # noqa: E402
from adaptanon.method.filters import (  # noqa: E402
    Blur,
    ByLabel,
    FaceMosaic,
    Mask,
    Mosaic,
    face_mosaic_box,
)
from adaptanon.method.identity import (  # noqa: E402
    DEFAULT_MIN_DISTANCE,
    VERIFY_THRESHOLD,
    IdentityLimit,
    distance,
    face_identity,
    rank1,
)
from adaptanon.method.metrics import StrengthLimits, region_strength  # noqa: E402
from adaptanon.method.solvers import GradientSolver  # noqa: E402
from adaptanon.records import Status  # noqa: E402
from adaptanon.regions import ExplicitBoxes  # noqa: E402

ASTRONAUT_FACE = (175, 76, 265, 166)
"""Eileen Collins' face in scikit-image's astronaut (dlib's own detector finds it there)."""


def tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    buf = io.BytesIO()
    Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()).save(
        buf, "JPEG", quality=quality
    )
    return tensor(np.asarray(Image.open(buf).convert("RGB")))


@pytest.fixture(scope="module")
def model():
    return face_identity()


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    return tensor(skdata.astronaut())


@pytest.fixture(scope="module")
def gallery(model, astronaut) -> np.ndarray:
    """Descriptors of the astronaut (index 0), Grace Hopper and 40 LFW faces."""
    cbook = pytest.importorskip("matplotlib.cbook")
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = tensor(np.asarray(Image.open(f).convert("RGB")))
    out = [model.descriptor(astronaut, model.landmarks(astronaut, ASTRONAUT_FACE))]
    (box,) = model.faces(hopper)
    out.append(model.descriptor(hopper, model.landmarks(hopper, box)))
    for face in skdata.lfw_subset()[:40]:  # the first 100 are faces, 25x25 grey
        big = F.interpolate(torch.from_numpy(face)[None, None].float(), size=(150, 150))
        rgb = big[0].expand(3, -1, -1).clamp(0, 1)
        out.append(model.descriptor(rgb, model.landmarks(rgb, (25, 25, 125, 125))))
    return np.stack(out)


def test_the_same_face_is_identified(model, astronaut, gallery) -> None:
    """A JPEG (q 60) of the astronaut is the same person: well within 0.6 of the
    original and identified rank-1 among 42 faces."""
    marks = model.landmarks(astronaut, ASTRONAUT_FACE)
    probe = model.descriptor(jpeg(astronaut, 60), marks)
    assert distance(probe, gallery[0]) < 0.3
    assert rank1(probe[None], gallery, [0]) == [True]
    # and another person is not the astronaut
    assert distance(gallery[1], gallery[0]) > VERIFY_THRESHOLD


def test_a_masked_face_is_not_identified(model, astronaut, gallery) -> None:
    """The face box (grown as the default face filter grows it) filled with grey: beyond
    dlib's 0.6 from the original and not the nearest of the gallery."""
    h, w = astronaut.shape[-2:]
    box = face_mosaic_box(ASTRONAUT_FACE, h, w)
    masked, _ = anonymize(astronaut, [box], Mask(0.5))
    probe = model.descriptor(masked, model.landmarks(astronaut, ASTRONAUT_FACE))
    assert distance(probe, gallery[0]) > VERIFY_THRESHOLD
    assert rank1(probe[None], gallery, [0]) == [False]


def test_rank1_by_hand() -> None:
    gallery = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    probes = np.array([[0.1, 0.0], [0.9, 0.1], [0.5, 0.5]])
    assert rank1(probes, gallery, [0, 1, 0]) == [True, True, False]
    assert rank1(np.zeros((0, 2)), gallery, []) == []


def test_the_attack_recovers_a_blurred_face(model, astronaut) -> None:
    """Known answer: least squares through the known blur brings the face back, in pixels
    and in identity, far closer than the blurred face."""
    scale = 512 / 224
    blurred, _ = anonymize(astronaut, [ASTRONAUT_FACE], Blur(), scale)
    blurred = (blurred * 255).round() / 255
    attacked, name = invert(Blur(), blurred, [ASTRONAUT_FACE], scale)
    assert "least squares" in name
    x0, y0, x1, y1 = ASTRONAUT_FACE

    def err(img: torch.Tensor) -> float:
        return float(((img - astronaut)[:, y0:y1, x0:x1] ** 2).mean())

    assert err(attacked) < 0.5 * err(blurred)
    outside = torch.ones_like(astronaut, dtype=torch.bool)
    outside[:, y0:y1, x0:x1] = False
    assert torch.equal(attacked[outside], blurred[outside])
    marks = model.landmarks(astronaut, ASTRONAUT_FACE)
    original = model.descriptor(astronaut, marks)
    d_blur = distance(original, model.descriptor(blurred, marks))
    d_attack = distance(original, model.descriptor(attacked, marks))
    assert d_blur > VERIFY_THRESHOLD > d_attack


def test_the_mosaic_attack_upsamples_the_cells() -> None:
    """On a smooth ramp, bicubic upsampling of the cells is closer than the mosaic."""
    ramp = torch.linspace(0, 1, 64)
    image = torch.stack(
        [
            ramp[None, :].expand(64, 64),
            ramp[:, None].expand(64, 64),
            0.5 + 0 * ramp[None, :].expand(64, 64),
        ]
    )
    filt = Mosaic(8, scale_to_input=False)
    cells, _ = anonymize(image, [(8, 8, 56, 56)], filt)
    up = invert_mosaic(filt, cells, [(8, 8, 56, 56)])
    assert float(((up - image) ** 2).mean()) < 0.5 * float(((cells - image) ** 2).mean())
    assert invert(Mask(), cells, [(8, 8, 56, 56)])[1] == "none"


def test_face_mosaic_meets_the_floor_and_is_deterministic(astronaut) -> None:
    """The default face filter: every region measurably anonymized (SSIM and detail
    limits), same input same noise, and it covers the grown box."""
    filt = FaceMosaic()
    limits = StrengthLimits()
    photos = [astronaut, tensor(skdata.coffee()), tensor(skdata.chelsea())]
    for photo in photos:
        h, w = photo.shape[-2:]
        for box in [ASTRONAUT_FACE, (10, 10, 40, 40), (w // 3, h // 3, w // 2, h // 2)]:
            box = (min(box[0], w - 2), min(box[1], h - 2), min(box[2], w), min(box[3], h))
            out, mask = anonymize(photo, [box], filt)
            assert limits.weak([box], [region_strength(photo, out, box)]) is None
            grown = face_mosaic_box(box, h, w)
            assert bool(mask[0, grown[1] : grown[3], grown[0] : grown[2]].all())
            assert int(mask.sum()) == (grown[2] - grown[0]) * (grown[3] - grown[1])
            again, _ = anonymize(photo, [box], filt)
            assert torch.equal(out, again)
    other = astronaut.clone()
    other[:, 100, 200] = 1 - other[:, 100, 200]
    a, _ = anonymize(astronaut, [ASTRONAUT_FACE], filt)
    b, _ = anonymize(other, [ASTRONAUT_FACE], filt)
    noise_a = a - anonymize(astronaut, [ASTRONAUT_FACE], FaceMosaic(noise=0.0))[0]
    noise_b = b - anonymize(other, [ASTRONAUT_FACE], FaceMosaic(noise=0.0))[0]
    assert not torch.allclose(noise_a, noise_b)


def test_auto_filter_picks_by_label(astronaut) -> None:
    """--filter auto: faces get the face mosaic, other regions the paper's blur."""
    auto = ByLabel()
    face, other = ASTRONAUT_FACE, (300, 300, 360, 360)
    out, mask = anonymize(astronaut, [face, other], auto, 2.0, labels=["face", "box"])
    want_face, m_face = anonymize(astronaut, [face], FaceMosaic())
    want_box, m_box = anonymize(astronaut, [other], Blur(), 2.0)
    assert torch.equal(mask, m_face | m_box)
    assert torch.equal(out[m_face.expand_as(out)], want_face[m_face.expand_as(out)])
    assert torch.equal(out[m_box.expand_as(out)], want_box[m_box.expand_as(out)])
    same, _ = anonymize(astronaut, [face], auto, 2.0)  # no labels: not a face
    assert torch.equal(same, anonymize(astronaut, [face], Blur(), 2.0)[0])


def test_a_recognizable_face_is_weak(tiny, astronaut) -> None:
    """A fine mosaic (2-pixel cells) that passes the strength limits when they are relaxed
    keeps the face recognizable: with the identity check the image is ``weak``, without it
    not, and the manifest records the distance."""
    source = ExplicitBoxes({"a.png": [list(ASTRONAUT_FACE)]}, {"a.png": ["face"]})
    light = Mosaic(2, scale_to_input=False)
    loose = StrengthLimits(max_ssim=1.0, max_detail=1.0)
    base = Settings(filter=light, solver=GradientSolver(0.1, 20), strength=loose)
    (plain,) = process_batch(tiny, source, base, ["a.png"], [astronaut])
    assert plain.status in (Status.UNCHANGED, Status.CORRECTED)
    assert plain.record.identity_distance == []
    checked = Settings(
        filter=light, solver=GradientSolver(0.1, 20), strength=loose, identity=IdentityLimit()
    )
    (out,) = process_batch(tiny, source, checked, ["a.png"], [astronaut])
    assert out.status == Status.WEAK and "recognizable" in (out.record.error or "")
    (d,) = out.record.identity_distance
    assert d is not None and d < DEFAULT_MIN_DISTANCE
    assert checked.describe()["min_identity_distance"] == DEFAULT_MIN_DISTANCE
    strong = Settings(filter=FaceMosaic(), solver=GradientSolver(0.1, 20), identity=IdentityLimit())
    (good,) = process_batch(tiny, source, strong, ["a.png"], [astronaut])
    assert good.status in (Status.UNCHANGED, Status.CORRECTED), good.record.error
    assert good.record.identity_distance[0] >= DEFAULT_MIN_DISTANCE


def test_evaluate_reports_identity(tmp_path: Path, tiny, astronaut) -> None:
    """evaluate with a face region: identity keys in results.json/csv/md and the report."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(skdata.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(skdata.coffee()).save(folder / "coffee.png")
    items = collect_inputs([str(folder)])
    source = ExplicitBoxes(
        {"astronaut.png": [list(ASTRONAUT_FACE)], "coffee.png": [[100, 100, 180, 180]]},
        {"astronaut.png": ["face"], "coffee.png": ["face"]},
    )
    configs = [
        Config("tiny", name, Settings(filter=f, solver=GradientSolver(0.1, 20)), "boxes")
        for name, f in (("blur", Blur()), ("facemosaic", FaceMosaic()))
    ]
    out = tmp_path / "out"
    rows = evaluate(items, out, configs, source, lambda _: tiny)
    blur, mosaic = rows
    for s in rows:
        assert s["identity_faces"] == 2 and s["identity_gallery"] == 2
        assert s["identity_chance_pct"] == 50.0
        for kind in ("plain", "corrected", "plain_attacked", "corrected_attacked"):
            assert s[f"identity_rank1_{kind}_pct"] in (0.0, 50.0, 100.0)
            assert s[f"identity_distance_{kind}_median"] > 0
    assert "least squares" in blur["identity_attack"]
    assert "bicubic" in mosaic["identity_attack"]
    assert blur["identity_distance_plain_attacked_median"] < blur["identity_distance_plain_median"]
    saved = json.loads((out / "results.json").read_text())
    assert saved[0]["identity_rank1_plain_pct"] == blur["identity_rank1_plain_pct"]
    table = list(csv.DictReader((out / "results.csv").open()))
    assert table[1]["identity_faces"] == "2"
    for name in ("results.md", "report.html"):
        assert "Face identity" in (out / name).read_text()


def test_gallery_adds_other_people(tmp_path: Path, model, astronaut) -> None:
    """--gallery: dlib's detector finds the faces of a folder of photos; they join the
    gallery the anonymized faces are identified among (and lower the chance level)."""
    from adaptanon.evaluate.identity import gallery_descriptors, identity_summary
    from adaptanon.evaluate.rows import ImageRow

    folder = tmp_path / "gallery"
    folder.mkdir()
    Image.fromarray(skdata.astronaut()).save(folder / "a.png")
    (folder / "broken.png").write_bytes(b"not an image")
    found = gallery_descriptors(folder)
    assert found.shape[0] >= 1 and found.shape[1] == 128
    marks = model.landmarks(astronaut, ASTRONAUT_FACE)
    d = model.descriptor(astronaut, marks).tolist()
    row = ImageRow(input="x", identity_faces=[{"original": d, **dict.fromkeys(
        ("plain", "corrected", "plain_attacked", "corrected_attacked"), d)}])  # fmt: skip
    alone, more = identity_summary([row]), identity_summary([row], found)
    assert alone["identity_gallery"] == 1 and alone["identity_chance_pct"] == 100.0
    assert more["identity_gallery"] == 1 + len(found)
    assert more["identity_verify_plain_pct"] == 100.0


def test_cli_identity_check(tmp_path: Path) -> None:
    """anonymize: a face (a COCO detection named face) under a fine mosaic is weak with the
    default check (exit 1, distance in the manifest), and the summary says the check ran;
    `off` turns it off; a bad value is a usage error."""
    from click.testing import CliRunner

    from adaptanon.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(skdata.astronaut()).save(folder / "a.png")
    x0, y0, x1, y1 = ASTRONAUT_FACE
    coco = {
        "images": [{"id": 1, "file_name": "a.png"}],
        "annotations": [{"image_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "category_id": 1}],
        "categories": [{"id": 1, "name": "face"}],
    }
    (tmp_path / "det.json").write_text(json.dumps(coco))
    common = ["anonymize", str(folder), "--model", "tiny_factory:make", "--device", "cpu",
              "--regions", f"coco={tmp_path / 'det.json'}", "--filter", "mosaic",
              "--mosaic-block", "2", "--no-filter-scaling",
              "--max-region-ssim", "1", "--max-region-detail", "1"]  # fmt: skip
    res = CliRunner().invoke(main, [*common, "-o", str(tmp_path / "a")])
    assert res.exit_code == 1, res.output
    assert "faces checked" in res.output
    (rec,) = [json.loads(line) for line in (tmp_path / "a/manifest.jsonl").open()]
    assert rec["status"] == "weak" and rec["identity_distance"][0] < DEFAULT_MIN_DISTANCE
    res = CliRunner().invoke(
        main, [*common, "-o", str(tmp_path / "b"), "--min-identity-distance", "off"]
    )
    assert res.exit_code == 0, res.output
    assert "identity check off" in res.output
    (rec,) = [json.loads(line) for line in (tmp_path / "b/manifest.jsonl").open()]
    assert rec["status"] in ("unchanged", "corrected") and rec["identity_distance"] == []
    res = CliRunner().invoke(
        main, [*common, "-o", str(tmp_path / "c"), "--min-identity-distance", "-1"]
    )
    assert res.exit_code == 2 and "--min-identity-distance" in res.output
