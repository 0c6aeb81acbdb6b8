"""Converters of the ATen network ops: convolutions, pools, normalizations, products, reductions, softmax.

    aten.convolution(x, w, b, stride, padding, dilation, False, [0, 0], groups)
                                         ->  builder.conv2d (padding and groups as the ONNX importer's)
    aten.max_pool2d_with_indices(x, ...) ->  builder.pool2d("max", ...)      (the indices: not supported)
    aten.addmm(b, x, w)                  ->  linear(x, w, b)                  (w[in, out], as the IR's)
    aten._native_batch_norm_legit_no_training(x, g, b, mean, var, momentum, eps)  ->  batch_norm
    aten.native_layer_norm(x, [64], g, b, eps)                               ->  layer_norm (last axes)
"""

from __future__ import annotations

import numpy as np

from ... import ir
from .context import NodeContext, _torch, converter

aten = _torch().ops.aten


def _pair(value, count: int = 2) -> tuple[int, ...]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return tuple(int(v) for v in (values * count if len(values) == 1 else values))


@converter(aten.convolution.default)
def convolution(ctx: NodeContext):
    """2-D (and 1-D, as 2-D of height 1) convolution; transposed convolution is not supported."""
    x, weight, bias = ctx.tensor(0), ctx.tensor(1), ctx.arg(2)
    stride, padding, dilation, transposed, _, groups = ctx.args[3:9]
    if transposed:
        ctx.unsupported("transposed convolution is not supported")
    one_d = x.type.rank == 3
    if one_d:
        x = ctx.call("reshape", [x], {"shape": (x.shape[0], x.shape[1], 1, x.shape[2])}, last=False)
        weight = ctx.call("reshape", [weight], {"shape": (*weight.shape[:2], 1, weight.shape[2])}, last=False)
        stride, padding, dilation = (1, *_pair(stride, 1)), (0, *_pair(padding, 1)), (1, *_pair(dilation, 1))
    elif x.type.rank != 4:
        ctx.unsupported(f"only 1-D and 2-D convolutions are supported, got an input {x.type}")
    pad_h, pad_w = _pair(padding)
    result = ctx.builder.conv2d(x, weight, bias, strides=_pair(stride), pads=(pad_h, pad_w, pad_h, pad_w),
                                dilations=_pair(dilation), groups=int(groups), name=None if one_d else ctx.name)
    if one_d:
        result = ctx.call("reshape", [result], {"shape": (result.shape[0], result.shape[1], result.shape[3])})
    return result


def _spatial(ctx: NodeContext, x: ir.Node) -> ir.Node:
    if x.type.rank != 4:
        ctx.unsupported(f"only 2-D pooling over NCHW inputs is supported, got {x.type}")
    return x


@converter(aten.max_pool2d_with_indices.default)
def max_pool2d(ctx: NodeContext):
    x = _spatial(ctx, ctx.tensor(0))
    kernel = _pair(ctx.arg(1))
    stride = _pair(ctx.arg(2) or kernel)
    padding = _pair(ctx.arg(3, default=0))
    if _pair(ctx.arg(4, default=1)) != (1, 1):
        ctx.unsupported(f"dilation {ctx.arg(4)} is not supported (only 1)")
    ceil_mode = bool(ctx.arg(5, default=False))
    result = ctx.builder.pool2d("max", x, kernel=kernel, strides=stride, pads=padding + padding, ceil_mode=ceil_mode,
                                name=ctx.name)
    return [result, None]  # the indices: not computed


@converter(aten.avg_pool2d.default)
def avg_pool2d(ctx: NodeContext):
    x = _spatial(ctx, ctx.tensor(0))
    kernel = _pair(ctx.arg(1))
    stride = _pair(ctx.arg(2) or kernel)
    padding = _pair(ctx.arg(3, default=0))
    ceil_mode, count_include_pad = bool(ctx.arg(4, default=False)), bool(ctx.arg(5, default=True))
    if ctx.arg(6) is not None:
        ctx.unsupported(f"divisor_override={ctx.arg(6)} is not supported")
    return ctx.builder.pool2d("average", x, kernel=kernel, strides=stride, pads=padding + padding,
                              ceil_mode=ceil_mode, count_include_pad=count_include_pad, name=ctx.name)


