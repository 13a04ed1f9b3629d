"""The library API a Python user calls: Anonymizer and anonymize, what they take (paths,
PIL images, numpy arrays, tensors, plain modules), input checks, no_grad, and the README's
and the docstring's examples run as written."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import tiny_factory
import torch
from conftest import make_image, save_png, to_uint8
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
    as_image,
    correct,
    load_classifier,
    read_image,
    to_image,
    to_pixels,
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


# --- What users hold: PIL images, numpy arrays, paths, plain modules (issue 25, item 4) ---

BOX = (16, 12, 40, 36)
"""A box inside the 48x56 test images."""


def photo(seed: int = 3) -> np.ndarray:
    """A ``(48, 56, 3)`` uint8 image."""
    return to_uint8(make_image(48, 56, seed))


def outside(pixels: np.ndarray, box: tuple[int, int, int, int] = BOX) -> np.ndarray:
    """The pixels of ``(H, W, C)`` ``pixels`` outside ``box``, flattened."""
    keep = np.ones(pixels.shape[:2], dtype=bool)
    x0, y0, x1, y1 = box
    keep[y0:y1, x0:x1] = False
    return pixels[keep]


@pytest.fixture
def masking(device) -> Anonymizer:
    """The tiny classifier masking white, on the test device."""
    return Anonymizer(tiny_factory.make(), filter=Mask(1.0), device=device)


def test_the_top_level_names_are_the_full_anonymization_and_the_plain_filter():
    import adaptanon
    from adaptanon.method import filters

    assert adaptanon.anonymize is adaptanon.api.anonymize
    assert adaptanon.apply_filter is filters.anonymize


def test_a_numpy_image_in_three_lines_as_the_docstring_says():
    """The example in ``adaptanon.anonymize``'s docstring, run as written, with a plain
    PyTorch module as ``net`` and a numpy image as ``pixels``."""
    import textwrap

    import adaptanon

    doc = adaptanon.anonymize.__doc__ or ""
    block = doc[doc.index("::\n") + 3 :].lstrip("\n")
    lines = textwrap.dedent(block.split("\n\n")[0]).splitlines()
    assert len(lines) == 3 and lines[0] == "import adaptanon"
    pixels = photo()
    space = {"net": tiny_factory.tiny_net(), "pixels": pixels}
    exec(compile("\n".join(lines), "adaptanon.anonymize.__doc__", "exec"), space)
    result = space["result"]
    assert result.ok, result.record.error
    out = space["anonymized"]
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == pixels.shape
    assert result.record.regions == [[16, 8, 48, 40]]


def test_a_numpy_uint8_image_comes_back_as_numpy_changed_only_inside_the_box(masking):
    pixels = photo()
    result = masking.anonymize(pixels, [BOX])
    assert result.ok and result.record.status in (Status.UNCHANGED, Status.CORRECTED)
    out = result.image
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (48, 56, 3)
    assert np.array_equal(outside(out), outside(pixels))
    x0, y0, x1, y1 = BOX
    assert not np.array_equal(out[y0:y1, x0:x1], pixels[y0:y1, x0:x1])
    assert np.array_equal(Codec().decode(result.data), out)


def test_a_float_array_in_0_1_is_the_same_image_not_a_black_one(masking):
    pixels = photo()
    floats = pixels.astype(np.float32) / 255
    assert torch.equal(as_image(floats), to_image(pixels))
    from_floats = masking.anonymize(floats, [BOX])
    assert from_floats.ok and isinstance(from_floats.image, np.ndarray)
    assert np.array_equal(outside(from_floats.image), outside(pixels)), "not black: the photo"
    assert outside(from_floats.image).mean() > 50
    assert np.array_equal(from_floats.image, masking.anonymize(pixels, [BOX]).image)
    off_grid = np.linspace(0, 1, 48 * 56 * 3, dtype=np.float64).reshape(48, 56, 3)
    assert torch.equal(as_image(off_grid), to_image(np.round(off_grid * 255).astype(np.uint8)))


@pytest.mark.parametrize("shape", [(48, 56), (48, 56, 1)])
def test_greyscale_arrays_are_replicated_to_three_channels(masking, shape):
    grey = photo()[:, :, 0]
    image = as_image(grey.reshape(shape))
    assert image.shape == (3, 48, 56)
    assert torch.equal(image, to_image(np.repeat(grey[:, :, None], 3, axis=2)))
    result = masking.anonymize(grey.reshape(shape), [BOX])
    assert result.ok and result.image.shape == (48, 56, 3)
    assert np.array_equal(outside(result.image), outside(np.repeat(grey[:, :, None], 3, axis=2)))


def test_rgba_arrays_and_pil_images_are_composited_on_white():
    rgb = photo()
    alpha = np.full((48, 56, 1), 255, dtype=np.uint8)
    alpha[:10] = 0  # the top rows fully transparent
    rgba = np.concatenate([rgb, alpha], axis=2)
    expected = rgb.copy()
    expected[:10] = 255
    assert torch.equal(as_image(rgba), to_image(expected))
    assert torch.equal(as_image(Image.fromarray(rgba, "RGBA")), to_image(expected))
    la = Image.fromarray(rgba[:, :, [0, 3]], "LA")
    grey = np.repeat(rgb[:, :, :1], 3, axis=2)
    grey[:10] = 255
    assert torch.equal(as_image(la), to_image(grey))


def test_a_png_file_and_the_same_image_in_memory_give_the_same_pixels(tmp_path):
    rgba = np.concatenate([photo(), np.full((48, 56, 1), 128, np.uint8)], axis=2)
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    from_file = as_image(path)
    assert torch.equal(from_file, as_image(str(path)))
    assert torch.equal(from_file, as_image(Image.open(path)))
    assert torch.equal(from_file, as_image(rgba))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK", "I;16", "1"])
def test_pil_images_of_any_mode_come_back_as_rgb_pil(masking, mode):
    base = Image.fromarray(photo(), "RGB")
    if mode == "I;16":
        pil = Image.fromarray(np.asarray(base.convert("L")).astype("<u2") * 257)
        assert pil.mode == "I;16"
        expected = np.repeat(np.asarray(base.convert("L"))[:, :, None], 3, axis=2)
    else:
        pil = base.convert(mode)
        expected = np.asarray(pil.convert("RGBA" if mode == "RGBA" else "RGB").convert("RGB"))
    assert torch.equal(as_image(pil), to_image(np.ascontiguousarray(expected)))
    result = masking.anonymize(pil, [BOX])
    assert result.ok, result.record.error
    assert isinstance(result.image, Image.Image)
    assert result.image.mode == "RGB" and result.image.size == (56, 48)
    assert np.array_equal(outside(np.asarray(result.image)), outside(expected))


def test_a_path_comes_back_as_numpy_pixels_and_saves_the_verified_file(masking, tmp_path):
    pixels = photo()
    src = tmp_path / "in.png"
    Image.fromarray(pixels, "RGB").save(src)
    result = masking.anonymize(src, [BOX])
    assert result.ok and isinstance(result.image, np.ndarray)
    assert result.record.input == str(src) and result.record.settings["regions"] == "boxes"
    assert np.array_equal(result.image, masking.anonymize(pixels, [BOX]).image)
    with pytest.raises(ValueError, match="overwrite the input"):
        result.save(src)
    written = result.save(tmp_path / "out.png")
    assert written.read_bytes() == result.data and result.record.output == str(written)
    assert np.array_equal(read_image(written), result.image)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"^cannot read image .*broken.png"):
        masking.anonymize(tmp_path / "broken.png", [BOX])


def test_a_tensor_comes_back_as_a_tensor(masking):
    image = to_image(photo())
    result = masking.anonymize(image, [BOX])
    assert isinstance(result.image, torch.Tensor) and result.image.shape == (3, 48, 56)
    assert np.array_equal(to_pixels(result.image), masking.anonymize(photo(), [BOX]).image)


def test_an_image_that_may_not_be_used_is_not_handed_out(tiny, device):
    failing = Anonymizer(tiny, filter=Mask(1.0), solver=GradientSolver(max_steps=0), device=device)
    results = [failing.anonymize(photo(seed), [BOX]) for seed in range(8)]
    failed = [r for r in results if r.record.status == Status.FAILED]
    assert failed, "with no steps allowed, some image keeps the changed class"
    for r in failed:
        assert r.image is None and r.data is None and not r.ok
        with pytest.raises(ValueError, match="nothing to save: status failed"):
            r.save("never.png")


def test_a_plain_module_gets_the_factory_wrapper(device):
    """``Anonymizer(module)`` wraps it exactly as ``load_classifier`` wraps a
    ``module:function`` factory's module: the ImageNet-standard preprocessing."""
    anon = Anonymizer(tiny_factory.tiny_net(), device=device)
    from_factory = load_classifier("tiny_factory:tiny_net")
    assert isinstance(anon.classifier, TorchClassifier)
    assert isinstance(from_factory, TorchClassifier)
    assert isinstance(anon.classifier.preprocess, Preprocess)
    assert anon.classifier.preprocess.spec == from_factory.preprocess.spec
    assert (anon.classifier.preprocess.resize, anon.classifier.preprocess.crop) == (256, 224)
    assert anon.classifier.name == "Sequential"
    [out] = anon([photo()], boxes=[[BOX]])
    assert out.status.ok, out.record.error
    assert out.record.original_class == out.record.final_class
    custom = Anonymizer(tiny_factory.tiny_net(), preprocess=tiny_factory.TINY_PREPROCESS)
    assert custom.classifier.preprocess is tiny_factory.TINY_PREPROCESS


