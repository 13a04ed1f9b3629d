"""Resolution-independent steps: the preprocessing computes the view band from a window of
the image, and the solver works on that window only, with the same result as on the full
image (same steps, same pixels, same logits)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_image

from adaptanon.classifiers import TorchClassifier
from adaptanon.io.codecs import Codec
from adaptanon.method import Blur, Mask, Settings, process_batch
from adaptanon.method.criteria import SameClass
from adaptanon.method.filters import anonymize
from adaptanon.method.solvers import GradientSolver, correct
from adaptanon.method.solvers import gradient as gradient_module
from adaptanon.method.solvers import region as region_module
from adaptanon.preprocessing import Preprocess, PreprocessSpec, SpecPreprocess
from adaptanon.regions import ExplicitBoxes

Box = tuple[int, int, int, int]

PREPROCESSINGS = {
    "pil": Preprocess(resize=40, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    "spec-bilinear": SpecPreprocess(PreprocessSpec(resize=40, crop=32)),
    "spec-bicubic": SpecPreprocess(PreprocessSpec(interpolation="bicubic", resize=40, crop=32)),
    "spec-lanczos": SpecPreprocess(PreprocessSpec(interpolation="lanczos", resize=36, crop=30)),
    "spec-nearest": SpecPreprocess(PreprocessSpec(interpolation="nearest", resize=40, crop=32)),
    "opencv-linear": SpecPreprocess(
        PreprocessSpec(backend="opencv", interpolation="linear", resize=(32, 32), crop=None)
    ),
    "opencv-area": SpecPreprocess(
        PreprocessSpec(backend="opencv", interpolation="area", resize=(30, 34), crop=None)
    ),
    "letterbox": SpecPreprocess(
        PreprocessSpec(
            backend="opencv",
            interpolation="linear",
            resize=(32, 32),
            crop=None,
            letterbox=True,
            fill=(114.0, 114.0, 114.0),
        )
    ),
}

SIZES = [(48, 64), (97, 61), (120, 160), (33, 40)]


def boxes_for(h: int, w: int) -> list[Box]:
    """Boxes in the middle, at each border and corner, tiny, and outside the centre crop."""
    return [
        (w // 3, h // 3, w // 2, h // 2),
        (0, 0, w // 4 + 1, h // 5 + 1),
        (w - w // 5, h - h // 4, w, h),
        (0, h // 3, w, h // 3 + 3),
        (w // 2, h // 2, w // 2 + 1, h // 2 + 1),
        (0, 0, 1, h),  # the first column: outside a centre crop of a wide image
        (w - 1, 0, w, 1),
    ]


def window_crop(image: torch.Tensor, window: Box) -> tuple[torch.Tensor, tuple[int, int]]:
    x0, y0, x1, y1 = window
    return image[:, y0:y1, x0:x1].clone(), (y0, x0)


@pytest.mark.parametrize("name", list(PREPROCESSINGS))
@pytest.mark.parametrize("size", SIZES)
def test_update_from_a_window_equals_the_full_update(name, size):
    pre = PREPROCESSINGS[name]
    h, w = size
    reference = make_image(h, w, seed=1)
    base = pre(reference)
    for k, box in enumerate(boxes_for(h, w)):
        image = reference.clone()
        x0, y0, x1, y1 = box
        image[:, y0:y1, x0:x1] = make_image(y1 - y0, x1 - x0, seed=10 + k)
        window = pre.window(h, w, box)
        assert window[0] <= x0 and window[1] <= y0 and window[2] >= x1 and window[3] >= y1
        assert 0 <= window[0] and 0 <= window[1] and window[2] <= w and window[3] <= h
        crop, offset = window_crop(image, window)
        expected = pre(image)
        assert torch.equal(pre.update(image, base, box), expected), (name, size, box)
        assert torch.equal(pre.update(crop, base, box, offset, (h, w)), expected), (name, box)


@pytest.mark.parametrize("name", ["pil", "spec-bilinear", "opencv-linear"])
def test_window_gradient_equals_the_full_gradient(name):
    pre = PREPROCESSINGS[name]
    h, w = 97, 61
    reference = make_image(h, w, seed=2)
    base = pre(reference)
    box = (10, 40, 30, 60)
    window = pre.window(h, w, box)
    weights = torch.randn(base.shape, generator=torch.Generator().manual_seed(0))
    full = reference.clone().requires_grad_(True)
    (g_full,) = torch.autograd.grad((pre.update(full, base, box) * weights).sum(), [full])
    crop, offset = window_crop(reference, window)
    crop.requires_grad_(True)
    out = pre.update(crop, base, box, offset, (h, w))
    (g_crop,) = torch.autograd.grad((out * weights).sum(), [crop])
    x0, y0, x1, y1 = window
    assert torch.equal(g_crop, g_full[:, y0:y1, x0:x1])
    outside = g_full.clone()
    outside[:, y0:y1, x0:x1] = 0
    assert not outside.any()


@pytest.mark.parametrize("name", ["pil", "spec-bicubic", "opencv-area"])
def test_a_window_too_small_is_refused(name):
    pre = PREPROCESSINGS[name]
    h, w = 120, 160
    image = make_image(h, w)
    base = pre(image)
    box = (70, 50, 90, 70)
    x0, y0, x1, y1 = pre.window(h, w, box)
    crop = image[:, y0 + 1 : y1, x0:x1]
    with pytest.raises(ValueError, match="outside the"):
        pre.update(crop, base, box, (y0 + 1, x0), (h, w))


def test_torch_backend_window_is_the_whole_image():
    pre = SpecPreprocess(PreprocessSpec(backend="torch", antialias=True, resize=40, crop=32))
    assert pre.window(50, 70, (3, 4, 10, 12)) == (0, 0, 70, 50)


def make_classifier(name: str, tiny: TorchClassifier) -> TorchClassifier:
    return TorchClassifier(tiny.model, PREPROCESSINGS[name], name=f"tiny-{name}")


def run_both(monkeypatch, clf, images, masks, target, **kwargs):
    """The full and the windowed correction; asserts that the second took windows (smaller
    than the image for some) when the codec is lossless."""
    results = []
    seen: list = []
    windows = gradient_module.input_windows

    def spy(*args):
        seen.append(windows(*args))
        return seen[-1]

    monkeypatch.setattr(gradient_module, "input_windows", spy)
    for windowed in (False, True):
        monkeypatch.setattr(region_module, "WINDOWED", windowed)
        bases = [clf.inputs([img])[0] for img in images]
        results.append(correct(clf, images, masks, target, bases=bases, **kwargs))
    codec = kwargs.get("codec")
    if codec is None or codec.lossless:
        assert seen[0] is None and seen[1] is not None
        sizes = [(img.shape[-1], img.shape[-2]) for img in images]
        assert any(
            w[2] - w[0] < s[0] or w[3] - w[1] < s[1] for w, s in zip(seen[1], sizes, strict=True)
        )
    return results


def assert_same(full, windowed):
    assert torch.equal(full.steps, windowed.steps)
    assert torch.equal(full.success, windowed.success)
    assert torch.equal(full.initial_logits, windowed.initial_logits)
    assert torch.equal(full.logits, windowed.logits)
    for key in ("images", "stored", "initial"):
        for a, b in zip(getattr(full, key), getattr(windowed, key), strict=True):
            assert a.shape == b.shape
            assert torch.equal(a, b), key


def masked_images(boxes: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each of :data:`SIZES` masked in each of its first ``boxes`` boxes, and the masks."""
    images, masks = [], []
    for seed, (h, w) in enumerate(SIZES):
        img = make_image(h, w, seed=seed)
        for k, box in enumerate(boxes_for(h, w)[:boxes]):
            a, m = anonymize(img, [box], Mask(0.5 + 0.1 * k))
            images.append(a)
            masks.append(m)
    return images, masks


