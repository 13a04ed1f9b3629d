"""The library entry point: :class:`Anonymizer`, with the CLI's defaults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from adaptanon.classifiers import DEFAULT_MODEL, Classifier, load_classifier
from adaptanon.engines import default_batch_size, resolve_device
from adaptanon.io import Codec, atomic_write, read_image, to_image
from adaptanon.method import Criterion, Filter, Outcome, Settings, Solver, process_batch
from adaptanon.records import ImageRecord
from adaptanon.regions import ExplicitBoxes, RegionSource, parse_region_source

BoxLike = Sequence[float]


class Anonymizer:
    """Anonymize images so that a classifier keeps its decision on the stored result.

    ``Anonymizer()`` uses the CLI's defaults: EfficientNet-Lite0, the saliency square when
    no boxes are given, the ``auto`` filter (a noisy face mosaic for face regions, the
    paper's Gaussian blur for the others), the paper's solver (alpha 0.1, 100 steps), the
    ``class`` criterion, PNG.

    Args:
        model: a built-in name, an ONNX file, a TorchScript or ``.pt2`` file (with
            ``trust_model=True``: such files are code), ``module:function``, or a classifier.
        regions: where to anonymize when a call gives no boxes: a region source or its
            CLI spec (``saliency``, ``saliency:SIZE``, ``boxes=FILE``).
        settings: filter, shape, criterion, solver and codec together; or give any of
            ``filter``, ``shape``, ``criterion``, ``solver``, ``codec`` to change one.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda:N``...
        batch_size: images per pass (default 8 on CPU, 64 on CUDA).
        trust_model: allow a TorchScript or ``.pt2`` model file (code that runs when
            loaded); without it such a file is refused.
    """

    def __init__(
        self,
        model: str | Classifier = DEFAULT_MODEL,
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
        self.classifier = load_classifier(model, trust_model=trust_model).to(target)
        self.batch_size = batch_size or default_batch_size(self.classifier.device)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def __call__(
        self,
        images: Sequence[Tensor],
        boxes: Sequence[Sequence[BoxLike]] | None = None,
        names: Sequence[str] | None = None,
    ) -> list[Outcome]:
        """Anonymize ``images`` (``(3, H, W)`` float tensors in ``[0, 1]``).

        Args:
            boxes: per image, its boxes ``[x0, y0, x1, y1]`` in pixels (half-open); an
                empty list means nothing to anonymize (status ``no_regions``). Without
                ``boxes`` the anonymizer's region source decides.
            names: per image, the name a region source looks it up by (default ``0``,
                ``1``, ...).

        Returns:
            One :class:`~adaptanon.method.Outcome` per image: ``record`` (status, classes,
            steps...), ``data`` (the encoded file) and ``images`` (original, anonymized,
            final as stored, mask).
        """
        images = list(images)
        names = [str(i) for i in range(len(images))] if names is None else list(names)
        if len(names) != len(images):
            raise ValueError(f"got {len(images)} images but {len(names)} names")
        source = self.regions
        if boxes is not None:
            if len(boxes) != len(images):
                raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
            source = ExplicitBoxes(
                {n: [list(b) for b in bs] for n, bs in zip(names, boxes, strict=True)}
            )
        out: list[Outcome] = []
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            out += process_batch(
                self.classifier,
                source,
                self.settings,
                names[start:stop],
                images[start:stop],
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
        image = to_image(read_image(src))
        [outcome] = self([image], None if boxes is None else [boxes], names=[src.name])
        record = outcome.record
        record.input = str(src)
        if record.status.ok and outcome.data is not None:
            atomic_write(dst, outcome.data)
            record.output = str(dst)
        record.settings = {
            "model": self.classifier.name,
            "regions": self.regions.describe() if boxes is None else "boxes",
            **self.settings.describe(),
        }
        return record
