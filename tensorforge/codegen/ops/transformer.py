"""Emission of the transformer ops: gather, layer_norm, causal_mask, argmax (ir/ops_transformer.py).

    %e = gather(%table, %ids) : f32[1,8,16]       with %table : f32[17,16]
      for n in 0..8:  row = clamp(ids[n], 0, 16);  memcpy(&out[16*n], &table[16*row], 64 bytes)

    %y = layer_norm(%x, %g, %b) {eps=1e-05} : f32[8,16]
      for r in 0..8:  mean = sum(x[r, :]) / 16;  var = sum((x[r, :] - mean)^2) / 16
                      out[r, j] = (x[r, j] - mean) / sqrt(var + eps) * g[j] + b[j]

    %m = causal_mask(%s) : f32[2,8,8]
      for o, i, j:  out[o, i, j] = j <= i + (keys - queries) ? s[o, i, j] : -inf

    %a = argmax(%x) {axis=1} : i64[4]               with %x : f32[4,17]
      for o in 0..4:  best = x[o, 0];  for k in 1..17: take x[o, k] if it is larger (or the first NaN)

The clamp in gather is what keeps a bad id from reading outside the table; the runtime rejects
bad ids that come straight from a graph input before the call (ops_transformer.index_inputs).
Sums carry the `reassoc` flag (as the reductions do) so that LLVM vectorizes them.
"""

from __future__ import annotations

import math

from llvmlite import ir

from ...ir import Node
from ..kernel import Kernel
from ..llvm import scalar
from ..llvm.float_math import sqrt
from ..llvm.utils import (
    F32,
    I64,
    add_offsets,
    call_intrinsic,
    carried_loop,
    copy_bytes,
    element_pointer,
    for_range,
    i64,
    llvm_type,
    load_element,
    store_element,
)
from ..lowering import ALL, FLOAT, NUMERIC, Lowering, register_lowering
from ..target import Target
from ..threads import parallel
from .reduce import REASSOCIATE


def emit_gather(kernel: Kernel) -> None:
    """out[n, :] = table[clamp(ids[n], 0, rows - 1), :] for every id, one row copy each."""
    node, builder = kernel.node, kernel.builder
    table_type, ids_type = kernel.operand_type(0), kernel.operand_type(1)
    rows, row_size = table_type.shape[0], math.prod(table_type.shape[1:])
    if node.type.size == 0:
        return
    row_bytes = row_size * table_type.dtype.itemsize
    with for_range(builder, ids_type.size, "id") as n:
        raw = load_element(builder, kernel.inputs[1], n, llvm_type(ids_type.dtype), "raw_id")
        if raw.type.width < 64:
            widen = builder.sext if scalar.is_signed(ids_type.dtype) else builder.zext
            raw = widen(raw, I64, name="id")
        at_least_zero = call_intrinsic(builder, "llvm.smax.i64", I64, [raw, i64(0)], "id.low")
        row = call_intrinsic(builder, "llvm.smin.i64", I64, [at_least_zero, i64(rows - 1)], "row")
        source = element_pointer(builder, kernel.inputs[0], add_offsets(builder, 0, row, row_size), kernel.element,
                                 "source")
        destination = element_pointer(builder, kernel.output, add_offsets(builder, 0, n, row_size), kernel.element,
                                      "destination")
        copy_bytes(builder, destination, source, row_bytes, may_overlap=False)


register_lowering("gather", Lowering(emit_gather, ALL))  # any table dtype; the ids are checked by type inference


