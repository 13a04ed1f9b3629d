"""Where a classifier's view lies in an input image (:class:`ViewGeometry`), and the bound
on the resized image a view may ask for (:data:`MAX_RESIZED_PIXELS`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_RESIZED_PIXELS = 100_000_000
"""Largest image a preprocessing's geometry resizes to before cropping. Only the crop is
computed, but Pillow's resize order is found by resizing a random image of the full size
once (:func:`~adaptanon.preprocessing.resample.pil_order`), about 4 bytes per resized
pixel."""


@dataclass(frozen=True)
class ViewGeometry:
    """Where a classifier's input view lies in an input image.

    The view is the crop ``[top, top+crop) x [left, left+crop)`` of the input resized to
    ``resized = (height, width)``.
    """

    input_size: tuple[int, int]
    resized: tuple[int, int]
    top: int
    left: int
    crop: int

    def view_box_to_input(
        self, box: tuple[float, float, float, float]
    ) -> tuple[int, int, int, int]:
        """Map a half-open ``[x0, y0, x1, y1]`` box in view pixels to input pixels (covering)."""
        sy = self.input_size[0] / self.resized[0]
        sx = self.input_size[1] / self.resized[1]
        x0, y0, x1, y1 = box
        return (
            max(0, math.floor((x0 + self.left) * sx)),
            max(0, math.floor((y0 + self.top) * sy)),
            min(self.input_size[1], math.ceil((x1 + self.left) * sx)),
            min(self.input_size[0], math.ceil((y1 + self.top) * sy)),
        )

    @property
    def scale(self) -> float:
        """Input pixels per view pixel."""
        return self.input_size[0] / self.resized[0]


def check_resized(height: int, width: int, resized: tuple[int, int]) -> None:
    """Raise ``ValueError`` when resizing a ``height x width`` input to ``resized`` would
    exceed :data:`MAX_RESIZED_PIXELS` (a 10 x 10000 strip, shorter side to 256, is
    256 x 256000)."""
    new_h, new_w = resized
    if new_h * new_w > MAX_RESIZED_PIXELS:
        raise ValueError(
            f"aspect ratio {max(height, width) / min(height, width):.0f}:1 is too extreme: "
            f"the model's view resizes the {width}x{height} image to {new_w}x{new_h} = "
            f"{new_h * new_w:,} pixels, over the limit of {MAX_RESIZED_PIXELS:,}"
        )
