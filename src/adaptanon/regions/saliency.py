"""The paper's ImageNet simulation of a sensitive region: the most salient square."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptanon.regions.base import Detection, RegionQuery, RegionSource


def best_square(saliency: Tensor, size: int) -> tuple[int, int, int, int]:
    """The ``size x size`` square with the largest sum of ``saliency``.

    Args:
        saliency: ``(h, w)`` non-negative map.

    Returns:
        Half-open box ``(x0, y0, x1, y1)`` in map pixels.
    """
    h, w = saliency.shape
    size = min(size, h, w)
    # Box sums from an integral image: O(h*w) whatever the size.
    c = F.pad(saliency.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    sums = c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]
    flat = int(torch.argmax(sums))
    y0, x0 = divmod(flat, sums.shape[1])
    return x0, y0, x0 + size, y0 + size


class SaliencyBox(RegionSource):
    """The ``size x size`` square at the classifier's view with the largest sum of
    absolute loss gradients, mapped back to input pixels."""

    uses_saliency = True

    def __init__(self, size: int = 50) -> None:
        if size < 1:
            raise ValueError(f"saliency box size must be >= 1, got {size}")
        self.size = size

    def find_one(self, query: RegionQuery) -> list[Detection]:
        if query.saliency is None or query.geometry is None:
            raise ValueError(
                "saliency regions need a classifier whose preprocessing has a geometry"
            )
        view_box = best_square(query.saliency, self.size)
        return [Detection(query.geometry.view_box_to_input(view_box), label="saliency")]

    def describe(self) -> str:
        return f"saliency({self.size})"
