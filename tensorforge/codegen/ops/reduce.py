"""Emission of reductions (reduce_sum, reduce_mean, reduce_max, fused_reduce) and softmax.

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

from ...ir import DType, Node, get_op
from ...ir.ops_fused import program_type
from ..gemm.micro_kernel import splat
from ..gemm.tiling import FLOAT_BYTES
from ..kernel import Kernel
from ..llvm import float_math, scalar
from ..llvm.layout import broadcast_strides, coalesce, contiguous_strides
from ..llvm.utils import (
    F32,
    I64,
    add_offsets,
    alloca_once,
    as_i64,
    element_pointer,
    fill_elements,
    for_range,
    i64,
    lane_sum,
    llvm_type,
    load_element,
    store_element,
    strided_loops,
)
from ..lowering import ALL, FLOAT, Lowering, register_lowering
from ..target import Target
from ..threads import parallel
from .fused import program_compute

REASSOCIATE = ("reassoc",)


def _values_shape(node: Node) -> tuple[int, ...]:
    """The shape of the values reduced: the operand's, or a fused_reduce program's result."""
    if node.op == "fused_reduce":
        return program_type([operand.type for operand in node.inputs], node.attrs["program"], node.op).shape
    return node.inputs[0].shape


def _reduce_nest(node: Node) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """The coalesced loop nest over the values reduced: its shape and, per operand and then the
    output, the element strides (0 for the output along reduced axes)."""
    shape, axes = _values_shape(node), node.attrs["axes"]
    kept_shape = tuple(1 if axis in axes else extent for axis, extent in enumerate(shape))
    output_strides = tuple(0 if axis in axes else stride for axis, stride in enumerate(contiguous_strides(kept_shape)))
    return coalesce(shape, [*(broadcast_strides(operand.shape, shape) for operand in node.inputs), output_strides])


def _reduction(node: Node) -> str:
    return node.attrs["reduction"] if node.op == "fused_reduce" else node.op


def reduce_parts(node: Node, target: Target, threads: int) -> int:
    """Parts of a reduction for a team of `threads`: blocks of its outermost loop when that axis is
    kept (each part then owns a block of the output), the values are many (a program with a costly op
    counts its costliest op's registered cost an element) and there are several outputs."""
    shape, strides = _reduce_nest(node)
    if not shape or strides[-1][0] == 0:
        return 1
    program = node.attrs.get("program", ())
    cost = max((get_op(instruction[0]).cost for instruction in program), default=1)
    return parallel.row_parts(shape[0], 4 * math.prod(shape) * cost, threads)


def emit_reduce(kernel: Kernel) -> None:
    """reduce_sum, reduce_mean and reduce_max over the node's axes (keepdims only changes the type);
    fused_reduce the same over its program's values, computed as they are read (ops/fused.py).

    A split reduction (reduce_parts) takes a block of the outermost loop, an axis that is kept: its
    block of the output is filled, summed into and divided by that part alone."""
    node, builder = kernel.node, kernel.builder
    dtype, element = node.dtype, llvm_type(node.dtype)
    if node.type.size == 0:
        return
    reduction = _reduction(node)
    shape, strides = _reduce_nest(node)
    reads = math.prod(shape) > 0  # else the identity (a mean of nothing: 0 / 0); shape () is one value
    accesses = [(stride, 0) for stride in strides]
    first_output, outputs = i64(0), i64(node.type.size)
    if kernel.parts > 1:
        first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, shape[0], "block")
        shape = (count, *shape[1:])
        accesses = [(stride, add_offsets(builder, 0, first, stride[0])) for stride in strides]
        first_output, outputs = accesses[-1][1], builder.mul(count, i64(strides[-1][0]), name="outputs")
    output = element_pointer(builder, kernel.output, first_output, element, "part_output")
    identity = scalar.lowest(dtype) if reduction == "reduce_max" else scalar.constant(dtype, 0)
    fill_elements(builder, output, outputs, identity, "init")

    compute = program_compute(kernel) if node.op == "fused_reduce" else lambda builder, values: values[0]
    if reads:
        with strided_loops(builder, shape, accesses, "r") as offsets:
            values = [load_element(builder, pointer, offset, llvm_type(operand.dtype), f"x{position}")
                      for position, (pointer, offset, operand) in enumerate(zip(kernel.inputs, offsets, node.inputs))]
            accumulated = load_element(builder, kernel.output, offsets[-1], element, "acc")
            if reduction == "reduce_max":
                combined = scalar.maximum(builder, dtype, accumulated, compute(builder, values), name="max")
            else:
                combined = scalar.add(builder, dtype, accumulated, compute(builder, values), name="sum",
                                      flags=REASSOCIATE)
            store_element(builder, combined, kernel.output, offsets[-1])

    if reduction == "reduce_mean":
        count = scalar.constant(dtype, math.prod(_values_shape(node)[axis] for axis in node.attrs["axes"]))
        with for_range(builder, outputs, "mean") as index:
            total = load_element(builder, output, index, element, "total")
            store_element(builder, builder.fdiv(total, count, name="mean"), output, index)


