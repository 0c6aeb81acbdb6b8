"""Emission of the KV-cache ops: cache_write, position_mask, cached_attention (ir/ops_kv_cache.py).

    %k2 = cache_write(%cache, %new, %pos) : f32[1,2,16,4]     with %new : f32[1,2,1,4]
      memcpy(out, cache, all of it);  start = clamp(pos, 0, 16 - 1)
      for o in 0..2:  memcpy(&out[(16*o + start)*4], &new[1*o*4], 1*4 floats)

    %m = position_mask(%s, %pos) : f32[1,2,1,16]
      for o, i, j:  out[o, i, j] = j <= i + pos ? s[o, i, j] : -inf

    %o = cached_attention(%q, %kc, %vc, %k, %v, %pos) {scale=0.5} : f32[1,2,1,4]    %kc, %vc : f32[1,2,16,4]
      start = clamp(pos, 0, 16 - 1)                             where cache_write would write %k, %v
      for o, i:  key j < start: row j of %kc, %vc; start <= j <= start + i: row j - start of %k, %v
                 s[j] = scale * q[o, i, :] . key[j];  e[j] = exp(s[j] - max(s))      (scratch)
                 out[o, i, :] = sum(e[j] * value[j]) / sum(e)

With int8 caches (10 operands: the codes, then the scales of the k cache, v cache, k and v rows),
a key or value row is its codes converted to f32 times the row's scale, taken from the caches'
scales before `start` and from the new rows' after it.

The clamp is what keeps a bad position from writing (cache_write) or reading (cached_attention)
outside the cache; the reference raises instead. cached_attention reads the caches (never copies
or writes them) and only their rows before the position.
"""

from __future__ import annotations

import math

from llvmlite import ir

from ...ir import Node
from ..gemm.micro_kernel import load_lanes, splat, store_lanes
from ..kernel import Kernel
from ..llvm import float_math, scalar
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
    lane_sum,
    llvm_type,
    load_element,
    store_element,
)
from ..lowering import ALL, FLOAT, Lowering, register_lowering
from ..target import Target
from ..threads import parallel
from .reduce import REASSOCIATE


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


register_lowering("cache_write", Lowering(emit_cache_write, ALL))


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


register_lowering("position_mask", Lowering(emit_position_mask, FLOAT))


def cached_attention_scratch_bytes(node, target, packed) -> int:
    """One score per cache row (reused by every query)."""
    return node.inputs[1].shape[-2] * 4


def _row(builder: ir.IRBuilder, j: ir.Value, start: ir.Value, cache: ir.Value, new: ir.Value, features: int,
         element: ir.Type, name: str) -> ir.Value:
    """The address of key/value row j: the cache's row j before `start`, the new rows' row j - start after
    (`features` elements of `element` a row: a scale's row is one element)."""
    before = builder.icmp_signed("<", j, start, name=f"{name}.cached")
    index = builder.select(before, j, builder.sub(j, start), name=f"{name}.index")
    base = builder.select(before, cache, new, name=f"{name}.base")
    return element_pointer(builder, base, add_offsets(builder, 0, index, features), element, name)


def cached_attention_parts(node: Node, target: Target, threads: int) -> int:
    """Parts for a team of `threads`: blocks of the (batch x head) matrices, when the work at the
    last position (4 flops per feature of every cache row) is worth a team."""
    queries, features = node.shape[-2:]
    matrices = node.type.size // (queries * features) if node.type.size else 0
    rows = node.inputs[1].shape[-2]
    return parallel.row_parts(matrices, 4 * matrices * queries * rows * features, threads)


