"""The solver's images as one padded batch: a fixed number of slots, one per image.

A windowed correction (see :data:`~.region.WINDOWED`) works on each image's window,
whose sizes differ. :class:`Slots` holds the windows, their starts and masks as
``(B, 3, H, W)`` tensors padded at the bottom and right (the mask is False there), so that
a step (the stored-file round trip, the normalised update, the projection) is a handful of
operations for the whole batch instead of a handful per image, and the host waits for the
device once per step, not once per image. The values are those of the per-image steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptanon.io.codecs import Codec

MAX_PADDING = 2.0
"""Slots are used while the padded batch holds at most this many times the windows'
pixels (windows of very different sizes stay a list)."""


def project(image: Tensor, start: Tensor, mask: Tensor, delta: float | None) -> Tensor:
    """Clamp to ``[0, 1]``, to the L-inf ball of radius ``delta`` around ``start`` inside
    ``mask``, and to ``start`` outside it. ``(..., 3, H, W)`` except ``mask``
    ``(..., 1, H, W)``."""
    x = image.clamp(0.0, 1.0)
    if delta is not None:
        x = torch.minimum(torch.maximum(x, start - delta), start + delta)
    return torch.where(mask, x, start)


@dataclass
class Slots:
    """``B`` images of sizes ``sizes`` padded into ``state``, ``start`` ``(B, 3, H, W)``
    and ``mask`` ``(B, 1, H, W)``."""

    state: Tensor
    start: Tensor
    mask: Tensor
    sizes: list[tuple[int, int]]

    @classmethod
    def make(cls, start: Sequence[Tensor], masks: Sequence[Tensor]) -> Slots | None:
        """The slots of ``B`` ``(3, h, w)`` images and their ``(1, h, w)`` masks, or None
        when padding them to one size would cost more than :data:`MAX_PADDING`."""
        sizes = [(int(s.shape[-2]), int(s.shape[-1])) for s in start]
        height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
        if len(sizes) * height * width > MAX_PADDING * sum(h * w for h, w in sizes):
            return None

        def pad(x: Tensor) -> Tensor:
            return F.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2]))

        first = torch.stack([pad(s) for s in start])
        return cls(first.clone(), first, torch.stack([pad(m) for m in masks]), sizes)

    def views(self, batch: Tensor, rows: Sequence[int]) -> list[Tensor]:
        """Each row of ``batch`` (slots ``rows``) cut to its image's size (views)."""
        return [batch[j, :, : self.sizes[i][0], : self.sizes[i][1]] for j, i in enumerate(rows)]

    def leaves(self, rows: Sequence[int], codec: Codec) -> tuple[Tensor, Tensor]:
        """``(leaf, seen)``: the slots ``rows`` as a new leaf that requires grad, and the
        leaf as stored (``codec``'s round trip; lossless codecs only)."""
        leaf = self.state[list(rows)].requires_grad_(True)
        return leaf, codec.roundtrip(leaf)

    def step(
        self, rows: Sequence[int], grad: Tensor, alpha: float, delta: float | None
    ) -> list[int]:
        """Move slots ``rows`` by ``-alpha * g / max|g|`` (``g``: ``grad`` inside the
        mask, per slot), projected; returns the rows that moved (their gradient did not
        vanish), with one transfer to the host."""
        index = list(rows)
        mask, start = self.mask[index], self.start[index]
        g = torch.where(mask, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
        peak = g.abs().amax(dim=(1, 2, 3), keepdim=True)
        update = -alpha * g / torch.where(peak == 0, torch.ones_like(peak), peak)
        self.state[index] = project(self.state[index] + update, start, mask, delta)
        moved = (update.abs().amax(dim=(1, 2, 3)) > 0).cpu().tolist()
        return [i for i, m in zip(rows, moved, strict=True) if m]

    def images(self, codec: Codec) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """``(state, stored, initial)`` per image: the slots cut to size, as stored, and
        the starts as stored (a slot that left the batch keeps the state last checked)."""
        everyone = range(len(self.sizes))
        with torch.no_grad():
            stored = codec.roundtrip(self.state)
            initial = codec.roundtrip(self.start)
        return (
            self.views(self.state, everyone),
            self.views(stored, everyone),
            self.views(initial, everyone),
        )