@pytest.mark.parametrize("name", ["pil", "spec-bicubic", "opencv-linear", "letterbox"])
def test_windowed_correction_equals_the_full_correction(monkeypatch, tiny, name):
    clf = make_classifier(name, tiny)
    images, masks = masked_images(4)
    # An empty mask (an image without regions) and two regions in one image.
    img = make_image(64, 80, seed=9)
    images.append(img)
    masks.append(torch.zeros(1, 64, 80, dtype=torch.bool))
    a, m = anonymize(img, [(2, 3, 12, 20), (60, 40, 78, 60)], Mask(1.0))
    images.append(a)
    masks.append(m)
    target = torch.randint(0, 10, (len(images),), generator=torch.Generator().manual_seed(0))
    full, windowed = run_both(
        monkeypatch,
        clf,
        images,
        masks,
        target,
        criterion=SameClass(margin=50.0),
        max_steps=4,
        alpha=0.2,
    )
    assert int(full.steps.max()) == 4  # the criterion never holds: every step is taken
    assert_same(full, windowed)


def test_windowed_correction_with_delta_and_convergence(monkeypatch, tiny):
    images, masks = [], []
    for seed, (h, w) in enumerate(SIZES):
        img = make_image(h, w, seed=seed)
        a, m = anonymize(img, [boxes_for(h, w)[0]], Mask(1.0))
        images.append(a)
        masks.append(m)
    target = torch.arange(len(images)) % 10
    full, windowed = run_both(
        monkeypatch, tiny, images, masks, target, max_steps=30, alpha=0.3, delta=0.2
    )
    assert_same(full, windowed)


