"""Classifiers: the :class:`Classifier` protocol the method needs, the torch
implementation (:class:`TorchClassifier`), the built-in EfficientNet-Lite models and
:func:`load_classifier` for ``--model``."""

from adaptanon.classifiers.base import Classifier, TorchClassifier
from adaptanon.classifiers.efficientnet_lite import (
    DEFAULT_MODEL,
    efficientnet_lite,
    imagenet_class_names,
)
from adaptanon.classifiers.registry import BUILTIN_MODELS, load_classifier

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "Classifier",
    "TorchClassifier",
    "efficientnet_lite",
    "imagenet_class_names",
    "load_classifier",
]
