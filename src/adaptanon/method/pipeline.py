"""One batch through the whole method: classify, find regions, anonymize, correct, encode
and verify. Pure with respect to files: the engines read and write them.

:func:`process_batch` is two halves: :func:`compute_batch` does the model's work on the
device (one host transfer per batch for the record fields) and hands each image over as a
:class:`~adaptanon.method.finish.FinishJob`; :func:`~adaptanon.method.finish.finish_image`
measures, encodes and judges it on the host, in this process or in a worker.

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
from adaptanon.classifiers.base import PixelClassifier, QueryClassifier, gradient_context
from adaptanon.classifiers.robust import robust as robust_classifier
from adaptanon.io.codecs import Codec, to_image, to_pixels
from adaptanon.method.criteria import Criterion, SameClass, logit_margin
from adaptanon.method.filters import ByLabel, Filter, anonymize
from adaptanon.method.finish import FinishJob, FinishRules, finish_image
from adaptanon.method.identity import IdentityLimit
from adaptanon.method.metrics import StrengthLimits
from adaptanon.method.solvers import GradientSolver, Solver, SolverResult
from adaptanon.method.solvers.gradient import variant_margins
from adaptanon.method.solvers.region import mask_boxes
from adaptanon.records import Box, ImageRecord, Status
from adaptanon.regions import RegionQuery, Regions, RegionSource


@dataclass(frozen=True)
class Settings:
    """How to anonymize, correct and store; the defaults are the CLI's: the paper's method, with
    the face mosaic for regions labelled ``face`` (``filter=ByLabel()``, ``--filter auto``).

    ``robust``: accept an image only when the criterion holds under every loader near
    the declared one (:func:`~adaptanon.preprocessing.variants.variants_of`), and correct
    it under all of them (``--robust``). ``identity``: the face identity check
    (``--min-identity-distance``; None: off), on regions labelled ``face``."""

    filter: Filter = field(default_factory=ByLabel)
    shape: str = "rect"
    criterion: Criterion = field(default_factory=SameClass)
    solver: Solver = field(default_factory=GradientSolver)
    codec: Codec = field(default_factory=Codec)
    strength: StrengthLimits = field(default_factory=StrengthLimits)
    robust: bool = False
    identity: IdentityLimit | None = None

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
            **(self.identity.describe() if self.identity else {}),
        }

    @property
    def rules(self) -> FinishRules:
        """What finishing an image needs of these settings."""
        return FinishRules(self.codec, self.strength, self.shape, self.criterion.describe())


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
    low, high = torch.aminmax(image.detach())  # NaN fails both tests, infinities one
    if not (bool(low >= 0) and bool(high <= 1)):
        raise ValueError(f"{where}: values must be finite and in [0, 1]")


def eight_bit_sources(images: Sequence[Tensor]) -> list[np.ndarray] | None:
    """The ``(H, W, 3)`` uint8 pixels that ``(3, H, W)`` ``images`` are made of, when every
    one of them is exactly ``to_image`` of its pixels (checked); None otherwise."""
    found = []
    for img in images:
        pixels = to_pixels(img)
        if not torch.equal(to_image(pixels, img.device), img):
            return None
        found.append(pixels)
    return found


def classify_originals(
    classifier: Classifier,
    images: Sequence[Tensor],
    saliency: bool,
    pixels: Sequence[np.ndarray] | None = None,
) -> tuple[Tensor, list[Tensor] | None, Tensor]:
    """Logits ``(B, N)`` of the originals, if asked per-image ``(crop, crop)`` maps of
    absolute loss gradients at the classifier's view (the same forward pass serves both),
    and the model inputs ``(B, ...)``. ``pixels``: the images' ``(H, W, 3)`` uint8 pixels,
    when known: a classifier on the CPU then computes the inputs from them
    (:class:`PixelClassifier`); on a GPU the device resizes the uploaded images."""
    inputs = None
    on_cpu = classifier.device.type == "cpu"
    if pixels is not None and on_cpu and isinstance(classifier, PixelClassifier):
        inputs = classifier.pixel_inputs(pixels)
    if inputs is None:
        inputs = classifier.inputs(images)
    if saliency and isinstance(classifier, QueryClassifier):
        with torch.no_grad():
            logits = classifier.forward(inputs)
        return logits, classifier.query_saliency(inputs, logits), inputs
    if not saliency:
        with torch.no_grad():
            return classifier.forward(inputs), None, inputs
    inputs = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = classifier.forward(inputs)
        loss = F.cross_entropy(logits, logits.argmax(1), reduction="sum")
        with gradient_context(classifier):
            (grad,) = torch.autograd.grad(loss, [inputs])
    return logits.detach(), list(grad.abs().sum(1)), inputs.detach()


@dataclass
class Computed:
    """The device half's result for one image: its record, and the job that finishes it
    (None when the image is already an ``error``, e.g. its regions could not be found);
    ``images`` when asked for."""

    record: ImageRecord
    job: FinishJob | None = None
    images: OutcomeImages | None = None


@dataclass
class _Targets:
    """What the solver aims at: ``target`` ``(B,)`` classes (``(B, V)`` under ``--robust``,
    one per loader variant), ``reference`` probabilities and the model inputs ``bases``;
    ``variants`` names the loader variants (empty unless robust)."""

    target: Tensor
    reference: Tensor
    bases: list[Tensor]
    variants: tuple[str, ...] = ()


def _targets(
    classifier: Classifier,
    settings: Settings,
    images: list[Tensor],
    original: Tensor,
    probs: Tensor,
    inputs: Tensor,
) -> _Targets:
    """The solver's targets for ``images`` (the ones with regions found)."""
    if not settings.robust:
        return _Targets(original, probs, list(inputs))
    # Each variant keeps the class it gives the original (the declared one first).
    rc = robust_classifier(classifier)
    with torch.no_grad():
        v_inputs = rc.variant_inputs(images)
        v_logits = rc.variant_forward(v_inputs)
    target = v_logits.argmax(2)
    target[:, 0] = original.to(target.device)
    return _Targets(target, torch.softmax(v_logits, 2), list(v_inputs), rc.variant_names)


