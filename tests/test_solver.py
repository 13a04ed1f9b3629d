"""solver: normalised gradient steps on the region pixels, checked on the stored pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from adaptanon.classifiers import TorchClassifier
from adaptanon.io.codecs import Codec, to_image, to_pixels
from adaptanon.method.criteria import SameClass, logit_margin
from adaptanon.method.filters import Mask, anonymize
from adaptanon.method.solvers import correct, normalized_step, project


def centre_box(img: torch.Tensor) -> tuple[int, int, int, int]:
    h, w = img.shape[1:]
    return (w // 4, h // 4, 3 * w // 4, 3 * h // 4)


def classify(clf: TorchClassifier, images) -> torch.Tensor:
    with torch.no_grad():
        return clf.logits(list(images))


@pytest.fixture(scope="module")
def flipped(tiny, synth_batch):
    """Images whose class the tiny model changes once a white square covers their centre:
    ``(originals, anonymized, masks, targets)``."""
    originals, anon, masks, targets = [], [], [], []
    for img in synth_batch:
        a, m = anonymize(img, [centre_box(img)], Mask(1.0))
        before = int(classify(tiny, [img]).argmax())
        after = int(classify(tiny, [a]).argmax())
        if before != after:
            originals.append(img)
            anon.append(a)
            masks.append(m)
            targets.append(before)
    assert len(anon) >= 3, "the tiny model should change its decision on masked images"
    return originals, anon, masks, torch.tensor(targets)


def test_correct_converges_to_the_original_class(tiny, flipped):
    _, anon, masks, target = flipped
    res = correct(tiny, anon, masks, target)
    assert res.success.all()
    assert (res.steps > 0).all()  # the anonymized images failed at step 0
    assert torch.equal(res.initial_logits.argmax(1) != target, torch.ones_like(target, dtype=bool))
    assert torch.equal(res.logits.argmax(1), target)
    # Re-classify the stored images from scratch: same class, with the default margin.
    stored = [to_image(to_pixels(x)) for x in res.images]
    logits = classify(tiny, stored)
    assert torch.equal(logits.argmax(1), target)
    assert bool((logit_margin(logits, target) > 0).all())
    for s, img in zip(res.stored, res.images, strict=True):
        assert np.array_equal(to_pixels(s), to_pixels(img))


def test_initial_is_the_anonymized_image_as_stored(tiny, flipped):
    _, anon, masks, target = flipped
    codec = Codec("jpg", 80)
    res = correct(tiny, anon[:2], masks[:2], target[:2], codec=codec, max_steps=2)
    for a, init, logits in zip(anon[:2], res.initial, res.initial_logits, strict=True):
        assert np.array_equal(to_pixels(init), codec.stored_pixels(a))
        with torch.no_grad():
            again = tiny.logits([to_image(codec.stored_pixels(a))])[0]
        assert int(again.argmax()) == int(logits.argmax())


def test_correct_changes_only_mask_pixels(tiny, flipped):
    _, anon, masks, target = flipped
    res = correct(tiny, anon, masks, target)
    for img, start, m in zip(res.images, anon, masks, strict=True):
        out_px, start_px = to_pixels(img), to_pixels(start)
        outside = ~m[0].numpy()
        assert np.array_equal(out_px[outside], start_px[outside])  # bit-identical as stored
        assert torch.equal(img[~m.expand_as(img)], start[~m.expand_as(start)])
        assert not np.array_equal(out_px[~outside], start_px[~outside])  # the region moved
        assert float(img.min()) >= 0 and float(img.max()) <= 1


def test_early_stop_per_image_inside_a_batch(tiny, synth_batch, flipped):
    _, anon, masks, target = flipped
    # An image that passes as is: no anonymization, but a region the solver could change.
    ok_img = synth_batch[0]
    ok_mask = torch.zeros(1, *ok_img.shape[1:], dtype=torch.bool)
    ok_mask[:, 10:30, 10:30] = True
    ok_target = classify(tiny, [ok_img]).argmax(1)
    assert bool(SameClass()(classify(tiny, [ok_img]), ok_target, None).all())
    res = correct(
        tiny,
        [ok_img, anon[0], anon[1]],
        [ok_mask, masks[0], masks[1]],
        torch.cat([ok_target, target[:2]]),
    )
    assert res.steps[0] == 0 and res.success[0]
    assert (res.steps[1:] > 0).all() and res.success.all()
    assert torch.equal(res.images[0], ok_img)  # never modified after it passed
    assert torch.equal(res.stored[0], ok_img)
    assert torch.equal(res.initial_logits[0], res.logits[0])


def test_steps_match_a_single_image_run(tiny, flipped):
    """An image's path does not depend on the other images of its batch."""
    _, anon, masks, target = flipped
    batch = correct(tiny, anon[:3], masks[:3], target[:3])
    for i in range(3):
        alone = correct(tiny, [anon[i]], [masks[i]], target[i : i + 1])
        assert int(alone.steps[0]) == int(batch.steps[i])
        # Same path up to float noise between batch compositions (at most one 8-bit level).
        diff = np.abs(to_pixels(alone.images[0]).astype(int) - to_pixels(batch.images[i]))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_delta_bound_is_respected(tiny, flipped):
    _, anon, masks, target = flipped
    delta = 0.02
    res = correct(tiny, anon, masks, target, delta=delta, max_steps=20, alpha=0.01)
    for img, stored, start, m in zip(res.images, res.stored, anon, masks, strict=True):
        inside = m.expand_as(img)
        assert float((img - start)[inside].abs().max()) <= delta + 1e-6
        assert float((stored - start)[inside].abs().max()) <= delta + 1 / 255 + 1e-6
        assert torch.equal(img[~inside], start[~inside])
    # With a generous bound the result is the same as with none.
    free = correct(tiny, anon, masks, target, max_steps=20, alpha=0.01)
    wide = correct(tiny, anon, masks, target, max_steps=20, alpha=0.01, delta=1.0)
    assert torch.equal(free.steps, wide.steps)


