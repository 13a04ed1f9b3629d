"""Classifiers from the files people deploy: ONNX (converted to torch for gradients and
checked against onnxruntime), ``torch.export`` programs (``.pt2``), TorchScript; and class
names from a file.

Trust: an ONNX file is data (converting it runs nothing from it); a TorchScript file or a
``.pt2`` program is code that torch runs, so load those only from a trusted source.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adaptanon.classifiers.base import TorchClassifier
from adaptanon.preprocessing import Preprocess

PreprocessFn = Callable[[Tensor], Tensor]

ONNX_SUFFIXES = {".onnx"}
EXPORT_SUFFIXES = {".pt2"}
ONNX_TOLERANCE = 1e-3
"""Largest accepted difference between the converted model's and onnxruntime's outputs,
relative to the outputs' scale (``max(1, max |output|)``); float32 kernels differ by about
1e-6 of it."""
CHECK_SEED = 0


class ChannelsLast(nn.Module):
    """Feed a model whose input is ``(B, H, W, 3)`` (e.g. converted from TensorFlow) with
    the ``(B, 3, H, W)`` batches the preprocessing gives."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.model(x.permute(0, 2, 3, 1))
        return out


class OneByOne(nn.Module):
    """Run a model exported for a batch of exactly one image on each image of a batch."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.model(x[i : i + 1]) for i in range(x.shape[0])])


class Exported(nn.Module):
    """A ``torch.export`` program's module. Its train/eval mode was fixed when it was
    exported (its ``eval()`` raises), so switching this wrapper's mode does not recurse."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = False

    def train(self, mode: bool = True) -> Exported:
        """Record ``mode`` only: the program runs as it was exported."""
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.model(x)
        return out


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a file: a JSON list of strings, or one name per line (blank lines
    at the end ignored).

    Raises:
        ValueError: the file cannot be read, or JSON that is not a list of strings.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read class names from {path}: {exc}") from exc
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a JSON list of class names: {exc}") from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{path}: a JSON class-names file must be a list of strings")
        return names
    names = text.splitlines()
    while names and not names[-1].strip():
        names.pop()
    if not names:
        raise ValueError(f"{path}: no class names")
    return [n.strip() for n in names]


def _view_size(preprocess: PreprocessFn) -> tuple[int, int] | None:
    """The ``(h, w)`` the preprocessing gives for a 256x256 image, when it can tell."""
    try:
        with torch.no_grad():
            out = preprocess(torch.full((3, 256, 256), 0.5))
    except Exception:  # noqa: BLE001 - a preprocessing that cannot say: no check
        return None
    return int(out.shape[-2]), int(out.shape[-1])


def fit_preprocess(
    preprocess: PreprocessFn | None, fixed: tuple[int | None, int | None], what: str
) -> PreprocessFn:
    """The preprocessing for a model whose input has the spatial size ``fixed`` (None
    where it is free). Without one given: ImageNet mean and std, centre crop of the fixed
    size (resize in torchvision's 256/224 ratio), else 256/224.

    Raises:
        ValueError: the given preprocessing produces another size than the model takes.
    """
    h, w = fixed
    if preprocess is None:
        if h is None and w is None:
            return Preprocess()
        if h is None or w is None or h != w:
            raise ValueError(
                f"{what} takes {h}x{w} inputs; the default preprocessing crops a square: "
                "give a preprocessing that produces that size"
            )
        return Preprocess(resize=round(h * 256 / 224), crop=h)
    size = _view_size(preprocess)
    if size is not None and ((h is not None and size[0] != h) or (w is not None and size[1] != w)):
        raise ValueError(
            f"{what} takes {h}x{w} inputs, the preprocessing gives {size[0]}x{size[1]}"
        )
    return preprocess


def _onnx_layout(shape: Sequence[int | None]) -> tuple[bool, tuple[int | None, int | None]]:
    """Whether the input is channels-last, and its fixed spatial size (None where free)."""
    if len(shape) != 4:
        raise ValueError(f"expected a 4-D image input, the ONNX graph's input is {len(shape)}-D")
    if shape[1] != 3 and shape[3] == 3:
        return True, (shape[1], shape[2])
    if shape[1] not in (3, None):
        raise ValueError(f"expected 3 input channels, the ONNX graph's input is {list(shape)}")
    return False, (shape[2], shape[3])


