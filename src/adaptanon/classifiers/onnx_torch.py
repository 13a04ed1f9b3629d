"""An ONNX graph as a differentiable torch module (the correction needs input gradients,
which onnxruntime does not give).

:class:`OnnxModule` interprets the graph node by node with torch operations, for the op
set image classifiers use (convolutions, normalisation, activations, pooling, dense
layers, reshaping, resizing, attention's matmuls and layer norm). Weights become frozen
parameters, so the module moves with ``.to(device)``. An ONNX file is data: converting it
runs no code from the file. Whether the conversion is faithful is checked against
onnxruntime when the file is loaded (:mod:`adaptanon.classifiers.formats`).

Only the standard domain is supported; a graph with any other op (or a control-flow op)
is refused with the list of ops it lacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Value = Tensor | None
Attrs = dict[str, Any]
OpFn = Callable[[list[Value], Attrs, int], Tensor | tuple[Tensor, ...]]

INT64_MAX = 2**63 - 1

# ONNX TensorProto data types -> torch dtypes.
ONNX_DTYPES: dict[int, torch.dtype] = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    16: torch.bfloat16,
}


def _ints(t: Value) -> list[int]:
    """A 1-D integer tensor (a shape, axes, pads) as a list."""
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _input(inputs: list[Value], i: int) -> Value:
    return inputs[i] if i < len(inputs) else None


def _req(inputs: list[Value], i: int) -> Tensor:
    t = _input(inputs, i)
    if t is None:
        raise ValueError(f"missing required input {i}")
    return t


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX ``[b1, b2, ..., e1, e2, ...]`` (leading to trailing axes) -> ``F.pad`` order
    (trailing axis first, ``(begin, end)`` pairs)."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[i + n]]
    return out


def _same_pads(size: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int], upper: bool) -> list[int]:  # fmt: skip
    begins, ends = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations, strict=True):
        out = math.ceil(n / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small, big = total // 2, total - total // 2
        begins.append(small if upper else big)
        ends.append(big if upper else small)
    return begins + ends


def _spatial_pads(x: Tensor, attrs: Attrs, kernel: Sequence[int]) -> list[int]:
    spatial = x.dim() - 2
    auto_pad = attrs.get("auto_pad", "NOTSET")
    strides = attrs.get("strides", [1] * spatial)
    dilations = attrs.get("dilations", [1] * spatial)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        size = list(x.shape[2:])
        return _same_pads(size, kernel, strides, dilations, auto_pad == "SAME_UPPER")
    if auto_pad == "VALID":
        return [0] * (2 * spatial)
    return list(attrs.get("pads", [0] * (2 * spatial)))


def _symmetric(pads: Sequence[int]) -> bool:
    n = len(pads) // 2
    return list(pads[:n]) == list(pads[n:])


CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def op_conv(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x, w, b = _req(inputs, 0), _req(inputs, 1), _input(inputs, 2)
    spatial = w.dim() - 2
    kernel = attrs.get("kernel_shape", list(w.shape[2:]))
    pads = _spatial_pads(x, attrs, kernel)
    padding: list[int] | int = 0
    if _symmetric(pads):
        padding = pads[:spatial]
    else:
        x = F.pad(x, _torch_pad(pads))
    conv: Any = CONV[spatial]
    return conv(
        x,
        w,
        b,
        stride=attrs.get("strides", [1] * spatial),
        padding=padding,
        dilation=attrs.get("dilations", [1] * spatial),
        groups=attrs.get("group", 1),
    )


MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def op_max_pool(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    kernel = attrs["kernel_shape"]
    spatial = len(kernel)
    pads = _spatial_pads(x, attrs, kernel)
    padding: list[int] | int = pads[:spatial]
    if not _symmetric(pads) or any(p > k // 2 for p, k in zip(pads, kernel * 2, strict=True)):
        x, padding = F.pad(x, _torch_pad(pads), value=-math.inf), 0
    pool: Any = MAX_POOL[spatial]
    return pool(
        x,
        kernel,
        stride=attrs.get("strides", [1] * spatial),
        padding=padding,
        dilation=attrs.get("dilations", [1] * spatial),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
    )


def op_avg_pool(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    kernel = attrs["kernel_shape"]
    spatial = len(kernel)
    pads = _spatial_pads(x, attrs, kernel)
    strides = attrs.get("strides", [1] * spatial)
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    include_pad = bool(attrs.get("count_include_pad", 0))
    pool: Any = AVG_POOL[spatial]
    if _symmetric(pads) and all(p <= k // 2 for p, k in zip(pads, kernel * 2, strict=True)):
        return pool(
            x, kernel, strides, pads[:spatial], ceil_mode=ceil_mode, count_include_pad=include_pad
        )
    summed = pool(F.pad(x, _torch_pad(pads)), kernel, strides, 0, ceil_mode=ceil_mode)
    if include_pad:
        return summed
    ones = torch.ones_like(x[:1, :1])
    share = pool(F.pad(ones, _torch_pad(pads)), kernel, strides, 0, ceil_mode=ceil_mode)
    return summed / share


def op_global_avg(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


def op_global_max(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


def op_batch_norm(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x, scale, bias, mean, var = (_req(inputs, i) for i in range(5))
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, attrs.get("epsilon", 1e-5))


def op_instance_norm(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x, scale, bias = (_req(inputs, i) for i in range(3))
    return F.instance_norm(x, weight=scale, bias=bias, eps=attrs.get("epsilon", 1e-5))


def op_layer_norm(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x, scale, bias = _req(inputs, 0), _input(inputs, 1), _input(inputs, 2)
    axis = _axis(attrs.get("axis", -1), x.dim())
    return F.layer_norm(x, x.shape[axis:], scale, bias, attrs.get("epsilon", 1e-5))


def op_lrn(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    return F.local_response_norm(
        _req(inputs, 0),
        attrs["size"],
        attrs.get("alpha", 1e-4),
        attrs.get("beta", 0.75),
        attrs.get("bias", 1.0),
    )


def op_gemm(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    a, b, c = _req(inputs, 0), _req(inputs, 1), _input(inputs, 2)
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    y = attrs.get("alpha", 1.0) * (a @ b)
    if c is not None:
        y = y + attrs.get("beta", 1.0) * c
    return y


def op_clip(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    if opset < 11:
        low, high = attrs.get("min"), attrs.get("max")
    else:
        lo_t, hi_t = _input(inputs, 1), _input(inputs, 2)
        low = None if lo_t is None else float(lo_t)
        high = None if hi_t is None else float(hi_t)
    if low is None and high is None:
        return x
    return torch.clamp(x, low, high)


def op_hard_sigmoid(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    return torch.clamp(attrs.get("alpha", 0.2) * x + attrs.get("beta", 0.5), 0, 1)


def op_leaky_relu(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    return F.leaky_relu(_req(inputs, 0), attrs.get("alpha", 0.01))


def op_elu(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    return F.elu(_req(inputs, 0), attrs.get("alpha", 1.0))


def op_prelu(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x, slope = _req(inputs, 0), _req(inputs, 1)
    return torch.where(x >= 0, x, x * slope)


def op_gelu(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    return F.gelu(_req(inputs, 0), approximate=attrs.get("approximate", "none"))


def _softmax(fn: Callable[..., Tensor]) -> OpFn:
    def op(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
        x = _req(inputs, 0)
        if opset >= 13:
            return fn(x, dim=attrs.get("axis", -1))
        axis = _axis(attrs.get("axis", 1), x.dim())  # older opsets: softmax of the 2-D flattening
        return fn(x.reshape(*x.shape[:axis], -1), dim=-1).reshape(x.shape)

    return op


def op_flatten(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    axis = _axis(attrs.get("axis", 1), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), -1)


def op_reshape(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    shape = attrs["shape"] if opset < 5 else _ints(_req(inputs, 1))
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def op_transpose(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    return x.permute(attrs.get("perm", list(reversed(range(x.dim())))))


def op_concat(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    parts = [t for t in inputs if t is not None]
    dtype = parts[0].dtype
    return torch.cat([t.to(dtype) for t in parts], dim=attrs["axis"])


def op_split(inputs: list[Value], attrs: Attrs, opset: int) -> tuple[Tensor, ...]:
    x = _req(inputs, 0)
    axis = _axis(attrs.get("axis", 0), x.dim())
    sizes = attrs.get("split") if opset < 13 else _ints(_input(inputs, 1)) or None
    if sizes is None:
        parts = int(attrs.get("num_outputs") or attrs["_outputs"])
        return tuple(torch.split(x, math.ceil(x.shape[axis] / parts), dim=axis))
    return tuple(torch.split(x, list(sizes), dim=axis))


def op_slice(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    if opset < 10:
        starts, ends = attrs["starts"], attrs["ends"]
        axes = attrs.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(_req(inputs, 1)), _ints(_req(inputs, 2))
        axes = _ints(_input(inputs, 3)) or list(range(len(starts)))
        steps = _ints(_input(inputs, 4)) or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = _axis(axis, x.dim())
        n = x.shape[axis]
        start = start + n if start < 0 else start
        end = end + n if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), n), min(max(end, 0), n)
            x = x.narrow(axis, start, max(0, end - start))
            if step > 1:
                x = x.index_select(axis, torch.arange(0, x.shape[axis], step, device=x.device))
        else:
            start, end = min(max(start, 0), n - 1), min(max(end, -1), n - 1)
            index = torch.arange(start, end, step, device=x.device)
            x = x.index_select(axis, index)
    return x


def op_gather(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x, index = _req(inputs, 0), _req(inputs, 1).long()
    axis = _axis(attrs.get("axis", 0), x.dim())
    index = torch.where(index < 0, index + x.shape[axis], index)
    picked = x.index_select(axis, index.reshape(-1))
    return picked.reshape((*x.shape[:axis], *index.shape, *x.shape[axis + 1 :]))


def op_shape(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    dims = list(x.shape)[attrs.get("start", 0) : attrs.get("end", x.dim())]
    return torch.tensor(dims, dtype=torch.int64)


def op_size(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    return torch.tensor(_req(inputs, 0).numel(), dtype=torch.int64)


def _axes(inputs: list[Value], attrs: Attrs, opset: int, since: int) -> list[int] | None:
    if opset < since:
        axes = attrs.get("axes")
        return None if axes is None else list(axes)
    t = _input(inputs, 1)
    return None if t is None else _ints(t)


def op_unsqueeze(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    axes = _axes(inputs, attrs, opset, 13) or []
    rank = x.dim() + len(axes)
    for axis in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(axis)
    return x


def op_squeeze(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    axes = _axes(inputs, attrs, opset, 13)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axis(a, x.dim()) for a in axes))


def _reduce(fn: Callable[[Tensor, tuple[int, ...], bool], Tensor], since: int) -> OpFn:
    def op(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
        x = _req(inputs, 0)
        axes = _axes(inputs, attrs, opset, since)
        keep = bool(attrs.get("keepdims", 1))
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return fn(x, tuple(_axis(a, x.dim()) for a in axes), keep)

    return op


def op_pad(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    mode = attrs.get("mode", "constant")
    if opset < 11:
        pads, value = list(attrs["pads"]), attrs.get("value", 0.0)
    else:
        pads = _ints(_req(inputs, 1))
        v = _input(inputs, 2)
        value = 0.0 if v is None or v.numel() == 0 else float(v)
        axes = _ints(_input(inputs, 3))
        if axes:  # pads for the listed axes only
            full = [0] * (2 * x.dim())
            for i, a in enumerate(axes):
                a = _axis(a, x.dim())
                full[a], full[a + x.dim()] = pads[i], pads[i + len(axes)]
            pads = full
    torch_pads = _torch_pad(pads)
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]  # leading axes without padding
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    return F.pad(x, torch_pads, mode={"reflect": "reflect", "edge": "replicate"}[mode])


def op_resize(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x = _req(inputs, 0)
    if opset < 11:  # Upsample / Resize-10: X, scales
        scales_t, sizes_t = _input(inputs, 1), None
        if scales_t is None:
            scales_t = torch.tensor(attrs["scales"])
    else:
        scales_t, sizes_t = _input(inputs, 2), _input(inputs, 3)
    if attrs.get("axes") is not None:
        raise NotImplementedError("Resize with axes")
    spatial = x.dim() - 2
    size: list[int] | None = None
    scale: list[float] | None = None
    if sizes_t is not None and sizes_t.numel():
        size = _ints(sizes_t)[2:]
    elif scales_t is not None and scales_t.numel():
        scales = [float(s) for s in scales_t.reshape(-1).tolist()]
        if scales[:2] != [1.0, 1.0]:
            raise NotImplementedError("Resize of the batch or channel axes")
        scale = scales[2:]
    mode = attrs.get("mode", "nearest")
    transform = attrs.get(
        "coordinate_transformation_mode", "half_pixel" if opset >= 11 else "asymmetric"
    )
    kw: dict[str, Any] = {"size": size, "scale_factor": scale}
    if scale is not None:
        kw["recompute_scale_factor"] = False
    if mode == "nearest":
        nearest = attrs.get("nearest_mode", "round_prefer_floor" if opset >= 11 else "floor")
        if transform == "asymmetric" and nearest == "floor":
            return F.interpolate(x, mode="nearest", **kw)
        if transform in ("half_pixel", "pytorch_half_pixel") and nearest == "round_prefer_ceil":
            return F.interpolate(x, mode="nearest-exact", **kw)
        raise NotImplementedError(f"Resize nearest with {transform}/{nearest}")
    if mode not in ("linear", "cubic"):
        raise NotImplementedError(f"Resize mode {mode}")
    if mode == "cubic" and attrs.get("cubic_coeff_a", -0.75) != -0.75:
        raise NotImplementedError("Resize cubic with cubic_coeff_a other than -0.75")
    torch_mode = (
        {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial] if mode == "linear" else "bicubic"
    )
    if transform not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        raise NotImplementedError(f"Resize {mode} with {transform}")
    align = transform == "align_corners"
    if align:
        kw.pop("recompute_scale_factor", None)
    return F.interpolate(
        x, mode=torch_mode, align_corners=align, antialias=bool(attrs.get("antialias", 0)), **kw
    )


def op_expand(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    x, shape = _req(inputs, 0), _ints(_req(inputs, 1))
    return x.expand(torch.broadcast_shapes(x.shape, tuple(shape)))


def op_tile(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    return _req(inputs, 0).repeat(_ints(_req(inputs, 1)))


def op_constant(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if key in attrs:
            v = attrs[key]
            return v if isinstance(v, Tensor) else torch.tensor(v)
    raise NotImplementedError(f"Constant with {', '.join(k for k in attrs if k[0] != '_')}")


def op_constant_of_shape(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    value = attrs.get("value", torch.zeros(1))
    return torch.full(_ints(_req(inputs, 0)), value.reshape(-1)[0].item(), dtype=value.dtype)


def op_cast(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    return _req(inputs, 0).to(ONNX_DTYPES[attrs["to"]])


def op_range(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    start, limit, delta = (_req(inputs, i) for i in range(3))
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def op_div(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    a, b = _req(inputs, 0), _req(inputs, 1)
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def op_where(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    return torch.where(_req(inputs, 0).bool(), _req(inputs, 1), _req(inputs, 2))


def _unary(fn: Callable[[Tensor], Tensor]) -> OpFn:
    return lambda inputs, attrs, opset: fn(_req(inputs, 0))


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    return lambda inputs, attrs, opset: fn(_req(inputs, 0), _req(inputs, 1))


def _variadic(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    def op(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
        parts = [t for t in inputs if t is not None]
        out = parts[0]
        for t in parts[1:]:
            out = fn(out, t)
        return out

    return op


def op_mean(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    parts = [t for t in inputs if t is not None]
    return torch.stack(torch.broadcast_tensors(*parts)).mean(0)


def op_identity(inputs: list[Value], attrs: Attrs, opset: int) -> Tensor:
    return _req(inputs, 0)


OPS: dict[str, OpFn] = {
    "Conv": op_conv,
    "MaxPool": op_max_pool,
    "AveragePool": op_avg_pool,
    "GlobalAveragePool": op_global_avg,
    "GlobalMaxPool": op_global_max,
    "BatchNormalization": op_batch_norm,
    "InstanceNormalization": op_instance_norm,
    "LayerNormalization": op_layer_norm,
    "LRN": op_lrn,
    "Gemm": op_gemm,
    "MatMul": _binary(torch.matmul),
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": op_div,
    "Pow": _binary(torch.pow),
    "Sum": _variadic(torch.add),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Mean": op_mean,
    "Equal": _binary(torch.eq),
    "Less": _binary(torch.lt),
    "Greater": _binary(torch.gt),
    "Where": op_where,
    "Not": _unary(torch.logical_not),
    "Relu": _unary(F.relu),
    "LeakyRelu": op_leaky_relu,
    "PRelu": op_prelu,
    "Elu": op_elu,
    "Selu": _unary(F.selu),
    "Clip": op_clip,
    "Sigmoid": _unary(torch.sigmoid),
    "HardSigmoid": op_hard_sigmoid,
    "HardSwish": _unary(F.hardswish),
    "Tanh": _unary(torch.tanh),
    "Softplus": _unary(F.softplus),
    "Mish": _unary(F.mish),
    "Gelu": op_gelu,
    "Erf": _unary(torch.erf),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Sqrt": _unary(torch.sqrt),
    "Reciprocal": _unary(torch.reciprocal),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Floor": _unary(torch.floor),
    "Ceil": _unary(torch.ceil),
    "Softmax": _softmax(F.softmax),
    "LogSoftmax": _softmax(F.log_softmax),
    "Flatten": op_flatten,
    "Reshape": op_reshape,
    "Transpose": op_transpose,
    "Concat": op_concat,
    "Split": op_split,
    "Slice": op_slice,
    "Gather": op_gather,
    "Shape": op_shape,
    "Size": op_size,
    "Unsqueeze": op_unsqueeze,
    "Squeeze": op_squeeze,
    "ReduceMean": _reduce(lambda x, d, k: x.mean(dim=d, keepdim=k), 18),
    "ReduceSum": _reduce(lambda x, d, k: x.sum(dim=d, keepdim=k), 13),
    "ReduceMax": _reduce(lambda x, d, k: x.amax(dim=d, keepdim=k), 18),
    "ReduceMin": _reduce(lambda x, d, k: x.amin(dim=d, keepdim=k), 18),
    "Pad": op_pad,
    "Resize": op_resize,
    "Upsample": op_resize,
    "Expand": op_expand,
    "Tile": op_tile,
    "Constant": op_constant,
    "ConstantOfShape": op_constant_of_shape,
    "Cast": op_cast,
    "Range": op_range,
    "Identity": op_identity,
    "Dropout": op_identity,
}
"""The ONNX ops :class:`OnnxModule` runs, each a function ``(inputs, attributes, opset)``."""

HOST_OPS = frozenset(
    {"Shape", "Size", "Gather", "Concat", "Unsqueeze", "Squeeze", "Slice", "Cast", "Identity"}
    | {"Reshape", "Transpose", "ConstantOfShape", "Range"}
    | {"Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater", "Where", "Not", "Max", "Min"}
)
"""Ops that compute shapes: run on the host when every input is a host value (``Shape``
and ``Size`` read only their input's shape)."""

HOST_ARGS: dict[str, frozenset[int]] = {
    "Reshape": frozenset({1}),
    "Slice": frozenset({1, 2, 3, 4}),
    "Expand": frozenset({1}),
    "Tile": frozenset({1}),
    "Unsqueeze": frozenset({1}),
    "Squeeze": frozenset({1}),
    "Split": frozenset({1}),
    "Pad": frozenset({1, 2, 3}),
    "Resize": frozenset({1, 2, 3}),
    "Upsample": frozenset({1}),
    "ConstantOfShape": frozenset({0}),
    "Range": frozenset({0, 1, 2}),
    "Clip": frozenset({1, 2}),
    **{op: frozenset({1}) for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")},
}
"""The inputs each op reads as Python numbers (shapes, axes, pads, bounds): given as host
tensors, so that reading them does not wait for the device."""

HOST_CONSTANT_SIZE = 64
"""Constants of at most this many elements also have a host copy, for :data:`HOST_ARGS`."""


def _attribute(attr: Any) -> Any:
    from onnx import helper, numpy_helper

    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "dims") and hasattr(value, "data_type"):  # a TensorProto
        return torch.from_numpy(numpy_helper.to_array(value).copy())
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


class OnnxModule(nn.Module):
    """An ONNX classifier graph run with torch operations (differentiable).

    Args:
        model: an ``onnx.ModelProto`` with one graph input (the image batch) and whose
            first output is the ``(B, N)`` scores.
        strip_softmax: when the scores come out of a final ``Softmax``, leave it out so
            the module gives logits (what the method's margins and confidences expect);
            :attr:`stripped_softmax` says whether it did.

    Raises:
        ValueError: the graph uses ops outside :data:`OPS` or other domains, or has more
            than one non-constant input.
    """

    def __init__(self, model: Any, strip_softmax: bool = True) -> None:
        super().__init__()
        from onnx import numpy_helper

        graph = model.graph
        self.opset = max(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13
        )
        unsupported = sorted(
            {
                n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
                for n in graph.node
                if n.domain not in ("", "ai.onnx") or n.op_type not in OPS
            }
        )
        if unsupported:
            raise ValueError(
                f"the ONNX graph uses ops the converter does not support: {', '.join(unsupported)}"
            )
        self.params = nn.ParameterList()
        self.slots: dict[str, tuple[str, int]] = {}
        # Small constants and shape values stay on the host (plain attributes, which
        # .to(device) does not move), so that shapes never wait for the device.
        self.host: dict[str, Tensor] = {}
        constants: list[Tensor] = []
        for init in graph.initializer:
            tensor = torch.from_numpy(numpy_helper.to_array(init).copy())
            if tensor.numel() <= HOST_CONSTANT_SIZE:
                self.host[init.name] = tensor
            if tensor.is_floating_point():
                self.slots[init.name] = ("param", len(self.params))
                self.params.append(nn.Parameter(tensor, requires_grad=False))
            else:
                self.slots[init.name] = ("const", len(constants))
                constants.append(tensor)
        inputs = [i for i in graph.input if i.name not in self.slots]
        if len(inputs) != 1:
            raise ValueError(f"expected one image input, the ONNX graph has {len(inputs)}")
        self.input_name = inputs[0].name
        self.input_shape: list[int | None] = [
            d.dim_value if d.HasField("dim_value") else None
            for d in inputs[0].type.tensor_type.shape.dim
        ]
        self.output_name = graph.output[0].name
        self.nodes: list[tuple[str, list[str], list[str], Attrs]] = []
        shaped: set[str] = set()  # host values that depend on the input's shape
        for node in graph.node:
            attrs = {a.name: _attribute(a) for a in node.attribute}
            attrs["_outputs"] = len(node.output)
            names = [n for n in node.input if n]
            if node.op_type == "Constant":  # a buffer, so that it moves with the module
                tensor = op_constant([], attrs, self.opset)
                self.slots[node.output[0]] = ("const", len(constants))
                constants.append(tensor)
                if tensor.numel() <= HOST_CONSTANT_SIZE:
                    self.host[node.output[0]] = tensor
                continue
            if node.op_type in HOST_OPS and (
                node.op_type in ("Shape", "Size")
                or all(n in self.host or n in shaped for n in names)
            ):
                if node.op_type not in ("Shape", "Size") and not any(n in shaped for n in names):
                    # Constants only: folded now, once.
                    args = [self.host[n] if n else None for n in node.input]
                    folded = OPS[node.op_type](args, attrs, self.opset)
                    for name, value in zip(node.output, _tuple(folded), strict=False):
                        self.host[name] = value
                    continue
                shaped.update(node.output)
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        self.shaped = frozenset(shaped)
        # Shape values per input shape: computed at the first call with that shape.
        self._shapes: dict[tuple[int, ...], dict[str, Tensor]] = {}
        for i, tensor in enumerate(constants):
            self.register_buffer(f"const{i}", tensor)
        self.stripped_softmax = False
        if strip_softmax and self.nodes:
            op, ins, outs, attrs = self.nodes[-1]
            shape = graph.output[0].type.tensor_type.shape.dim
            axis = attrs.get("axis", -1 if self.opset >= 13 else 1)
            if (
                op == "Softmax"
                and outs[0] == self.output_name
                and len(shape) == 2
                and axis in (1, -1)
            ):
                self.nodes.pop()
                self.output_name = ins[0]
                self.stripped_softmax = True

    def _value(self, name: str) -> Tensor:
        kind, index = self.slots[name]
        if kind == "param":
            return self.params[index]
        buffer: Tensor = getattr(self, f"const{index}")
        return buffer

    def forward(self, x: Tensor) -> Tensor:
        """Run the graph on the image batch ``x`` (laid out as the graph's input).

        Shape computations (:data:`HOST_OPS` on shapes and constants) run on the host once
        per input shape; ops read their :data:`HOST_ARGS` from the host: the device is
        never asked for a value.
        """
        key = tuple(x.shape)
        known = self._shapes.get(key)
        env: dict[str, Tensor] = {self.input_name: x}
        if known is not None:
            env.update(known)
        shapes: dict[str, Tensor] = {}
        for op, names, outs, attrs in self.nodes:
            on_host = outs[0] in self.shaped
            if on_host and known is not None:
                continue
            host_args = HOST_ARGS.get(op, frozenset())
            args: list[Value] = []
            for i, name in enumerate(names):
                if not name:
                    args.append(None)
                elif on_host or i in host_args:
                    args.append(env[name] if name in env else self._host_value(name))
                elif name in self.slots:
                    args.append(self._value(name))
                else:  # a value on the host (a shape, or a constant folded at load)
                    value = env[name] if name in env else self.host[name]
                    args.append(value if value.device == x.device else value.to(x.device))
            try:
                result = OPS[op](args, attrs, self.opset)
            except (NotImplementedError, KeyError) as exc:
                raise ValueError(f"ONNX op {op} ({', '.join(outs)}): not supported: {exc}") from exc
            for name, value in zip(outs, _tuple(result), strict=False):
                if not name:
                    continue
                if on_host:
                    env[name] = shapes[name] = value
                else:
                    env[name] = value if value.device == x.device else value.to(x.device)
        if known is None and len(self._shapes) < 64:
            self._shapes[key] = shapes
        return env[self.output_name]

    def _host_value(self, name: str) -> Tensor:
        """A constant on the host (its host copy when small, else the buffer itself)."""
        return self.host[name] if name in self.host else self._value(name)


def _tuple(result: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return (result,) if isinstance(result, Tensor) else result
