"""Emission of the KV-cache ops: cache_write, position_mask, cached_attention (ir/ops_kv_cache.py).

    %k2 = cache_write(%cache, %new, %pos) : f32[1,2,16,4]     with %new : f32[1,2,1,4]
      memcpy(out, cache, all of it);  start = clamp(pos, 0, 16 - 1)
      for o in 0..2:  memcpy(&out[(16*o + start)*4], &new[1*o*4], 1*4 floats)

    %m = position_mask(%s, %pos) : f32[1,2,1,16]
      for o, i, j:  out[o, i, j] = j <= i + pos ? s[o, i, j] : -inf

    %o = cached_attention(%q, %k, %v, %pos) {scale=0.5} : f32[1,2,1,4]       with %k, %v : f32[1,2,16,4]
      for o, i:  n = clamp(pos + i + 1, 0, 16)                  only the cache rows a query sees
                 s[j] = scale * q[o, i, :] . k[o, j, :]  for j < n;  e[j] = exp(s[j] - max(s))   (scratch)
                 out[o, i, :] = sum(e[j] * v[o, j, :]) / sum(e)

The clamp is what keeps a bad position from writing (cache_write) or reading (cached_attention)
outside the cache; the reference raises (cache_write) or gives NaN rows (no key to attend to).
"""

from __future__ import annotations

import math

from llvmlite import ir

from . import float_math, scalar
from .emit_reduce import REASSOCIATE
from .kernel import Kernel
from .llvm_utils import (
    F32,
    I64,
    add_offsets,
    call_intrinsic,
    carried_loop,
    copy_bytes,
    element_pointer,
    fill_elements,
    for_range,
    i64,
    llvm_type,
    load_element,
    store_element,
)


def _load_position(kernel: Kernel, index: int) -> ir.Value:
    """Operand `index` (one integer) widened to i64."""
    builder, dtype = kernel.builder, kernel.operand_type(index).dtype
    value = load_element(builder, kernel.inputs[index], 0, llvm_type(dtype), "pos.raw")
    if value.type.width < 64:
        widen = builder.sext if scalar.is_signed(dtype) else builder.zext
        value = widen(value, I64, name="pos")
    return value


def emit_cache_write(kernel: Kernel) -> None:
    """Copy the cache, then the new rows over rows clamp(pos, 0, rows - count).. of every matrix."""
    node, builder = kernel.node, kernel.builder
    if node.type.size == 0:
        return
    cache_type, new_type = kernel.operand_type(0), kernel.operand_type(1)
    rows, features, count = cache_type.shape[-2], cache_type.shape[-1], new_type.shape[-2]
    itemsize = cache_type.dtype.itemsize
    copy_bytes(builder, kernel.output, kernel.inputs[0], cache_type.size * itemsize, may_overlap=False)
    if new_type.size == 0:
        return
    position = _load_position(kernel, 2)
    at_least_zero = call_intrinsic(builder, "llvm.smax.i64", I64, [position, i64(0)], "pos.low")
    start = call_intrinsic(builder, "llvm.smin.i64", I64, [at_least_zero, i64(rows - count)], "start")
    matrices = math.prod(cache_type.shape[:-2])
    with for_range(builder, matrices, "matrix") as m:
        first_row = add_offsets(builder, add_offsets(builder, 0, m, rows * features), start, features, "first_row")
        destination = element_pointer(builder, kernel.output, first_row, kernel.element, "destination")
        source = element_pointer(builder, kernel.inputs[1], add_offsets(builder, 0, m, count * features),
                                 kernel.element, "source")
        copy_bytes(builder, destination, source, count * features * itemsize, may_overlap=False)


