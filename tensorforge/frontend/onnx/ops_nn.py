"""Converters of the ONNX network ops: convolutions, pools, normalizations, products, reductions.

    Conv(x, w, b) {pads=[1,1,1,1], strides=[2,2], group=32}
                           ->  conv2d(x, w, b) {stride=[2,2], padding=[1,1], groups=32}
    Gemm(x, w, b) {transB=1}                                 ->  linear(x, transpose(w), b)
    GlobalAveragePool(x)                                     ->  reduce_mean(x) {axes=[2,3], keepdims=true}
    LRN(x) {size=5}        ->  div(x, pow(bias + alpha/size * conv2d(x * x, band), beta))

Padding forms, ceil_mode and count_include_pad, and Gemm's layout go through the shared builder
(frontend/builder.py), which the PyTorch importer uses too.
"""

from __future__ import annotations

import numpy as np

from ... import ir
from .importer import NodeContext, converter

REDUCTIONS = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max"}


def _spatial(ctx: NodeContext, x: ir.Node) -> ir.Node:
    if x.type.rank != 4:
        ctx.unsupported(f"only 2-D {ctx.op_type} over NCHW inputs is supported, got {x.type}")
    return x


def _pads(ctx: NodeContext, x: ir.Node, kernel, strides, dilations) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from `pads` or `auto_pad` (SAME_UPPER puts the odd element at the end)."""
    auto_pad = ctx.check("auto_pad", ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"), "NOTSET")
    if auto_pad == "NOTSET":
        pads = ctx.attr("pads", [0, 0, 0, 0])
        return pads[0], pads[1], pads[2], pads[3]
    if auto_pad == "VALID":
        return 0, 0, 0, 0
    begin, end = [], []
    for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin[0], begin[1], end[0], end[1]


@converter("Conv")
def conv(ctx: NodeContext):
    """2-D convolution (a 1-D one runs as 2-D with a height of 1)."""
    x, weight, bias = ctx.input(0), ctx.input(1), ctx.optional(2)
    one_d = x.type.rank == 3
    if one_d:
        x = ctx.call("reshape", [x], {"shape": (x.shape[0], x.shape[1], 1, x.shape[2])}, last=False)
        weight = ctx.call("reshape", [weight], {"shape": (*weight.shape[:2], 1, weight.shape[2])}, last=False)
    _spatial(ctx, x)
    kernel = weight.shape[2:]
    strides = ([1] if one_d else []) + ctx.attr("strides", [1] * (2 - one_d))
    dilations = ([1] if one_d else []) + ctx.attr("dilations", [1] * (2 - one_d))
    if one_d:
        pads = ctx.attr("pads", [0, 0])
        if ctx.attr("auto_pad", "NOTSET") != "NOTSET":
            ctx.unsupported("auto_pad on a 1-D convolution is not supported", "auto_pad")
        pads = (0, pads[0], 0, pads[1])
    else:
        pads = _pads(ctx, x, kernel, strides, dilations)
    result = ctx.builder.conv2d(x, weight, bias, strides=strides, pads=pads, dilations=dilations,
                                groups=ctx.attr("group", 1), name=None if one_d else ctx.name)
    if one_d:
        result = ctx.call("reshape", [result], {"shape": (result.shape[0], result.shape[1], result.shape[3])})
    return result


@converter("MaxPool", "AveragePool")
def pool(ctx: NodeContext):
    x = _spatial(ctx, ctx.input(0))
    if ctx.output_count > 1 and ctx.node.output[1]:
        ctx.unsupported("the Indices output is not supported")
    kernel = ctx.attr("kernel_shape")
    strides = ctx.attr("strides", [1, 1])
    dilations = ctx.attr("dilations", [1, 1])
    if list(dilations) != [1, 1]:
        ctx.unsupported(f"dilations {dilations} are not supported (only 1)", "dilations")
    if ctx.attr("storage_order", 0):
        ctx.unsupported("column-major storage_order is not supported", "storage_order")
    pads = _pads(ctx, x, kernel, strides, dilations)
    kind = "max" if ctx.op_type == "MaxPool" else "average"
    return ctx.builder.pool2d(kind, x, kernel=kernel, strides=strides, pads=pads,
                              ceil_mode=bool(ctx.attr("ceil_mode", 0)),
                              count_include_pad=bool(ctx.attr("count_include_pad", 0)), name=ctx.name)


@converter("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx: NodeContext):
    x = ctx.input(0)
    op = "reduce_mean" if ctx.op_type == "GlobalAveragePool" else "reduce_max"
    return ctx.call(op, [x], {"axes": tuple(range(2, x.type.rank)), "keepdims": True})


@converter("BatchNormalization")
def batch_norm(ctx: NodeContext):
    if ctx.attr("training_mode", 0):
        ctx.unsupported("training_mode=1 is not supported (inference only)", "training_mode")
    if any(ctx.node.output[1:]):
        ctx.unsupported("the running statistics outputs are not supported (inference only)")
    operands = [ctx.input(i) for i in range(5)]
    return ctx.call("batch_norm", operands, {"eps": ctx.attr("epsilon", 1e-5)})


@converter("LayerNormalization")
def layer_norm(ctx: NodeContext):
    """Normalization over every axis from `axis` on: the IR's layer_norm over the last axis, of x with those
    axes flattened into one (and the scale and bias flattened alike)."""
    x, scale = ctx.input(0), ctx.input(1)
    rank = x.type.rank
    axis = ctx.attr("axis", -1)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        ctx.unsupported(f"axis {ctx.attr('axis')} is out of range for {x.type}", "axis")
    if any(ctx.node.output[1:]):
        ctx.unsupported("the Mean and InvStdDev outputs are not supported")
    return ctx.builder.layer_norm(x, scale, ctx.optional(2), rank - axis, ctx.attr("epsilon", 1e-5), ctx.name)


@converter("Softmax", "LogSoftmax")
def softmax(ctx: NodeContext):
    """Over `axis`; before opset 13 over the 2-D flattening at `axis` (every axis from it on)."""
    x = ctx.input(0)
    log = ctx.op_type == "LogSoftmax"
    axis = ctx.attr("axis", -1 if ctx.version >= 13 else 1) % max(x.type.rank, 1)
    if ctx.version < 13 and axis != x.type.rank - 1:
        rows = int(np.prod(x.shape[:axis], dtype=np.int64))
        flat = ctx.call("reshape", [x], {"shape": (rows, -1)}, last=False)
        result = ctx.call("softmax", [flat], {"axis": 1}, last=False)
        if log:
            result = ctx.call("log", [result], last=False)
        return ctx.call("reshape", [result], {"shape": x.shape})
    result = ctx.call("softmax", [x], {"axis": axis}, last=not log)
    return ctx.call("log", [result]) if log else result


@converter("Gemm")
def gemm(ctx: NodeContext):
    return ctx.builder.gemm(ctx.input(0), ctx.input(1), ctx.optional(2), alpha=ctx.attr("alpha", 1.0),
                            beta=ctx.attr("beta", 1.0), trans_a=bool(ctx.attr("transA", 0)),
                            trans_b=bool(ctx.attr("transB", 0)), name=ctx.name)


@converter("MatMul")
def matmul(ctx: NodeContext):
    """numpy's matmul: a linear when b is a 2-D weight, else matmul; 1-D operands get an axis and lose it."""
    a, b = ctx.input(0), ctx.input(1)
    if b.type.rank == 2 and ctx.builder.static(b) is not None and a.type.rank >= 1:
        return ctx.call("linear", [a, b])
    squeeze = []
    if a.type.rank == 1:
        a = ctx.call("reshape", [a], {"shape": (1, a.shape[0])}, last=False)
        squeeze.append(-2)
    if b.type.rank == 1:
        b = ctx.call("reshape", [b], {"shape": (b.shape[0], 1)}, last=False)
        squeeze.append(-1)
    result = ctx.call("matmul", [a, b], last=not squeeze)
    if squeeze:
        dropped = {result.type.rank + axis for axis in squeeze}
        result = ctx.call("reshape", [result], {"shape": tuple(d for i, d in enumerate(result.shape)
                                                               if i not in dropped)})
    return result


