"""criteria: logit margin, SameClass, ProbabilityDistance, AllOf, parse_criterion."""

from __future__ import annotations

import pytest
import torch

from adaptanon.method.criteria import (
    DEFAULT_MARGIN,
    AllOf,
    ProbabilityDistance,
    SameClass,
    logit_margin,
    parse_criterion,
)

LOGITS = torch.tensor(
    [
        [2.0, 1.0, 0.5],  # class 0 by 1.0
        [1.0, 1.005, 0.0],  # class 1 by 0.005
        [0.0, 3.0, 3.0],  # tie between 1 and 2
        [-1.0, -2.0, 4.0],  # class 2 by 5.0
    ]
)


def test_logit_margin_on_hand_made_logits():
    target = torch.tensor([0, 1, 1, 0])
    m = logit_margin(LOGITS, target)
    assert torch.allclose(m, torch.tensor([1.0, 0.005, 0.0, -5.0]), atol=1e-6)
    # Positive iff the target is the strict top-1 (row 2 is a tie: margin 0).
    assert (m > 0).tolist() == [True, True, False, False]
    assert float(logit_margin(LOGITS, torch.tensor([2, 2, 2, 2]))[3]) == pytest.approx(5.0)


def test_logit_margin_does_not_modify_logits():
    x = LOGITS.clone()
    logit_margin(x, torch.tensor([0, 0, 0, 0]))
    assert torch.equal(x, LOGITS)


def test_same_class_plain_and_with_margin():
    target = torch.tensor([0, 1, 1, 2])
    ref = torch.softmax(LOGITS, 1)
    plain = SameClass(0.0)(LOGITS, target, ref)
    assert plain.tolist() == [True, True, False, True]  # a tie is not a win
    default = SameClass()(LOGITS, target, ref)
    assert SameClass().margin == DEFAULT_MARGIN == 0.01
    assert default.tolist() == [True, False, False, True]  # 0.005 < 0.01
    big = SameClass(2.0)(LOGITS, target, ref)
    assert big.tolist() == [False, False, False, True]
    # Exactly at the margin passes.
    assert SameClass(1.0)(LOGITS[:1], target[:1], ref[:1]).tolist() == [True]
    # A different class never passes.
    assert SameClass(0.0)(LOGITS, torch.tensor([1, 0, 0, 0]), ref).tolist() == [False] * 4


def test_probability_distance():
    ref = torch.softmax(LOGITS, 1)
    target = LOGITS.argmax(1)
    assert ProbabilityDistance(1e-6)(LOGITS, target, ref).all()
    shifted = LOGITS.clone()
    shifted[0] = torch.tensor([1.0, 2.0, 0.5])
    ok = ProbabilityDistance(0.1)(shifted, target, ref)
    assert ok.tolist() == [False, True, True, True]
    dist = float(torch.linalg.vector_norm(torch.softmax(shifted[0], 0) - ref[0]))
    assert ProbabilityDistance(dist + 1e-4)(shifted[:1], target[:1], ref[:1]).item()
    assert not ProbabilityDistance(dist - 1e-4)(shifted[:1], target[:1], ref[:1]).item()


def test_all_of_requires_every_criterion():
    target = torch.tensor([0, 1, 1, 2])
    ref = torch.softmax(LOGITS, 1)
    crit = AllOf((SameClass(0.0), SameClass(2.0)))
    assert crit(LOGITS, target, ref).tolist() == [False, False, False, True]
    assert AllOf(())(LOGITS, target, ref).all()
    prob = AllOf((SameClass(), ProbabilityDistance(0.5)))
    far = ref.clone()
    far[3] = torch.tensor([1.0, 0.0, 0.0])
    assert prob(LOGITS, target, far).tolist() == [True, False, False, False]


def test_parse_criterion():
    assert parse_criterion("class") == SameClass()
    assert parse_criterion("margin:0.5") == SameClass(0.5)
    assert parse_criterion("margin:0") == SameClass(0.0)
    prob = parse_criterion("prob:0.2")
    assert isinstance(prob, AllOf)
    assert SameClass() in prob.criteria and ProbabilityDistance(0.2) in prob.criteria


@pytest.mark.parametrize(
    "spec", ["", "klass", "class:1", "margin", "margin:", "margin:x", "prob:", "prob:abc", "l2:1"]
)
def test_parse_criterion_rejects_bad_specs(spec):
    with pytest.raises(ValueError):
        parse_criterion(spec)


@pytest.mark.parametrize("spec", ["class", "margin:0.5", "margin:0", "prob:0.2"])
def test_describe_round_trips_through_parse(spec):
    crit = parse_criterion(spec)
    assert parse_criterion(crit.describe()) == crit


@pytest.mark.parametrize(
    "spec", ["margin:-1", "margin:nan", "margin:inf", "prob:-1", "prob:0", "prob:nan", "margin:x"]
)
def test_criteria_out_of_range_are_refused(spec):
    """A negative, zero-width or non-finite margin or epsilon would promise nothing (NaN
    compares false, so `margin:nan` reported `corrected` for anything): refused at parse."""
    with pytest.raises(ValueError):
        parse_criterion(spec)


@pytest.mark.parametrize(
    "crit",
    [
        SameClass(),
        SameClass(0.5),
        AllOf((SameClass(), ProbabilityDistance(0.2))),
        AllOf((SameClass(0.5), ProbabilityDistance(0.2))),
        AllOf((SameClass(),)),
    ],
)
def test_describe_parses_back(crit):
    back = parse_criterion(crit.describe())
    logits = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.9, 0.0], [3.0, 2.8, 0.0]])
    target, ref = torch.tensor([0, 1, 0]), torch.softmax(torch.tensor([[1.0, 0.4, 0.0]] * 3), 1)
    assert back(logits, target, ref).tolist() == crit(logits, target, ref).tolist()
    assert back.describe() == crit.describe()
