"""A tiny seeded classifier for fast tests (also used by the CLI as ``--model tiny_factory:make``)."""

from __future__ import annotations

import torch
from torch import nn

from adaptanon.classifiers import TorchClassifier
from adaptanon.preprocessing import Preprocess

NUM_CLASSES = 10
TINY_PREPROCESS = Preprocess(resize=40, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def tiny_net(seed: int = 0) -> nn.Module:
    """A small random-init conv net, (B, 3, 32, 32) -> (B, 10) logits."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, NUM_CLASSES),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(1, p[0].numel()) ** 0.5))
    return net.eval()


def make() -> TorchClassifier:
    """The tiny classifier."""
    return TorchClassifier(
        tiny_net(),
        TINY_PREPROCESS,
        name="tiny",
        class_names=[f"class{i}" for i in range(NUM_CLASSES)],
    )


def make_tuned() -> TorchClassifier:
    """The tiny classifier with the CUDA defaults forced on any device: model batches
    padded to buckets, windows' views computed together."""
    clf = make()
    clf.fixed_shapes = clf.batched_windows = True
    return clf