def emit_position_mask(kernel: Kernel) -> None:
    """out[..., i, j] = x[..., i, j] if j <= i + pos else -inf."""
    node, builder = kernel.node, kernel.builder
    if node.type.size == 0:
        return
    queries, keys = node.shape[-2:]
    position = _load_position(kernel, 1)
    minus_infinity = ir.Constant(F32, float("-inf"))
    with for_range(builder, node.type.size // (queries * keys), "matrix") as m, for_range(builder, queries, "i") as i:
        row = add_offsets(builder, add_offsets(builder, 0, m, queries * keys), i, keys, "row")
        last = builder.add(i, position, name="last_key")
        with for_range(builder, keys, "j") as j:
            at = add_offsets(builder, row, j, 1, "at")
            value = load_element(builder, kernel.inputs[0], at, F32, "score")
            allowed = builder.icmp_signed("<=", j, last, name="allowed")
            store_element(builder, builder.select(allowed, value, minus_infinity, name="masked"), kernel.output, at)


def cached_attention_scratch_bytes(node, target, packed) -> int:
    """One score per cache row (reused by every query)."""
    return node.inputs[1].shape[-2] * 4


def emit_cached_attention(kernel: Kernel) -> None:
    """Per matrix and query: the scaled scores of the rows it sees, their softmax, the weighted sum of v."""
    node, builder = kernel.node, kernel.builder
    if node.type.size == 0:
        return
    queries, features = node.shape[-2:]
    rows = kernel.operand_type(1).shape[-2]
    q, k, v = kernel.inputs[:3]
    scores, out = kernel.scratch, kernel.output
    scale = ir.Constant(F32, node.attrs["scale"])
    position = _load_position(kernel, 3)
    zero = ir.Constant(F32, 0.0)
    with for_range(builder, node.type.size // (queries * features), "matrix") as m, \
            for_range(builder, queries, "query") as i:
        seen = builder.add(builder.add(position, i, name="last_key"), i64(1), name="seen")
        at_least_zero = call_intrinsic(builder, "llvm.smax.i64", I64, [seen, i64(0)], "seen.low")
        count = call_intrinsic(builder, "llvm.smin.i64", I64, [at_least_zero, i64(rows)], "count")
        q_row = element_pointer(builder, q, add_offsets(builder, add_offsets(builder, 0, m, queries * features), i,
                                                        features, "q.at"), F32, "q_row")
        k_matrix = element_pointer(builder, k, add_offsets(builder, 0, m, rows * features), F32, "k_matrix")
        v_matrix = element_pointer(builder, v, add_offsets(builder, 0, m, rows * features), F32, "v_matrix")
        out_row = element_pointer(builder, out, add_offsets(builder, add_offsets(builder, 0, m, queries * features),
                                                            i, features, "out.at"), F32, "out_row")

        def score(j: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
            k_row = element_pointer(builder, k_matrix, add_offsets(builder, 0, j, features), F32, "k_row")

            def product(d: ir.Value, total: list[ir.Value]) -> list[ir.Value]:
                term = builder.fmul(load_element(builder, q_row, d, F32, "q"),
                                    load_element(builder, k_row, d, F32, "k"), name="qk")
                return [builder.fadd(total[0], term, name="dot", flags=REASSOCIATE)]

            [dot] = carried_loop(builder, i64(0), i64(features), [zero], product, "d")
            value = builder.fmul(dot, scale, name="score")
            store_element(builder, value, scores, j)
            return [scalar.maximum(builder, kernel.dtype, carried[0], value, "largest")]

        [largest] = carried_loop(builder, i64(0), count, [scalar.lowest(kernel.dtype)], score, "key")

        def exponential(j: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
            shifted = builder.fsub(load_element(builder, scores, j, F32, "s"), largest, name="shifted")
            e = float_math.exp(builder, shifted, "e")
            store_element(builder, e, scores, j)
            return [builder.fadd(carried[0], e, name="total", flags=REASSOCIATE)]

        [total] = carried_loop(builder, i64(0), count, [zero], exponential, "exp")
        fill_elements(builder, out_row, features, zero, "clear")

        def accumulate(j: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
            e = load_element(builder, scores, j, F32, "e")
            v_row = element_pointer(builder, v_matrix, add_offsets(builder, 0, j, features), F32, "v_row")
            with for_range(builder, features, "feature") as d:
                weighted = builder.fmul(e, load_element(builder, v_row, d, F32, "v"), name="weighted")
                store_element(builder, builder.fadd(load_element(builder, out_row, d, F32, "acc"), weighted,
                                                    name="sum"), out_row, d)
            return []

        carried_loop(builder, i64(0), count, [], accumulate, "row")
        with for_range(builder, features, "normalize") as d:
            store_element(builder, builder.fdiv(load_element(builder, out_row, d, F32, "acc"), total, name="out"),
                          out_row, d)
