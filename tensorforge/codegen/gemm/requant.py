"""The epilogue of the int8 GEMM (gemm/qgemm.py): from a tile of int32 accumulators to the result.

    acc + bias - correction * colsum(w)           (the int32 bias; correction = shift + zx)
    rint(f32(that) * m) + zy, clipped             an int8 result (relu: clipped at zy)
    f32(that) * m                                 an f32 result
    f32(acc - correction * colsum) * (sx * m) + bias (+ residual), activation     dynamic_qlinear

exactly as the reference interpreter computes them. The vector micro-kernels (qgemm.py) call
`write_tile` on their accumulator registers, the AMX one (amx.py) on rows it loads back from its
tiles: one epilogue for every scheme.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ...ir import DType
from ..llvm import float_math
from ..llvm.utils import F32, I8, I32, I64, PTR, call_intrinsic, element_pointer, i64
from .micro_kernel import load_lanes, splat, store_lanes


@dataclass(frozen=True)
class Requant:
    """The epilogue of one int8 GEMM: result dtype, activation (relu, or for an f32 result any of
    ir.ops_nn.LINEAR_ACTIVATIONS), whether the multiplier is per column, and dynamic_qlinear's
    `dynamic` epilogue: its f32 result is f32(acc) * (sx * m) + bias (+ the residual) with x's scale sx
    known at run time and an f32 bias per column (the int32 bias is not read), as the reference."""

    dtype: DType
    activation: str | None
    per_column: bool
    dynamic: bool = False
    residual: bool = False

    def __post_init__(self):
        if self.dtype is not DType.f32 and self.activation not in (None, "relu"):
            raise ValueError(f"an int8 GEMM with a {self.dtype.name} result cannot end in {self.activation}")

    @property
    def suffix(self) -> str:
        parts = (self.dtype.name, self.activation, self.per_column and "mcol", self.dynamic and "dynamic",
                 self.residual and "residual")
        return "".join(f".{part}" for part in parts if part)


@dataclass(frozen=True)
class TileArguments:
    """The micro-kernel arguments the epilogue reads: c (and the residual) at the tile's first element
    with row stride ldc; bias, colsum and m at the tile's first column (m at the scalar multiplier
    when it is not per column); the scalars correction (i32), zy, low, high and sx (f32)."""

    c: ir.Value
    ldc: ir.Value
    bias: ir.Value
    colsum: ir.Value
    multiplier: ir.Value
    correction: ir.Value
    zero: ir.Value
    low: ir.Value
    high: ir.Value
    x_scale: ir.Value
    residual: ir.Value


# The micro-kernels' arguments the epilogue reads (TileArguments), in this order after their own
EPILOGUE_ARGUMENTS = [("c", PTR), ("ldc", I64), ("bias", PTR), ("colsum", PTR), ("m", PTR), ("correction", I32),
                      ("zy", F32), ("low", F32), ("high", F32), ("sx", F32), ("residual", PTR)]


def write_tile(builder: ir.IRBuilder, requant: Requant, lanes: int, rows: int, columns: int, tile: TileArguments,
               accumulator: Callable[[int, int], ir.Value]) -> None:
    """Requantize and store a rows x columns tile whose int32 vector (of `lanes` lanes) for row r and
    vector v of columns is accumulator(r, v)."""
    counts = [min(lanes, columns - v * lanes) for v in range(-(-columns // lanes))]
    int_vector, vector = ir.VectorType(I32, lanes), ir.VectorType(F32, lanes)
    offsets = []  # per column: bias - correction * colsum (the dynamic epilogue adds its f32 bias later)
    for v, count in enumerate(counts):
        sums = load_lanes(builder, element_pointer(builder, tile.colsum, v * lanes, I32), count, int_vector)
        offset = builder.mul(splat(builder, tile.correction, int_vector), sums)
        if requant.dynamic:
            offsets.append(builder.neg(offset))
        else:
            column_bias = load_lanes(builder, element_pointer(builder, tile.bias, v * lanes, I32), count, int_vector)
            offsets.append(builder.sub(column_bias, offset))
    if requant.per_column:
        scales = [load_lanes(builder, element_pointer(builder, tile.multiplier, v * lanes, F32), count, vector)
                  for v, count in enumerate(counts)]
    else:
        scales = [splat(builder, builder.load(tile.multiplier, typ=F32), vector)] * len(counts)
    float_bias: Sequence[ir.Value] = ()
    if requant.dynamic:  # f32(acc) * (sx * sw) + bias, as the reference
        scales = [builder.fmul(splat(builder, tile.x_scale, vector), scale) for scale in scales]
        float_bias = [load_lanes(builder, element_pointer(builder, tile.bias, v * lanes, F32), count, vector)
                      for v, count in enumerate(counts)]
    out_element = F32 if requant.dtype is DType.f32 else I8
    zero_v, low_v, high_v = (splat(builder, value, vector) for value in (tile.zero, tile.low, tile.high))
    for r in range(rows):
        row = element_pointer(builder, tile.c, builder.mul(tile.ldc, i64(r)), out_element, f"c{r}")
        skip = (element_pointer(builder, tile.residual, builder.mul(tile.ldc, i64(r)), F32, f"r{r}")
                if requant.residual else None)
        for v, count in enumerate(counts):
            total = builder.add(accumulator(r, v), offsets[v])
            scaled = builder.fmul(builder.sitofp(total, vector), scales[v])
            if requant.dtype is DType.f32:
                if requant.dynamic:
                    scaled = builder.fadd(scaled, float_bias[v])
                if skip is not None:
                    scaled = builder.fadd(scaled, load_lanes(builder, element_pointer(builder, skip, v * lanes, F32),
                                                             count, vector))
                result = float_math.activation(builder, requant.activation, scaled)
            else:
                code = builder.fadd(call_intrinsic(builder, f"llvm.rint.v{lanes}f32", vector, [scaled]), zero_v)
                code = builder.select(builder.fcmp_ordered("<", code, low_v), low_v, code)
                code = builder.select(builder.fcmp_ordered(">", code, high_v), high_v, code)
                result = builder.trunc(builder.fptosi(code, int_vector), ir.VectorType(I8, lanes))
            store_lanes(builder, result, element_pointer(builder, row, v * lanes, out_element), count)


def requant_limits(builder: ir.IRBuilder, dtype: DType, relu: bool,
                   zy: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
    """(low, high, zy) as f32 for the requantizing epilogue (ops_quant.requantize_limits)."""
    zero, low, high = builder.sitofp(zy, F32, name="zy"), ir.Constant(F32, 0.0), ir.Constant(F32, 0.0)
    if dtype is not DType.f32:
        info = np.iinfo(dtype.numpy)
        low = ir.Constant(F32, float(info.min))
        if relu:
            clipped = builder.select(builder.icmp_signed(">", zy, ir.Constant(I32, int(info.max))),
                                     ir.Constant(I32, int(info.max)), zy)
            low = builder.select(builder.icmp_signed(">", clipped, ir.Constant(I32, int(info.min))),
                                 builder.sitofp(clipped, F32), low, name="low")
        high = ir.Constant(F32, float(info.max))
    return low, high, zero
