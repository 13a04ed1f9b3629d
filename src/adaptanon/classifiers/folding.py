"""Batch norm folded into the convolution before it, for inference.

In eval mode a ``BatchNorm2d`` is a per-channel affine map of its input, so a convolution
followed by it equals one convolution with scaled weights and a shifted bias. Folded, a
model runs one layer instead of two, and its backward pass (the correction's gradients)
skips the batch norm's memory-bound backward as well (``bench/pipeline_cpu.py`` measures
the built-in model both ways). Logits move by float rounding only, far below the default
criterion's margin (:mod:`adaptanon.method.criteria`'s ``DEFAULT_MARGIN``), which exists
for such noise between conv algorithms and batch sizes (``tests/test_folding.py``).

The pairs are found by tracing the module with ``torch.fx`` (convolutions and batch norms
as leaves); the module keeps its own ``forward``: only weights change and each folded
batch norm becomes an ``nn.Identity``. The arithmetic is torch's
``fuse_conv_bn_weights``.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


class _LeafTracer(fx.Tracer):
    """Traces through everything except convolutions and batch norms (and torch's own
    leaves), so that a subclass of ``nn.Conv2d`` with its own ``forward`` stays one node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d | nn.BatchNorm2d) or super().is_leaf_module(
            m, module_qualified_name
        )


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv, batch norm)`` qualified names of every ``BatchNorm2d`` whose only input is a
    ``Conv2d``'s output that nothing else reads, each module called once in ``model``'s
    forward. Empty when the module cannot be traced symbolically (data-dependent control
    flow): nothing is folded then."""
    try:
        graph = _LeafTracer().trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means "leave the model as it is"
        return []
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[str(node.target)], nn.BatchNorm2d):
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(source, fx.Node) or source.op != "call_module":
            continue
        conv, bn = str(source.target), str(node.target)
        if (
            isinstance(modules[conv], nn.Conv2d)
            and len(source.users) == 1
            and calls[conv] == 1
            and calls[bn] == 1
        ):
            pairs.append((conv, bn))
    return pairs


def fold_batch_norms(model: nn.Module) -> int:
    """Fold, in place, every eval-mode batch norm with running statistics that directly
    follows a convolution (:func:`conv_bn_pairs`) into that convolution's weight and bias;
    returns how many were folded. The parameters keep their dtype, device and
    ``requires_grad``.

    A convolution class with its own ``forward`` may do more than convolve with its
    weight (standardise it, add an activation), so each pair is folded only after the
    folded convolution gave the pair's output on a random probe (:func:`_same_function`).

    Raises:
        ValueError: ``model`` is in training mode (batch norm then uses batch statistics).
    """
    if model.training:
        raise ValueError("fold batch norms of a model in eval mode only (call model.eval())")
    folded = 0
    for conv_name, bn_name in conv_bn_pairs(model):
        conv = model.get_submodule(conv_name)
        bn = model.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        if bn.running_mean is None or bn.running_var is None:
            continue
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        candidate = copy.deepcopy(conv)
        candidate.weight, candidate.bias = weight, bias
        if not _same_function(conv, bn, candidate):
            continue
        conv.weight, conv.bias = weight, bias
        model.set_submodule(bn_name, nn.Identity())
        folded += 1
    return folded


def _same_function(conv: nn.Conv2d, bn: nn.BatchNorm2d, folded: nn.Conv2d) -> bool:
    """Whether ``folded`` gives ``bn(conv(x))`` on a seeded random ``x`` (one image, a
    little more than a kernel's reach square), to float rounding; False when the probe
    cannot run."""
    weight = conv.weight
    side = max(conv.kernel_size) * max(conv.stride) + 2
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, conv.in_channels, side, side, generator=generator)
    probe = probe.to(weight.device, weight.dtype)
    try:
        with torch.no_grad():
            expected, got = bn(conv(probe)), folded(probe)
    except Exception:  # noqa: BLE001 - a module that cannot take the probe is left alone
        return False
    scale = float(expected.abs().max()) + 1.0
    tolerance = (1e-4 if weight.dtype in (torch.float32, torch.float64) else 1e-2) * scale
    return expected.shape == got.shape and bool((expected - got).abs().max() <= tolerance)
