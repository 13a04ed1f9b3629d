"""One batch through the whole method: classify, find regions, anonymize, correct, encode
and verify. Pure with respect to files: :mod:`adaptanon.runner` reads and writes them.

Images are ``(3, H, W)`` float tensors in ``[0, 1]`` holding 8-bit values (``k / 255``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from adaptanon.classifiers import Classifier
from adaptanon.criteria import Criterion, SameClass, logit_margin
from adaptanon.encoding import Codec, to_pixels
from adaptanon.filters import Blur, Filter, anonymize
from adaptanon.preprocessing import Preprocess, ViewGeometry
from adaptanon.regions import Box, RegionSource
from adaptanon.solver import correct

UNCHANGED, CORRECTED, FAILED, ERROR = "unchanged", "corrected", "failed", "error"


@dataclass(frozen=True)
class Settings:
    """How to anonymize and correct; the defaults are the paper's."""

    filter: Filter = field(default_factory=Blur)
    shape: str = "rect"
    criterion: Criterion = field(default_factory=SameClass)
    alpha: float = 0.1
    max_steps: int = 100
    delta: float | None = None
    codec: Codec = field(default_factory=Codec)


@dataclass
class Outcome:
    """The result for one image. Tensors are ``(3, H, W)``; ``data`` is the file to write."""

    name: str
    status: str
    regions: list[Box] = field(default_factory=list)
    steps: int = 0
    original_class: int | None = None
    anonymized_class: int | None = None
    final_class: int | None = None
    original_confidence: float | None = None
    anonymized_confidence: float | None = None
    final_confidence: float | None = None
    final_margin: float | None = None
    data: bytes | None = None
    message: str | None = None
    original: Tensor | None = None
    anonymized: Tensor | None = None
    final: Tensor | None = None
    mask: Tensor | None = None


def view_geometry(classifier: Classifier, image: Tensor) -> ViewGeometry | None:
    """Where the classifier's view lies in ``image``, if its preprocessing says."""
    p = classifier.preprocess
    return p.geometry(image.shape[-2], image.shape[-1]) if isinstance(p, Preprocess) else None


def classify_originals(
    classifier: Classifier, images: Sequence[Tensor], saliency: bool
) -> tuple[Tensor, list[Tensor] | None, Tensor]:
    """Logits ``(B, N)`` of the originals, if asked per-image ``(crop, crop)`` maps of
    absolute loss gradients at the classifier's view (the same forward pass serves both),
    and the ``(B, 3, crop, crop)`` model inputs."""
    inputs = classifier.inputs(images)
    if not saliency:
        with torch.no_grad():
            return classifier.model(inputs), None, inputs
    inputs.requires_grad_(True)
    with torch.enable_grad():
        logits = classifier.model(inputs)
        loss = F.cross_entropy(logits, logits.argmax(1), reduction="sum")
        (grad,) = torch.autograd.grad(loss, [inputs])
    return logits.detach(), list(grad.abs().sum(1)), inputs.detach()


def process_batch(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    names: Sequence[str],
    images: Sequence[Tensor],
) -> list[Outcome]:
    """Run the method on a batch; one :class:`Outcome` per image, in order.

    A per-image problem (e.g. an invalid box) gives that image status ``error`` and the
    rest of the batch goes on.
    """
    device = classifier.device
    images = [img.to(device) for img in images]
    logits, saliency, inputs = classify_originals(classifier, images, source.uses_saliency)
    probs = torch.softmax(logits, 1)
    original = logits.argmax(1)
    outcomes: list[Outcome] = []
    todo: list[int] = []
    anonymized: list[Tensor] = []
    masks: list[Tensor] = []
    for i, (name, img) in enumerate(zip(names, images, strict=True)):
        geometry = view_geometry(classifier, img)
        out = Outcome(
            name=name,
            status=ERROR,
            original_class=int(original[i]),
            original_confidence=float(probs[i, original[i]]),
            original=img,
        )
        outcomes.append(out)
        try:
            out.regions = source.find(name, img, geometry, saliency[i] if saliency else None)
        except ValueError as exc:
            out.message = f"regions: {exc}"
            continue
        scale = geometry.scale if geometry else 1.0
        anon, mask = anonymize(img, out.regions, settings.filter, scale, settings.shape)
        out.mask = mask
        todo.append(i)
        anonymized.append(anon)
        masks.append(mask)
    if not todo:
        return outcomes
    result = correct(
        classifier,
        anonymized,
        masks,
        original[todo],
        criterion=settings.criterion,
        reference=probs[todo],
        alpha=settings.alpha,
        max_steps=settings.max_steps,
        delta=settings.delta,
        codec=settings.codec,
        bases=[inputs[i] for i in todo],
    )
    initial_probs = torch.softmax(result.initial_logits, 1)
    final_probs = torch.softmax(result.logits, 1)
    margins = logit_margin(result.logits, original[todo].to(result.logits.device))
    for j, i in enumerate(todo):
        out = outcomes[i]
        out.anonymized = result.initial[j]
        out.final = result.stored[j]
        out.steps = int(result.steps[j])
        out.anonymized_class = int(result.initial_logits[j].argmax())
        out.anonymized_confidence = float(initial_probs[j, out.anonymized_class])
        out.final_class = int(result.logits[j].argmax())
        out.final_confidence = float(final_probs[j, out.final_class])
        out.final_margin = float(margins[j])
        out.data, problem = encode_verified(settings.codec, result.images[j], result.stored[j])
        if problem:
            out.status, out.message = FAILED, problem
        elif not bool(result.success[j]):
            out.status = FAILED
            out.message = (
                f"criterion {settings.criterion.describe()} not met after {out.steps} steps"
            )
        else:
            out.status = UNCHANGED if out.steps == 0 else CORRECTED
    return outcomes


def encode_verified(codec: Codec, image: Tensor, checked: Tensor) -> tuple[bytes, str | None]:
    """Encode ``image`` and confirm the file decodes to ``checked``, the pixels the
    classifier saw. Returns the bytes and a problem description (None when it matches)."""
    data = codec.encode(to_pixels(image))
    if not np.array_equal(codec.decode(data), to_pixels(checked)):
        return data, "the encoded file does not decode to the verified pixels"
    return data, None
