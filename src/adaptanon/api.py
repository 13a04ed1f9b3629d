"""The library entry point: :func:`anonymize` for one image, :class:`Anonymizer` for many,
with the CLI's defaults. Both take what users hold: a path, a PIL image, a numpy array or a
tensor (:func:`~adaptanon.io.as_image`), and a model as a name, a file, a classifier or a
plain ``torch.nn.Module``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from numbers import Real
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from adaptanon.classifiers import DEFAULT_MODEL, Classifier, load_classifier
from adaptanon.engines import default_batch_size, resolve_device
from adaptanon.io import Codec, ImageLike, as_image, atomic_write, like_input
from adaptanon.method import Criterion, Filter, Outcome, Settings, Solver, process_batch
from adaptanon.records import ImageRecord
from adaptanon.regions import ExplicitBoxes, RegionSource, parse_region_source

BoxLike = Sequence[float]
"""A box ``[x0, y0, x1, y1]`` in pixels, half-open."""

ModelLike = str | Classifier | nn.Module
"""A model: a built-in name, a model file, ``module:function``, a classifier, or a plain
``nn.Module`` (given the ImageNet-standard preprocessing unless ``preprocess`` says)."""


@dataclass
class Anonymized:
    """One image anonymized by :func:`anonymize` or :meth:`Anonymizer.anonymize`.

    Attributes:
        image: the stored result in the kind the input was given as: a numpy array or a
            path gives ``(H, W, 3)`` uint8 RGB pixels, a PIL image an RGB PIL image, a
            tensor a ``(3, H, W)`` float tensor of 8-bit values. None unless the status is
            ``ok`` (``unchanged``, ``corrected``, ``no_regions``): a ``failed`` or
            ``weak`` image is not anonymized well enough to hand out.
        record: what happened (status, regions, classes, steps...), as the CLI's manifest.
        data: the verified file in the anonymizer's format (PNG by default), None when the
            image may not be written; :meth:`save` writes it.
        source: the input file, when the image was given as a path (:meth:`save` will not
            overwrite it).
    """

    image: Tensor | Image.Image | np.ndarray | None
    record: ImageRecord
    data: bytes | None = None
    source: Path | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the image may be used: the record's status is ``ok``."""
        return self.record.status.ok and self.data is not None

    def save(self, destination: str | PathLike[str]) -> Path:
        """Write the verified file (:attr:`data`) to ``destination``, atomically; returns
        its path. The format is the anonymizer's codec, whatever the extension says.

        Raises:
            ValueError: the image may not be written (the record's status and error say
                why), or ``destination`` is the input file.
        """
        dst = Path(destination)
        if self.data is None or not self.record.status.ok:
            reason = f": {self.record.error}" if self.record.error else ""
            raise ValueError(f"nothing to save: status {self.record.status}{reason}")
        if self.source is not None and dst.resolve() == self.source.resolve():
            raise ValueError(f"refusing to overwrite the input {dst}")
        atomic_write(dst, self.data)
        self.record.output = str(dst)
        return dst


