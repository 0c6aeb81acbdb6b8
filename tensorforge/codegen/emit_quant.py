"""Emission of quantize and dequantize: one elementwise loop each, the same f32 steps as the reference.

    quantize:    t = rint(x / scale) + float(zero_point); t = min(max(t, qmin), qmax); q = int(t)
                 (NaN -> zero_point), bit for bit what ir/ops_quant.py computes
    dequantize:  y = float(int32(q) - zero_point) * scale
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..ir import DType
from . import scalar
from .emit_elementwise import map_elements
from .kernel import Kernel
from .llvm_utils import F32, call_intrinsic


def emit_quantize(kernel: Kernel) -> None:
    target = kernel.node.dtype
    info = np.iinfo(target.numpy)
    low, high = ir.Constant(F32, float(info.min)), ir.Constant(F32, float(info.max))

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        x, scale, zero_point = values
        zero = builder.sitofp(zero_point, F32, name="zero_point")
        rounded = call_intrinsic(builder, "llvm.rint.f32", F32, [builder.fdiv(x, scale, name="scaled")], "rounded")
        shifted = builder.fadd(rounded, zero, name="shifted")
        clipped = builder.select(builder.fcmp_ordered("<", shifted, low), low, shifted)
        clipped = builder.select(builder.fcmp_ordered(">", clipped, high), high, clipped, name="clipped")
        code = builder.select(builder.fcmp_unordered("uno", clipped, clipped), zero, clipped, name="code")
        return scalar.convert(builder, code, DType.f32, target, name="q")

    map_elements(kernel, compute)


def emit_dequantize(kernel: Kernel) -> None:
    source = kernel.dtype

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        q, scale, zero_point = values
        wide = scalar.convert(builder, q, source, DType.i32, name="wide") if source is not DType.i32 else q
        difference = builder.sub(wide, zero_point, name="difference")
        return builder.fmul(builder.sitofp(difference, F32), scale, name="y")

    map_elements(kernel, compute)

