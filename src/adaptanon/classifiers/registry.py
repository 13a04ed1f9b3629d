"""``load_classifier``: a classifier from what a user types after ``--model``."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from adaptanon.classifiers.base import Classifier, TorchClassifier
from adaptanon.classifiers.efficientnet_lite import DEFAULT_MODEL, LITE_MODELS, efficientnet_lite
from adaptanon.preprocessing import Preprocess

BUILTIN_MODELS: dict[str, str] = {
    name: f"EfficientNet-Lite{name[-1]}, ImageNet-1k, input {crop}x{crop} (resize {resize})"
    for name, (_, _, resize, crop) in LITE_MODELS.items()
}
TORCHSCRIPT_SUFFIXES = {".pt", ".pth", ".ts", ".torchscript"}


def load_torchscript(path: Path, preprocess: Preprocess | None = None) -> TorchClassifier:
    """A TorchScript file as a classifier. A TorchScript file is code: load only files
    from a trusted source."""
    if not path.is_file():
        raise ValueError(f"model file not found: {path}")
    module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    return TorchClassifier(module, preprocess or Preprocess(), name=path.name)


def load_factory(spec: str, preprocess: Preprocess | None = None) -> Classifier:
    """``package.module:function``, a factory returning a classifier or an ``nn.Module``.

    Importing the module and calling the factory run its code: use only factories from a
    trusted source.
    """
    module_name, _, attr = spec.partition(":")
    importlib.invalidate_caches()  # a module file created since the last import is found
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load model factory {spec!r}: {exc}") from exc
    if not callable(factory):
        raise ValueError(f"model factory {spec!r} is not callable")
    made = factory()
    if isinstance(made, nn.Module):
        return TorchClassifier(made, preprocess or Preprocess(), name=spec)
    if isinstance(made, Classifier):
        return made
    raise ValueError(f"factory {spec!r} returned {type(made).__name__}, not a Classifier")


def load_classifier(spec: str | Classifier, preprocess: Preprocess | None = None) -> Classifier:
    """Resolve a classifier from a name, a TorchScript file or a ``module:function`` factory.

    Args:
        spec: a built-in name (see :data:`BUILTIN_MODELS`); a path to a TorchScript file
            (``.pt``/``.pth``/``.ts``); or ``package.module:function``, a factory that
            returns a :class:`Classifier` or an ``nn.Module``. A classifier passes through.
        preprocess: preprocessing for a TorchScript file or a factory that returns a bare
            module (default: resize 256, crop 224, ImageNet mean and std).
    """
    if not isinstance(spec, str):
        return spec
    if spec in LITE_MODELS:
        return efficientnet_lite(spec)
    path = Path(spec)
    if path.suffix in TORCHSCRIPT_SUFFIXES or path.is_file():
        return load_torchscript(path, preprocess)
    if ":" in spec:
        return load_factory(spec, preprocess)
    raise ValueError(
        f"unknown model {spec!r}: use one of {', '.join(LITE_MODELS)}, a TorchScript file, "
        "or module:function"
    )


__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL", "load_classifier"]
