"""What a solver is: given anonymized images, their masks and the original classes, find
images that meet a criterion, changing only masked pixels; a per-image success flag says
which did (as in Foolbox 3)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from adaptanon.classifiers import Classifier
from adaptanon.io.codecs import Codec
from adaptanon.method.criteria import Criterion


@dataclass
class SolverResult:
    """What the solver found, per image (``B`` images).

    Attributes:
        images: ``B`` corrected ``(3, H, W)`` float images (the solver's state).
        stored: ``B`` ``(3, H, W)`` images as stored and read back, the ones last checked.
        initial: ``B`` anonymized images as stored and read back (what step 0 checked).
        success: ``(B,)`` bool, True where ``stored`` meets the criterion.
        steps: ``(B,)`` number of gradient steps taken (0: the anonymized image passed).
        initial_logits: ``(B, N)`` logits of the anonymized image as stored (step 0).
        logits: ``(B, N)`` logits of ``stored``.
        queries: ``(B,)`` classifier queries each image used, for solvers that count them.
        reasons: per image, why it failed when the criterion's own message would not say
            (e.g. a spent query budget), else None.
    """

    images: list[Tensor]
    stored: list[Tensor]
    initial: list[Tensor]
    success: Tensor
    steps: Tensor
    initial_logits: Tensor
    logits: Tensor
    queries: Tensor | None = None
    reasons: list[str | None] | None = None


class Solver(ABC):
    """Corrects a batch of anonymized images until the classifier's decision matches."""

    @abstractmethod
    def __call__(
        self,
        classifier: Classifier,
        images: Sequence[Tensor],
        masks: Sequence[Tensor],
        target: Tensor,
        *,
        criterion: Criterion,
        reference: Tensor | None = None,
        codec: Codec | None = None,
        bases: Sequence[Tensor] | None = None,
    ) -> SolverResult:
        """``images``: ``B`` ``(3, H, W)`` anonymized images; ``masks``: ``B`` ``(1, H, W)``
        bool masks of the pixels it may change; ``target``: ``(B,)`` original classes;
        ``reference``: ``(B, N)`` original probabilities; ``codec``: how the result is
        stored (every check is on the stored pixels); ``bases``: model inputs of images
        equal to these outside the masks, for partial recomputation."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The solver's parameters, for manifests and caches."""
