"""A classifier seen through several loaders at once, for ``--robust``.

:class:`RobustClassifier` wraps a :class:`~adaptanon.classifiers.TorchClassifier` and the
loaders near its declared preprocessing
(:func:`~adaptanon.preprocessing.variants.variants_of`). As a :class:`Classifier` it is the
wrapped one (the declared loader); :meth:`RobustClassifier.variant_logits` gives, per
image, the logits under every variant, ``(B, V, N)``, the declared loader first, which the
solver uses to accept an image only when the criterion holds under each of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Self

import torch
from torch import Tensor

from adaptanon.classifiers.base import BoxOrNone, Classifier, TorchClassifier
from adaptanon.preprocessing import ViewGeometry
from adaptanon.preprocessing.variants import Variant, spec_of, variants_of


@dataclass
class RobustClassifier:
    """``base`` under each of ``variants`` (the first is the declared loader)."""

    base: TorchClassifier
    variants: Sequence[Variant] = field(default_factory=list)
    name: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.name = self.base.name
        if not self.variants:
            spec = spec_of(self.base.preprocess)
            if spec is None:
                raise ValueError(
                    f"classifier {self.base.name!r}: --robust needs a declared preprocessing "
                    "(a preset or spec, see README 'Your loader') to build the loaders near it"
                )
            self.variants = variants_of(spec, self.base.preprocess)
        self.variants = tuple(self.variants)

    @property
    def variant_names(self) -> tuple[str, ...]:
        """The variants' names, in the order of :meth:`variant_logits`."""
        return tuple(v.name for v in self.variants)

    @property
    def device(self) -> torch.device:
        """The wrapped model's device."""
        return self.base.device

    def to(self, device: str | torch.device) -> Self:
        """Move the wrapped model; returns self."""
        self.base.to(device)
        return self

    def geometry(self, height: int, width: int) -> ViewGeometry | None:
        """The declared loader's view."""
        return self.base.geometry(height, width)

    def inputs(
        self,
        images: Sequence[Tensor],
        bases: Sequence[Tensor] | None = None,
        boxes: Sequence[BoxOrNone] | None = None,
    ) -> Tensor:
        """The declared loader's batch (as the wrapped classifier)."""
        return self.base.inputs(images, bases, boxes)

    def forward(self, inputs: Tensor) -> Tensor:
        """Model batch -> logits."""
        return self.base.forward(inputs)

    def logits(
        self,
        images: Sequence[Tensor],
        bases: Sequence[Tensor] | None = None,
        boxes: Sequence[BoxOrNone] | None = None,
    ) -> Tensor:
        """``(B, N)`` logits under the declared loader."""
        return self.base.logits(images, bases, boxes)

    def class_name(self, index: int) -> str:
        """The wrapped classifier's class name."""
        return self.base.class_name(index)

    def variant_inputs(
        self,
        images: Sequence[Tensor],
        bases: Sequence[Tensor] | None = None,
        boxes: Sequence[BoxOrNone] | None = None,
    ) -> Tensor:
        """``(B, V, ...)`` model inputs of ``B`` images under the ``V`` variants. With
        ``bases`` (``(V, ...)`` per image, from this method, of images equal to these
        outside ``boxes``) only what a box reaches is recomputed where a variant allows."""
        rows = []
        for i, image in enumerate(images):
            box = None if boxes is None else boxes[i]
            if bases is None or box is None:
                rows.append(torch.stack([v(image) for v in self.variants]))
            else:
                base = bases[i]
                rows.append(
                    torch.stack(
                        [v.update(image, base[k], box) for k, v in enumerate(self.variants)]
                    )
                )
        return torch.stack(rows)

    def variant_forward(self, inputs: Tensor) -> Tensor:
        """``(B, V, ...)`` inputs -> ``(B, V, N)`` logits, in one model batch."""
        b, v = inputs.shape[:2]
        flat = inputs.reshape(b * v, *inputs.shape[2:])
        return self.base.forward(flat).reshape(b, v, -1)

    def gradient_context(self) -> AbstractContextManager[None]:
        """The wrapped classifier's (see :meth:`TorchClassifier.gradient_context`)."""
        return self.base.gradient_context()

    def variant_logits(
        self,
        images: Sequence[Tensor],
        bases: Sequence[Tensor] | None = None,
        boxes: Sequence[BoxOrNone] | None = None,
    ) -> Tensor:
        """``(B, V, N)`` logits of ``B`` images under each variant (see
        :meth:`variant_inputs`)."""
        return self.variant_forward(self.variant_inputs(images, bases, boxes))


def robust(classifier: Classifier) -> RobustClassifier:
    """``classifier`` seen through the loaders near its declared one.

    Raises:
        ValueError: a classifier that is not a :class:`TorchClassifier` with a declared
            preprocessing (a :class:`~adaptanon.preprocessing.PreprocessSpec`).
    """
    if isinstance(classifier, RobustClassifier):
        return classifier
    if not isinstance(classifier, TorchClassifier):
        raise ValueError(
            f"--robust needs a torch classifier with a declared preprocessing; "
            f"{type(classifier).__name__} does not say how it loads images"
        )
    return RobustClassifier(classifier)
