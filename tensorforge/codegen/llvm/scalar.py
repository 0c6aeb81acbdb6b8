"""Scalar arithmetic on loaded elements, with numpy's meaning for each dtype.

    add(builder, DType.f32, x, y)     -> fadd       add(builder, DType.bool, x, y) -> or (numpy's bool +)
    maximum(builder, DType.u8, x, y)  -> llvm.umax  maximum on f32 -> llvm.maximum (NaN wins, as in np.maximum)
    convert(builder, x, DType.f32, DType.i8) -> llvm.fptosi.sat (truncates, saturates, NaN -> 0)

Integers wrap around (two's complement), as numpy's fixed-width integers do. bool lives in memory
as a byte holding 0 or 1; every operation here keeps it that way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from llvmlite import ir

from ...ir import DType
from .float_math import float_intrinsic, like
from .utils import I8, call_intrinsic, lane_indices, llvm_type

SIGNED = frozenset({DType.i8, DType.i32, DType.i64})


def is_signed(dtype: DType) -> bool:
    return dtype in SIGNED


def constant(dtype: DType, value: float | int) -> ir.Constant:
    """A constant element of `dtype` (floats are rounded to f32)."""
    return ir.Constant(llvm_type(dtype), float(value) if dtype.is_float else int(value))


def lowest(dtype: DType) -> ir.Constant:
    """The identity of `maximum`: -inf for f32, the smallest value of an integer dtype."""
    if dtype.is_float:
        return constant(dtype, -np.inf)
    if dtype is DType.bool:
        return constant(dtype, 0)
    return constant(dtype, np.iinfo(dtype.numpy).min)


def add(builder: ir.IRBuilder, dtype: DType, x: ir.Value, y: ir.Value, name: str = "",
        flags: Sequence[str] = ()) -> ir.Value:
    """x + y; `flags` are fast-math flags, applied to f32 only."""
    if dtype.is_float:
        return builder.fadd(x, y, name=name, flags=tuple(flags))
    if dtype is DType.bool:
        return builder.or_(x, y, name=name)
    return builder.add(x, y, name=name)


def sub(builder: ir.IRBuilder, dtype: DType, x: ir.Value, y: ir.Value, name: str = "") -> ir.Value:
    if dtype.is_float:
        return builder.fsub(x, y, name=name)
    return builder.sub(x, y, name=name)


def mul(builder: ir.IRBuilder, dtype: DType, x: ir.Value, y: ir.Value, name: str = "",
        flags: Sequence[str] = ()) -> ir.Value:
    """x * y; `flags` are fast-math flags, applied to f32 only."""
    if dtype.is_float:
        return builder.fmul(x, y, name=name, flags=tuple(flags))
    if dtype is DType.bool:
        return builder.and_(x, y, name=name)
    return builder.mul(x, y, name=name)


def divide(builder: ir.IRBuilder, dtype: DType, x: ir.Value, y: ir.Value, name: str = "") -> ir.Value:
    return builder.fdiv(x, y, name=name)


def maximum(builder: ir.IRBuilder, dtype: DType, x: ir.Value, y: ir.Value, name: str = "") -> ir.Value:
    """np.maximum: a NaN operand gives NaN; integers compare signed or unsigned by dtype. f32 scalars
    or vectors."""
    if dtype.is_float:
        return float_intrinsic(builder, "maximum", [x, y], name)
    kind = "smax" if is_signed(dtype) else "umax"
    return call_intrinsic(builder, f"llvm.{kind}.i{x.type.width}", x.type, [x, y], name)


def maximum_of(builder: ir.IRBuilder, dtype: DType, values: Sequence[ir.Value], native: bool = True,
               name: str = "max") -> ir.Value:
    """np.max of `values` (scalars or vectors of one type), combined as a balanced tree so no step waits
    on a chain of the others.

    `native`: the target computes llvm.maximum in one instruction (AArch64's fmax). x86 has none: each
    llvm.maximum there expands into six (the NaN and signed-zero fix-ups), so floats take a tree of
    select(a > b, a, b), one vmaxps each, and the result is NaN where an unordered compare of the
    values in pairs found one (a pool's 3 x 3 window: 8 vmaxps, 5 compares, 4 mask ors, one blend).
    Of +0 and -0 either may be returned, as np.maximum's own order does.
    """
    values = list(values)
    if not dtype.is_float or native:
        return _tree(values, lambda x, y: maximum(builder, dtype, x, y, name))
    largest = _tree(values, lambda x, y: builder.select(builder.fcmp_ordered(">", x, y), x, y, name=name))
    pairs = [(values[k], values[min(k + 1, len(values) - 1)]) for k in range(0, len(values), 2)]
    unordered = _tree([builder.fcmp_unordered("uno", x, y) for x, y in pairs],
                      lambda x, y: builder.or_(x, y, name=f"{name}.nan"))
    return builder.select(unordered, like(largest, float("nan")), largest, name=name)


def maximum_across_lanes(builder: ir.IRBuilder, vector: ir.Value, native: bool = True,
                         name: str = "max") -> ir.Value:
    """np.max of an f32 vector's lanes (a power of two of them): maximum_of the vector's halves, then of
    theirs, down to one lane (NaN wins, as in maximum_of)."""
    width = vector.type.count
    while width > 1:
        width //= 2
        halves = [builder.shuffle_vector(vector, ir.Constant(vector.type, None),
                                         lane_indices(range(start, start + width))) for start in (0, width)]
        vector = maximum_of(builder, DType.f32, halves, native, name)
    return builder.extract_element(vector, ir.Constant(ir.IntType(64), 0), name=name)


def sum_of(builder: ir.IRBuilder, dtype: DType, values: Sequence[ir.Value], name: str = "sum") -> ir.Value:
    """The sum of `values`, added as a balanced tree."""
    return _tree(list(values), lambda x, y: add(builder, dtype, x, y, name))


def _tree(values: list[ir.Value], combine) -> ir.Value:
    while len(values) > 1:
        values = [combine(values[k], values[k + 1]) if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
    return values[0]


def minimum(builder: ir.IRBuilder, dtype: DType, x: ir.Value, y: ir.Value, name: str = "") -> ir.Value:
    """np.minimum: a NaN operand gives NaN; integers compare signed or unsigned by dtype. f32 scalars
    or vectors."""
    if dtype.is_float:
        return float_intrinsic(builder, "minimum", [x, y], name)
    kind = "smin" if is_signed(dtype) else "umin"
    return call_intrinsic(builder, f"llvm.{kind}.i{x.type.width}", x.type, [x, y], name)


COMPARISONS = {"equal": "==", "not_equal": "!=", "less": "<", "less_equal": "<=", "greater": ">",
               "greater_equal": ">="}


def compare(builder: ir.IRBuilder, dtype: DType, op: str, x: ir.Value, y: ir.Value, name: str = "") -> ir.Value:
    """A comparison op (COMPARISONS) as a bool byte: IEEE for f32 (NaN compares false, and != true),
    signed or unsigned by dtype for integers, unsigned for bools."""
    symbol = COMPARISONS[op]
    if dtype.is_float:
        compare_ = builder.fcmp_unordered if symbol == "!=" else builder.fcmp_ordered
        result = compare_(symbol, x, y, name=f"{name}.i1")
    elif is_signed(dtype):
        result = builder.icmp_signed(symbol, x, y, name=f"{name}.i1")
    else:
        result = builder.icmp_unsigned(symbol, x, y, name=f"{name}.i1")
    return builder.zext(result, I8, name=name)


def clip(builder: ir.IRBuilder, dtype: DType, x: ir.Value, low: float | None, high: float | None,
         name: str = "") -> ir.Value:
    """The clip op: min(max(x, low), high), either bound optional; NaN stays NaN. For integers the
    bounds round inward (ceil(low), floor(high)) and a bound past the dtype's range changes nothing."""
    if dtype.is_float:
        if low is not None:
            below = builder.fcmp_ordered("<", x, constant(dtype, low), name=f"{name}.below")
            x = builder.select(below, constant(dtype, low), x, name=f"{name}.low")
        if high is not None:
            above = builder.fcmp_ordered(">", x, constant(dtype, high), name=f"{name}.above")
            x = builder.select(above, constant(dtype, high), x, name=f"{name}.high")
        return x
    info = np.iinfo(dtype.numpy)
    if low is not None and np.ceil(low) > info.min:
        x = maximum(builder, dtype, x, constant(dtype, min(int(np.ceil(low)), info.max)), f"{name}.low")
    if high is not None and np.floor(high) < info.max:
        x = minimum(builder, dtype, x, constant(dtype, max(int(np.floor(high)), info.min)), f"{name}.high")
    return x


def negate(builder: ir.IRBuilder, dtype: DType, x: ir.Value, name: str = "") -> ir.Value:
    """-x; unsigned values wrap around, as in numpy."""
    if dtype.is_float:
        return builder.fneg(x, name=name)
    return builder.neg(x, name=name)


def relu(builder: ir.IRBuilder, dtype: DType, x: ir.Value, name: str = "") -> ir.Value:
    """np.maximum(x, 0): NaN stays NaN; unsigned values and bools are already >= 0."""
    if dtype.is_float:
        keep = builder.fcmp_unordered(">=", x, constant(dtype, 0), name=f"{name}.keep")
        return builder.select(keep, x, constant(dtype, 0), name=name)
    if is_signed(dtype):
        return maximum(builder, dtype, x, constant(dtype, 0), name)
    return x


def convert(builder: ir.IRBuilder, x: ir.Value, source: DType, target: DType, name: str = "") -> ir.Value:
    """The `cast` op on one element.

    float -> int truncates toward zero and saturates (NaN -> 0); int -> int wraps; int -> float
    rounds to nearest; anything -> bool is `x != 0` (NaN != 0 is true).
    """
    if source is target:
        return x
    if target is DType.bool:
        if source.is_float:
            nonzero = builder.fcmp_unordered("!=", x, constant(source, 0), name=f"{name}.nonzero")
        else:
            nonzero = builder.icmp_unsigned("!=", x, constant(source, 0), name=f"{name}.nonzero")
        return builder.zext(nonzero, I8, name=name)
    to_type = llvm_type(target)
    if source.is_float:
        kind = "fptosi" if is_signed(target) else "fptoui"
        return call_intrinsic(builder, f"llvm.{kind}.sat.i{to_type.width}.f32", to_type, [x], name)
    if target.is_float:
        if is_signed(source):
            return builder.sitofp(x, to_type, name=name)
        return builder.uitofp(x, to_type, name=name)
    if to_type.width > x.type.width:
        if is_signed(source):
            return builder.sext(x, to_type, name=name)
        return builder.zext(x, to_type, name=name)
    if to_type.width < x.type.width:
        return builder.trunc(x, to_type, name=name)
    return x
