"""Converters of the ONNX ops that move, index or describe data, and of its constants.

    Shape(x)                            ->  constant [1, 128, 768] (shapes are static after import)
    Reshape(x, Concat(Shape(x)[0:1], [12, 64]))  ->  reshape(x) {shape=[1, 12, 64]}
    Unsqueeze(x, axes=[1])              ->  reshape(x) {shape=[N, 1, C]}
    Split(x, [64, 64], axis=2)          ->  slice(x) {...}, slice(x) {...}
    Gather(hidden, 0, axis=1)           ->  reshape(slice(hidden))       (a constant index)
    Gather(embedding, ids)              ->  gather(embedding, ids)       (ids of the run time, axis 0)
"""

from __future__ import annotations

import numpy as np

from ... import ir
from .importer import NodeContext, converter
from .inputs import element_dtype


def _axis(ctx: NodeContext, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        ctx.unsupported(f"axis {axis} is out of range for rank {rank}", "axis")
    return axis % max(rank, 1)


def _axes(ctx: NodeContext, index: int, rank: int, name: str = "axes") -> list[int] | None:
    """The axes of an op that took them as an attribute before opset 13 (18 for reductions) and as an input after."""
    if ctx.has(name):
        values = ctx.attr(name)
    elif index < len(ctx.inputs) and ctx.inputs[index] is not None:
        values = ctx.static(index, name).tolist()
    else:
        return None
    values = [values] if isinstance(values, int) else list(values)
    return sorted(_axis(ctx, int(a), rank) for a in values)


@converter("Constant")
def constant(ctx: NodeContext):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if ctx.has(key):
            value = ctx.attr(key)
            dtype = np.float32 if "float" in key else np.int64 if "int" in key else None
            return ctx.builder.constant(np.asarray(value, dtype=dtype), ctx.name)
    ctx.unsupported("only value, value_float(s) and value_int(s) are supported (not strings or sparse tensors)")


@converter("ConstantOfShape")
def constant_of_shape(ctx: NodeContext):
    shape = tuple(int(d) for d in ctx.static(0, "shape"))
    fill = ctx.attr("value")
    fill = np.zeros(1, np.float32) if fill is None else fill
    return ctx.builder.constant(np.full(shape, fill.reshape(-1)[0], fill.dtype), ctx.name)


@converter("Shape")
def shape(ctx: NodeContext):
    dims = ctx.input(0).shape
    start, end = ctx.attr("start", 0), ctx.attr("end", len(dims))
    return ctx.builder.constant(np.asarray(dims[slice(start, end)], np.int64), ctx.name)


@converter("Size")
def size(ctx: NodeContext):
    return ctx.builder.constant(np.asarray(ctx.input(0).type.size, np.int64), ctx.name)


@converter("Range")
def range_(ctx: NodeContext):
    start, limit, delta = (ctx.static(i, name) for i, name in enumerate(("start", "limit", "delta")))
    return ctx.builder.constant(np.arange(start, limit, delta, dtype=start.dtype), ctx.name)


@converter("Reshape")
def reshape(ctx: NodeContext):
    x = ctx.input(0)
    target = [int(d) for d in ctx.static(1, "shape")]
    if not ctx.attr("allowzero", 0):  # 0 copies the input's size on that axis
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return ctx.call("reshape", [x], {"shape": tuple(target)})


@converter("Flatten")
def flatten(ctx: NodeContext):
    x = ctx.input(0)
    axis = ctx.attr("axis", 1)
    axis = axis + x.type.rank if axis < 0 else axis  # in [-rank, rank]: -1 keeps the last axis apart
    if not 0 <= axis <= x.type.rank:
        ctx.unsupported(f"axis {ctx.attr('axis')} is out of range for {x.type}", "axis")
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    return ctx.call("reshape", [x], {"shape": (outer, int(np.prod(x.shape[axis:], dtype=np.int64)))})


@converter("Squeeze")
def squeeze(ctx: NodeContext):
    x = ctx.input(0)
    axes = _axes(ctx, 1, x.type.rank)
    axes = [i for i, d in enumerate(x.shape) if d == 1] if axes is None else axes
    for axis in axes:
        if x.shape[axis] != 1:
            ctx.unsupported(f"axis {axis} of {x.type} has size {x.shape[axis]}, not 1", "axes")
    return ctx.call("reshape", [x], {"shape": tuple(d for i, d in enumerate(x.shape) if i not in axes)})


@converter("Unsqueeze")
def unsqueeze(ctx: NodeContext):
    x = ctx.input(0)
    rank = x.type.rank + len(ctx.attr("axes") if ctx.has("axes") else ctx.static(1, "axes").reshape(-1))
    axes = _axes(ctx, 1, rank)
    dims = iter(x.shape)
    return ctx.call("reshape", [x], {"shape": tuple(1 if i in axes else next(dims) for i in range(rank))})


@converter("Transpose")
def transpose(ctx: NodeContext):
    x = ctx.input(0)
    perm = ctx.attr("perm") or list(range(x.type.rank))[::-1]
    return ctx.call("transpose", [x], {"perm": tuple(perm)})


@converter("Concat")
def concat(ctx: NodeContext):
    operands = [value for value in ctx.inputs if value is not None and value.type.size > 0] or [ctx.input(0)]
    rank = ctx.input(0).type.rank
    return ctx.call("concat", operands, {"axis": _axis(ctx, ctx.attr("axis"), rank)})


def _slice(ctx: NodeContext, x: ir.Node, axis: int, start: int, stop: int, last: bool = True) -> ir.Node:
    starts = [0] * x.type.rank
    stops = list(x.shape)
    starts[axis], stops[axis] = start, stop
    return ctx.call("slice", [x], {"starts": tuple(starts), "stops": tuple(stops)}, last=last)


@converter("Split")
def split(ctx: NodeContext):
    """Split along `axis` into the given sizes (attribute before 13, input after) or equal parts."""
    x = ctx.input(0)
    axis = _axis(ctx, ctx.attr("axis", 0), x.type.rank)
    sizes = ctx.attr("split") if ctx.has("split") else None
    if sizes is None and ctx.optional(1) is not None:
        sizes = [int(s) for s in ctx.static(1, "split")]
    if sizes is None:
        parts = ctx.attr("num_outputs", ctx.output_count)
        step = -(-x.shape[axis] // parts)
        sizes = [min(step, x.shape[axis] - i * step) for i in range(parts)]
    if sum(sizes) != x.shape[axis]:
        ctx.unsupported(f"the sizes {sizes} do not add up to axis {axis} of {x.type}", "split")
    bounds = np.cumsum([0, *sizes])
    return [_slice(ctx, x, axis, int(a), int(b), last=False) for a, b in zip(bounds[:-1], bounds[1:])]


@converter("Slice")
def slice_(ctx: NodeContext):
    """x[starts:ends:steps] on the given axes (attributes before opset 10, inputs after); positive steps."""
    x = ctx.input(0)
    if ctx.version < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes = ctx.attr("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = ctx.static(1, "starts").tolist(), ctx.static(2, "ends").tolist()
        axes = ctx.static(3, "axes").tolist() if ctx.optional(3) is not None else list(range(len(starts)))
        steps = ctx.static(4, "steps").tolist() if ctx.optional(4) is not None else [1] * len(starts)
    full = [slice(None)] * x.type.rank
    for start, end, axis, step in zip(starts, ends, axes, steps):
        full[_axis(ctx, int(axis), x.type.rank)] = slice(int(start), int(end), int(step))
    if any(s.step is not None and s.step < 0 for s in full):
        value = ctx.builder.static(x)
        if value is None:
            ctx.unsupported("negative steps are supported only on values known at import", "steps")
        return ctx.builder.constant(np.require(value[tuple(full)], requirements="C"), ctx.name)
    bounds = [s.indices(d) for s, d in zip(full, x.shape)]
    return ctx.call("slice", [x], {"starts": tuple(b[0] for b in bounds), "stops": tuple(b[1] for b in bounds),
                                   "steps": tuple(b[2] for b in bounds)})


@converter("Gather")
def gather(ctx: NodeContext):
    """data[..., indices, ...] along `axis`; negative indices count from the end (as ONNX says)."""
    data, indices_node = ctx.input(0), ctx.input(1)
    axis = _axis(ctx, ctx.attr("axis", 0), data.type.rank)
    indices = ctx.builder.static(indices_node)
    if indices is None:
        if axis != 0:
            ctx.unsupported(f"indices computed at run time are supported on axis 0 only, not {axis}", "axis")
        if indices_node.dtype.numpy.kind == "i":  # a negative index counts from the end
            rows = ctx.builder.constant(np.asarray(data.shape[0], indices_node.dtype.numpy))
            zero = ctx.builder.constant(np.zeros((), indices_node.dtype.numpy))
            negative = ctx.call("less", [indices_node, zero], last=False)
            wrapped = ctx.call("add", [indices_node, rows], last=False)
            indices_node = ctx.call("where", [negative, wrapped, indices_node], last=False)
        return ctx.call("gather", [data, indices_node])
    indices = np.where(indices < 0, indices + data.shape[axis], indices).astype(np.int64)
    values = ctx.builder.static(data)
    if values is not None:
        return ctx.builder.constant(np.take(values, indices, axis=axis), ctx.name)
    out_shape = data.shape[:axis] + indices.shape + data.shape[axis + 1:]
    flat = indices.reshape(-1)
    if flat.size and np.all(np.diff(flat) == 1):  # a run of consecutive indices: a slice
        picked = _slice(ctx, data, axis, int(flat[0]), int(flat[-1]) + 1, last=False)
    else:
        moved = ctx.call("transpose", [data], {"perm": _to_front(axis, data.type.rank)}, last=False)
        table = ctx.call("gather", [moved, ctx.builder.constant(flat)], last=False)
        picked = ctx.call("transpose", [table], {"perm": _from_front(axis, data.type.rank)}, last=False)
    return ctx.call("reshape", [picked], {"shape": out_shape})


def _to_front(axis: int, rank: int) -> tuple[int, ...]:
    return (axis, *[i for i in range(rank) if i != axis])


def _from_front(axis: int, rank: int) -> tuple[int, ...]:
    order = _to_front(axis, rank)
    return tuple(order.index(i) for i in range(rank))


@converter("Expand")
def expand(ctx: NodeContext):
    return ctx.builder.expand(ctx.input(0), [int(d) for d in ctx.static(1, "shape")], ctx.name)


@converter("Tile")
def tile(ctx: NodeContext):
    x = ctx.input(0)
    repeats = [int(r) for r in ctx.static(1, "repeats")]
    tiled = [axis for axis, count in enumerate(repeats) if count != 1]
    for axis in tiled:
        x = ctx.call("concat", [x] * repeats[axis], {"axis": axis}, last=axis == tiled[-1])
    return x


@converter("Trilu")
def trilu(ctx: NodeContext):
    """The upper (or lower) triangle of the last two axes, from diagonal k; zeros elsewhere."""
    x = ctx.input(0)
    k = int(ctx.static(1, "k")) if ctx.optional(1) is not None else 0
    rows, columns = x.shape[-2:]
    keep = np.triu(np.ones((rows, columns), bool), k) if ctx.attr("upper", 1) else np.tril(np.ones((rows, columns),
                                                                                                      bool), k)
    value = ctx.builder.static(x)
    if value is not None:
        return ctx.builder.constant(np.where(keep, value, np.zeros((), value.dtype)), ctx.name)
    zero = ctx.builder.constant(np.zeros((), x.dtype.numpy))
    return ctx.call("where", [ctx.builder.constant(keep), x, zero])


@converter("CastLike")
def cast_like(ctx: NodeContext):
    return ctx.call("cast", [ctx.input(0)], {"dtype": ctx.input(1).dtype})


@converter("EyeLike")
def eye_like(ctx: NodeContext):
    x = ctx.input(0)
    dtype = element_dtype(ctx.attr("dtype"), "EyeLike's dtype") if ctx.has("dtype") else x.dtype
    return ctx.builder.constant(np.eye(*x.shape, k=ctx.attr("k", 0), dtype=dtype.numpy), ctx.name)


@converter("Pad")
def pad(ctx: NodeContext):
    """Constant padding (the value; negative pads crop), or edge/reflect padding by gathering indices.
    Pads are an attribute before opset 11, inputs (pads, value, axes) after."""
    x = ctx.input(0)
    rank = x.type.rank
    mode = ctx.check("mode", ("constant", "edge", "reflect"), "constant")
    if ctx.version < 11:
        pads, value, axes = ctx.attr("pads"), ctx.attr("value", 0.0), list(range(rank))
    else:
        pads = [int(p) for p in ctx.static(1, "pads")]
        value = ctx.optional_static(2, "constant_value")
        value = 0 if value is None or value.size == 0 else value.reshape(-1)[0].item()
        axes = [int(a) % rank for a in ctx.static(3, "axes")] if ctx.optional(3) is not None else list(range(rank))
    begin = dict(zip(axes, pads[:len(axes)]))
    end = dict(zip(axes, pads[len(axes):]))
    if any(p < 0 for p in pads):  # a negative pad removes elements
        starts = [max(-begin.get(a, 0), 0) for a in range(rank)]
        stops = [x.shape[a] - max(-end.get(a, 0), 0) for a in range(rank)]
        x = ctx.call("slice", [x], {"starts": tuple(starts), "stops": tuple(stops)}, last=False)
        begin = {a: max(p, 0) for a, p in begin.items()}
        end = {a: max(p, 0) for a, p in end.items()}
    widths = [(begin.get(a, 0), end.get(a, 0)) for a in range(rank)]
    if mode == "constant":
        if not any(b or e for b, e in widths):
            return x
        return ctx.builder.pad(x, widths, value, ctx.name)
    for axis, (before, after) in enumerate(widths):
        if before or after:
            size = x.shape[axis]
            positions = np.arange(-before, size + after)
            if mode == "edge":
                indices = np.clip(positions, 0, size - 1)
            else:
                if size < 2 or before >= size or after >= size:
                    ctx.unsupported(f"reflect padding of {before}, {after} on an axis of size {size}", "pads")
                indices = np.abs(positions)
                indices = np.where(indices >= size, 2 * (size - 1) - indices, indices)
            moved = ctx.call("transpose", [x], {"perm": _to_front(axis, rank)}, last=False)
            table = ctx.call("gather", [moved, ctx.builder.constant(indices.astype(np.int64))], last=False)
            x = ctx.call("transpose", [table], {"perm": _from_front(axis, rank)}, last=False)
    return ctx.call("reshape", [x], {"shape": x.shape})


@converter("GatherElements")
def gather_elements(ctx: NodeContext):
    """numpy's take_along_axis, on values known at import (position and token-type ids of a buffer)."""
    data, indices = ctx.static(0, "data"), ctx.static(1, "indices")
    axis = _axis(ctx, ctx.attr("axis", 0), data.ndim)
    indices = np.where(indices < 0, indices + data.shape[axis], indices)
    return ctx.builder.constant(np.take_along_axis(data, indices, axis), ctx.name)
