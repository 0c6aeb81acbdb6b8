"""Converters of the ATen ops that move or index data: views, permutes, slices, concatenation, indexing.

    aten.view(x, [1, 10, -1, 16])       ->  reshape(x) {shape=[1, 10, 4, 16]}
    aten.permute(x, [0, 2, 1, 3])       ->  transpose(x) {perm=[0, 2, 1, 3]}
    aten.expand(x, [1, 4, 10, 16])      ->  builder.expand: a product with ones (or x itself)
    aten.select(x, 1, 0)                ->  reshape(slice(x))
    aten.index(mask, [rows, cols])      ->  gather(reshape(mask) {shape=[n]}, positions)   (indices known at import)
    aten.split_with_sizes(x, [64] * 3, 2)  ->  three slices
"""

from __future__ import annotations

import numpy as np

from ... import ir
from .context import NodeContext, _torch, converter

aten = _torch().ops.aten


def _axis(ctx: NodeContext, axis: int, rank: int) -> int:
    if not -max(rank, 1) <= axis < max(rank, 1):
        ctx.unsupported(f"dim {axis} is out of range for rank {rank}")
    return axis % max(rank, 1)


@converter(aten.view.default, aten._unsafe_view.default, aten.reshape.default)
def view(ctx: NodeContext):
    x = ctx.tensor(0)
    shape = tuple(int(d) for d in ctx.arg(1))
    if shape == x.shape:
        return x
    return ctx.call("reshape", [x], {"shape": shape})


@converter(aten.permute.default)
def permute(ctx: NodeContext):
    x = ctx.tensor(0)
    perm = tuple(_axis(ctx, int(d), x.type.rank) for d in ctx.arg(1))
    if perm == tuple(range(x.type.rank)):
        return x
    return ctx.call("transpose", [x], {"perm": perm})


@converter(aten.transpose.int)
def transpose(ctx: NodeContext):
    x = ctx.tensor(0)
    perm = list(range(x.type.rank))
    a, b = _axis(ctx, int(ctx.arg(1)), x.type.rank), _axis(ctx, int(ctx.arg(2)), x.type.rank)
    perm[a], perm[b] = perm[b], perm[a]
    return x if a == b else ctx.call("transpose", [x], {"perm": tuple(perm)})


@converter(aten.t.default)
def t(ctx: NodeContext):
    x = ctx.tensor(0)
    return x if x.type.rank < 2 else ctx.call("transpose", [x], {"perm": (1, 0)})


@converter(aten.expand.default)
def expand(ctx: NodeContext):
    x = ctx.tensor(0)
    sizes = [int(d) for d in ctx.arg(1)]
    offset = len(sizes) - x.type.rank
    shape = [x.shape[i - offset] if d == -1 else d for i, d in enumerate(sizes)]
    return ctx.builder.expand(x, shape, ctx.name)


@converter(aten.unsqueeze.default)
def unsqueeze(ctx: NodeContext):
    x = ctx.tensor(0)
    axis = _axis(ctx, int(ctx.arg(1)), x.type.rank + 1)
    shape = list(x.shape)
    shape.insert(axis, 1)
    return ctx.call("reshape", [x], {"shape": tuple(shape)})


@converter(aten.squeeze.dims, aten.squeeze.dim, aten.squeeze.default)
def squeeze(ctx: NodeContext):
    x = ctx.tensor(0)
    dims = ctx.arg(1)
    if dims is None:
        axes = {i for i, d in enumerate(x.shape) if d == 1}
    else:
        dims = [dims] if isinstance(dims, int) else dims
        axes = {_axis(ctx, int(d), x.type.rank) for d in dims if x.shape[int(d)] == 1}
    if not axes:
        return x
    return ctx.call("reshape", [x], {"shape": tuple(d for i, d in enumerate(x.shape) if i not in axes)})


def _slice(ctx: NodeContext, x: ir.Node, axis: int, start: int, stop: int, step: int = 1,
           last: bool = True) -> ir.Node:
    starts, stops, steps = [0] * x.type.rank, list(x.shape), [1] * x.type.rank
    starts[axis], stops[axis], steps[axis] = start, stop, step
    return ctx.call("slice", [x], {"starts": tuple(starts), "stops": tuple(stops), "steps": tuple(steps)}, last=last)


