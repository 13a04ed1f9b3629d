"""The library API a Python user calls: Anonymizer, input checks, no_grad, and the
README's example run as written."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import tiny_factory
import torch
from conftest import make_image, save_png
from PIL import Image
from torch import nn

from adaptanon import (
    AllOf,
    Anonymizer,
    Codec,
    GradientSolver,
    Mask,
    ProbabilityDistance,
    SameClass,
    Settings,
    Status,
    TorchClassifier,
    correct,
    read_image,
    to_image,
)
from adaptanon.preprocessing import Preprocess

README = Path(__file__).resolve().parents[1] / "README.md"


def centre_box(img: torch.Tensor) -> tuple[int, int, int, int]:
    h, w = img.shape[1:]
    return (w // 4, h // 4, 3 * w // 4, 3 * h // 4)


@pytest.fixture
def anon(device) -> Anonymizer:
    """The tiny classifier on the test device (``pytest --device cuda``), masking white."""
    return Anonymizer(tiny_factory.make(), filter=Mask(1.0), device=device)


def test_call_under_no_grad_corrects(anon, synth_batch):
    boxes = [[centre_box(img)] for img in synth_batch]
    with torch.no_grad():
        outs = anon(synth_batch, boxes=boxes)
    statuses = [o.status for o in outs]
    assert Status.CORRECTED in statuses, "masking the centre white changes the tiny model's class"
    assert set(statuses) <= {Status.UNCHANGED, Status.CORRECTED}
    assert anon.batch_size == (64 if anon.classifier.device.type == "cuda" else 8)
    for o in outs:
        assert o.record.final_class == o.record.original_class
        assert o.image is not None and o.data is not None
        assert np.array_equal(
            Codec().decode(o.data), (o.image.permute(1, 2, 0) * 255).round().byte().cpu().numpy()
        )


def test_inference_mode_is_refused_with_a_reason(anon, synth_batch):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        anon(synth_batch[:1], boxes=[[centre_box(synth_batch[0])]])


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (torch.zeros(3, 8, 8, dtype=torch.uint8), "float"),
        (torch.zeros(8, 8, 3), r"shape \(3, H, W\)"),
        (torch.zeros(1, 3, 8, 8), r"shape \(3, H, W\)"),
        (torch.full((3, 8, 8), 2.0), r"\[0, 1\]"),
        (torch.full((3, 8, 8), float("nan")), "finite"),
    ],
)
def test_inputs_are_checked(anon, image, match):
    with pytest.raises(ValueError, match=match):
        anon([image], boxes=[[(0, 0, 4, 4)]])


def test_probability_criterion_requires_the_reference(tiny, synth_batch):
    img = synth_batch[0]
    mask = torch.zeros(1, *img.shape[1:], dtype=torch.bool)
    crit = AllOf((SameClass(), ProbabilityDistance(0.1)))
    with pytest.raises(ValueError, match="reference"):
        correct(tiny, [img], [mask], torch.tensor([0]), criterion=crit)


def test_the_callers_module_is_left_as_found_except_eval(synth_batch):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    with pytest.warns(UserWarning, match="eval mode"):
        clf = TorchClassifier(net, Preprocess(40, 32), name="user")
    assert all(p.requires_grad for p in net.parameters())
    Anonymizer(clf, device="cpu")(synth_batch[:2], boxes=[[(0, 0, 20, 20)], []])
    assert all(p.requires_grad for p in net.parameters()) and all(
        p.grad is None for p in net.parameters()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TorchClassifier(net.eval(), Preprocess(40, 32))  # no warning for a module in eval mode


def test_no_boxes_gives_no_regions_not_unchanged(anon, synth_batch):
    [out] = anon(synth_batch[:1], boxes=[[]])
    assert out.status == Status.NO_REGIONS and out.record.regions == []


def test_box_outside_the_models_view_is_not_an_error(tiny):
    """A box in the margin that the centre crop drops has no gradient: the image is
    `unchanged` (the view is untouched) or `failed` if the criterion fails on the view,
    never an autograd error."""
    img = make_image(40, 120, 3)
    g = tiny.geometry(40, 120)
    assert g is not None and g.left > 10
    outs = Anonymizer(tiny, device="cpu", criterion=SameClass(50.0))([img], boxes=[[(0, 0, 8, 40)]])
    assert outs[0].status in (Status.UNCHANGED, Status.FAILED), outs[0].record.error
    assert "grad" not in (outs[0].record.error or "")


def test_anonymize_file_writes_only_verified_files(anon, tmp_path):
    img = make_image(60, 50, 1)
    src = save_png(img, tmp_path / "in.png")
    rec = anon.anonymize_file(src, tmp_path / "out.png", boxes=[centre_box(img)])
    assert rec.status.ok and rec.output == str(tmp_path / "out.png")
    assert rec.input == str(src) and rec.settings["model"] == "tiny"
    written = read_image(tmp_path / "out.png")
    logits = anon.classifier.logits([to_image(written, anon.classifier.device)])
    assert int(logits.argmax()) == rec.original_class
    with pytest.raises(ValueError, match="overwrite the input"):
        anon.anonymize_file(src, src)
    failing = Anonymizer(
        anon.classifier,
        filter=Mask(1.0),
        solver=GradientSolver(max_steps=0),
        device=anon.classifier.device,
    )
    imgs = [make_image(48, 64, s) for s in range(6)]
    recs = []
    for s, im in enumerate(imgs):
        path = save_png(im, tmp_path / f"s{s}.png")
        recs.append(failing.anonymize_file(path, tmp_path / f"o{s}.png", boxes=[centre_box(im)]))
    failed = [s for s, r in enumerate(recs) if r.status == Status.FAILED]
    assert failed, "with no steps allowed, some image keeps the changed class"
    for s in failed:
        assert recs[s].output is None and not (tmp_path / f"o{s}.png").exists()


@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch):
    """The README's Python example, as written, with the real default model."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "README has no Python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(code.group(1), "README.md", "exec"), {})
    assert Image.open(tmp_path / "astronaut.png").size == (512, 512)


def test_settings_given_whole_are_kept_when_one_part_is_overridden(tiny):
    from adaptanon.method.metrics import StrengthLimits

    settings = Settings(strength=StrengthLimits(max_ssim=0.9), robust=False)
    anon = Anonymizer(tiny, settings=settings, filter=Mask(0.2), device="cpu")
    assert anon.settings.strength == StrengthLimits(max_ssim=0.9)
    assert anon.settings.filter == Mask(0.2) and anon.settings.codec == settings.codec
