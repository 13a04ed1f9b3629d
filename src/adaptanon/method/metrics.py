"""How much of the original a region still shows: measures on ``(3, H, W)`` images in
``[0, 1]`` restricted to a mask."""

from __future__ import annotations

import math

from torch import Tensor


def region_psnr(reference: Tensor, other: Tensor, mask: Tensor) -> float | None:
    """PSNR in dB between two ``(3, H, W)`` images in ``[0, 1]``, over the pixels where the
    ``(1, H, W)`` or ``(H, W)`` bool ``mask`` is set (all channels). ``inf`` when they are
    equal there, None when the mask is empty."""
    m = mask.reshape(1, *reference.shape[-2:]).to(reference.device).expand_as(reference)
    count = int(m.sum())
    if count == 0:
        return None
    diff = (reference.double() - other.to(reference.device).double())[m]
    mse = float((diff**2).mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)
