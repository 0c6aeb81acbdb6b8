"""Emission of reductions (reduce_sum, reduce_mean, reduce_max) and softmax.

A reduction fills its output with the identity, then walks the input once in memory order and
folds each element into the output element it belongs to (stride 0 along reduced axes), so the
inner loop is contiguous whichever axes are reduced:

    %1 = reduce_sum(%0) {axes=[0], keepdims=false} : f32[8]      with %0 : f32[4,8]
      out[0:8] = 0
      for i0 in 0..4: for i1 in 0..8:  out[i1] = out[i1] + x[8*i0 + i1]

Float sums carry the `reassoc` flag so LLVM may vectorize them (numpy sums pairwise, so neither
order is "the" order); integer sums wrap and are exact in any order.
"""

from __future__ import annotations

import math

from llvmlite import ir

from ..ir import Node
from . import float_math, parallel, scalar
from .emit_elementwise import COSTLY_ELEMENT
from .kernel import Kernel
from .layout import coalesce, contiguous_strides
from .llvm_utils import (
    F32,
    add_offsets,
    alloca_once,
    fill_elements,
    for_range,
    i64,
    load_element,
    store_element,
    strided_loops,
)
from .target import Target

REASSOCIATE = ("reassoc",)


def _combine(kernel: Kernel, accumulated: ir.Value, value: ir.Value) -> ir.Value:
    dtype = kernel.dtype
    if kernel.node.op == "reduce_max":
        return scalar.maximum(kernel.builder, dtype, accumulated, value, name="max")
    return scalar.add(kernel.builder, dtype, accumulated, value, name="sum", flags=REASSOCIATE)


def emit_reduce(kernel: Kernel) -> None:
    """reduce_sum, reduce_mean and reduce_max over the node's axes (keepdims only changes the type)."""
    node, builder = kernel.node, kernel.builder
    operand = node.inputs[0]
    axes = node.attrs["axes"]
    if node.type.size == 0:
        return
    identity = scalar.lowest(kernel.dtype) if node.op == "reduce_max" else scalar.constant(kernel.dtype, 0)
    fill_elements(builder, kernel.output, node.type.size, identity, "init")

    kept_shape = tuple(1 if axis in axes else extent for axis, extent in enumerate(operand.shape))
    output_strides = tuple(0 if axis in axes else stride for axis, stride in enumerate(contiguous_strides(kept_shape)))
    shape, strides = coalesce(operand.shape, [contiguous_strides(operand.shape), output_strides])
    if operand.type.size > 0:
        with strided_loops(builder, shape, [(strides[0], 0), (strides[1], 0)], "r") as (read_at, write_at):
            accumulated = load_element(builder, kernel.output, write_at, kernel.element, "acc")
            value = load_element(builder, kernel.inputs[0], read_at, kernel.element, "x")
            store_element(builder, _combine(kernel, accumulated, value), kernel.output, write_at)

    if node.op == "reduce_mean":
        count = scalar.constant(kernel.dtype, math.prod(operand.shape[axis] for axis in axes))
        with for_range(builder, node.type.size, "mean") as index:
            total = load_element(builder, kernel.output, index, F32, "total")
            store_element(builder, builder.fdiv(total, count, name="mean"), kernel.output, index)


def softmax_parts(node: Node, target: Target, threads: int) -> int:
    """Parts of a softmax for a team of `threads`: blocks of its rows, when its exps are many."""
    rows = node.type.size // max(node.shape[node.attrs["axis"]], 1) if node.type.size else 0
    return parallel.row_parts(rows, 4 * node.type.size * COSTLY_ELEMENT, threads)  # an exp an element


def emit_softmax(kernel: Kernel) -> None:
    """exp(x - max) / sum(exp(x - max)) along `axis`: one pass for the max, one for exp and the
    sum, one to divide; each row is read with stride `inner` (1 when the axis is the last). A split
    softmax takes a block of rows per part.

    fuse-softmax's prologue, as the unfused ops did it: x * scale (an f32 multiply) as each score
    is read; with `causal` (the axis is the last, so a row is one query's keys) key k of query i
    is -inf after the query's position (k > i + keys - queries). The max is taken over the visible
    keys only (a select in that loop kept it from vectorizing: 8x slower); the exp loop selects."""
    node, builder = kernel.node, kernel.builder
    axis, scale, causal = node.attrs["axis"], node.attrs["scale"], node.attrs["causal"]
    if node.type.size == 0:
        return
    length = node.shape[axis]
    inner = math.prod(node.shape[axis + 1:])
    source, output = kernel.inputs[0], kernel.output
    running_max = alloca_once(builder, F32, "running_max")
    running_sum = alloca_once(builder, F32, "running_sum")
    first, rows = parallel.part_bounds(builder, kernel.part, kernel.parts, node.type.size // length, "rows")

    with for_range(builder, rows, "row") as r:
        index = builder.add(first, r, name="row_index")  # o * inner + j
        o, j = builder.udiv(index, i64(inner), name="o"), builder.urem(index, i64(inner), name="j")
        row = add_offsets(builder, j, o, length * inner, "row")
        visible = length
        if causal:  # the keys query (o mod queries) sees: all up to its own position
            queries = node.shape[-2]
            visible = builder.add(builder.urem(o, i64(queries)), i64(length - queries + 1), name="visible")

        def read(at, k=None) -> ir.Value:
            value = load_element(builder, source, at, F32, "x")
            if scale is not None:
                value = builder.fmul(value, ir.Constant(F32, scale), name="scaled")
            if causal and k is not None:
                value = builder.select(builder.icmp_unsigned("<", k, visible), value, ir.Constant(F32, -math.inf),
                                       name="masked")
            return value

        builder.store(scalar.lowest(kernel.dtype), running_max)
        with for_range(builder, visible, "max") as k:
            value = read(add_offsets(builder, row, k, inner))
            largest = scalar.maximum(builder, kernel.dtype, builder.load(running_max), value, "largest")
            builder.store(largest, running_max)
        largest = builder.load(running_max, name="row_max")

        builder.store(scalar.constant(kernel.dtype, 0), running_sum)
        with for_range(builder, length, "exp") as k:
            at = add_offsets(builder, row, k, inner)
            shifted = builder.fsub(read(at, k), largest, name="shifted")
            e = float_math.exp(builder, shifted, "e")
            store_element(builder, e, output, at)
            total = builder.fadd(builder.load(running_sum), e, name="total", flags=REASSOCIATE)
            builder.store(total, running_sum)
        total = builder.load(running_sum, name="row_sum")

        with for_range(builder, length, "divide") as k:
            at = add_offsets(builder, row, k, inner)
            e = load_element(builder, output, at, F32, "e")
            store_element(builder, builder.fdiv(e, total, name="probability"), output, at)