register_lowering("reduce_sum", Lowering(emit_reduce, ALL, parts=reduce_parts))
register_lowering("reduce_mean", Lowering(emit_reduce, FLOAT, parts=reduce_parts))
register_lowering("reduce_max", Lowering(emit_reduce, ALL, parts=reduce_parts))
register_lowering("fused_reduce", Lowering(emit_reduce, ALL, parts=reduce_parts))  # fuse-reduce: a program's values


def softmax_parts(node: Node, target: Target, threads: int) -> int:
    """Parts of a softmax for a team of `threads`: blocks of its rows, when its exps are many."""
    rows = node.type.size // max(node.shape[node.attrs["axis"]], 1) if node.type.size else 0
    return parallel.row_parts(rows, 4 * node.type.size * get_op("exp").cost, threads)  # an exp an element


def emit_softmax(kernel: Kernel) -> None:
    """exp(x - max) / sum(exp(x - max)) along `axis`: one pass for the max, one for exp and the
    sum, one to divide; each row is read with stride `inner` (1 when the axis is the last). A split
    softmax takes a block of rows per part.

    fuse-softmax's prologue, as the unfused ops did it: x * scale (an f32 multiply) as each score
    is read, then + the additive mask's element (a second operand that broadcasts to x: its offset
    is computed once per row, then a stride along the axis); with `causal` (the axis is the last,
    so a row is one query's keys) key k of query i is -inf after the query's position
    (k > i + keys - queries). The max is taken over the visible keys only (a select in that loop
    kept it from vectorizing: 8x slower); the exp loop selects."""
    node, builder = kernel.node, kernel.builder
    axis, scale, causal = node.attrs["axis"], node.attrs["scale"], node.attrs["causal"]
    if node.type.size == 0:
        return
    length = node.shape[axis]
    inner = math.prod(node.shape[axis + 1:])
    source, output = kernel.inputs[0], kernel.output
    first, rows = parallel.part_bounds(builder, kernel.part, kernel.parts, node.type.size // length, "rows")
    if softmax_row_vectors(node, kernel.target):
        _softmax_rows_in_registers(kernel, first, rows)
        return
    running_max = alloca_once(builder, F32, "running_max")
    running_sum = alloca_once(builder, F32, "running_sum")

    with for_range(builder, rows, "row") as r:
        index = builder.add(first, r, name="row_index")  # o * inner + j
        o, j = builder.udiv(index, i64(inner), name="o"), builder.urem(index, i64(inner), name="j")
        row = add_offsets(builder, j, o, length * inner, "row")
        visible = _visible_keys(builder, node, o) if causal else length

        if len(kernel.inputs) == 2:
            mask_strides = broadcast_strides(node.inputs[1].shape, node.shape)
            mask_row = _broadcast_offset(builder, o, node.shape[:axis], mask_strides[:axis])
            mask_row = builder.add(mask_row, _broadcast_offset(builder, j, node.shape[axis + 1:],
                                                               mask_strides[axis + 1:]), name="mask_row")

        def read(at, k) -> ir.Value:
            value = load_element(builder, source, at, F32, "x")
            if scale is not None:
                value = builder.fmul(value, ir.Constant(F32, scale), name="scaled")
            if len(kernel.inputs) == 2:
                mask_at = add_offsets(builder, mask_row, k, mask_strides[axis])
                value = builder.fadd(value, load_element(builder, kernel.inputs[1], mask_at, F32, "mask"),
                                     name="masked_add")
            if causal:
                value = builder.select(builder.icmp_unsigned("<", k, visible), value, ir.Constant(F32, -math.inf),
                                       name="masked")
            return value

        builder.store(scalar.lowest(kernel.dtype), running_max)
        with for_range(builder, visible, "max") as k:
            value = read(add_offsets(builder, row, k, inner), k)
            largest = scalar.maximum(builder, kernel.dtype, builder.load(running_max), value, "largest")
            builder.store(largest, running_max)
        largest = builder.load(running_max, name="row_max")

        builder.store(scalar.constant(kernel.dtype, 0), running_sum)
        with for_range(builder, length, "exp") as k:
            at = add_offsets(builder, row, k, inner)
            shifted = builder.fsub(read(at, k), largest, name="shifted")
            e = _exp_where_seen(builder, shifted, builder.icmp_unsigned("<", k, visible, name="seen")) if causal \
                else float_math.exp(builder, shifted, "e")
            store_element(builder, e, output, at)
            total = builder.fadd(builder.load(running_sum), e, name="total", flags=REASSOCIATE)
            builder.store(total, running_sum)
        total = builder.load(running_sum, name="row_sum")

        with for_range(builder, length, "divide") as k:
            at = add_offsets(builder, row, k, inner)
            e = load_element(builder, output, at, F32, "e")
            store_element(builder, builder.fdiv(e, total, name="probability"), output, at)


def _visible_keys(builder: ir.IRBuilder, node: Node, index: ir.Value) -> ir.Value:
    """How many keys the causal row `index` (of the axes before the last) sees: query `index` mod
    queries sees the keys up to its own position, keys - queries + 1 of them for the first."""
    queries, keys = node.shape[-2:]
    return builder.add(builder.urem(index, i64(queries)), i64(keys - queries + 1), name="visible")


def _exp_where_seen(builder: ir.IRBuilder, shifted: ir.Value, seen: ir.Value) -> ir.Value:
    """exp(shifted) where `seen`, exactly 0 elsewhere (a float or a vector, and its i1 mask). A hidden
    key's score is -inf: exp(-inf - max) would go through float_math.exp's clamp to -104 and f32
    denormals, a microcode assist each on x86 (GPT-2's prefill softmax ran 5x slower so)."""
    zero = float_math.like(shifted, 0.0)
    e = float_math.exp(builder, builder.select(seen, shifted, zero, name="shifted.seen"), "e")
    return builder.select(seen, e, zero, name="e.seen")


# A softmax along the last axis whose rows are whole vectors, at most this many, keeps each row in
# registers: its max, exps, sum and quotients in vector code, the causal mask a compare of lane
# numbers. The loops above vectorize poorly on short rows (GPT-2's prefill of 32 positions: rows of
# 1 to 32 visible keys, a scalar remainder in each; 12 heads x 32 x 32 causal took 54 us).
MAX_ROW_VECTORS = 16


def softmax_row_vectors(node: Node, target: Target) -> int:
    """Vectors per row for `_softmax_rows_in_registers`, or 0 when it does not apply: the axis is the
    last and its length whole vectors of the target, at most MAX_ROW_VECTORS. (An additive mask then
    runs along it with stride 1, or 0 where it broadcasts.)"""
    lanes, axis = target.vector_width, node.attrs["axis"]
    length = node.shape[axis]
    if axis != node.type.rank - 1 or length % lanes or length // lanes > MAX_ROW_VECTORS:
        return 0
    return length // lanes


def _softmax_rows_in_registers(kernel: Kernel, first: ir.Value, rows: ir.Value) -> None:
    """emit_softmax for rows of `softmax_row_vectors` whole vectors: each row loaded once, scaled, masked
    (the additive mask's elements, then -inf past a causal row's visible keys), its max and sum
    taken as trees of vectors then across lanes, exp(x - max) / sum stored."""
    node, builder, lanes = kernel.node, kernel.builder, kernel.target.vector_width
    axis, scale, causal = node.attrs["axis"], node.attrs["scale"], node.attrs["causal"]
    length = node.shape[axis]
    vector = ir.VectorType(F32, lanes)
    count = length // lanes
    native = kernel.target.has_ieee_maximum
    if len(kernel.inputs) == 2:
        mask_strides = broadcast_strides(node.inputs[1].shape, node.shape)
    with for_range(builder, rows, "row", unroll=False) as r:
        index = builder.add(first, r, name="row_index")
        row = builder.mul(index, i64(length), name="row")
        values = [builder.load(element_pointer(builder, kernel.inputs[0], builder.add(row, i64(v * lanes)), F32),
                               typ=vector, align=FLOAT_BYTES, name="x") for v in range(count)]
        if scale is not None:
            values = [builder.fmul(value, ir.Constant(vector, [scale] * lanes), name="scaled") for value in values]
        if len(kernel.inputs) == 2:
            mask_row = _broadcast_offset(builder, index, node.shape[:axis], mask_strides[:axis])
            mask = kernel.inputs[1]
            if mask_strides[axis]:
                terms = [builder.load(element_pointer(builder, mask, builder.add(mask_row, i64(v * lanes)), F32),
                                      typ=vector, align=FLOAT_BYTES, name="mask") for v in range(count)]
            else:
                terms = [splat(builder, load_element(builder, mask, mask_row, F32, "mask"), vector)] * count
            values = [builder.fadd(value, term, name="masked_add") for value, term in zip(values, terms)]
        seen = None
        if causal:  # key k is seen while k < the row's visible keys
            bound = splat(builder, _visible_keys(builder, node, index), ir.VectorType(I64, lanes))
            seen = [builder.icmp_unsigned("<", ir.Constant(bound.type, list(range(v * lanes, (v + 1) * lanes))),
                                          bound, name="seen") for v in range(count)]
            values = [builder.select(mask, value, ir.Constant(vector, [-math.inf] * lanes), name="causal")
                      for mask, value in zip(seen, values)]
        largest = scalar.maximum_across_lanes(builder, scalar.maximum_of(builder, DType.f32, values, native, "row_max"),
                                              native)
        largest = splat(builder, largest, vector)
        shifted = [builder.fsub(value, largest, name="shifted") for value in values]
        exps = [float_math.exp(builder, value, "e") for value in shifted] if seen is None else \
            [_exp_where_seen(builder, value, mask) for value, mask in zip(shifted, seen)]
        total = splat(builder, lane_sum(builder, exps, "row_sum"), vector)
        for v, e in enumerate(exps):
            builder.store(builder.fdiv(e, total, name="probability"),
                          element_pointer(builder, kernel.output, builder.add(row, i64(v * lanes)), F32),
                          align=FLOAT_BYTES)


def _broadcast_offset(builder: ir.IRBuilder, index: ir.Value, shape: tuple[int, ...],
                      strides: tuple[int, ...]) -> ir.Value:
    """The element offset, by `strides`, of the flat (C-order) `index` into `shape`."""
    offset = 0
    for extent, stride in reversed(list(zip(shape, strides))):
        if stride:
            offset = add_offsets(builder, offset, builder.urem(index, i64(extent)), stride)
        index = builder.udiv(index, i64(extent))
    return as_i64(offset)


register_lowering("softmax", Lowering(emit_softmax, FLOAT, parts=softmax_parts))
