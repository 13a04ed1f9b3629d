"""One batch through the whole method: classify, find regions, anonymize, correct, encode
and verify. Pure with respect to files: the engines read and write them.

Images are ``(3, H, W)`` float tensors in ``[0, 1]`` holding 8-bit values (``k / 255``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from adaptanon.classifiers import Classifier
from adaptanon.classifiers.robust import robust as robust_classifier
from adaptanon.io.codecs import Codec, to_pixels
from adaptanon.method.criteria import Criterion, SameClass, logit_margin
from adaptanon.method.filters import Blur, Filter, anonymize
from adaptanon.method.metrics import StrengthLimits, image_strength, region_psnr
from adaptanon.method.solvers import GradientSolver, Solver
from adaptanon.method.solvers.gradient import variant_margins
from adaptanon.records import ImageRecord, Status
from adaptanon.regions import RegionQuery, Regions, RegionSource


@dataclass(frozen=True)
class Settings:
    """How to anonymize, correct and store; the defaults are the paper's (and the CLI's).

    ``robust``: accept an image only when the criterion holds under every loader near
    the declared one (:func:`~adaptanon.preprocessing.variants.variants_of`), and correct
    it under all of them (``--robust``)."""

    filter: Filter = field(default_factory=Blur)
    shape: str = "rect"
    criterion: Criterion = field(default_factory=SameClass)
    solver: Solver = field(default_factory=GradientSolver)
    codec: Codec = field(default_factory=Codec)
    strength: StrengthLimits = field(default_factory=StrengthLimits)
    robust: bool = False

    def __post_init__(self) -> None:
        if self.shape not in ("rect", "ellipse"):
            raise ValueError(f"region shape must be 'rect' or 'ellipse', got {self.shape!r}")

    def describe(self) -> dict[str, Any]:
        """The settings as the manifest and the evaluation cache record them."""
        return {
            "filter": self.filter.describe(),
            "shape": self.shape,
            "criterion": self.criterion.describe(),
            **self.solver.describe(),
            "format": self.codec.format,
            "quality": None if self.codec.lossless else self.codec.quality,
            **self.strength.describe(),
            **({"robust": True} if self.robust else {}),
        }


@dataclass(frozen=True)
class OutcomeImages:
    """The pixels behind an outcome: ``(3, H, W)`` original, plainly anonymized and final
    images as stored (8-bit values), and the ``(1, H, W)`` bool mask of the regions."""

    original: Tensor
    anonymized: Tensor
    final: Tensor
    mask: Tensor


@dataclass
class Outcome:
    """The result for one image: its record, the encoded file (``data``, None when nothing
    may be written) and, when asked for, the images."""

    record: ImageRecord
    data: bytes | None = None
    images: OutcomeImages | None = None

    @property
    def status(self) -> Status:
        """The record's status."""
        return self.record.status

    @property
    def image(self) -> Tensor | None:
        """The final ``(3, H, W)`` image as stored, when images were kept."""
        return None if self.images is None else self.images.final


def check_image(image: Tensor, index: int = 0) -> None:
    """Raise ``ValueError`` unless ``image`` is a float ``(3, H, W)`` tensor in ``[0, 1]``."""
    where = f"image {index}"
    if not isinstance(image, Tensor):
        raise ValueError(f"{where}: expected a torch.Tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise ValueError(
            f"{where}: expected a float tensor in [0, 1], got dtype {image.dtype} "
            "(convert 8-bit pixels with adaptanon.io.to_image or image.float() / 255)"
        )
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"{where}: expected shape (3, H, W), got {tuple(image.shape)}")
    if not bool(torch.isfinite(image).all()) or image.min() < 0 or image.max() > 1:
        raise ValueError(f"{where}: values must be finite and in [0, 1]")