@converter(*REDUCTIONS, "ReduceMin", "ReduceL2", "ReduceSumSquare")
def reduce(ctx: NodeContext):
    """Reductions over `axes` (an attribute before opset 18, ReduceSum 13; an input after); no axes: all,
    unless noop_with_empty_axes. ReduceMin is -max(-x)."""
    x = ctx.input(0)
    keepdims = bool(ctx.attr("keepdims", 1))
    axes = _reduce_axes(ctx, x)
    if axes is None:
        return x
    attrs = {"axes": tuple(axes), "keepdims": keepdims}
    if ctx.op_type in REDUCTIONS:
        return ctx.call(REDUCTIONS[ctx.op_type], [x], attrs)
    if ctx.op_type == "ReduceMin":
        return ctx.builder.reduce_min(x, attrs["axes"], keepdims, ctx.name)
    square = ctx.call("reduce_sum", [ctx.call("mul", [x, x], last=False)], attrs,
                      last=ctx.op_type == "ReduceSumSquare")
    return square if ctx.op_type == "ReduceSumSquare" else ctx.call("sqrt", [square])


def _reduce_axes(ctx: NodeContext, x: ir.Node) -> list[int] | None:
    rank = x.type.rank
    if ctx.has("axes"):
        values = ctx.attr("axes")
    elif ctx.optional(1) is not None:
        values = ctx.static(1, "axes").reshape(-1).tolist()
    else:
        values = []
    if not values:
        return None if ctx.attr("noop_with_empty_axes", 0) else list(range(rank))
    return sorted({int(a) % max(rank, 1) for a in values})


@converter("ArgMax")
def argmax(ctx: NodeContext):
    if ctx.attr("select_last_index", 0):
        ctx.unsupported("select_last_index=1 is not supported", "select_last_index")
    x = ctx.input(0)
    axis = ctx.attr("axis", 0) % max(x.type.rank, 1)
    return ctx.call("argmax", [x], {"axis": axis, "keepdims": bool(ctx.attr("keepdims", 1)), "dtype": ir.DType.i64})


@converter("LRN")
def lrn(ctx: NodeContext):
    """x / (bias + alpha / size * sum of x^2 over `size` neighbouring channels) ** beta; the windowed sum
    is a 1 x 1 convolution with a band of ones."""
    x = _spatial(ctx, ctx.input(0))
    size = ctx.attr("size")
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    channels = x.shape[1]
    offsets = np.arange(channels)[None, :] - np.arange(channels)[:, None]  # [out, in]: in - out
    band = ((offsets >= -((size - 1) // 2)) & (offsets <= (size - 1) - (size - 1) // 2)).astype(np.float32)
    square = ctx.call("mul", [x, x], last=False)
    window = ctx.call("conv2d", [square, ctx.builder.constant(band.reshape(channels, channels, 1, 1))], {},
                      last=False)
    scaled = ctx.call("mul", [window, ctx.builder.constant(np.float32(alpha / size))], last=False)
    base = ctx.call("add", [scaled, ctx.builder.constant(np.float32(bias))], last=False)
    return ctx.call("div", [x, ctx.call("pow", [base, ctx.builder.constant(np.float32(beta))], last=False)])