def check_against_onnxruntime(
    path: Path,
    module: nn.Module,
    shape: Sequence[int],
    strip_softmax: bool,
    tolerance: float = ONNX_TOLERANCE,
) -> float:
    """Run the converted ``module`` and onnxruntime on the same seeded random inputs of
    ``shape`` (as the graph takes them) and return the largest relative difference.

    Raises:
        ValueError: they differ by more than ``tolerance`` (the message gives the
            measured difference).
    """
    import onnxruntime

    gen = torch.Generator().manual_seed(CHECK_SEED)
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        inputs = [torch.randn(*shape, generator=gen) for _ in range(2)]
        runs = [(x, session.run(None, {name: x.numpy()})[0]) for x in inputs]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own error types
        raise ValueError(
            f"onnxruntime cannot run {path.name}, so its conversion cannot be checked: {exc}"
        ) from exc
    worst = 0.0
    for x, reference in runs:
        expected = torch.from_numpy(reference).float()
        with torch.no_grad():
            got = module(x).float()
            if strip_softmax:
                got = got.softmax(-1)
        if got.shape != expected.shape:
            raise ValueError(
                f"the converted model gives outputs of shape {tuple(got.shape)}, onnxruntime "
                f"{tuple(expected.shape)}"
            )
        scale = max(1.0, float(expected.abs().max()))
        worst = max(worst, float((got - expected).abs().max()) / scale)
    if not worst <= tolerance:
        raise ValueError(
            f"the model converted from {path.name} disagrees with onnxruntime: largest "
            f"difference {worst:.3g} of the output scale (tolerance {tolerance:g}); "
            "the graph uses an op the converter gets wrong: please report it"
        )
    return worst


def load_onnx(
    path: Path,
    preprocess: PreprocessFn | None = None,
    class_names: Sequence[str] | None = None,
    *,
    check: bool = True,
) -> TorchClassifier:
    """An ONNX classifier, converted to torch (:class:`~.onnx_torch.OnnxModule`) and
    checked against onnxruntime on seeded random inputs.

    A final ``Softmax`` is left out, so the classifier gives logits. A ``(B, H, W, 3)``
    input is fed channels-last; a graph exported for batch 1 is run image by image.

    Raises:
        ValueError: the file is missing or unreadable, uses unsupported ops, or its
            conversion disagrees with onnxruntime.
        ImportError: ``onnx`` / ``onnxruntime`` are not installed (``adaptanon[onnx]``).
    """
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            "ONNX models need the onnx and onnxruntime packages: pip install 'adaptanon[onnx]'"
        ) from exc
    from adaptanon.classifiers.onnx_torch import OnnxModule

    if not path.is_file():
        raise ValueError(f"model file not found: {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own error types
        raise ValueError(f"cannot read {path} as ONNX: {exc}") from exc
    graph_module = OnnxModule(proto)
    channels_last, fixed = _onnx_layout(graph_module.input_shape)
    preprocess = fit_preprocess(preprocess, fixed, path.name)
    model: nn.Module = ChannelsLast(graph_module) if channels_last else graph_module
    batch = graph_module.input_shape[0]
    if batch == 1:
        model = OneByOne(model)
    if check:
        view = _view_size(preprocess) or (224, 224)
        h, w = fixed[0] or view[0], fixed[1] or view[1]
        shape = [batch or 2, h, w, 3] if channels_last else [batch or 2, 3, h, w]
        check_against_onnxruntime(path, graph_module, shape, graph_module.stripped_softmax)
    return TorchClassifier(model.eval(), preprocess, name=path.name, class_names=class_names)


def _exported_input(program: Any) -> tuple[int | None, ...] | None:
    """The static sizes (None where dynamic) of an exported program's first user input."""
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in program.graph_signature.user_inputs:
            continue
        val = node.meta.get("val")
        if val is None:
            return None
        return tuple(d if isinstance(d, int) else None for d in val.shape)
    return None


def load_exported(
    path: Path,
    preprocess: PreprocessFn | None = None,
    class_names: Sequence[str] | None = None,
) -> TorchClassifier:
    """A ``torch.export`` program (``torch.export.save``, ``.pt2``) as a classifier. Such a
    program is code: load only files from a trusted source.

    A program exported for batch 1 is run image by image; its fixed input size sets the
    default preprocessing's crop. It runs in the mode it was exported in (export it from
    a module in eval mode).
    """
    if not path.is_file():
        raise ValueError(f"model file not found: {path}")
    program = torch.export.load(str(path))
    shape = _exported_input(program)
    module: nn.Module = Exported(program.module())
    fixed: tuple[int | None, int | None] = (None, None)
    if shape is not None and len(shape) == 4:
        fixed = (shape[2], shape[3])
        if shape[0] == 1:
            module = OneByOne(module)
    preprocess = fit_preprocess(preprocess, fixed, path.name)
    return TorchClassifier(module.eval(), preprocess, name=path.name, class_names=class_names)