def test_lossy_codec_keeps_the_full_path(monkeypatch, tiny):
    img = make_image(60, 80, seed=3)
    a, m = anonymize(img, [(20, 20, 40, 40)], Mask(1.0))
    full, windowed = run_both(
        monkeypatch,
        tiny,
        [a],
        [m],
        torch.tensor([1]),
        criterion=SameClass(margin=50.0),
        max_steps=2,
        codec=Codec("jpg", quality=90),
    )
    assert_same(full, windowed)


def test_process_batch_is_the_same_windowed_or_not(monkeypatch, tiny):
    images = [make_image(h, w, seed=s) for s, (h, w) in enumerate([(90, 120), (160, 100)])]
    source = ExplicitBoxes({"a": [(10, 12, 50, 40)], "b": [(0, 100, 30, 160), (60, 20, 100, 60)]})
    outcomes = []
    for windowed in (False, True):
        monkeypatch.setattr(region_module, "WINDOWED", windowed)
        settings = Settings(
            filter=Blur(),
            criterion=SameClass(margin=50.0),
            solver=GradientSolver(alpha=0.1, max_steps=3),
        )
        outcomes.append(process_batch(tiny, source, settings, ["a", "b"], images))
    for full, windowed in zip(*outcomes, strict=True):
        assert full.data == windowed.data
        assert full.record.to_dict() == windowed.record.to_dict()
        assert full.record.steps == 3


PIL_SPECS = ["pil", "spec-bilinear", "spec-bicubic", "spec-lanczos", "spec-nearest"]


@pytest.mark.parametrize("name", PIL_SPECS)
def test_batched_window_update_equals_each_update(name):
    """update_many (one padded batch, band matrices) gives exactly each image's update,
    and a gradient equal up to the order of the sums."""
    pre = PREPROCESSINGS[name]
    crops, bases, boxes, frames = [], [], [], []
    for seed, (h, w) in enumerate(SIZES):
        reference = make_image(h, w, seed=seed)
        base = pre(reference)
        for box in boxes_for(h, w)[:5]:
            window = pre.window(h, w, box)
            crop, (top, left) = window_crop(reference, window)
            crop = crop + 0.0  # a fresh tensor per image
            crops.append(crop.requires_grad_(True))
            bases.append(base)
            boxes.append(box)
            frames.append((top, left, h, w))
    weights = torch.randn(len(crops), *bases[0].shape, generator=torch.Generator().manual_seed(0))
    each = torch.stack(
        [
            pre.update(c, b, box, (f[0], f[1]), (f[2], f[3]))
            for c, b, box, f in zip(crops, bases, boxes, frames, strict=True)
        ]
    )
    together = pre.update_many(crops, bases, boxes, frames)
    assert together is not None and torch.equal(together, each)
    g_each = torch.autograd.grad((each * weights).sum(), crops, allow_unused=True)
    g_together = torch.autograd.grad((together * weights).sum(), crops, allow_unused=True)
    for a, b in zip(g_each, g_together, strict=True):
        assert (a is None) == (b is None) or (a is None and not b.any())
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_batched_windows_leave_other_backends_to_each_image():
    pre = PREPROCESSINGS["opencv-linear"]
    image = make_image(48, 64)
    assert pre.update_many([image], [pre(image)], [(4, 4, 10, 10)], [(0, 0, 48, 64)]) is None


@pytest.mark.parametrize("name", ["pil", "spec-bicubic"])
def test_windowed_correction_with_batched_windows_is_the_same(tiny, name):
    images, masks = masked_images(3)
    target = torch.randint(0, 10, (len(images),), generator=torch.Generator().manual_seed(1))
    results = []
    for batched in (False, True):
        clf = TorchClassifier(tiny.model, PREPROCESSINGS[name], batched_windows=batched)
        bases = [clf.inputs([img])[0] for img in images]
        results.append(correct(clf, images, masks, target, bases=bases, max_steps=6, alpha=0.2))
    assert results[0].steps.max() > 0
    assert_same(*results)


def test_windows_too_different_for_slots_go_image_by_image(monkeypatch, tiny):
    from adaptanon.method.solvers import slots as slots_module

    monkeypatch.setattr(slots_module, "MAX_PADDING", 0.0)  # never pad: a list of windows
    images, masks = masked_images(2)
    target = torch.arange(len(images)) % 10
    full, windowed = run_both(monkeypatch, tiny, images, masks, target, max_steps=8, alpha=0.3)
    assert int(windowed.steps.max()) > 0
    assert_same(full, windowed)
