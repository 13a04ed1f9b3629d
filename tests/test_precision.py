"""precision: decisions in full fp32, the search's gradients with TF32 allowed, cuDNN
tuning only on the model's fixed-shape view batches (padded to bucket sizes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaptanon.classifiers import TorchClassifier
from adaptanon.classifiers import precision as precision_module
from adaptanon.classifiers.precision import (
    bucket_size,
    full_precision,
    model_call,
    search_precision,
)
from adaptanon.method.filters import Mask, anonymize
from adaptanon.method.solvers import correct


def flags() -> tuple[bool, bool, bool]:
    return (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.benchmark,
    )


def set_flags(values: tuple[bool, bool, bool]) -> None:
    (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.benchmark,
    ) = values


@pytest.fixture
def saved_flags():
    """The flags as they were before the test, put back after it."""
    saved = flags()
    yield saved
    set_flags(saved)


@pytest.mark.parametrize("before", [(True, False, False), (False, True, True)])
def test_contexts_set_and_restore_the_flags(saved_flags, before):
    set_flags(before)
    with full_precision():
        assert flags() == (False, False, before[2])
    assert flags() == before
    with search_precision(benchmark=True):
        tf32 = precision_module.SEARCH_TF32
        assert flags() == (tf32, tf32, True)
    assert flags() == before
    with model_call():
        assert flags() == (before[0], before[1], True)
    assert flags() == before
    with pytest.raises(RuntimeError), full_precision():
        raise RuntimeError("boom")
    assert flags() == before  # restored after an exception too


def test_bucket_sizes_are_powers_of_two():
    assert [bucket_size(n) for n in (1, 2, 3, 4, 5, 63, 64, 65, 256)] == [
        1,
        2,
        4,
        4,
        8,
        64,
        64,
        128,
        256,
    ]
    with pytest.raises(ValueError):
        bucket_size(0)


class _Record(torch.autograd.Function):
    """Identity that records the flags in force in its forward and backward passes."""

    @staticmethod
    def forward(ctx, x, log):  # type: ignore[override]
        ctx.log = log
        log.append(("forward", x.shape[0], *flags()))
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        ctx.log.append(("backward", grad.shape[0], *flags()))
        return grad, None


class Recording(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.log: list[tuple] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(_Record.apply(x, self.log))


def recording(tiny: TorchClassifier, fixed: bool) -> TorchClassifier:
    return TorchClassifier(Recording(tiny.model).eval(), tiny.preprocess, fixed_shapes=fixed)


def flipped_batch(tiny, synth_batch):
    anon, masks = [], []
    for img in synth_batch:
        h, w = img.shape[1:]
        a, m = anonymize(img, [(w // 4, h // 4, 3 * w // 4, 3 * h // 4)], Mask(1.0))
        anon.append(a)
        masks.append(m)
    with torch.no_grad():
        target = tiny.logits(synth_batch).argmax(1)
    return anon, masks, target


def test_fixed_shapes_pad_to_buckets_and_keep_every_result(tiny, synth_batch):
    anon, masks, target = flipped_batch(tiny, synth_batch)
    plain, fixed = recording(tiny, False), recording(tiny, True)
    a = correct(plain, anon, masks, target, max_steps=20)
    b = correct(fixed, anon, masks, target, max_steps=20)
    assert (a.steps > 0).any() and len(set(a.steps.tolist())) > 1  # the batch shrank
    assert torch.equal(a.steps, b.steps) and torch.equal(a.success, b.success)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    for x, y in zip(a.stored, b.stored, strict=True):
        assert torch.equal(x, y)
    sizes_plain = {rows for _, rows, *_ in plain.model.log}
    sizes_fixed = {rows for _, rows, *_ in fixed.model.log}
    assert any(bucket_size(n) != n for n in sizes_plain)  # some batch was not a bucket...
    assert all(bucket_size(n) == n for n in sizes_fixed)  # ...but every model call was


def test_decisions_run_in_full_fp32_and_gradients_as_the_search_allows(
    saved_flags, tiny, synth_batch
):
    anon, masks, target = flipped_batch(tiny, synth_batch)
    set_flags((True, False, False))  # torch's defaults on CUDA
    clf = recording(tiny, True)
    res = correct(clf, anon, masks, target, max_steps=5)
    assert (res.steps > 0).any()
    forward = [entry for entry in clf.model.log if entry[0] == "forward"]
    backward = [entry for entry in clf.model.log if entry[0] == "backward"]
    assert forward and backward
    # Every forward (each step's check, the final one included): TF32 off, tuned.
    assert all(e[2:] == (False, False, True) for e in forward)
    tf32 = precision_module.SEARCH_TF32
    assert all(e[2:] == (tf32, tf32, True) for e in backward)
    assert flags() == (True, False, False)  # left as they were
