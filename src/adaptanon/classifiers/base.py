"""What the method needs of a classifier (:class:`Classifier`, a protocol), what the
solver uses when a classifier has it (:class:`WindowedClassifier`: views from windows;
:class:`VariantClassifier`: several loaders, ``--robust``; :class:`TunedClassifier`: the
context of its gradients), and the torch implementation every built-in model uses
(:class:`TorchClassifier`).

A classifier maps full-resolution RGB images (``(3, H, W)`` float tensors in ``[0, 1]``,
any size) to logits, differentiably, so the correction can follow the gradient back to the
input pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol, Self, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from adaptanon.classifiers.precision import (
    bucket_size,
    full_precision,
    model_call,
    search_precision,
)
from adaptanon.preprocessing import Preprocess, ViewGeometry

BoxOrNone = tuple[int, int, int, int] | None


@runtime_checkable
class Classifier(Protocol):
    """The classifier whose decision the correction keeps.

    ``inputs`` turns images into one model batch (``(B, ...)``), ``forward`` maps such a
    batch to ``(B, N)`` logits, ``logits`` does both. ``geometry`` says where the model's
    view lies in an input of a given size, when the preprocessing knows (None otherwise:
    region sources that work at the view, and filter scaling, then fall back to input
    pixels).
    """

    name: str

    @property
    def device(self) -> torch.device:
        """Where the model runs; images are moved there."""
        ...

    def to(self, device: str | torch.device) -> Self:
        """Move to ``device``; returns self."""
        ...

    def inputs(
        self,
        images: Sequence[Tensor],
        bases: Sequence[Tensor] | None = None,
        boxes: Sequence[BoxOrNone] | None = None,
    ) -> Tensor:
        """``B`` images ``(3, H, W)`` -> one model batch. With ``bases`` (the batch rows of
        images equal to these outside ``boxes``) a backend may recompute only what changed."""
        ...

    def forward(self, inputs: Tensor) -> Tensor:
        """Model batch -> ``(B, N)`` logits."""
        ...

    def logits(
        self,
        images: Sequence[Tensor],
        bases: Sequence[Tensor] | None = None,
        boxes: Sequence[BoxOrNone] | None = None,
    ) -> Tensor:
        """``(B, N)`` logits for ``B`` images (see :meth:`inputs`)."""
        ...

    def geometry(self, height: int, width: int) -> ViewGeometry | None:
        """The model's view in a ``height x width`` input, when known."""
        ...

    def class_name(self, index: int) -> str:
        """Human-readable name of class ``index``."""
        ...


Frame = tuple[int, int, int, int]
"""Where a window lies in its input: ``(top, left, height, width)``, the input's size."""


@runtime_checkable
class WindowedClassifier(Classifier, Protocol):
    """A :class:`Classifier` that can compute its view from a window of each input (the
    input pixels a change inside a box reaches), so that a correction of a large photo
    works on that window only. The solver uses it when the classifier has it."""

    def input_window(
        self, height: int, width: int, box: tuple[int, int, int, int]
    ) -> tuple[int, int, int, int] | None:
        """The input box ``(x0, y0, x1, y1)`` of a ``height x width`` image from which the
        view is recomputed for a change inside ``box``, or None when it cannot be."""
        ...

    def inputs(
        self,
        images: Sequence[Tensor],
        bases: Sequence[Tensor] | None = None,
        boxes: Sequence[BoxOrNone] | None = None,
        frames: Sequence[Frame] | None = None,
        padded: Tensor | None = None,
    ) -> Tensor:
        """As :meth:`Classifier.inputs`; with ``frames`` each image is the crop of its input
        at ``(top, left)`` holding :meth:`input_window` of its box. ``padded``: the same
        images as one ``(B, 3, H, W)`` tensor, padded at the bottom and right (``images``
        are views of it), for a preprocessing that computes them together."""
        ...


@runtime_checkable
class PixelClassifier(Classifier, Protocol):
    """A :class:`Classifier` whose preprocessing can also run on 8-bit photos with the
    library it reproduces (Pillow, OpenCV): the originals' model inputs without building
    the differentiable resize of each full-resolution photo."""

    def pixel_inputs(self, pixels: Sequence[np.ndarray]) -> Tensor | None:
        """``(B, 3, h, w)`` model inputs, on the classifier's device, of ``B`` ``(H, W,
        3)`` uint8 images, equal to ``inputs([to_image(p) for p in pixels])``; None when
        the preprocessing cannot."""
        ...


