"""Stopping criteria: when is a corrected image close enough to the original's decision?

A criterion is an object passed to the solver (as in Foolbox 3). Called on a batch it
returns a per-image bool: ``criterion(logits, target, reference) -> (B,)`` where
``logits`` is ``(B, N)``, ``target`` the ``(B,)`` original classes and ``reference`` the
``(B, N)`` original class probabilities.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

DEFAULT_MARGIN = 0.01
"""Logit margin of the default criterion. The preprocessing reproduces PIL's pixels
exactly, so what remains is float noise between batch compositions and conv algorithms
(about 1e-5 in logits); 0.01 keeps the decision stable under a user's own loader."""


def logit_margin(logits: Tensor, target: Tensor) -> Tensor:
    """``(B,)`` target logit minus the largest other logit (positive iff target is top-1)."""
    t = logits.gather(1, target[:, None])[:, 0]
    others = logits.scatter(1, target[:, None], float("-inf"))
    return t - others.max(dim=1).values


class Criterion(ABC):
    """Decides per image whether the correction may stop.

    ``needs_reference``: the criterion compares with the original probabilities, which
    the solver must then be given.
    """

    needs_reference: bool = False

    @abstractmethod
    def __call__(self, logits: Tensor, target: Tensor, reference: Tensor) -> Tensor:
        """``(B,)`` bool: True where the image meets the criterion."""

    @abstractmethod
    def describe(self) -> str:
        """Short text for manifests and reports, parseable by :func:`parse_criterion`."""


@dataclass(frozen=True)
class SameClass(Criterion):
    """Top-1 class equals the original class, with the target logit at least ``margin``
    above every other logit (``margin=0``: plain class equality, as in the paper)."""

    margin: float = DEFAULT_MARGIN

    def __post_init__(self) -> None:
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin}")

    def __call__(self, logits: Tensor, target: Tensor, reference: Tensor) -> Tensor:
        m = logit_margin(logits, target)
        return m >= self.margin if self.margin > 0 else m > 0

    def describe(self) -> str:
        return f"margin:{self.margin:g}" if self.margin != DEFAULT_MARGIN else "class"


@dataclass(frozen=True)
class ProbabilityDistance(Criterion):
    """The L2 distance between the probability vector and the original's is below
    ``epsilon`` (the paper's alternative, section 4.3)."""

    epsilon: float
    needs_reference = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"epsilon must be a positive number, got {self.epsilon}")

    def __call__(self, logits: Tensor, target: Tensor, reference: Tensor) -> Tensor:
        dist = torch.linalg.vector_norm(torch.softmax(logits, 1) - reference, dim=1)
        return dist < self.epsilon

    def describe(self) -> str:
        return f"prob:{self.epsilon:g}"


@dataclass(frozen=True)
class AllOf(Criterion):
    """Every one of ``criteria`` holds."""

    criteria: tuple[Criterion, ...]

    @property
    def needs_reference(self) -> bool:  # type: ignore[override]
        """True when any part needs the original probabilities."""
        return any(c.needs_reference for c in self.criteria)

    def __call__(self, logits: Tensor, target: Tensor, reference: Tensor) -> Tensor:
        ok = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
        for c in self.criteria:
            ok &= c(logits, target, reference)
        return ok

    def describe(self) -> str:
        parts = [c.describe() for c in self.criteria if c != SameClass()]
        return "+".join(parts) if parts else "class"


def _parse_one(spec: str) -> Criterion:
    name, _, value = spec.partition(":")
    if name == "class" and not value:
        return SameClass()
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if name == "margin":
        return SameClass(number)
    if name == "prob":
        return ProbabilityDistance(number)
    raise ValueError(f"unknown criterion {spec!r}: use class, margin:M or prob:EPS")


def parse_criterion(spec: str) -> Criterion:
    """``class`` (default), ``margin:M``, ``prob:EPS``, or several joined by ``+`` (all
    must hold), as :meth:`Criterion.describe` writes them.

    A criterion without a class part also requires the same class, since the tool
    promises the class: ``prob:EPS`` is ``class+prob:EPS``.

    Raises:
        ValueError: an unknown part, or a value that is not a finite number in range.
    """
    parts = [_parse_one(p.strip()) for p in spec.split("+")]
    if not any(isinstance(p, SameClass) for p in parts):
        parts.insert(0, SameClass())
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))