class Anonymizer:
    """Anonymize images so that a classifier keeps its decision on the stored result.

    ``Anonymizer()`` uses the CLI's defaults: EfficientNet-Lite0, the saliency square when
    no boxes are given, the ``auto`` filter (a noisy face mosaic for face regions, the
    paper's Gaussian blur for the others), the paper's solver (alpha 0.1, 100 steps), the
    ``class`` criterion, PNG.

    Args:
        model: a built-in name, an ONNX file, a TorchScript or ``.pt2`` file (with
            ``trust_model=True``: such files are code), ``module:function``, a classifier,
            or a plain ``torch.nn.Module`` mapping ``(B, 3, 224, 224)`` ImageNet-normalised
            batches to ``(B, N)`` logits (wrapped with the ImageNet-standard preprocessing,
            :func:`~adaptanon.classifiers.wrap_module`, as a factory's module is).
        regions: where to anonymize when a call gives no boxes: a region source or its
            CLI spec (``saliency``, ``saliency:SIZE``, ``boxes=FILE``).
        settings: filter, shape, criterion, solver and codec together; or give any of
            ``filter``, ``shape``, ``criterion``, ``solver``, ``codec`` to change one.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda:N``...
        batch_size: images per pass (default 8 on CPU, 64 on CUDA).
        trust_model: allow a TorchScript or ``.pt2`` model file (code that runs when
            loaded); without it such a file is refused.
        preprocess: for a module or model file, what turns a ``(3, H, W)`` image in
            ``[0, 1]`` into the model's input (default: resize 256, centre crop 224,
            ImageNet mean and std; see :class:`~adaptanon.preprocessing.Preprocess`).
    """

    def __init__(
        self,
        model: ModelLike = DEFAULT_MODEL,
        *,
        regions: RegionSource | str = "saliency",
        settings: Settings | None = None,
        filter: Filter | None = None,
        shape: str | None = None,
        criterion: Criterion | None = None,
        solver: Solver | None = None,
        codec: Codec | str | None = None,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        trust_model: bool = False,
        preprocess: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        base = settings or Settings()
        self.settings = replace(
            base,
            filter=filter or base.filter,
            shape=shape or base.shape,
            criterion=criterion or base.criterion,
            solver=solver or base.solver,
            codec=Codec(codec) if isinstance(codec, str) else (codec or base.codec),
        )
        self.regions = parse_region_source(regions) if isinstance(regions, str) else regions
        target = resolve_device(device) if isinstance(device, str) else device
        self.classifier = load_classifier(model, preprocess, trust_model=trust_model).to(target)
        self.batch_size = batch_size or default_batch_size(self.classifier.device)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def __call__(
        self,
        images: Sequence[ImageLike],
        boxes: Sequence[Sequence[BoxLike]] | None = None,
        names: Sequence[str] | None = None,
    ) -> list[Outcome]:
        """Anonymize ``images``.

        Args:
            images: ``(3, H, W)`` float tensors in ``[0, 1]``, or anything
                :func:`~adaptanon.io.as_image` takes (paths, PIL images, ``(H, W, 3)``
                uint8 or ``[0, 1]`` float arrays, greyscale, RGBA), converted by it.
            boxes: per image, its boxes ``[x0, y0, x1, y1]`` in pixels (half-open); an
                empty list means nothing to anonymize (status ``no_regions``). Without
                ``boxes`` the anonymizer's region source decides.
            names: per image, the name a region source looks it up by (default ``0``,
                ``1``, ...).

        Returns:
            One :class:`~adaptanon.method.Outcome` per image: ``record`` (status, classes,
            steps...), ``data`` (the encoded file) and ``images`` (original, anonymized,
            final as stored, mask), as ``(3, H, W)`` tensors whatever the input's kind.

        Raises:
            ValueError: an image that is none of these (the message names the shapes
                taken), one image instead of a sequence, or numbers of boxes or names that
                differ from that of images.
        """
        _check_a_sequence(images)
        tensors = [_converted(image, i) for i, image in enumerate(images)]
        names = [str(i) for i in range(len(tensors))] if names is None else list(names)
        if len(names) != len(tensors):
            raise ValueError(f"got {len(tensors)} images but {len(names)} names")
        source = self.regions
        if boxes is not None:
            if len(boxes) != len(tensors):
                raise ValueError(f"got {len(tensors)} images but {len(boxes)} box lists")
            source = ExplicitBoxes(
                {n: [list(b) for b in bs] for n, bs in zip(names, boxes, strict=True)}
            )
        out: list[Outcome] = []
        for start in range(0, len(tensors), self.batch_size):
            stop = start + self.batch_size
            out += process_batch(
                self.classifier,
                source,
                self.settings,
                names[start:stop],
                tensors[start:stop],
                keep_images=True,
            )
        return out

    def anonymize_file(
        self,
        source: str | Path,
        destination: str | Path,
        boxes: Sequence[BoxLike] | None = None,
    ) -> ImageRecord:
        """Anonymize the image file ``source`` into ``destination`` (written atomically,
        in this anonymizer's format, whatever the extension says).

        ``destination`` is written only when the status is ``unchanged``, ``corrected`` or
        ``no_regions``; otherwise the record says why (``error``) and no file is written.

        Raises:
            ValueError: ``destination`` is ``source``, or ``source`` cannot be read.
        """
        src, dst = Path(source), Path(destination)
        if dst.resolve() == src.resolve():
            raise ValueError(f"refusing to overwrite the input {src}")
        result = self.anonymize(src, boxes)
        if result.ok:
            result.save(dst)
        return result.record

    def anonymize(self, image: ImageLike, boxes: Sequence[BoxLike] | None = None) -> Anonymized:
        """Anonymize one image and give it back in the kind it came as.

        Args:
            image: a path, a PIL image, a numpy array or a tensor
                (:func:`~adaptanon.io.as_image`).
            boxes: its boxes ``[x0, y0, x1, y1]`` in pixels (half-open); ``[]`` means
                nothing to anonymize; None: this anonymizer's region source decides.

        Returns:
            :class:`Anonymized`: ``image`` (numpy ``(H, W, 3)`` uint8 for an array or a
            path, PIL for PIL, a tensor for a tensor; None unless the status is ok),
            ``record`` and ``data``.

        Raises:
            ValueError: an input of no kind taken, or a file that cannot be read.
        """
        path = Path(image) if isinstance(image, str | PathLike) else None
        name = path.name if path is not None else "0"
        tensor = as_image(image)  # here, so that an error does not say "image 0"
        [outcome] = self([tensor], None if boxes is None else [boxes], names=[name])
        record = outcome.record
        if path is not None:
            record.input = str(path)
        record.settings = {
            "model": self.classifier.name,
            "regions": self.regions.describe() if boxes is None else "boxes",
            **self.settings.describe(),
        }
        final = outcome.image
        usable = record.status.ok and outcome.data is not None and final is not None
        return Anonymized(
            like_input(final, image) if usable and final is not None else None,
            record,
            outcome.data if usable else None,
            path,
        )


def _check_a_sequence(images: object) -> None:
    """Refuse one image given where a sequence of images is expected: iterating it would
    give its rows (a numpy array or a tensor) or its characters (a path)."""
    one = isinstance(images, str | PathLike | Image.Image) or (
        isinstance(images, np.ndarray | Tensor) and images.ndim < 4
    )
    if one:
        raise ValueError(
            f"expected a sequence of images, got one {type(images).__name__}: pass [image], "
            "or call Anonymizer.anonymize(image) for one image"
        )


def _boxes(regions: Sequence[BoxLike]) -> list[list[float]]:
    """``regions`` as a list of boxes, refusing one box given where a list is expected."""
    boxes = list(regions)
    if boxes and all(isinstance(v, Real) for v in boxes):
        raise ValueError(
            f"regions must be a list of boxes [x0, y0, x1, y1], got one box {tuple(boxes)}: "
            f"write [{tuple(boxes)}]"
        )
    return [list(box) for box in boxes]


def _converted(image: ImageLike, index: int) -> Tensor:
    """``image`` as the engine's ``(3, H, W)`` tensor, errors naming its index."""
    try:
        return as_image(image)
    except ValueError as exc:
        raise ValueError(f"image {index}: {exc}") from exc


def anonymize(
    image: ImageLike,
    model: ModelLike = DEFAULT_MODEL,
    regions: RegionSource | str | Sequence[BoxLike] = "saliency",
    *,
    settings: Settings | None = None,
    filter: Filter | None = None,
    shape: str | None = None,
    criterion: Criterion | None = None,
    solver: Solver | None = None,
    codec: Codec | str | None = None,
    device: str | torch.device = "auto",
    preprocess: Callable[[Tensor], Tensor] | None = None,
    trust_model: bool = False,
) -> Anonymized:
    """Anonymize ``regions`` of one image so that ``model`` keeps its decision on the
    stored result; the image comes back in the kind it was given as.

    With ``net`` a PyTorch classifier (an ``nn.Module`` taking ImageNet-normalised
    ``(B, 3, 224, 224)`` batches) and ``pixels`` an ``(H, W, 3)`` uint8 numpy array::

        import adaptanon
        result = adaptanon.anonymize(pixels, model=net, regions=[(16, 8, 48, 40)])
        anonymized = result.image  # (H, W, 3) uint8 numpy array; None unless result.ok

    Args:
        image: a path (read upright by its EXIF orientation), a PIL image (any mode), a
            numpy array (``(H, W, 3)`` uint8 or floats in ``[0, 1]``, greyscale
            ``(H, W)``, RGBA ``(H, W, 4)`` composited on white) or a ``(3, H, W)`` float
            tensor in ``[0, 1]``: see :func:`~adaptanon.io.as_image`.
        model: a plain ``torch.nn.Module`` (ImageNet-standard preprocessing unless
            ``preprocess`` is given), a built-in name (default ``efficientnet_lite0``), a
            model file, ``module:function`` or a classifier, as for :class:`Anonymizer`.
        regions: the boxes ``[x0, y0, x1, y1]`` to anonymize, in pixels (half-open;
            ``[]``: nothing, status ``no_regions``), or a region source or its CLI spec
            (``saliency``, the default; ``faces``, ``plates``...).
        settings, filter, shape, criterion, solver, codec, device, preprocess,
            trust_model: as for :class:`Anonymizer`; the defaults are the CLI's (the
            ``auto`` filter, the paper's solver, the ``class`` criterion, PNG).

    Returns:
        :class:`Anonymized`: ``.image`` (numpy ``(H, W, 3)`` uint8 for a numpy array or a
        path, an RGB PIL image for a PIL image, a ``(3, H, W)`` tensor for a tensor; None
        unless the status is ``unchanged``, ``corrected`` or ``no_regions``), ``.record``
        (the :class:`~adaptanon.records.ImageRecord`: status, classes, steps...) and
        ``.data`` (the verified file; ``.save(path)`` writes it).

    This builds an :class:`Anonymizer` (and loads a named model) on every call: for many
    images build one and call :meth:`Anonymizer.anonymize`, which gives the same pixels.

    Raises:
        ValueError: an image of no kind taken (the message names the accepted shapes), a
            file that cannot be read, an unknown model or region spec.
    """
    boxes: list[list[float]] | None = None
    source: RegionSource | str = "saliency"
    if isinstance(regions, RegionSource | str):
        source = regions
    else:
        boxes = _boxes(regions)
    anonymizer = Anonymizer(
        model,
        regions=source,
        settings=settings,
        filter=filter,
        shape=shape,
        criterion=criterion,
        solver=solver,
        codec=codec,
        device=device,
        trust_model=trust_model,
        preprocess=preprocess,
    )
    return anonymizer.anonymize(image, boxes)