@runtime_checkable
class TunedClassifier(Classifier, Protocol):
    """A :class:`Classifier` that says in which context gradients through its
    :meth:`~Classifier.forward` are taken (precision, cuDNN tuning); without it the solver
    uses :func:`~.precision.search_precision`."""

    def gradient_context(self) -> AbstractContextManager[None]:
        """A context for the backward pass of :meth:`~Classifier.forward`."""
        ...


def gradient_context(classifier: Classifier) -> AbstractContextManager[None]:
    """The context to take gradients through ``classifier.forward`` in: its own
    (:class:`TunedClassifier`), else :func:`~.precision.search_precision`."""
    if isinstance(classifier, TunedClassifier):
        return classifier.gradient_context()
    return search_precision()


@runtime_checkable
class QueryClassifier(Classifier, Protocol):
    """A :class:`Classifier` that can only be queried (``--black-box``): no gradient flows
    through :meth:`~Classifier.forward`, so it gives its own gradient-free saliency."""

    def query_saliency(self, inputs: Tensor, logits: Tensor) -> list[Tensor]:
        """Per-image ``(h, w)`` saliency maps of ``(B, C, h, w)`` model inputs whose
        ``(B, N)`` logits are given."""
        ...


@runtime_checkable
class VariantClassifier(Classifier, Protocol):
    """A :class:`Classifier` seen through ``V`` loaders at once (``--robust``): the solver
    accepts an image only when the criterion holds under each of them."""

    @property
    def variant_names(self) -> tuple[str, ...]:
        """The ``V`` loaders' names, the declared one first."""
        ...

    def variant_inputs(
        self,
        images: Sequence[Tensor],
        bases: Sequence[Tensor] | None = None,
        boxes: Sequence[BoxOrNone] | None = None,
    ) -> Tensor:
        """``(B, V, ...)`` model inputs of ``B`` images under the ``V`` loaders."""
        ...

    def variant_forward(self, inputs: Tensor) -> Tensor:
        """``(B, V, ...)`` inputs -> ``(B, V, N)`` logits."""
        ...


