"""The correction solver: normalised gradient descent on the region pixels (paper, eq. 3).

Starting from the anonymized image, each step computes the cross-entropy between the
classifier's output and the original class, takes its gradient with respect to the region
pixels only, divides it per image by its largest absolute entry and moves by ``alpha``
(in ``[0, 1]`` pixel units). Every image is classified as it would be stored (see
:class:`~adaptanon.io.codecs.Codec`) and leaves the batch as soon as it meets the
criterion. The first pass, over the plainly anonymized images, is only that check (most
pass it); the images that fail get a forward/backward pass of their own. From then on the
forward pass that gives a step's gradient is also that step's check. The solver returns
the images with a per-image success flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptanon.classifiers import Classifier
from adaptanon.classifiers.base import VariantClassifier, WindowedClassifier, gradient_context
from adaptanon.io.codecs import Codec
from adaptanon.method.criteria import Criterion, SameClass, logit_margin
from adaptanon.method.solvers.base import Solver, SolverResult
from adaptanon.method.solvers.region import (
    check_step_params,
    input_windows,
    mask_boxes,
    normalized_step,
    paste,
)
from adaptanon.method.solvers.slots import Slots, project


@dataclass
class RobustResult(SolverResult):
    """A :class:`SolverResult` of a robust correction (``target`` ``(B, V)``), with
    ``variant_logits``: ``(B, V, N)`` logits of ``stored`` under each of the classifier's
    ``V`` loader variants (the declared loader first; ``logits`` is that one)."""

    variant_logits: Tensor | None = None


ROBUST_LOSS = "sum"
"""How a robust step weighs the variants: ``sum`` (cross-entropy summed over all of
them, i.e. their expectation) or ``worst`` (the variant with the lowest margin only)."""


def robust_ok(criterion: Criterion, logits: Tensor, target: Tensor, reference: Tensor) -> Tensor:
    """``(B,)``: the criterion holds under every variant. ``logits``/``reference``
    ``(B, V, N)``, ``target`` ``(B, V)`` (each variant's own original class)."""
    b, v, n = logits.shape
    ok = criterion(logits.reshape(b * v, n), target.reshape(b * v), reference.reshape(b * v, n))
    return ok.reshape(b, v).all(1)


def variant_margins(logits: Tensor, target: Tensor) -> Tensor:
    """``(B, V)`` logit margins of ``(B, V, N)`` logits over ``(B, V)`` targets."""
    b, v, n = logits.shape
    return logit_margin(logits.reshape(b * v, n), target.reshape(b * v)).reshape(b, v)


def _robust_loss(logits: Tensor, target: Tensor) -> Tensor:
    """The loss of a robust step over ``(b, V, N)`` logits (see :data:`ROBUST_LOSS`)."""
    if ROBUST_LOSS == "worst":
        worst = variant_margins(logits.detach(), target).argmin(1)
        rows = torch.arange(len(worst), device=logits.device)
        return F.cross_entropy(logits[rows, worst], target[rows, worst], reduction="sum")
    return F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum")


def correct(
    classifier: Classifier,
    images: Sequence[Tensor],
    masks: Sequence[Tensor],
    target: Tensor,
    *,
    criterion: Criterion | None = None,
    reference: Tensor | None = None,
    alpha: float = 0.1,
    max_steps: int = 100,
    delta: float | None = None,
    codec: Codec | None = None,
    bases: Sequence[Tensor] | None = None,
) -> SolverResult:
    """Correct anonymized images until the classifier's decision matches ``target``.

    Args:
        classifier: the classifier whose decision must be kept.
        images: ``B`` anonymized ``(3, H, W)`` images in ``[0, 1]`` (sizes may differ).
        masks: ``B`` ``(1, H, W)`` bool masks of the pixels the solver may change.
        target: ``(B,)`` original classes; ``(B, V)`` for a robust correction: each
            image's original class under each of the classifier's ``V`` loader variants
            (its ``variant_logits``), all of which must then meet the criterion.
        criterion: when to stop (default: :class:`~adaptanon.method.criteria.SameClass`).
        reference: ``(B, N)`` original probabilities, for probability-distance criteria
            (``(B, V, N)`` for a robust correction).
        alpha: step size in pixel units after normalising the gradient to max 1.
        max_steps: most gradient steps per image.
        delta: optional L-inf bound around the anonymized pixels.
        codec: how the image is stored; each check is done on the stored pixels
            (default: PNG, i.e. rounding to 8 bits).
        bases: optional ``B`` model inputs (``classifier.inputs``) of images equal to
            ``images`` outside the masks, e.g. the originals; with a lossless codec only the
            part of the view the masks reach is then recomputed at each step.

    Returns:
        A :class:`SolverResult` (a :class:`RobustResult` for a robust correction);
        ``success`` is False for images that did not meet the criterion within
        ``max_steps`` or whose gradient vanished.
    """
    check_step_params(alpha, max_steps, delta)
    if target.dim() == 2 and not isinstance(classifier, VariantClassifier):
        raise ValueError("a (B, V) target needs a VariantClassifier (--robust)")
    criterion = criterion or SameClass()
    if criterion.needs_reference and reference is None:
        raise ValueError(
            f"criterion {criterion.describe()} compares with the original probabilities: "
            "pass reference=softmax(original logits)"
        )
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "the correction needs gradients, which torch.inference_mode() forbids; "
            "call adaptanon under torch.no_grad() or with no context instead"
        )
    with torch.enable_grad():
        return _descend(
            classifier,
            images,
            masks,
            target,
            criterion,
            reference,
            alpha,
            max_steps,
            delta,
            codec or Codec(),
            bases,
        )