def emit_cached_attention(kernel: Kernel) -> None:
    """Per matrix and query: the scaled scores of the rows it sees, their softmax, the weighted sum of v.

    The query row and the output row are held in vector registers (the target's width, a short
    last vector loaded lane by lane): a score is one vector product and a horizontal sum, and every
    value row is added into the registers (the sum over keys in key order, per feature). A split
    kernel takes a block of matrices per part, with its own scores in its thread's scratch. An int8
    row is loaded as codes and converted; its scale multiplies the row's score (keys) or its weight
    (values), not each element: the rounding differs from the reference's dequantized rows by ulps."""
    node, builder = kernel.node, kernel.builder
    if node.type.size == 0:
        return
    queries, features = node.shape[-2:]
    rows = kernel.operand_type(1).shape[-2]
    q, k_cache, v_cache, k_new, v_new = kernel.inputs[:5]
    quantized = len(kernel.inputs) == 10
    element = llvm_type(kernel.operand_type(1).dtype)
    scores, out = kernel.scratch, kernel.output
    scale = ir.Constant(F32, node.attrs["scale"])
    position = _load_position(kernel, 5)
    at_least_zero = call_intrinsic(builder, "llvm.smax.i64", I64, [position, i64(0)], "pos.low")
    start = call_intrinsic(builder, "llvm.smin.i64", I64, [at_least_zero, i64(rows - queries)], "start")
    zero = ir.Constant(F32, 0.0)
    width = kernel.target.vector_width
    vector = ir.VectorType(F32, width)
    lanes = [min(width, features - offset) for offset in range(0, features, width)]

    def load_row(row: ir.Value, element: ir.Type) -> list[ir.Value]:
        """A row of f32 (or of int8 codes, converted) in vectors of the target's width."""
        loaded = [load_lanes(builder, element_pointer(builder, row, v * width, element), count,
                             ir.VectorType(element, width)) for v, count in enumerate(lanes)]
        return loaded if element == F32 else [builder.sitofp(value, vector, name="code") for value in loaded]

    first, count_matrices = parallel.part_bounds(builder, kernel.part, kernel.parts,
                                                 node.type.size // (queries * features), "matrices")
    with for_range(builder, count_matrices, "matrix") as local, for_range(builder, queries, "query") as i:
        m = builder.add(first, local, name="m")
        count = builder.add(builder.add(start, i, name="last_key"), i64(1), name="count")
        matrix = add_offsets(builder, 0, m, queries * features, "matrix.at")
        cache_matrix = add_offsets(builder, 0, m, rows * features, "cache.at")
        q_row = element_pointer(builder, q, add_offsets(builder, matrix, i, features, "q.at"), F32, "q_row")
        out_row = element_pointer(builder, out, add_offsets(builder, matrix, i, features, "out.at"), F32, "out_row")
        k_cached, v_cached = (element_pointer(builder, cache, cache_matrix, element, name)
                              for cache, name in ((k_cache, "k_cached"), (v_cache, "v_cached")))
        k_fresh, v_fresh = (element_pointer(builder, new, matrix, element, name)
                            for new, name in ((k_new, "k_fresh"), (v_new, "v_fresh")))
        q_vectors = load_row(q_row, F32)

        def row_of(j: ir.Value, cached: ir.Value, fresh: ir.Value, scales: tuple[ir.Value, ir.Value] | None,
                   name: str) -> tuple[list[ir.Value], ir.Value | None]:
            """Key or value row j in f32 vectors (an int8 row's codes) and its scale (None: f32 rows)."""
            values = load_row(_row(builder, j, start, cached, fresh, features, element, name), element)
            if scales is None:
                return values, None
            cached_scales, fresh_scales = scales
            pointer = _row(builder, j, start, cached_scales, fresh_scales, 1, F32, f"{name}.scale")
            return values, builder.load(pointer, typ=F32, name=f"{name}.scale")

        k_scales = v_scales = None
        if quantized:
            k_cache_scales, v_cache_scales, k_row_scales, v_row_scales = kernel.inputs[6:10]
            k_scales = (element_pointer(builder, k_cache_scales, add_offsets(builder, 0, m, rows), F32, "k.scales"),
                        element_pointer(builder, k_row_scales, add_offsets(builder, 0, m, queries), F32, "k.fresh"))
            v_scales = (element_pointer(builder, v_cache_scales, add_offsets(builder, 0, m, rows), F32, "v.scales"),
                        element_pointer(builder, v_row_scales, add_offsets(builder, 0, m, queries), F32, "v.fresh"))

        def score(j: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
            k_vectors, k_scale = row_of(j, k_cached, k_fresh, k_scales, "k_row")
            dot = lane_sum(builder, [builder.fmul(a, b, name="qk") for a, b in zip(q_vectors, k_vectors)], "dot")
            if k_scale is not None:  # q . (codes * s) as s (q . codes): the order differs, within f32 rounding
                dot = builder.fmul(dot, k_scale, name="dot.scaled")
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

        def accumulate(j: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
            e = load_element(builder, scores, j, F32, "e")
            v_vectors, v_scale = row_of(j, v_cached, v_fresh, v_scales, "v_row")
            e = splat(builder, e if v_scale is None else builder.fmul(e, v_scale, name="e.scaled"), vector)
            return [builder.fadd(acc, builder.fmul(e, v, name="weighted"), name="sum")
                    for acc, v in zip(carried, v_vectors)]

        sums = carried_loop(builder, i64(0), count, [ir.Constant(vector, None)] * len(lanes), accumulate, "row")
        divisor = splat(builder, total, vector)
        for v, (value, lane_count) in enumerate(zip(sums, lanes)):
            store_lanes(builder, builder.fdiv(value, divisor, name="out"),
                        element_pointer(builder, out_row, v * width, F32), lane_count)


register_lowering("cached_attention", Lowering(emit_cached_attention, FLOAT, cached_attention_scratch_bytes,
                                               parts=cached_attention_parts))