@dataclass
class TorchClassifier:
    """An ``nn.Module`` together with the preprocessing that turns a full image into its
    input.

    Attributes:
        model: maps ``(B, 3, crop, crop)`` normalised inputs to ``(B, N)`` logits.
        preprocess: maps one ``(3, H, W)`` image in ``[0, 1]`` to ``(3, crop, crop)``;
            must be differentiable. A :class:`Preprocess` also gives the view geometry and
            the partial recomputation the solver uses.
        name: how the classifier is shown in manifests and reports.
        class_names: optional names of the ``N`` classes.
        fixed_shapes: pad every model batch to :func:`~.precision.bucket_size` rows and
            let cuDNN tune its algorithms for those few shapes (``cudnn.benchmark``
            around the model's calls only); None: on CUDA.
        batched_windows: recompute the views of a windowed correction for the whole batch
            at once, when the preprocessing can (``update_many``); None: on CUDA.
        channels_last: run the model on channels-last (NHWC) inputs and weights, which
            oneDNN and cuDNN convolve faster; None: on CUDA only (on the CPU a user's
            module may ``view`` its activations, which needs NCHW). The built-in models
            set it.

    The model runs every forward pass in full fp32 (TF32 off, see :mod:`.precision`).

    The module is put in eval mode (batch norm and dropout as at inference), with a warning
    when it was in training mode; its parameters are left as they are (the correction asks
    autograd for input gradients only).
    """

    model: nn.Module
    preprocess: Callable[[Tensor], Tensor] = field(default_factory=Preprocess)
    name: str = "custom"
    class_names: Sequence[str] | None = None
    fixed_shapes: bool | None = None
    batched_windows: bool | None = None
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        if self.model.training:
            warnings.warn(
                f"classifier {self.name!r}: the module was in training mode; adaptanon "
                "switched it to eval mode (model.eval()) to classify as at inference",
                stacklevel=3,
            )
            self.model.eval()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @property
    def device(self) -> torch.device:
        """The device the model's parameters are on."""
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> Self:
        """Move the model to ``device`` (channels-last there if ``channels_last``); returns
        self."""
        device = torch.device(device)
        self.model.to(device)
        if self._nhwc(device):
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return self

    def _nhwc(self, device: torch.device) -> bool:
        return device.type == "cuda" if self.channels_last is None else self.channels_last

    def geometry(self, height: int, width: int) -> ViewGeometry | None:
        """The view geometry, when the preprocessing has one."""
        geometry = getattr(self.preprocess, "geometry", None)
        return geometry(height, width) if geometry is not None else None

    def input_window(
        self, height: int, width: int, box: tuple[int, int, int, int]
    ) -> tuple[int, int, int, int] | None:
        """The input box ``(x0, y0, x1, y1)`` of a ``height x width`` image from which
        :meth:`inputs` recomputes the view for a change inside ``box`` (``frames``), or
        None when the preprocessing cannot work from a window."""
        window = getattr(self.preprocess, "window", None)
        if window is None or getattr(self.preprocess, "update", None) is None:
            return None
        box_: tuple[int, int, int, int] = window(height, width, box)
        return box_

    def inputs(
        self,
        images: Sequence[Tensor],
        bases: Sequence[Tensor] | None = None,
        boxes: Sequence[BoxOrNone] | None = None,
        frames: Sequence[Frame] | None = None,
        padded: Tensor | None = None,
    ) -> Tensor:
        """Preprocess ``B`` images of any sizes into one ``(B, 3, crop, crop)`` batch.

        With ``bases`` (model inputs of images equal to these outside ``boxes``), only the
        part of the view that a box reaches is recomputed, when the preprocessing allows.
        With ``frames`` (``(top, left, height, width)`` per image; needs ``bases`` and
        ``boxes`` and a preprocessing with ``window``), each image is the crop at
        ``(top, left)`` of a ``height x width`` input, holding :meth:`input_window` of its
        box (the whole input where the box is None); boxes are in input coordinates.
        With ``batched_windows``, a preprocessing with ``update_many`` computes all the
        windows' views at once, from ``padded`` (the images padded into one tensor, of
        which they are views) when given.
        """
        update = getattr(self.preprocess, "update", None)
        if bases is None or boxes is None or update is None:
            if frames is not None:
                raise ValueError("frames need bases, boxes and a preprocessing with update")
            batch = torch.stack([self.preprocess(img) for img in images])
        elif frames is not None:
            many = getattr(self.preprocess, "update_many", None)
            batched = images[0].is_cuda if self.batched_windows is None else self.batched_windows
            together = None
            if batched and many is not None and all(box is not None for box in boxes):
                sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in images]
                together = many(images if padded is None else padded, bases, boxes, frames, sizes)
            batch = (
                together
                if together is not None
                else torch.stack(
                    [
                        self.preprocess(img)
                        if box is None
                        else update(img, base, box, (w[0], w[1]), (w[2], w[3]))
                        for img, base, box, w in zip(images, bases, boxes, frames, strict=True)
                    ]
                )
            )
        else:
            batch = torch.stack(
                [
                    self.preprocess(img) if box is None else update(img, base, box)
                    for img, base, box in zip(images, bases, boxes, strict=True)
                ]
            )
        return batch

    def pixel_inputs(self, pixels: Sequence[np.ndarray]) -> Tensor | None:
        """See :meth:`PixelClassifier.pixel_inputs` (preprocessings with ``from_pixels``)."""
        from_pixels = getattr(self.preprocess, "from_pixels", None)
        if from_pixels is None:
            return None
        views = [from_pixels(p) for p in pixels]
        if any(v is None for v in views):
            return None
        return torch.stack(views).to(self.device)

    def forward(self, inputs: Tensor) -> Tensor:
        """``(B, N)`` logits of a batch from :meth:`inputs`, in full fp32; with
        ``fixed_shapes`` the batch is padded with zero rows to its bucket size."""
        n = inputs.shape[0]
        fixed = inputs.is_cuda if self.fixed_shapes is None else self.fixed_shapes
        x = inputs
        if fixed and bucket_size(n) > n:
            x = torch.cat([x, x.new_zeros(bucket_size(n) - n, *x.shape[1:])])
        if x.dim() == 4 and self._nhwc(x.device):
            x = x.contiguous(memory_format=torch.channels_last)
        with full_precision(), model_call() if fixed else nullcontext():
            out: Tensor = self.model(x)
        return out[:n]

    def gradient_context(self) -> AbstractContextManager[None]:
        """The context the solver takes gradients through :meth:`forward` in: TF32
        allowed (:func:`~.precision.search_precision`) and, with ``fixed_shapes``, cuDNN's
        tuned algorithms."""
        fixed = self.device.type == "cuda" if self.fixed_shapes is None else self.fixed_shapes
        return search_precision(benchmark=fixed)

    def logits(
        self,
        images: Sequence[Tensor],
        bases: Sequence[Tensor] | None = None,
        boxes: Sequence[BoxOrNone] | None = None,
        frames: Sequence[Frame] | None = None,
    ) -> Tensor:
        """``(B, N)`` logits for ``B`` images ``(3, H, W)`` in ``[0, 1]`` (see :meth:`inputs`)."""
        return self.forward(self.inputs(images, bases, boxes, frames))

    def class_name(self, index: int) -> str:
        """Human-readable name of class ``index`` (the index itself when names are unknown)."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return str(index)