def _descend(
    classifier: Classifier,
    images: Sequence[Tensor],
    masks: Sequence[Tensor],
    target: Tensor,
    criterion: Criterion,
    reference: Tensor | None,
    alpha: float,
    max_steps: int,
    delta: float | None,
    codec: Codec,
    bases: Sequence[Tensor] | None,
) -> SolverResult:
    n = len(images)
    device = classifier.device
    target = target.to(device)
    robust = target.dim() == 2
    variant_logits: Tensor | None = None
    start = [img.detach().to(device, torch.float32) for img in images]
    masks = [m.to(device) for m in masks]
    state = [s.clone() for s in start]
    boxes = mask_boxes(masks) if bases is not None and codec.lossless else None
    windows = input_windows(classifier, masks, boxes) if not robust else None
    full_start = start
    frames: list[tuple[int, int, int, int]] = []
    if windows is not None:
        # Work on each image's window; the full images are put back together at the end.
        pairs = list(zip(start, masks, windows, strict=True))
        frames = [(w[1], w[0], s.shape[-2], s.shape[-1]) for s, _, w in pairs]
        start = [s[:, w[1] : w[3], w[0] : w[2]].clone() for s, _, w in pairs]
        masks = [m[:, w[1] : w[3], w[0] : w[2]] for _, m, w in pairs]
        state = [s.clone() for s in start]
    # The windows as one padded batch, stepped together (image by image otherwise).
    slots = Slots.make(start, masks) if windows is not None else None
    stored: list[Tensor] = [s for s in start]
    initial: list[Tensor] = [s for s in start]
    if reference is not None:
        reference = reference.to(device)
    success = torch.zeros(n, dtype=torch.bool)
    steps = torch.zeros(n, dtype=torch.long)
    initial_logits: Tensor | None = None
    final_logits: Tensor | None = None
    active = list(range(n))

    def look(rows: list[int], grad: bool) -> _Look:
        """The classifier's view of images ``rows`` as stored, and its forward pass (with
        the graph back to the pixels when ``grad``)."""
        with torch.set_grad_enabled(grad):
            padded: Tensor | None = None
            leaf: Tensor | None = None
            leaves: list[Tensor] = []
            if slots is not None:
                leaf, padded = slots.leaves(rows, codec)
                seen = slots.views(padded, rows)
            else:
                leaves = [state[i].requires_grad_(grad) for i in rows]
                seen = [codec.roundtrip(x) for x in leaves]
            use = boxes is not None and bases is not None
            part_bases = [bases[i] for i in rows] if use and bases is not None else None
            part_boxes = [boxes[i] for i in rows] if use and boxes is not None else None
            # The view batch is cut from the preprocessing's graph: the model runs forward
            # and backward on one fixed-shape tensor, then its gradient goes back to the
            # pixels.
            every: Tensor | None = None
            if robust:
                variants = cast(VariantClassifier, classifier)
                inputs = variants.variant_inputs(seen, part_bases, part_boxes)
                view = inputs.detach().requires_grad_(grad)
                every = variants.variant_forward(view)
                logits = every[:, 0]
            else:
                if windows is not None:
                    inputs = cast(WindowedClassifier, classifier).inputs(
                        seen, part_bases, part_boxes, [frames[i] for i in rows], padded
                    )
                else:
                    inputs = classifier.inputs(seen, part_bases, part_boxes)
                view = inputs.detach().requires_grad_(grad)
                logits = classifier.forward(view)
        return _Look(seen, leaf, leaves, inputs, view, logits, every)

    for step in range(max_steps + 1):
        # The first pass is only a check (most plainly anonymized images pass): no graph;
        # the images that fail get a pass with one, so the backward runs on them alone.
        now = look(active, grad=step > 0)
        seen, logits, every = now.seen, now.logits, now.every
        if robust:
            assert every is not None
            ref = torch.softmax(every.detach(), 2) if reference is None else reference[active]
            passed = robust_ok(criterion, every.detach(), target[active], ref)
            if variant_logits is None:
                variant_logits = every.detach().new_zeros(n, *every.shape[1:])
            variant_logits[active] = every.detach()
        else:
            ref = torch.softmax(logits.detach(), 1) if reference is None else reference[active]
            passed = criterion(logits.detach(), target[active], ref)
        ok = passed.cpu()  # the step's one transfer of pass/fail flags
        if initial_logits is None or final_logits is None:
            initial_logits = logits.detach().new_zeros(n, logits.shape[1])
            final_logits = initial_logits.clone()
            initial_logits[active] = logits.detach()
            if slots is None:
                initial = [x.detach() for x in seen]
        final_logits[active] = logits.detach()
        for j, i in enumerate(active):
            if slots is None:  # slots give their stored images at the end
                stored[i] = seen[j].detach()
            steps[i] = step
            success[i] = bool(ok[j])
        todo = [j for j in range(len(active)) if not ok[j]]
        if step == max_steps or not todo:
            break
        if not now.view.requires_grad:
            active = [active[j] for j in todo]
            now = look(active, grad=True)
            todo = list(range(len(active)))
        if robust:
            assert now.every is not None
            loss = _robust_loss(now.every[todo], target[active][todo])
        else:
            loss = F.cross_entropy(now.logits[todo], target[active][todo], reduction="sum")
        # Gradients through the model: TF32 allowed, cuDNN tuned for its fixed shapes; the
        # forward passes that decide ran in the classifier's own precision (full fp32).
        with gradient_context(classifier):
            (view_grad,) = torch.autograd.grad(loss, [now.view])
        # A region the classifier's view does not reach has no gradient (None): it stops.
        if slots is not None:
            (grad,) = (
                pull_back(now.inputs, [now.leaf], view_grad)
                if now.inputs.requires_grad and now.leaf is not None
                else (None,)
            )
            todo_rows = [active[j] for j in todo]
            with torch.no_grad():
                active = [] if grad is None else slots.step(todo_rows, grad[todo], alpha, delta)
        else:
            active = _step_each(
                active, todo, now.leaves, now.inputs, view_grad, state, start, masks, alpha, delta
            )
        if not active:
            break
    for s in state:
        s.requires_grad_(False)
    assert initial_logits is not None and final_logits is not None
    if slots is not None:
        state, stored, initial = slots.images(codec)
    if windows is not None:
        state, stored, initial = paste(codec, full_start, windows, state, stored)
    if robust:
        return RobustResult(
            images=[s.detach() for s in state],
            stored=stored,
            initial=initial,
            success=success,
            steps=steps,
            initial_logits=initial_logits,
            logits=final_logits,
            variant_logits=variant_logits,
        )
    return SolverResult(
        images=[s.detach() for s in state],
        stored=stored,
        initial=initial,
        success=success,
        steps=steps,
        initial_logits=initial_logits,
        logits=final_logits,
    )