def test_delta_too_small_fails_honestly(tiny, flipped):
    _, anon, masks, target = flipped
    res = correct(tiny, anon, masks, target, delta=1 / 255, max_steps=5)
    assert not res.success.all()
    for i in torch.nonzero(~res.success).flatten().tolist():
        assert (
            int(res.logits[i].argmax()) != int(target[i])
            or float(logit_margin(res.logits[i : i + 1], target[i : i + 1])) < SameClass().margin
        )


def test_max_steps_zero_reports_failures_honestly(tiny, synth_batch, flipped):
    _, anon, masks, target = flipped
    ok_img = synth_batch[0]
    ok_target = classify(tiny, [ok_img]).argmax(1)
    full = torch.ones(1, *ok_img.shape[1:], dtype=torch.bool)
    res = correct(
        tiny, [anon[0], ok_img], [masks[0], full], torch.cat([target[:1], ok_target]), max_steps=0
    )
    assert res.success.tolist() == [False, True]
    assert res.steps.tolist() == [0, 0]
    assert torch.equal(res.images[0], anon[0]) and torch.equal(res.images[1], ok_img)
    assert int(res.logits[0].argmax()) != int(target[0])
    assert torch.equal(res.initial_logits, res.logits)


def test_max_steps_limits_the_work(tiny, flipped):
    _, anon, masks, target = flipped
    res = correct(tiny, anon, masks, target, alpha=1e-4, max_steps=3)
    assert (res.steps <= 3).all()
    assert not res.success.any()  # steps of 1e-4 (< half a level) cannot change stored pixels
    for img, start in zip(res.images, anon, strict=True):
        assert np.array_equal(to_pixels(img), to_pixels(start))


def test_empty_mask_gives_up_without_looping(tiny, flipped):
    _, anon, masks, target = flipped
    empty = torch.zeros_like(masks[0])
    res = correct(tiny, [anon[0]], [empty], target[:1], max_steps=50)
    assert not bool(res.success[0])
    assert int(res.steps[0]) <= 1  # the gradient inside the mask vanished: stop, don't spin
    assert torch.equal(res.images[0], anon[0])


def test_correct_rejects_bad_arguments(tiny, flipped):
    _, anon, masks, target = flipped
    with pytest.raises(ValueError):
        correct(tiny, anon, masks, target, alpha=0)
    with pytest.raises(ValueError):
        correct(tiny, anon, masks, target, max_steps=-1)