def _record_fields(result: SolverResult, original: Tensor, aims: _Targets) -> list[list[float]]:
    """Per image ``[steps, success, anonymized class, its confidence, final class, its
    confidence, final margin, worst variant margin, worst variant index]`` (the last two
    NaN unless robust), in one transfer to the host."""
    initial = result.initial_logits.argmax(1)
    final = result.logits.argmax(1)
    rows = torch.arange(len(final), device=final.device)
    nan = torch.full_like(final, math.nan, dtype=torch.float64)
    worst, which = nan, nan
    variant_logits = getattr(result, "variant_logits", None)
    if aims.variants and variant_logits is not None:
        margins = variant_margins(variant_logits, aims.target.to(variant_logits.device))
        low = margins.min(1)
        worst, which = low.values.double(), low.indices.double()
    fields = [
        result.steps.to(final.device).double(),
        result.success.to(final.device).double(),
        initial.double(),
        torch.softmax(result.initial_logits, 1)[rows, initial].double(),
        final.double(),
        torch.softmax(result.logits, 1)[rows, final].double(),
        logit_margin(result.logits, original.to(final.device)).double(),
        worst.to(final.device),
        which.to(final.device),
    ]
    return torch.stack(fields, 1).cpu().tolist()


def _window(boxes: Sequence[Box], changed: Box | None) -> Box:
    """The crop that covers the regions and every pixel anonymization or correction may
    change (``changed``, the mask's bounding box: filters such as the face mosaic or Yang's
    blur reach beyond their boxes)."""
    parts = [*boxes, *([changed] if changed else [])]
    if not parts:
        return (0, 0, 0, 0)
    return (
        min(b[0] for b in parts),
        min(b[1] for b in parts),
        max(b[2] for b in parts),
        max(b[3] for b in parts),
    )


def _crop(image: Tensor, window: Box) -> np.ndarray:
    """``image[..., y0:y1, x0:x1]`` as a numpy array on the host (float32, or bool)."""
    x0, y0, x1, y1 = window
    part = image[..., y0:y1, x0:x1].detach()
    dtype = torch.bool if part.dtype == torch.bool else torch.float32
    return part.to("cpu", dtype).contiguous().numpy()