@converter(aten._adaptive_avg_pool2d.default)
def adaptive_avg_pool2d(ctx: NodeContext):
    """To 1x1: a mean over H and W; to a size dividing the input's: an average pool of equal windows."""
    x = _spatial(ctx, ctx.tensor(0))
    out_h, out_w = _pair(ctx.arg(1))
    height, width = x.shape[2:]
    if (out_h, out_w) == (1, 1):
        return ctx.call("reduce_mean", [x], {"axes": (2, 3), "keepdims": True})
    if height % out_h or width % out_w:
        ctx.unsupported(f"output size {(out_h, out_w)} does not divide the input's {(height, width)}")
    kernel = (height // out_h, width // out_w)
    return ctx.builder.pool2d("average", x, kernel=kernel, strides=kernel, pads=(0, 0, 0, 0), name=ctx.name)


@converter(aten._native_batch_norm_legit_no_training.default)
def batch_norm(ctx: NodeContext):
    """Inference batch norm on the running statistics (axis 1); weight and bias may be absent."""
    x, weight, bias, mean, var = ctx.tensor(0), ctx.arg(1), ctx.arg(2), ctx.tensor(3), ctx.tensor(4)
    eps = float(ctx.arg(6))
    channels = x.shape[1]
    weight = weight if weight is not None else ctx.constant(np.ones(channels, np.float32))
    bias = bias if bias is not None else ctx.constant(np.zeros(channels, np.float32))
    return [ctx.call("batch_norm", [x, weight, bias, mean, var], {"eps": eps}), None, None]


@converter(aten.native_layer_norm.default)
def layer_norm(ctx: NodeContext):
    """Over the trailing axes `normalized_shape`: the IR's layer_norm over the last axis, of x with those
    axes flattened into one when there are several."""
    x, normalized, weight, bias, eps = ctx.tensor(0), tuple(ctx.arg(1)), ctx.arg(2), ctx.arg(3), float(ctx.arg(4))
    return [ctx.builder.layer_norm(x, weight, bias, len(normalized), eps, ctx.name), None, None]


@converter(aten._softmax.default, aten._log_softmax.default)
def softmax(ctx: NodeContext):
    x, axis = ctx.tensor(0), int(ctx.arg(1))
    if ctx.arg(2):
        ctx.unsupported("half_to_float=True is not supported")
    log = ctx.op is aten._log_softmax.default
    result = ctx.call("softmax", [x], {"axis": axis % x.type.rank}, last=not log)
    return ctx.call("log", [result]) if log else result


@converter(aten.addmm.default)
def addmm(ctx: NodeContext):
    """beta * bias + alpha * (x @ w): a linear with w[in, out] (builder.gemm)."""
    bias, x, weight = ctx.tensor(0), ctx.tensor(1), ctx.tensor(2)
    beta, alpha = ctx.kwargs.get("beta", 1), ctx.kwargs.get("alpha", 1)
    return ctx.builder.gemm(x, weight, bias, alpha=float(alpha), beta=float(beta), name=ctx.name)


@converter(aten.mm.default)
def mm(ctx: NodeContext):
    """x @ w: a linear when w is known at import (a weight, perhaps transposed), else matmul."""
    a, b = ctx.tensor(0), ctx.tensor(1)
    if ctx.static(b) is not None:
        return ctx.call("linear", [a, b])
    return ctx.call("matmul", [a, b])


@converter(aten.bmm.default)
def bmm(ctx: NodeContext):
    return ctx.call("matmul", [ctx.tensor(0), ctx.tensor(1)])


@converter(aten.embedding.default)
def embedding(ctx: NodeContext):
    """weight[ids] along axis 0 (padding_idx matters only to training)."""
    return ctx.call("gather", [ctx.tensor(0), ctx.tensor(1)])


def _axes(ctx: NodeContext, x: ir.Node, dims) -> tuple[int, ...]:
    if dims is None or dims == []:
        return tuple(range(x.type.rank))
    dims = [dims] if isinstance(dims, int) else dims
    return tuple(sorted(int(d) % max(x.type.rank, 1) for d in dims))


REDUCTIONS = {aten.mean.dim: "reduce_mean", aten.sum.dim_IntList: "reduce_sum", aten.amax.default: "reduce_max",
              aten.mean.default: "reduce_mean", aten.sum.default: "reduce_sum"}


@converter(*REDUCTIONS)
def reduction(ctx: NodeContext):
    """Over `dim` (every axis when absent, or for mean.default / sum.default)."""
    x = ctx.tensor(0)
    if x.dtype is not ctx.dtype:  # a dtype= argument; the sum of bools or int8 accumulates in int64
        x = ctx.as_tensor(x, ctx.dtype)
    whole = ctx.op in (aten.mean.default, aten.sum.default)
    attrs = {"axes": _axes(ctx, x, None if whole else ctx.arg(1)),
             "keepdims": False if whole else bool(ctx.arg(2, "keepdim", False))}
    return ctx.call(REDUCTIONS[ctx.op], [x], attrs)


@converter(aten.amin.default)
def amin(ctx: NodeContext):
    x = ctx.tensor(0)
    attrs = {"axes": _axes(ctx, x, ctx.arg(1)), "keepdims": bool(ctx.arg(2, "keepdim", False))}
    return ctx.builder.reduce_min(x, attrs["axes"], attrs["keepdims"], ctx.name)


@converter(aten.any.dim, aten.any.dims, aten.any.default, aten.all.dim, aten.all.dims, aten.all.default)
def any_all(ctx: NodeContext):
    """any: the max of the values as 0/1; all: not any of not."""
    x = ctx.tensor(0)
    truth = x if x.dtype is ir.DType.bool else ctx.call("cast", [x], {"dtype": ir.DType.bool}, last=False)
    is_all = ctx.op in (aten.all.dim, aten.all.dims, aten.all.default)
    if is_all:
        truth = ctx.call("logical_not", [truth], last=False)
    dims = None if ctx.op in (aten.any.default, aten.all.default) else ctx.arg(1)
    attrs = {"axes": _axes(ctx, x, dims), "keepdims": bool(ctx.arg(2, "keepdim", False))}
    numbers = ctx.call("cast", [truth], {"dtype": ir.DType.i32}, last=False)
    found = ctx.call("reduce_max", [numbers], attrs, last=False)
    result = ctx.call("cast", [found], {"dtype": ir.DType.bool}, last=not is_all)
    return ctx.call("logical_not", [result]) if is_all else result


@converter(aten.argmax.default)
def argmax(ctx: NodeContext):
    x, dim = ctx.tensor(0), ctx.arg(1)
    keepdim = bool(ctx.arg(2, "keepdim", False))
    if dim is None:
        x = ctx.call("reshape", [x], {"shape": (x.type.size,)}, last=False)
        dim = 0
    return ctx.call("argmax", [x], {"axis": int(dim) % x.type.rank, "keepdims": keepdim, "dtype": ir.DType.i64})


@converter(aten.scaled_dot_product_attention.default)
def scaled_dot_product_attention(ctx: NodeContext):
    """softmax(q @ k^T * scale + mask) @ v, kept whole by the importer's decompositions (PyTorch 2.13's own
    decomposition of it cannot be re-traced at batch > 1: see load_torch). A bool mask keeps where true;
    is_causal is the top-left aligned lower triangle; rows with every key masked are zeros, as in PyTorch."""
    q, k, v = ctx.tensor(0), ctx.tensor(1), ctx.tensor(2)
    mask = ctx.arg(3, "attn_mask")
    dropout, causal = ctx.arg(4, "dropout_p", 0.0), bool(ctx.arg(5, "is_causal", False))
    scale, gqa = ctx.kwargs.get("scale", ctx.arg(6)), bool(ctx.kwargs.get("enable_gqa", False))
    if dropout:
        ctx.unsupported(f"dropout_p={dropout} (training) is not supported")
    if gqa and q.shape[-3] != k.shape[-3]:
        ctx.unsupported("grouped-query attention (enable_gqa with fewer key heads) is not supported")
    queries, keys = q.shape[-2], k.shape[-2]
    scale = 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else float(scale)
    rank = k.type.rank
    perm = (*range(rank - 2), rank - 1, rank - 2)
    scores = ctx.call("matmul", [q, ctx.call("transpose", [k], {"perm": perm}, last=False)], last=False)
    scores = ctx.call("mul", [scores, ctx.constant(scale, scores.dtype)], last=False)
    minus_inf = ctx.constant(-np.inf, scores.dtype)
    if causal:
        allowed = np.tril(np.ones((queries, keys), bool))
        scores = ctx.call("where", [ctx.constant(allowed, ir.DType.bool), scores, minus_inf], last=False)
    if mask is not None:
        if mask.dtype is ir.DType.bool:
            scores = ctx.call("where", [mask, scores, minus_inf], last=False)
        else:
            scores = ctx.call("add", [scores, ctx.as_tensor(mask, scores.dtype)], last=False)
    weights = ctx.call("softmax", [scores], {"axis": rank - 1}, last=False)
    if _may_mask_a_row(ctx, mask, causal, queries, keys):  # a row with nothing to attend to: zeros
        masked = ctx.call("equal", [scores, minus_inf], last=False)
        attended = ctx.call("logical_not", [masked], last=False)
        numbers = ctx.call("cast", [attended], {"dtype": ir.DType.i32}, last=False)
        seen = ctx.call("reduce_max", [numbers], {"axes": (rank - 1,), "keepdims": True}, last=False)
        valid = ctx.call("cast", [seen], {"dtype": ir.DType.bool}, last=False)
        weights = ctx.call("where", [valid, weights, ctx.constant(0.0, scores.dtype)], last=False)
    return ctx.call("matmul", [weights, v])


@converter(aten.max.dim, aten.min.dim)
def max_min_dim(ctx: NodeContext):
    """(values, indices) along a dim: reduce_max (of -x for min) and argmax (first on ties, as PyTorch on CPU)."""
    x, dim = ctx.tensor(0), ctx.arg(1)
    keepdim = bool(ctx.arg(2, "keepdim", False))
    axis = int(dim) % x.type.rank
    source = x if ctx.op is aten.max.dim else ctx.call("neg", [x], last=False)
    attrs = {"axes": (axis,), "keepdims": keepdim}
    values = ctx.call("reduce_max", [source], attrs, last=ctx.op is aten.max.dim)
    if ctx.op is aten.min.dim:
        values = ctx.call("neg", [values])
    indices = ctx.call("argmax", [source], {"axis": axis, "keepdims": keepdim, "dtype": ir.DType.i64}, last=False)
    return [values, indices]


def _may_mask_a_row(ctx: NodeContext, mask: ir.Node | None, causal: bool, queries: int, keys: int) -> bool:
    """Whether some query may have every key masked: not when the mask is known at import (GPT-2's causal
    mask without padding) and leaves each row a key."""
    allowed = np.tril(np.ones((queries, keys), bool)) if causal else np.ones((queries, keys), bool)
    if mask is not None:
        known = ctx.static(mask)
        if known is None:
            return True
        allowed = allowed & known.astype(bool) if known.dtype == bool else allowed & (known > -np.inf)
    return not allowed.any(axis=-1).all()