def test_normalized_step():
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(3, 8, 9, generator=gen)
    grad[1, 0, 0] = 50.0  # the largest entry is outside the mask: must not set the scale
    mask = torch.zeros(1, 8, 9, dtype=torch.bool)
    mask[:, 2:6, 3:7] = True
    step = normalized_step(grad, mask, 0.1)
    assert float(step.abs().max()) == pytest.approx(0.1)
    assert bool((step[~mask.expand_as(step)] == 0).all())
    inside = mask.expand_as(grad)
    # Descent direction, proportional to the gradient.
    assert torch.allclose(step[inside], -0.1 * grad[inside] / grad[inside].abs().max())
    assert torch.equal(normalized_step(torch.zeros(3, 8, 9), mask, 0.1), torch.zeros(3, 8, 9))
    assert torch.equal(normalized_step(grad, torch.zeros_like(mask), 0.1), torch.zeros_like(grad))


def test_project():
    start = torch.full((3, 4, 4), 0.5)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[:, 1:3, 1:3] = True
    moved = torch.full((3, 4, 4), 0.9)
    moved[:, 1, 1] = -0.3
    out = project(moved, start, mask, None)
    assert torch.equal(out[~mask.expand_as(out)], start[~mask.expand_as(start)])
    assert torch.allclose(out[:, 1, 1], torch.zeros(3))  # clamped to [0, 1]
    assert torch.allclose(out[:, 2, 2], torch.full((3,), 0.9))
    bounded = project(moved, start, mask, 0.1)
    assert torch.allclose(bounded[:, 2, 2], torch.full((3,), 0.6))
    assert torch.allclose(bounded[:, 1, 1], torch.full((3,), 0.4))
    up = project(torch.full((3, 4, 4), 2.0), torch.full((3, 4, 4), 0.95), mask, 0.1)
    assert torch.allclose(up[:, 1, 1], torch.ones(3))  # [0, 1] wins over the delta ball


# --- the verified-output loop ----------------------------------------------------------------


class RegionSum(nn.Module):
    """Two classes: logit0 - logit1 = weight * (sum of the region's values) - threshold."""

    def __init__(self, rows: slice, cols: slice, weight: float, threshold: float) -> None:
        super().__init__()
        self.rows, self.cols, self.weight, self.threshold = rows, cols, weight, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, :, self.rows, self.cols].sum(dim=(1, 2, 3))
        return torch.stack([self.weight * s - self.threshold, torch.zeros_like(s)], dim=1)


def identity_preprocess(image: torch.Tensor) -> torch.Tensor:
    return image.to(torch.float32)


@pytest.fixture
def rounding_case():
    """An 8x8 black image whose 2x2 region must be brightened for class 0.

    Each solver step moves every region value by 0.4/255: after one step the float image
    already passes (12 values * 0.4 = 4.8 > 3), but its 8-bit version is still all zeros
    (round(0.4) = 0) and fails; after two steps the stored pixels are 1 (12 * 1 > 3).
    """
    model = RegionSum(slice(3, 5), slice(3, 5), weight=255.0, threshold=3.0)
    clf = TorchClassifier(model.eval(), identity_preprocess, name="region-sum")
    image = torch.zeros(3, 8, 8)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, 3:5, 3:5] = True
    return clf, image, mask, torch.tensor([0]), 0.4 / 255


def test_solver_checks_the_stored_pixels_not_the_float_image(rounding_case, monkeypatch):
    clf, image, mask, target, alpha = rounding_case
    crit = SameClass(0.5)
    res = correct(clf, [image], [mask], target, alpha=alpha, criterion=crit, max_steps=10)
    assert bool(res.success[0])
    stored_px = to_pixels(res.images[0])
    # Re-classify what would be written: it passes.
    logits = clf.logits([to_image(stored_px)])
    assert bool(crit(logits, target, None)[0])
    assert np.array_equal(to_pixels(res.stored[0]), stored_px)
    assert stored_px[3:5, 3:5].min() >= 1 and stored_px.sum() == stored_px[3:5, 3:5].sum()

    # The same solver checking the float image (no 8-bit round trip) stops one step earlier,
    # with an image whose stored version fails: the rounding undid its correction.
    monkeypatch.setattr(Codec, "roundtrip", lambda self, x: x)
    naive = correct(clf, [image], [mask], target, alpha=alpha, criterion=crit, max_steps=10)
    assert bool(naive.success[0])
    assert int(res.steps[0]) > int(naive.steps[0]) == 1
    naive_px = to_pixels(naive.images[0])
    assert naive_px.max() == 0
    assert not bool(crit(clf.logits([to_image(naive_px)]), target, None)[0])


