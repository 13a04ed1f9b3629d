"""A correction that only queries the classifier (``--black-box``): normalised steps
(paper, eq. 3) along gradients estimated from scores.

The search moves only the region's pixels, in a low-dimensional space: a coarse grid of
``3 x gh x gw`` values over the bounding box of the image's mask (``grid`` cells along its
longer side), bilinearly upsampled to the box and masked. Each iteration estimates the
gradient of a loss toward the original class with ``samples`` antithetic pairs
of Gaussian directions in that space (NES: ``g = sum_k (L(x + s u_k) - L(x - s u_k)) z_k``,
``L`` the best other logit minus the original class's, or the cross-entropy),
normalised and averaged with the image's previous direction (``momentum``), and moves by
``alpha * U(g) / max|U(g)|`` inside the mask. An image whose best margin has not grown for
``patience`` iterations doubles its own ``sigma`` (up to ``max_sigma``) and forgets its
direction: a flat or noisy neighbourhood at the small scale often has a slope at a larger
one. Each image draws its directions from its own generator, seeded from ``seed`` and its
region's pixels, so its result does not depend on the other images in the batch. Every
candidate is queried as stored (8-bit rounding for PNG, a real encode and decode for
JPEG/WebP) and within the delta bound, so each query is also a check: an image is done
as soon as its new point or one of the perturbed candidates meets the criterion. One call
of the classifier per iteration scores all images' candidates; each image has a budget of
``max_queries``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptanon.classifiers import Classifier
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
from adaptanon.method.solvers.slots import project


def _image_seed(seed: int, start: Tensor, mask: Tensor) -> int:
    """A seed from ``seed`` and the region's 8-bit pixels (``start * mask``, ``(3, H, W)``)."""
    pixels = (start * mask).mul(255).round().to(torch.uint8).cpu().numpy().tobytes()
    return zlib.crc32(pixels, seed & 0xFFFFFFFF)


def grid_shape(box: tuple[int, int, int, int], grid: int) -> tuple[int, int]:
    """``(gh, gw)`` cells over a box ``(x0, y0, x1, y1)``: ``grid`` along its longer side,
    proportionally fewer (at least 1, at most its pixels) along the other."""
    h, w = box[3] - box[1], box[2] - box[0]
    long = max(h, w)
    return (
        max(1, min(h, round(grid * h / long))),
        max(1, min(w, round(grid * w / long))),
    )