@converter(aten.slice.Tensor)
def slice_(ctx: NodeContext):
    """x[start:end:step] along `dim` (bounds clamped as Python's slices are)."""
    x = ctx.tensor(0)
    axis = _axis(ctx, int(ctx.arg(1, "dim", 0)), x.type.rank)
    start, end, step = ctx.arg(2, "start"), ctx.arg(3, "end"), ctx.arg(4, "step", 1)
    size = x.shape[axis]
    start, stop, step = slice(start, end, step).indices(size)
    if (start, stop, step) == (0, size, 1):
        return x
    stop = max(stop, start)  # an empty slice
    return _slice(ctx, x, axis, start, stop, step)


@converter(aten.select.int)
def select(ctx: NodeContext):
    x = ctx.tensor(0)
    axis = _axis(ctx, int(ctx.arg(1)), x.type.rank)
    index = int(ctx.arg(2))
    size = x.shape[axis]
    if not -size <= index < size:
        ctx.unsupported(f"index {index} is out of range for dim {axis} of size {size}")
    index %= size
    part = _slice(ctx, x, axis, index, index + 1, last=False)
    return ctx.call("reshape", [part], {"shape": tuple(d for i, d in enumerate(x.shape) if i != axis)})


@converter(aten.cat.default)
def cat(ctx: NodeContext):
    tensors = [t for t in ctx.arg(0) if not (t.type.rank == 1 and t.shape[0] == 0)] or list(ctx.arg(0))
    axis = _axis(ctx, int(ctx.arg(1, "dim", 0)), tensors[0].type.rank)
    tensors = [ctx.as_tensor(t, ctx.dtype) for t in tensors]
    if len(tensors) == 1:
        return tensors[0]
    return ctx.call("concat", tensors, {"axis": axis})


@converter(aten.split_with_sizes.default, aten.split.Tensor)
def split(ctx: NodeContext):
    x = ctx.tensor(0)
    axis = _axis(ctx, int(ctx.arg(2, "dim", 0)), x.type.rank)
    size = x.shape[axis]
    if ctx.op is aten.split.Tensor:
        chunk = int(ctx.arg(1))
        sizes = [min(chunk, size - start) for start in range(0, size, chunk)] or [0]
    else:
        sizes = [int(s) for s in ctx.arg(1)]
    parts, start = [], 0
    for length in sizes:
        parts.append(x if (start, length) == (0, size) else _slice(ctx, x, axis, start, start + length, last=False))
        start += length
    return parts


@converter(aten.index.Tensor)
def index(ctx: NodeContext):
    """x[i0, i1, ...] with index tensors known at import (None: a whole axis): PyTorch's advanced indexing
    is numpy's, so the positions it reads are numpy's indexing of the positions of x, gathered from x
    flattened."""
    x = ctx.tensor(0)
    keys = []
    for position, key in enumerate(ctx.arg(1)):
        if key is None:
            keys.append(slice(None))
            continue
        value = ctx.static(key)
        if value is None:
            ctx.unsupported(f"index {position} depends on the model's inputs (only indices known at import are "
                            "supported)")
        keys.append(value.astype(bool) if value.dtype == bool else value.astype(np.int64))
    positions = np.arange(x.type.size, dtype=np.int64).reshape(x.shape)[tuple(keys)]
    flat = ctx.call("reshape", [x], {"shape": (x.type.size,)}, last=False)
    return ctx.call("gather", [flat, ctx.constant(positions, ir.DType.i64)])


@converter(aten.constant_pad_nd.default)
def constant_pad(ctx: NodeContext):
    """pad = (last axis begin, end, the one before begin, end, ...), non-negative: builder.pad."""
    x, pad, value = ctx.tensor(0), [int(p) for p in ctx.arg(1)], ctx.arg(2, "value", 0)
    if any(p < 0 for p in pad):
        ctx.unsupported(f"negative padding {pad} (cropping) is not supported")
    pads = [(0, 0)] * x.type.rank
    for i in range(len(pad) // 2):
        pads[x.type.rank - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    if not any(a or b for a, b in pads):
        return x
    return ctx.builder.pad(x, pads, value, ctx.name)