def classify_originals(
    classifier: Classifier, images: Sequence[Tensor], saliency: bool
) -> tuple[Tensor, list[Tensor] | None, Tensor]:
    """Logits ``(B, N)`` of the originals, if asked per-image ``(crop, crop)`` maps of
    absolute loss gradients at the classifier's view (the same forward pass serves both),
    and the model inputs ``(B, ...)``."""
    inputs = classifier.inputs(images)
    query_saliency = getattr(classifier, "query_saliency", None)
    if saliency and query_saliency is not None:
        # A classifier that can only be queried gives a gradient-free saliency.
        with torch.no_grad():
            logits = classifier.forward(inputs)
        return logits, query_saliency(inputs, logits), inputs
    if not saliency:
        with torch.no_grad():
            return classifier.forward(inputs), None, inputs
    inputs = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = classifier.forward(inputs)
        loss = F.cross_entropy(logits, logits.argmax(1), reduction="sum")
        (grad,) = torch.autograd.grad(loss, [inputs])
    return logits.detach(), list(grad.abs().sum(1)), inputs.detach()


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def process_batch(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    names: Sequence[str],
    images: Sequence[Tensor],
    *,
    keep_images: bool = False,
) -> list[Outcome]:
    """Run the method on a batch; one :class:`Outcome` per image, in order.

    Args:
        names: each image's name (its path relative to the input root), for region
            sources that look images up by name and for the records.
        images: ``(3, H, W)`` float tensors in ``[0, 1]``.
        keep_images: also return the original, anonymized and final pixels.

    A per-image problem (e.g. an invalid box) gives that image status ``error`` and the
    rest of the batch goes on. An image without regions is re-encoded and checked like the
    others, and gets status ``no_regions``.

    Every region of the stored result is then compared with the original
    (:func:`~adaptanon.method.metrics.region_strength`, after plain anonymization and on
    the written pixels): an image whose correction brought a region back toward the
    original by more than ``settings.strength``'s tolerances is ``failed``, one with a
    region that is not measurably anonymized is ``weak``.
    """
    for i, img in enumerate(images):
        check_image(img, i)
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "adaptanon needs gradients, which torch.inference_mode() forbids; call it "
            "under torch.no_grad() or with no context instead"
        )
    if settings.robust:
        classifier = robust_classifier(classifier)
    device = classifier.device
    images = [img.detach().to(device, torch.float32) for img in images]
    logits, saliency, inputs = classify_originals(classifier, images, source.uses_saliency)
    probs = torch.softmax(logits, 1)
    original = logits.argmax(1)
    geometries = [classifier.geometry(img.shape[-2], img.shape[-1]) for img in images]
    queries = [
        RegionQuery(name, img, geometry, saliency[i] if saliency else None)
        for i, (name, img, geometry) in enumerate(zip(names, images, geometries, strict=True))
    ]
    found: list[Regions] = source.find(queries)
    outcomes: list[Outcome] = []
    todo: list[int] = []
    anonymized: list[Tensor] = []
    masks: list[Tensor] = []
    for i, (name, img, regions) in enumerate(zip(names, images, found, strict=True)):
        cls = int(original[i])
        record = ImageRecord(
            input=name,
            status=Status.ERROR,
            regions=[list(b) for b in regions.boxes],
            detections=[
                {"box": list(d.box), "label": d.label, "score": d.score} for d in regions.detections
            ],
            original_class=cls,
            original_name=classifier.class_name(cls),
            original_confidence=float(probs[i, cls]),
        )
        outcomes.append(Outcome(record))
        if regions.error is not None:
            record.error = f"regions: {regions.error}"
            continue
        geometry = geometries[i]
        scale = geometry.scale if geometry else 1.0
        anon, mask = anonymize(img, regions.boxes, settings.filter, scale, settings.shape)
        todo.append(i)
        anonymized.append(anon)
        masks.append(mask)
    if not todo:
        return outcomes
    target, reference, bases = original[todo], probs[todo], [inputs[i] for i in todo]
    names_v: tuple[str, ...] = ()
    if settings.robust:
        # Each variant keeps the class it gives the original (the declared one first).
        rc = robust_classifier(classifier)
        names_v = rc.variant_names
        with torch.no_grad():
            v_inputs = rc.variant_inputs([images[i] for i in todo])
            v_logits = rc.variant_forward(v_inputs)
        target = v_logits.argmax(2)
        target[:, 0] = original[todo].to(target.device)
        reference, bases = torch.softmax(v_logits, 2), list(v_inputs)
    result = settings.solver(
        classifier,
        anonymized,
        masks,
        target,
        criterion=settings.criterion,
        reference=reference,
        codec=settings.codec,
        bases=bases,
    )
    worst: list[tuple[float, str]] = []
    final_v = getattr(result, "variant_logits", None)
    if settings.robust and final_v is not None:
        v_margins = variant_margins(final_v, target.to(final_v.device))
        worst = [(float(m.min()), names_v[int(m.argmin())]) for m in v_margins]
    initial_probs = torch.softmax(result.initial_logits, 1)
    final_probs = torch.softmax(result.logits, 1)
    margins = logit_margin(result.logits, original[todo].to(result.logits.device))
    for j, i in enumerate(todo):
        out, rec = outcomes[i], outcomes[i].record
        rec.steps = int(result.steps[j])
        rec.queries = None if result.queries is None else int(result.queries[j])
        rec.anonymized_class = int(result.initial_logits[j].argmax())
        rec.anonymized_name = classifier.class_name(rec.anonymized_class)
        rec.anonymized_confidence = float(initial_probs[j, rec.anonymized_class])
        rec.final_class = int(result.logits[j].argmax())
        rec.final_name = classifier.class_name(rec.final_class)
        rec.final_confidence = float(final_probs[j, rec.final_class])
        rec.final_margin = float(margins[j])
        if worst:
            rec.worst_variant_margin, rec.worst_variant = worst[j]
        rec.psnr_plain = _finite(region_psnr(images[i], result.initial[j], masks[j]))
        rec.psnr_final = _finite(region_psnr(images[i], result.stored[j], masks[j]))
        boxes = found[i].boxes
        plain = image_strength(images[i], result.initial[j], boxes, settings.shape)
        final = image_strength(images[i], result.stored[j], boxes, settings.shape)
        rec.strength_plain = [s.to_dict() for s in plain]
        rec.strength_final = [s.to_dict() for s in final]
        out.data, problem = encode_verified(settings.codec, result.images[j], result.stored[j])
        undone = settings.strength.undone(boxes, plain, final)
        weak = settings.strength.weak(boxes, final)
        # Nothing to anonymize and a lossless file: its pixels are the input's, so its
        # decision is the original's whatever margin the original itself had.
        as_input = not rec.regions and settings.codec.lossless
        if problem:
            rec.status, rec.error = Status.FAILED, problem
        elif not bool(result.success[j]) and not as_input:
            rec.status = Status.FAILED
            reason = result.reasons[j] if result.reasons is not None else None
            rec.error = (
                reason
                or f"criterion {settings.criterion.describe()} not met after {rec.steps} steps"
            )
            if worst:
                rec.error += f" under every loader variant (worst: {rec.worst_variant})"
        elif undone:
            rec.status, rec.error = Status.FAILED, undone
        elif not rec.regions:
            rec.status = Status.NO_REGIONS
        elif weak:
            rec.status, rec.error = Status.WEAK, weak
        else:
            rec.status = Status.UNCHANGED if rec.steps == 0 else Status.CORRECTED
        if keep_images:
            out.images = OutcomeImages(images[i], result.initial[j], result.stored[j], masks[j])
    return outcomes


def encode_verified(codec: Codec, image: Tensor, checked: Tensor) -> tuple[bytes, str | None]:
    """Encode ``image`` and confirm the file decodes to ``checked``, the pixels the
    classifier saw. Returns the bytes and a problem description (None when it matches)."""
    data = codec.encode(to_pixels(image))
    if not np.array_equal(codec.decode(data), to_pixels(checked)):
        return data, "the encoded file does not decode to the verified pixels"
    return data, None