def _row_sum(builder: ir.IRBuilder, length: int, term, name: str) -> ir.Value:
    """sum(term(j) for j in range(length)) in f32, reassociable (LLVM vectorizes it)."""
    def body(j: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
        return [builder.fadd(carried[0], term(j), name=f"{name}.total", flags=REASSOCIATE)]

    [total] = carried_loop(builder, i64(0), i64(length), [ir.Constant(F32, 0.0)], body, name)
    return total


def layer_norm_parts(node: Node, target: Target, threads: int) -> int:
    """Parts of a layer norm for a team of `threads`: blocks of rows, when it reads and writes enough
    (three passes over each row, a divide an element)."""
    rows = node.type.size // max(node.shape[-1], 1) if node.type.size else 0
    return parallel.row_parts(rows, 8 * node.type.size, threads)


def emit_layer_norm(kernel: Kernel) -> None:
    """Per row of the last axis: the mean, the biased variance (a second pass over the centered values),
    then (x - mean) / sqrt(var + eps) * gamma + beta, in the reference's order of operations. A split
    layer norm takes a block of rows per part."""
    node, builder = kernel.node, kernel.builder
    if node.type.size == 0:
        return
    length = node.shape[-1]
    x, gamma, beta = kernel.inputs
    count = ir.Constant(F32, float(length))
    first, rows = parallel.part_bounds(builder, kernel.part, kernel.parts, node.type.size // length, "rows")
    with for_range(builder, rows, "row") as index:
        r = builder.add(first, index, name="row_index")
        row = add_offsets(builder, 0, r, length, "row.at")
        x_row = element_pointer(builder, x, row, F32, "x_row")
        out_row = element_pointer(builder, kernel.output, row, F32, "out_row")

        def load_x(j: ir.Value) -> ir.Value:
            return load_element(builder, x_row, j, F32, "x")

        mean = builder.fdiv(_row_sum(builder, length, load_x, "sum"), count, name="mean")

        def square(j: ir.Value) -> ir.Value:
            centered = builder.fsub(load_x(j), mean, name="centered")
            return builder.fmul(centered, centered, name="square")

        var = builder.fdiv(_row_sum(builder, length, square, "squares"), count, name="var")
        std = sqrt(builder, builder.fadd(var, ir.Constant(F32, node.attrs["eps"]), name="var_eps"), "std")
        with for_range(builder, length, "normalize") as j:
            normalized = builder.fdiv(builder.fsub(load_x(j), mean, name="centered"), std, name="normalized")
            scaled = builder.fmul(normalized, load_element(builder, gamma, j, F32, "gamma"), name="scaled")
            shifted = builder.fadd(scaled, load_element(builder, beta, j, F32, "beta"), name="shifted")
            store_element(builder, shifted, out_row, j)


register_lowering("layer_norm", Lowering(emit_layer_norm, FLOAT, parts=layer_norm_parts))


def emit_causal_mask(kernel: Kernel) -> None:
    """out[..., i, j] = x[..., i, j] if j <= i + (keys - queries) else -inf."""
    node, builder = kernel.node, kernel.builder
    if node.type.size == 0:
        return
    queries, keys = node.shape[-2:]
    minus_infinity = ir.Constant(F32, float("-inf"))
    with for_range(builder, node.type.size // (queries * keys), "matrix") as m, for_range(builder, queries, "i") as i:
        row = add_offsets(builder, add_offsets(builder, 0, m, queries * keys), i, keys, "row")
        last = builder.add(i, i64(keys - queries), name="last_key")
        with for_range(builder, keys, "j", unroll=False) as j:  # unrolled, LLVM vectorized over i with gathers
            at = add_offsets(builder, row, j, 1, "at")
            value = load_element(builder, kernel.inputs[0], at, F32, "score")
            allowed = builder.icmp_signed("<=", j, last, name="allowed")
            store_element(builder, builder.select(allowed, value, minus_infinity, name="masked"), kernel.output, at)


register_lowering("causal_mask", Lowering(emit_causal_mask, FLOAT))


def _larger(builder: ir.IRBuilder, kernel: Kernel, value: ir.Value, best: ir.Value) -> ir.Value:
    """Whether `value` replaces `best` in numpy's argmax: larger, or the first NaN."""
    dtype = kernel.dtype
    if dtype.is_float:
        larger = builder.fcmp_ordered(">", value, best, name="larger")
        first_nan = builder.and_(builder.fcmp_unordered("uno", value, value),
                                 builder.fcmp_ordered("ord", best, best), name="first_nan")
        return builder.or_(larger, first_nan, name="take")
    if scalar.is_signed(dtype):
        return builder.icmp_signed(">", value, best, name="take")
    return builder.icmp_unsigned(">", value, best, name="take")


def emit_argmax(kernel: Kernel) -> None:
    """For every row along `axis` (read with stride `inner`): the index of its first largest value."""
    node, builder = kernel.node, kernel.builder
    if node.type.size == 0:
        return
    operand = node.inputs[0]
    axis = node.attrs["axis"]
    outer, length, inner = math.prod(operand.shape[:axis]), operand.shape[axis], math.prod(operand.shape[axis + 1:])
    index_type = llvm_type(node.dtype)
    with for_range(builder, outer, "outer") as o, for_range(builder, inner, "inner") as j:
        row = add_offsets(builder, j, o, length * inner, "row")
        first = load_element(builder, kernel.inputs[0], row, kernel.element, "first")

        def body(k: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
            best, best_index = carried
            value = load_element(builder, kernel.inputs[0], add_offsets(builder, row, k, inner, "at"), kernel.element,
                                 "value")
            take = _larger(builder, kernel, value, best)
            return [builder.select(take, value, best, name="best"), builder.select(take, k, best_index, name="index")]

        _, best_index = carried_loop(builder, i64(1), i64(length), [first, i64(0)], body, "k")
        result = best_index if index_type.width == 64 else builder.trunc(best_index, index_type, name="index32")
        store_element(builder, result, kernel.output, add_offsets(builder, j, o, inner, "out_at"))


register_lowering("argmax", Lowering(emit_argmax, NUMERIC))
