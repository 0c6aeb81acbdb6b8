"""Emission of the KV-cache ops: cache_write and position_mask (ir/ops_kv_cache.py).

    %k2 = cache_write(%cache, %new, %pos) : f32[1,2,16,4]     with %new : f32[1,2,1,4]
      memcpy(out, cache, all of it);  start = clamp(pos, 0, 16 - 1)
      for o in 0..2:  memcpy(&out[(16*o + start)*4], &new[1*o*4], 1*4 floats)

    %m = position_mask(%s, %pos) : f32[1,2,1,16]
      for o, i, j:  out[o, i, j] = j <= i + pos ? s[o, i, j] : -inf

The clamp is what keeps a bad position from writing outside the cache; the reference raises instead.
"""

from __future__ import annotations

import math

from llvmlite import ir

from . import scalar
from .kernel import Kernel
from .llvm_utils import (
    F32,
    I64,
    add_offsets,
    call_intrinsic,
    copy_bytes,
    element_pointer,
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