def pull_back(output: Tensor, leaves: list[Tensor], grad: Tensor) -> tuple[Tensor | None, ...]:
    """``grad`` (shaped as ``output``) pulled back through ``output``'s graph to each of
    ``leaves`` (None where it does not reach): the gradient of ``sum(output * grad)``,
    the same values as ``autograd.grad(output, leaves, grad)``, which makes torch import
    sympy (a noticeable part of a short run's start-up) the first time it is called in a
    process."""
    return torch.autograd.grad((output * grad).sum(), leaves, allow_unused=True)


@dataclass
class _Look:
    """One forward pass of :func:`_descend`: the images as stored (``seen``), the pixels'
    leaf (slots) or leaves (image by image), the model ``inputs`` and its detached
    ``view``, the declared loader's ``logits`` ``(B, N)`` and, robust, every variant's
    ``(B, V, N)``."""

    seen: list[Tensor]
    leaf: Tensor | None
    leaves: list[Tensor]
    inputs: Tensor
    view: Tensor
    logits: Tensor
    every: Tensor | None


def _step_each(
    active: list[int],
    todo: list[int],
    leaves: list[Tensor],
    inputs: Tensor,
    view_grad: Tensor,
    state: list[Tensor],
    start: list[Tensor],
    masks: list[Tensor],
    alpha: float,
    delta: float | None,
) -> list[int]:
    """One step image by image (images of any sizes): the gradient of ``inputs`` (given
    ``view_grad``) to the ``todo`` leaves, each image's normalised update, projected, in
    ``state``; returns the images that moved, with one transfer to the host."""
    grads = (
        pull_back(inputs, [leaves[j] for j in todo], view_grad)
        if inputs.requires_grad
        else [None] * len(todo)
    )
    stepped: list[int] = []
    moved: list[Tensor] = []
    with torch.no_grad():
        for j, g in zip(todo, grads, strict=True):
            i = active[j]
            if g is None:
                continue
            update = normalized_step(g, masks[i], alpha)
            state[i] = project(state[i].detach() + update, start[i], masks[i], delta)
            stepped.append(i)
            moved.append(update.abs().max() > 0)
    flags = torch.stack(moved).cpu().tolist() if moved else []
    return [i for i, m in zip(stepped, flags, strict=True) if m]


@dataclass(frozen=True)
class GradientSolver(Solver):
    """The paper's solver (eq. 3): at most ``max_steps`` normalised gradient steps of
    ``alpha`` on the region pixels, optionally kept within ``delta`` (L-inf) of the
    anonymized pixels."""

    alpha: float = 0.1
    max_steps: int = 100
    delta: float | None = None

    def __post_init__(self) -> None:
        check_step_params(self.alpha, self.max_steps, self.delta)

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
        return correct(
            classifier,
            images,
            masks,
            target,
            criterion=criterion,
            reference=reference,
            alpha=self.alpha,
            max_steps=self.max_steps,
            delta=self.delta,
            codec=codec,
            bases=bases,
        )

    def describe(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "max_steps": self.max_steps, "delta": self.delta}
