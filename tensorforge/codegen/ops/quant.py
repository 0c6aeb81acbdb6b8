"""Emission of quantize and dequantize: one elementwise loop each, the same f32 steps as the reference.

    quantize:    t = rint(x / scale) + float(zero_point); t = min(max(t, qmin), qmax); q = int(t)
                 (NaN -> zero_point), bit for bit what ir/ops_quant.py computes
    dequantize:  y = float(int32(q) - zero_point) * scale
    matmul_integer: (a - za) @ (b - zb) in int32, a widening loop nest
    value_range: [min(0, block), max(0, block)] of each block of x's rows, NaN skipped; split
                 among threads by blocks (each part reads the rows its core's producer wrote)

`range_with_zero` and `fold_ranges` are also dynamic_qlinear's (ops/qlayers.py).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from ...ir import DType, Node
from ...ir.ops_quant import range_rows
from ..gemm.tiling import FLOAT_BYTES
from ..kernel import Kernel
from ..llvm import scalar
from ..llvm.utils import (
    F32,
    I32,
    call_intrinsic,
    carried_loop,
    element_pointer,
    fill_elements,
    for_range,
    i64,
    llvm_type,
    load_element,
    store_element,
)
from ..lowering import FLOAT, INT8, Lowering, register_lowering
from ..target import Target
from ..threads import parallel
from .elementwise import map_elements, map_lowering


def quantize_value(builder: ir.IRBuilder, x: ir.Value, scale: ir.Value, zero: ir.Value, target: DType) -> ir.Value:
    """One f32 value's code in `target` (i8 or u8): clip(rint(x / scale) + zero), NaN -> zero; `zero`
    is the zero point as f32. The steps of ir/ops_quant.quantize, bit for bit."""
    info = np.iinfo(target.numpy)
    low, high = ir.Constant(F32, float(info.min)), ir.Constant(F32, float(info.max))
    rounded = call_intrinsic(builder, "llvm.rint.f32", F32, [builder.fdiv(x, scale, name="scaled")], "rounded")
    shifted = builder.fadd(rounded, zero, name="shifted")
    clipped = builder.select(builder.fcmp_ordered("<", shifted, low), low, shifted)
    clipped = builder.select(builder.fcmp_ordered(">", clipped, high), high, clipped, name="clipped")
    code = builder.select(builder.fcmp_unordered("uno", clipped, clipped), zero, clipped, name="code")
    # in range and never NaN now: a plain conversion (vectorizes; the saturating one does not here)
    return builder.trunc(builder.fptosi(code, I32), llvm_type(target), name="q")


def emit_quantize(kernel: Kernel) -> None:
    target = kernel.node.dtype

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        x, scale, zero_point = values
        return quantize_value(builder, x, scale, builder.sitofp(zero_point, F32, name="zero_point"), target)

    map_elements(kernel, compute)


register_lowering("quantize", map_lowering(emit_quantize, FLOAT))


def emit_dequantize(kernel: Kernel) -> None:
    source = kernel.dtype

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        q, scale, zero_point = values
        wide = scalar.convert(builder, q, source, DType.i32, name="wide") if source is not DType.i32 else q
        difference = builder.sub(wide, zero_point, name="difference")
        return builder.fmul(builder.sitofp(difference, F32), scale, name="y")

    map_elements(kernel, compute)


register_lowering("dequantize", map_lowering(emit_dequantize, frozenset({DType.i8, DType.u8, DType.i32})))


def emit_matmul_integer(kernel: Kernel) -> None:
    """The widening integer GEMM (every target): c[i, :] += (int32(a[i, k]) - za) * (int32(b[k, :]) - zb)
    in i-k-j order, so the j loop is a vector of widening multiply-adds (pmaddwd-like on x86, smlal on
    NEON, as LLVM picks them). The int8 dot-product instructions (sdot, vpdpbusd) are not used yet."""
    node, builder = kernel.node, kernel.builder
    a_type, b_type = kernel.operand_type(0), kernel.operand_type(1)
    depth, columns = b_type.shape
    rows = int(np.prod(a_type.shape[:-1]))
    if node.type.size == 0:
        return
    zero = ir.Constant(I32, 0)
    a_zero = load_element(builder, kernel.inputs[2], 0, I32, "za") if len(kernel.inputs) > 2 else zero
    b_zero = load_element(builder, kernel.inputs[3], 0, I32, "zb") if len(kernel.inputs) > 3 else zero
    a_element, b_element = llvm_type(a_type.dtype), llvm_type(b_type.dtype)
    with for_range(builder, rows, "i") as i:
        c_row = element_pointer(builder, kernel.output, builder.mul(i, i64(columns)), I32, "c_row")
        fill_elements(builder, c_row, columns, zero, "zero")
        a_row = element_pointer(builder, kernel.inputs[0], builder.mul(i, i64(depth)), a_element, "a_row")
        with for_range(builder, depth, "k") as k:
            a_ik = builder.sub(scalar.convert(builder, load_element(builder, a_row, k, a_element), a_type.dtype,
                                              DType.i32), a_zero, name="a_ik")
            b_row = element_pointer(builder, kernel.inputs[1], builder.mul(k, i64(columns)), b_element, "b_row")
            with for_range(builder, columns, "j") as j:
                b_kj = builder.sub(scalar.convert(builder, load_element(builder, b_row, j, b_element), b_type.dtype,
                                                  DType.i32), b_zero, name="b_kj")
                total = builder.add(load_element(builder, c_row, j, I32), builder.mul(a_ik, b_kj), name="c_ij")
                store_element(builder, total, c_row, j)


register_lowering("matmul_integer", Lowering(emit_matmul_integer, INT8))


# --- value ranges (dynamic quantization) ------------------------------------------------------

RANGE_CHAINS = 4  # independent (min, max) accumulators of the range loop


def range_with_zero(builder: ir.IRBuilder, x: ir.Value, count: int, width: int) -> tuple[ir.Value, ir.Value]:
    """(min, max) of 0 and the `count` floats at x, NaN skipped (as the reference's np.where(isnan)):
    RANGE_CHAINS vectors of `width` a step, each into its own accumulators, then a horizontal
    reduction and the last few one by one.

    Each update is `x < low ? x : low` (and `>` for high), false for a NaN x, so the accumulator
    (never NaN: it starts at 0) stays: on x86 that is one vminps / vmaxps, whose NaN rule (the
    second operand on an unordered compare) is the select's; llvm.minnum took three dependent
    instructions there, and one accumulator pair made the loop wait on them (BERT-base's 768-wide
    input took about as long as its int8 GEMM). Written in vectors, not left to LLVM's loop
    vectorizer: on a scalar loop its cost models disagree for some trip counts (120, 121, 136
    seen), an assertion that aborts."""
    vector = ir.VectorType(F32, width)

    def update(low: ir.Value, high: ir.Value, value: ir.Value) -> list[ir.Value]:
        return [_lower(builder, value, low), _higher(builder, value, high)]

    def step(index: ir.Value, values: list[ir.Value]) -> list[ir.Value]:
        at = element_pointer(builder, x, builder.mul(index, i64(width * RANGE_CHAINS)), F32)
        updated = []
        for chain in range(RANGE_CHAINS):
            value = builder.load(element_pointer(builder, at, chain * width, F32), typ=vector, align=FLOAT_BYTES)
            updated += update(*values[2 * chain:2 * chain + 2], value)
        return updated

    zeros = ir.Constant(vector, [0.0] * width)
    step_size = width * RANGE_CHAINS
    values = carried_loop(builder, i64(0), i64(count // step_size), [zeros] * (2 * RANGE_CHAINS), step, "range")
    lows, highs = values[0::2], values[1::2]
    for chain in range(1, RANGE_CHAINS):  # fold the chains (no NaN in them)
        lows[0], highs[0] = _lower(builder, lows[chain], lows[0]), _higher(builder, highs[chain], highs[0])
    done = count - count % step_size

    def single(index: ir.Value, values: list[ir.Value]) -> list[ir.Value]:  # the whole vectors left
        at = element_pointer(builder, x, builder.add(i64(done), builder.mul(index, i64(width))), F32)
        return update(*values, builder.load(at, typ=vector, align=FLOAT_BYTES))

    low, high = carried_loop(builder, i64(0), i64(count % step_size // width), [lows[0], highs[0]], single,
                             "range.rest")
    suffix = f"v{width}f32"
    low = call_intrinsic(builder, f"llvm.vector.reduce.fmin.{suffix}", F32, [low], "low")
    high = call_intrinsic(builder, f"llvm.vector.reduce.fmax.{suffix}", F32, [high], "high")
    for index in range(count - count % width, count):
        low, high = update(low, high, load_element(builder, x, index, F32))
    return low, high


def fold_ranges(builder: ir.IRBuilder, ranges: ir.Value, blocks: int) -> tuple[ir.Value, ir.Value]:
    """(min, max) of value_range's [2, blocks] partial ranges (each already holds 0, none is NaN)."""
    low, high = load_element(builder, ranges, 0, F32), load_element(builder, ranges, blocks, F32)
    for block in range(1, blocks):
        low = _lower(builder, load_element(builder, ranges, block, F32), low)
        high = _higher(builder, load_element(builder, ranges, blocks + block, F32), high)
    return low, high


def _lower(builder: ir.IRBuilder, value: ir.Value, low: ir.Value) -> ir.Value:
    """value < low ? value : low: `low` when value is NaN (one vminps on x86)."""
    return builder.select(builder.fcmp_ordered("<", value, low), value, low)


def _higher(builder: ir.IRBuilder, value: ir.Value, high: ir.Value) -> ir.Value:
    return builder.select(builder.fcmp_ordered(">", value, high), value, high)


def value_range_parts(node: Node, target: Target, threads: int) -> int:
    """Blocks of rows shared among the threads from parallel.PARALLEL_BYTES of x."""
    if node.inputs[0].type.nbytes < parallel.PARALLEL_BYTES:
        return 1
    return parallel.split_parts(node.attrs["blocks"], threads)[0]


def emit_value_range(kernel: Kernel) -> None:
    """Each block's range (range_with_zero over its rows: one run of floats) into column `block` of
    the [2, blocks] result; a part takes whole blocks (parallel.part_bounds), an empty block gives 0 and 0."""
    node, builder = kernel.node, kernel.builder
    blocks = node.attrs["blocks"]
    rows, length, per_block = range_rows(node.inputs[0].shape, blocks)
    x, out = kernel.inputs[0], kernel.output
    full, last = rows // per_block, rows % per_block  # whole blocks, the rows of a partial one after them
    width = kernel.target.vector_width

    def write(block: ir.Value, low: ir.Value, high: ir.Value) -> None:
        store_element(builder, low, out, block)
        store_element(builder, high, out, builder.add(block, i64(blocks)))

    def block_range(block: ir.Value, count: int) -> None:
        start = element_pointer(builder, x, builder.mul(block, i64(per_block * length)), F32, "block.x")
        write(block, *range_with_zero(builder, start, count * length, width))

    first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, blocks, "blocks")
    with for_range(builder, count, "block", unroll=False) as index:
        block = builder.add(first, index, name="block")
        with builder.if_else(builder.icmp_unsigned("<", block, i64(full))) as (whole, rest):
            with whole:
                block_range(block, per_block)
            with rest:  # past the whole blocks: empty, but for the partial one right after them
                write(block, ir.Constant(F32, 0.0), ir.Constant(F32, 0.0))
                if last:
                    with builder.if_then(builder.icmp_unsigned("==", block, i64(full))):
                        block_range(block, last)


register_lowering("value_range", Lowering(emit_value_range, FLOAT, parts=value_range_parts))
