"""The region a solver may change, as both solvers see it: its bounding boxes, the window
of each image that the classifier's view is recomputed from (:data:`WINDOWED`), the
paper's normalised step inside it, and the full images put back together afterwards."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from adaptanon.classifiers import Classifier
from adaptanon.classifiers.base import WindowedClassifier
from adaptanon.io.codecs import Codec

WINDOWED = True
"""Whether a correction with a lossless codec, ``bases`` and a classifier whose
preprocessing computes its view from a window (``input_window``) works on that window of
each image only (the mask's bounding box and the input pixels the view band it reaches
reads): per step, the work then does not grow with the image's resolution, and the result
is the same. False forces the full-image path (benchmarks compare the two)."""


def normalized_step(grad: Tensor, mask: Tensor, alpha: float) -> Tensor:
    """The update ``-alpha * g / max|g|`` with ``g`` the gradient inside ``mask``.

    Args:
        grad: ``(3, H, W)``; mask: ``(1, H, W)`` bool.

    Returns:
        ``(3, H, W)`` update, zero outside the mask (and everywhere if ``g`` is zero).
    """
    g = torch.where(mask, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
    peak = g.abs().max()
    # Without a branch on peak, so that the host need not wait for the device.
    return -alpha * g / torch.where(peak == 0, torch.ones_like(peak), peak)


def mask_boxes(masks: Sequence[Tensor]) -> list[tuple[int, int, int, int] | None]:
    """Bounding box ``(x0, y0, x1, y1)`` (half-open) of each ``(1, H, W)`` mask, None for
    an empty one; the masks' row and column profiles come to the host in one transfer."""
    if not masks:
        return []
    profiles = torch.cat([torch.cat([m[0].any(1), m[0].any(0)]) for m in masks]).cpu().numpy()
    boxes: list[tuple[int, int, int, int] | None] = []
    at = 0
    for m in masks:
        h, w = m.shape[-2], m.shape[-1]
        rows, cols = profiles[at : at + h].nonzero()[0], profiles[at + h : at + h + w].nonzero()[0]
        at += h + w
        empty = len(rows) == 0
        boxes.append(
            None if empty else (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        )
    return boxes


def check_step_params(alpha: float, max_steps: int, delta: float | None) -> None:
    """Raise ``ValueError`` unless ``alpha`` is finite and positive, ``max_steps`` an
    integer >= 0 and ``delta`` None or finite and >= 0."""
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive finite number, got {alpha}")
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 0:
        raise ValueError(f"max_steps must be an integer >= 0, got {max_steps}")
    if delta is not None and not (math.isfinite(delta) and delta >= 0):
        raise ValueError(f"delta must be a finite number >= 0, got {delta}")


def input_windows(
    classifier: Classifier,
    masks: Sequence[Tensor],
    boxes: Sequence[tuple[int, int, int, int] | None] | None,
) -> list[tuple[int, int, int, int]] | None:
    """Each image's window ``(x0, y0, x1, y1)`` for the windowed path (the whole image
    where the mask is empty), or None for the full path (see :data:`WINDOWED`)."""
    if not WINDOWED or boxes is None or not isinstance(classifier, WindowedClassifier):
        return None
    input_window = classifier.input_window
    windows = []
    for m, box in zip(masks, boxes, strict=True):
        h, w = m.shape[-2], m.shape[-1]
        window = (0, 0, w, h) if box is None else input_window(h, w, box)
        if window is None:
            return None
        windows.append(tuple(int(v) for v in window))
    return windows  # type: ignore[return-value]


def paste(
    codec: Codec,
    full: Sequence[Tensor],
    windows: Sequence[tuple[int, int, int, int]],
    state: Sequence[Tensor],
    stored: Sequence[Tensor],
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """The full images ``(images, stored, initial)`` of a windowed correction: outside its
    window each image is its start (as stored: the codec's round trip, done once)."""
    images, stored_full, initial = [], [], []
    with torch.no_grad():
        for f, (x0, y0, x1, y1), s, st in zip(full, windows, state, stored, strict=True):
            image = f.clone()
            image[:, y0:y1, x0:x1] = s.detach()
            first = codec.roundtrip(f).detach()
            last = first.clone()
            last[:, y0:y1, x0:x1] = st
            images.append(image)
            stored_full.append(last)
            initial.append(first)
    return images, stored_full, initial
