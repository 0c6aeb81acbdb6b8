"""Emission of quantize and dequantize: one elementwise loop each, the same f32 steps as the reference.

    quantize:    t = rint(x / scale) + float(zero_point); t = min(max(t, qmin), qmax); q = int(t)
                 (NaN -> zero_point), bit for bit what ir/ops_quant.py computes
    dequantize:  y = float(int32(q) - zero_point) * scale
    matmul_integer: (a - za) @ (b - zb) in int32, a widening loop nest
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from ...ir import DType
from ..kernel import Kernel
from ..llvm import scalar
from ..llvm.utils import (
    F32,
    I32,
    call_intrinsic,
    element_pointer,
    fill_elements,
    for_range,
    i64,
    llvm_type,
    load_element,
    store_element,
)
from ..lowering import FLOAT, INT8, Lowering, register_lowering
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