WINDOW_PATH_PIXELS = 1_000_000
"""From this many pixels on, an image whose correction stayed inside its regions' window is
converted back to 8 bits on the window alone; a smaller one is converted whole (cheaper
than checking that nothing outside the window changed)."""


def _same_outside(original: Tensor, images: Sequence[Tensor], window: Box) -> bool:
    """True when every one of ``images`` equals ``original`` outside ``window`` (one host
    transfer)."""
    x0, y0, x1, y1 = window
    strips = [(slice(0, y0), slice(None)), (slice(y1, None), slice(None))]  # (rows, columns)
    strips += [(slice(y0, y1), slice(0, x0)), (slice(y0, y1), slice(x1, None))]
    checks = [
        (img[:, rows, cols] == original[:, rows, cols]).all()
        for img in images
        for rows, cols in strips
    ]
    return bool(torch.stack(checks).all())


def _file_pixels(
    codec: Codec,
    original: Tensor,
    original_8bit: np.ndarray | None,
    result: SolverResult,
    j: int,
    window: Box,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``(H, W, 3)`` uint8 pixels to encode (``result.images[j]``) and those the
    classifier last checked (``result.stored[j]``; None when the same).

    A lossless file of a large image (:data:`WINDOW_PATH_PIXELS`) that the correction
    changed only inside ``window`` converts just the window: outside it both are the
    original's 8-bit pixels."""
    final, stored = result.images[j], result.stored[j]
    h, w = original.shape[-2:]
    if (
        h * w < WINDOW_PATH_PIXELS
        or not codec.lossless
        or window == (0, 0, w, h)
        or not _same_outside(original, [final, stored], window)
    ):
        pixels, checked = to_pixels(final), to_pixels(stored)
        return pixels, None if np.array_equal(pixels, checked) else checked
    x0, y0, x1, y1 = window
    base = to_pixels(original) if original_8bit is None else original_8bit
    inner = to_pixels(final[:, y0:y1, x0:x1])
    inner_checked = to_pixels(stored[:, y0:y1, x0:x1])
    pixels = base.copy()
    pixels[y0:y1, x0:x1] = inner
    if np.array_equal(inner, inner_checked):
        return pixels, None
    checked = base.copy()
    checked[y0:y1, x0:x1] = inner_checked
    return pixels, checked


def compute_batch(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    names: Sequence[str],
    images: Sequence[Tensor],
    *,
    keep_images: bool = False,
    originals_8bit: Sequence[np.ndarray] | None = None,
) -> list[Computed]:
    """The device half of :func:`process_batch`: classify the originals, find regions,
    anonymize and correct. One :class:`Computed` per image, in order; an image whose
    regions could not be found is an ``error`` with no job.

    ``originals_8bit``: the ``(H, W, 3)`` uint8 pixels the images were made from (with
    :func:`~adaptanon.io.codecs.to_image`), when the caller has them: then only the
    regions' window of a large photo is converted back to 8 bits, and on the CPU the
    originals' model inputs are computed from them. Without them, on the CPU, images
    that are exactly 8-bit values are found so (:func:`eight_bit_sources`).

    Raises:
        ValueError: an image is not a float ``(3, H, W)`` tensor in ``[0, 1]``.
        RuntimeError: called under ``torch.inference_mode()``, or the model failed.
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
    if originals_8bit is None and device.type == "cpu":
        originals_8bit = eight_bit_sources(images)
    logits, saliency, inputs = classify_originals(
        classifier, images, source.uses_saliency, originals_8bit
    )
    probs = torch.softmax(logits, 1)
    original = logits.argmax(1)
    rows = torch.arange(len(original), device=original.device)
    originals = torch.stack([original.double(), probs[rows, original].double()], 1).cpu()
    geometries = [classifier.geometry(img.shape[-2], img.shape[-1]) for img in images]
    queries = [
        RegionQuery(name, img, geometry, saliency[i] if saliency else None)
        for i, (name, img, geometry) in enumerate(zip(names, images, geometries, strict=True))
    ]
    found: list[Regions] = source.find(queries)
    computed: list[Computed] = []
    todo: list[int] = []
    anonymized: list[Tensor] = []
    masks: list[Tensor] = []
    for i, (name, img, regions) in enumerate(zip(names, images, found, strict=True)):
        cls, confidence = int(originals[i, 0]), float(originals[i, 1])
        record = ImageRecord(
            input=name,
            status=Status.ERROR,
            regions=[list(b) for b in regions.boxes],
            detections=[
                {"box": list(d.box), "label": d.label, "score": d.score} for d in regions.detections
            ],
            original_class=cls,
            original_name=classifier.class_name(cls),
            original_confidence=confidence,
        )
        computed.append(Computed(record))
        if regions.error is not None:
            record.error = f"regions: {regions.error}"
            continue
        geometry = geometries[i]
        scale = geometry.scale if geometry else 1.0
        labels = [d.label for d in regions.detections]
        anon, mask = anonymize(img, regions.boxes, settings.filter, scale, settings.shape, labels)
        todo.append(i)
        anonymized.append(anon)
        masks.append(mask)
    if not todo:
        return computed
    aims = _targets(
        classifier, settings, [images[i] for i in todo], original[todo], probs[todo],
        inputs[todo],
    )  # fmt: skip
    result = settings.solver(
        classifier,
        anonymized,
        masks,
        aims.target,
        criterion=settings.criterion,
        reference=aims.reference,
        codec=settings.codec,
        bases=aims.bases,
    )
    fields = _record_fields(result, original[todo], aims)
    query_counts = None if result.queries is None else [int(q) for q in result.queries.tolist()]
    changed = mask_boxes(masks)
    for j, i in enumerate(todo):
        out, rec = computed[i], computed[i].record
        steps, success, a_cls, a_conf, f_cls, f_conf, margin, worst, which = fields[j]
        rec.steps = int(steps)
        rec.queries = None if query_counts is None else query_counts[j]
        rec.anonymized_class = int(a_cls)
        rec.anonymized_name = classifier.class_name(rec.anonymized_class)
        rec.anonymized_confidence = a_conf
        rec.final_class = int(f_cls)
        rec.final_name = classifier.class_name(rec.final_class)
        rec.final_confidence = f_conf
        rec.final_margin = margin
        if not math.isnan(worst):
            rec.worst_variant_margin, rec.worst_variant = worst, aims.variants[int(which)]
        boxes = found[i].boxes
        img = images[i]
        faces = [d.label == "face" for d in found[i].detections]
        identity_weak = None
        if settings.identity is not None and any(faces):
            try:
                rec.identity_distance = settings.identity.distances(
                    img, result.stored[j], boxes, faces
                )
            except Exception as exc:  # one image's failure must not stop the batch
                rec.error = f"identity check: {exc}"
                continue
            identity_weak = settings.identity.weak(boxes, rec.identity_distance)
        window = _window(boxes, changed[j])
        given = None if originals_8bit is None else originals_8bit[i]
        pixels, checked = _file_pixels(settings.codec, img, given, result, j, window)
        out.job = FinishJob(
            record=rec,
            boxes=list(boxes),
            window=window,
            original=_crop(img, window),
            plain=_crop(result.initial[j], window),
            final=_crop(result.stored[j], window),
            mask=_crop(masks[j][0], window),
            pixels=pixels,
            checked=checked,
            success=bool(success),
            failure=None if result.reasons is None else result.reasons[j],
            identity_weak=identity_weak,
        )
        if keep_images:
            out.images = OutcomeImages(img, result.initial[j], result.stored[j], masks[j])
    return computed


def process_batch(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    names: Sequence[str],
    images: Sequence[Tensor],
    *,
    keep_images: bool = False,
) -> list[Outcome]:
    """Run the method on a batch; one :class:`Outcome` per image, in order
    (:func:`compute_batch`, then :func:`~adaptanon.method.finish.finish_image` on each).

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
    computed = compute_batch(classifier, source, settings, names, images, keep_images=keep_images)
    return [finish_computed(one, settings.rules) for one in computed]


def finish_computed(computed: Computed, rules: FinishRules) -> Outcome:
    """The :class:`Outcome` of one image from the device half's result, finished here."""
    if computed.job is None:
        return Outcome(computed.record, None, computed.images)
    record, data = finish_image(computed.job, rules)
    return Outcome(record, data, computed.images)