def upsample(z: Tensor, mask: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """The pixel change of grid values ``z`` ``(K, 3, gh, gw)``: bilinear over ``box`` in
    a ``(1, H, W)`` ``mask``'s frame, zero outside the mask. Returns ``(K, 3, H, W)``."""
    x0, y0, x1, y1 = box
    out = z.new_zeros(z.shape[0], 3, mask.shape[-2], mask.shape[-1])
    out[:, :, y0:y1, x0:x1] = F.interpolate(
        z, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=True
    )
    return out * mask


@dataclass(frozen=True)
class QuerySolver(Solver):
    """Gradient-free correction (module docstring): ``alpha`` the normalised step,
    ``max_queries`` the budget per image (the check of the plainly anonymized image
    included), ``samples`` antithetic pairs per estimate, ``sigma`` their scale in
    ``[0, 1]`` pixel units (at most ``max_sigma`` after stalls of ``patience``
    iterations), ``grid`` cells along the region box's longer side, ``delta``
    the L-inf bound, ``seed`` the directions' random seed, ``momentum`` the weight of the
    previous direction in each new one (0: each estimate alone), ``loss`` what the
    estimates follow: ``margin`` (the best other logit minus the original class's) or
    ``ce`` (the cross-entropy, as the gradient solver)."""

    alpha: float = 0.1
    max_queries: int = 5000
    samples: int = 10
    sigma: float = 0.03
    max_sigma: float = 0.12
    patience: int = 15
    grid: int = 6
    delta: float | None = None
    seed: int = 0
    momentum: float = 0.5
    loss: str = "margin"

    def __post_init__(self) -> None:
        check_step_params(self.alpha, 0, self.delta)
        if self.max_queries < 1 or self.samples < 1 or self.grid < 1 or self.patience < 1:
            raise ValueError("max_queries, samples, grid and patience must be >= 1")
        if self.loss not in ("margin", "ce"):
            raise ValueError(f"loss must be 'margin' or 'ce', got {self.loss!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a positive finite number, got {self.sigma}")
        if not (math.isfinite(self.max_sigma) and self.max_sigma >= self.sigma):
            raise ValueError(f"max_sigma must be finite and >= sigma, got {self.max_sigma}")

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
        if target.dim() != 1:
            raise ValueError("the query solver takes (B,) targets (no --robust)")
        criterion = criterion or SameClass()
        if criterion.needs_reference and reference is None:
            raise ValueError(f"criterion {criterion.describe()} needs reference probabilities")
        with torch.no_grad():
            return _Search(self, classifier, images, masks, target, criterion, reference,
                           codec or Codec(), bases).run()  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {
            "solver": "query",
            "alpha": self.alpha,
            "max_queries": self.max_queries,
            "samples": self.samples,
            "sigma": self.sigma,
            "max_sigma": self.max_sigma,
            "patience": self.patience,
            "grid": self.grid,
            "delta": self.delta,
            "momentum": self.momentum,
            "loss": self.loss,
        }


class _Search:
    """The state of one batch's search (see :class:`QuerySolver`)."""

    def __init__(
        self,
        params: QuerySolver,
        classifier: Classifier,
        images: Sequence[Tensor],
        masks: Sequence[Tensor],
        target: Tensor,
        criterion: Criterion,
        reference: Tensor | None,
        codec: Codec,
        bases: Sequence[Tensor] | None,
    ) -> None:
        self.p, self.classifier, self.criterion, self.codec = params, classifier, criterion, codec
        device = classifier.device
        self.target = target.to(device)
        self.reference = None if reference is None else reference.to(device)
        self.full = [img.detach().to(device, torch.float32) for img in images]
        masks = [m.to(device) for m in masks]
        boxes = mask_boxes(masks) if bases is not None and codec.lossless else None
        self.boxes, self.bases = boxes, bases
        self.windows = input_windows(classifier, masks, boxes)
        self.frames: list[tuple[int, int, int, int]] | None = None
        start = self.full
        if self.windows is not None:
            self.frames = [
                (w[1], w[0], s.shape[-2], s.shape[-1])
                for s, w in zip(start, self.windows, strict=True)
            ]
            start = [
                s[:, w[1] : w[3], w[0] : w[2]] for s, w in zip(start, self.windows, strict=True)
            ]
            masks = [
                m[:, w[1] : w[3], w[0] : w[2]] for m, w in zip(masks, self.windows, strict=True)
            ]
        self.start, self.masks = start, masks
        self.generators = [
            torch.Generator().manual_seed(_image_seed(params.seed, s, m))
            for s, m in zip(start, masks, strict=True)
        ]

    def query(self, owners: list[int], candidates: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """``(K, N)`` logits of the stored ``candidates`` (``owners[k]``: their images), one
        classifier call; and the stored pixels."""
        seen = [self.codec.roundtrip(x).detach() for x in candidates]
        if self.boxes is not None and self.bases is not None:
            bases = [self.bases[i] for i in owners]
            boxes = [self.boxes[i] for i in owners]
            if self.frames is not None:
                frames = [self.frames[i] for i in owners]
                logits = self.classifier.logits(seen, bases, boxes, frames)  # type: ignore[call-arg]
            else:
                logits = self.classifier.logits(seen, bases, boxes)
        else:
            logits = self.classifier.logits(seen)
        return logits.float(), seen

    def passes(self, logits: Tensor, owners: list[int]) -> Tensor:
        target = self.target[owners]
        ref = torch.softmax(logits, 1) if self.reference is None else self.reference[owners]
        return self.criterion(logits, target, ref).cpu()

    def run(self) -> SolverResult:
        p, n = self.p, len(self.start)
        state = [s.clone() for s in self.start]
        checked = list(state)  # the last point of each image that was queried
        queries = torch.zeros(n, dtype=torch.long)
        steps = torch.zeros(n, dtype=torch.long)
        success = torch.zeros(n, dtype=torch.bool)
        reasons: list[str | None] = [None] * n
        everyone = list(range(n))
        logits, seen = self.query(everyone, state)
        queries += 1
        ok = self.passes(logits, everyone)
        initial_logits, final_logits = logits.clone(), logits.clone()
        initial, stored = list(seen), list(seen)
        success[:] = ok
        boxes = mask_boxes(self.masks)
        active = [i for i in everyone if not ok[i] and boxes[i] is not None]
        fresh = dict.fromkeys(active, False)  # whether state[i] is still unchecked
        memory: dict[int, Tensor] = {}  # each image's running direction (momentum)
        sigma = dict.fromkeys(active, p.sigma)
        first = logit_margin(logits, self.target).tolist()  # one transfer for the batch
        best = {i: first[i] for i in active}
        stalled = dict.fromkeys(active, 0)
        per = 2 * p.samples
        while active:
            for i in [i for i in active if int(queries[i]) + per + fresh[i] > p.max_queries]:
                reasons[i] = f"query budget spent after {int(queries[i])} queries"
            active = [i for i in active if reasons[i] is None]
            if not active:
                break
            owners: list[int] = []
            candidates: list[Tensor] = []
            directions: dict[int, Tensor] = {}
            for i in active:
                box = boxes[i]
                assert box is not None
                gh, gw = grid_shape(box, p.grid)
                z = torch.randn(p.samples, 3, gh, gw, generator=self.generators[i])
                u = upsample(z.to(state[i].device), self.masks[i], box)
                directions[i] = z
                if fresh[i]:
                    owners.append(i)
                    candidates.append(state[i])
                for k in range(p.samples):
                    for sign in (1.0, -1.0):
                        x = state[i] + sign * sigma[i] * u[k]
                        owners.append(i)
                        candidates.append(project(x, self.start[i], self.masks[i], p.delta))
            logits, seen = self.query(owners, candidates)
            ok = self.passes(logits, owners)
            margin = logit_margin(logits, self.target[owners])
            margins = margin.tolist()  # the iteration's one transfer of margins
            loss = (
                -margin
                if p.loss == "margin"
                else F.cross_entropy(logits, self.target[owners], reduction="none")
            )
            still: list[int] = []
            at = 0
            for i in active:
                rows = list(range(at, at + per + fresh[i]))
                at = rows[-1] + 1
                queries[i] += len(rows)
                passing = [r for r in rows if ok[r]]
                if passing:
                    # The unperturbed point first, else the candidate with the largest margin.
                    chosen = (
                        passing[0]
                        if fresh[i] and ok[rows[0]]
                        else max(passing, key=lambda r: margins[r])
                    )
                    checked[i], stored[i] = candidates[chosen], seen[chosen]
                    if not (fresh[i] and chosen == rows[0]):
                        steps[i] += 1  # a perturbed candidate: a move of its own
                    final_logits[i], success[i] = logits[chosen], True
                    continue
                top = max(margins[r] for r in rows)
                if top > best[i]:
                    best[i], stalled[i] = top, 0
                else:
                    stalled[i] += 1
                if stalled[i] >= p.patience and sigma[i] < p.max_sigma:
                    sigma[i] = min(2 * sigma[i], p.max_sigma)
                    stalled[i] = 0
                    memory.pop(i, None)
                if fresh[i]:
                    checked[i], stored[i] = state[i], seen[rows[0]]
                    final_logits[i] = logits[rows[0]]
                pair = loss[rows[fresh[i] :]].reshape(p.samples, 2)
                weights = (pair[:, 0] - pair[:, 1]).to(directions[i].dtype)
                estimate = (weights[:, None, None, None] * directions[i]).sum(0, keepdim=True)
                if p.momentum > 0:
                    estimate = estimate / estimate.norm().clamp(min=1e-12)
                    if i in memory:
                        estimate = p.momentum * memory[i] + (1 - p.momentum) * estimate
                    memory[i] = estimate
                box = boxes[i]
                assert box is not None
                grad = upsample(estimate.to(state[i].device), self.masks[i], box)[0]
                update = normalized_step(grad, self.masks[i], p.alpha)
                if not bool(update.abs().max() > 0):
                    # Every pair scored alike: no direction at this scale; try a larger one.
                    stalled[i] = p.patience
                    still.append(i)
                    continue
                state[i] = project(state[i] + update, self.start[i], self.masks[i], p.delta)
                steps[i] += 1
                fresh[i] = True
                still.append(i)
            active = still
        images, stored_full, initial_full = checked, stored, initial
        if self.windows is not None:
            images, stored_full, initial_full = paste(
                self.codec, self.full, self.windows, checked, stored
            )
        return SolverResult(
            images=[s.detach() for s in images],
            stored=stored_full,
            initial=initial_full,
            success=success,
            steps=steps,
            initial_logits=initial_logits,
            logits=final_logits,
            queries=queries,
            reasons=reasons,
        )