def test_rounding_case_reports_failure_when_stored_pixels_never_pass(rounding_case):
    clf, image, mask, target, alpha = rounding_case
    res = correct(clf, [image], [mask], target, alpha=alpha, criterion=SameClass(0.5), max_steps=1)
    # After one step the float image would pass, but the stored one does not: failure.
    assert not bool(res.success[0])
    assert int(res.steps[0]) == 1
    assert float(res.logits[0, 0] - res.logits[0, 1]) == pytest.approx(-3.0)


def test_jpeg_success_means_the_decoded_file_keeps_the_class(tiny, flipped):
    _, anon, masks, target = flipped
    codec = Codec("jpg", 70)
    res = correct(tiny, anon, masks, target, codec=codec, max_steps=60)
    assert res.success.any()
    for i in range(len(anon)):
        decoded = codec.decode(codec.encode(to_pixels(res.images[i])))
        assert np.array_equal(decoded, to_pixels(res.stored[i]))
        pred = int(classify(tiny, [to_image(decoded)]).argmax())
        if bool(res.success[i]):
            assert pred == int(target[i])
        assert (pred == int(target[i])) == (int(res.logits[i].argmax()) == int(target[i]))
    # JPEG changes more than the region, so the float image alone is not what was checked.
    assert any(
        not np.array_equal(to_pixels(r), to_pixels(s))
        for r, s in zip(res.images, res.stored, strict=True)
    )


def test_bases_give_the_same_result_as_full_preprocessing(tiny, flipped):
    """With the originals' model inputs as bases only the view the masks reach is
    recomputed; the steps, logits and stored pixels must not change."""
    originals, anon, masks, target = flipped
    bases = list(tiny.inputs(originals))
    full = correct(tiny, anon, masks, target)
    fast = correct(tiny, anon, masks, target, bases=bases)
    assert torch.equal(full.steps, fast.steps)
    assert torch.equal(full.success, fast.success)
    assert torch.allclose(full.logits, fast.logits, atol=1e-5)
    for a, b in zip(full.stored, fast.stored, strict=True):
        assert torch.equal(a, b)


def test_slots_step_like_each_image_and_refuse_wasteful_padding():
    from adaptanon.method.solvers.slots import Slots

    gen = torch.Generator().manual_seed(0)
    sizes = [(20, 30), (25, 22), (18, 28)]
    start = [torch.rand(3, h, w, generator=gen) for h, w in sizes]
    masks = [torch.rand(1, h, w, generator=gen) > 0.5 for h, w in sizes]
    grads = [torch.randn(3, h, w, generator=gen) for h, w in sizes]
    grads[1] = torch.zeros_like(grads[1])  # a vanished gradient: that image stops
    slots = Slots.make(start, masks)
    assert slots is not None
    padded = torch.zeros(3, 3, 25, 30)
    for j, g in enumerate(grads):
        padded[j, :, : g.shape[1], : g.shape[2]] = g
    moved = slots.step([0, 1, 2], padded, 0.1, 0.05)
    assert moved == [0, 2]
    state, _, _ = slots.images(Codec())
    for s0, m, g, got in zip(start, masks, grads, state, strict=True):
        expected = project(s0 + normalized_step(g, m, 0.1), s0, m, 0.05)
        assert torch.equal(got, expected)
    # Three tiny windows and a large one: padding would hold ~4x their pixels.
    windows = [torch.rand(3, 4, 4)] * 3 + [torch.rand(3, 200, 300)]
    assert (
        Slots.make(windows, [torch.ones(1, *w.shape[1:], dtype=torch.bool) for w in windows])
        is None
    )


def test_mask_boxes_bound_each_mask():
    from adaptanon.method.solvers.gradient import mask_boxes

    a = torch.zeros(1, 20, 30, dtype=torch.bool)
    a[0, 3:7, 10:25] = True
    b = torch.zeros(1, 15, 12, dtype=torch.bool)
    c = torch.zeros(1, 9, 9, dtype=torch.bool)
    c[0, 8, 0] = c[0, 0, 4] = True
    assert mask_boxes([a, b, c]) == [(10, 3, 25, 7), None, (0, 0, 5, 9)]
    assert mask_boxes([]) == []
