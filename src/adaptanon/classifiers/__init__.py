"""Classifiers: the :class:`Classifier` protocol the method needs, the torch
implementation (:class:`TorchClassifier`), the built-in EfficientNet-Lite and MobileNetV2
models, model files (ONNX, ``.pt2``, TorchScript) and :func:`load_classifier` for
``--model``."""

from adaptanon.classifiers.base import Classifier, TorchClassifier
from adaptanon.classifiers.efficientnet_lite import (
    DEFAULT_MODEL,
    efficientnet_lite,
    imagenet_class_names,
)
from adaptanon.classifiers.formats import load_exported, load_onnx, read_class_names
from adaptanon.classifiers.mobilenet_v2 import MobileNetV2, mobilenet_v2
from adaptanon.classifiers.registry import (
    BUILTIN_MODELS,
    UntrustedModel,
    load_classifier,
    set_class_names,
    wrap_module,
)

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "Classifier",
    "MobileNetV2",
    "TorchClassifier",
    "UntrustedModel",
    "efficientnet_lite",
    "imagenet_class_names",
    "load_classifier",
    "load_exported",
    "load_onnx",
    "mobilenet_v2",
    "read_class_names",
    "set_class_names",
    "wrap_module",
]