def test_the_function_and_the_anonymizer_give_the_same_bytes(device):
    """The same input through ``adaptanon.anonymize`` and through ``Anonymizer``'s call
    (default filter and solver, a plain module) gives byte-identical pixels and files."""
    import adaptanon

    pixels = photo(5)
    result = adaptanon.anonymize(
        pixels, model=tiny_factory.tiny_net(), regions=[BOX], device=device
    )
    [outcome] = Anonymizer(tiny_factory.tiny_net(), device=device)([to_image(pixels)], [[BOX]])
    assert result.ok and outcome.image is not None
    assert result.record.status == outcome.status
    assert result.image.tobytes() == to_pixels(outcome.image).tobytes()
    assert result.data == outcome.data


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((8, 8, 5), np.uint8), r"\(H, W, 3\) RGB or \(H, W, 4\) RGBA, got \(8, 8, 5\)"),
        (np.zeros((3, 8, 9), np.uint8), r"channel-first .*transpose\(1, 2, 0\)"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"\(H, W\) or \(H, W, 1\) greyscale"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        (np.full((8, 8, 3), 1.5), r"values in \[0, 1\], got \[1.5, 1.5\]"),
        (np.full((8, 8, 3), -0.1, np.float32), r"values in \[0, 1\]"),
        (np.full((8, 8), np.nan), "NaN"),
        (np.zeros((8, 8, 3), np.int64), "dtype int64"),
        (np.zeros((8, 8, 3), bool), "dtype bool"),
        ([[0, 1], [1, 0]], r"file path, a PIL image, a numpy array .*got list"),
    ],
)
def test_what_is_not_an_image_is_refused_naming_what_is(masking, image, match):
    with pytest.raises(ValueError, match=match):
        as_image(image)
    with pytest.raises(ValueError, match="image 0: .*" + match):
        masking([image], boxes=[[(0, 0, 4, 4)]])
    import adaptanon

    with pytest.raises(ValueError, match=match):
        adaptanon.anonymize(image, model=masking.classifier, regions=[(0, 0, 4, 4)])


def test_one_image_where_a_list_is_expected_is_refused(masking):
    """Iterating one array would give its rows, each a (W, 3) "greyscale image"."""
    import adaptanon

    for one in (photo(), to_image(photo()), Image.fromarray(photo(), "RGB"), "photo.png"):
        with pytest.raises(ValueError, match=r"sequence of images.*\[image\]"):
            masking(one, boxes=[[BOX]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"list of boxes.*one box \(16, 12, 40, 36\)"):
        adaptanon.anonymize(photo(), model=masking.classifier, regions=BOX)
