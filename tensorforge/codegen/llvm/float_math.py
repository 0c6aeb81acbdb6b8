"""f32 math functions emitted inline: exp, log, sqrt, tanh, sigmoid and the three GELUs.

Each function takes an f32 or a vector of f32 (the GEMM epilogue's gelu runs on its tile's
vectors; `like` makes the constants of either type). exp is computed inline (range reduction and a
polynomial, about 1 ulp), so the loops of exp, tanh, sigmoid, gelu and softmax vectorize; a call
to libm's expf would be made once per element. log is `llvm.log.f32` (a call to logf, which both
the host JIT and the AArch64 runner resolve from libm); sqrt and fabs are instructions. Each
formula follows the numpy reference in tensorforge/ir/ops_math.py:

    sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below, with e = exp(-|x|)   (never overflows)
    gelu(x)    = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))      approximation "tanh"
               = x sigmoid(1.702 x)                                   approximation "sigmoid"
               = 0.5 x (1 + erf(x / sqrt 2)) = 0.5 x erfc(-x / sqrt 2)  approximation "exact"
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from .utils import F32, I32, call_intrinsic

# exp(x) = 2^n exp(r) with n = round(x / ln 2) and r = x - n ln 2, where ln 2 = LN2_HIGH + LN2_LOW
# (Cody and Waite: LN2_HIGH has 9 significant bits, so n * LN2_HIGH is exact); exp(r) for
# |r| <= ln(2)/2 is 1 + r + r^2 P(r) with Cephes' expf coefficients (from r^0 up). Measured: relative
# error below 8.1e-8 over the normal range. Inputs are clamped to [-104, 89] first, beyond which
# the f32 result is 0 or inf anyway; this keeps n in [-150, 128].
EXP_LOWEST, EXP_HIGHEST = -104.0, 89.0
LOG2_E = 1.4426950408889634
LN2_HIGH, LN2_LOW = 0.693359375, -2.12194440e-4
EXP_COEFFICIENTS = (5.0000001201e-1, 1.6666665459e-1, 4.1665795894e-2, 8.3334519073e-3, 1.3981999507e-3,
                    1.9875691500e-4)
ROUND_TO_INTEGER = 12582912.0  # 1.5 * 2^23: (y + it) - it is y rounded to an integer, for |y| < 2^22

# erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), for z >= 0: relative error below 1.2e-7
# everywhere (Numerical Recipes' erfcc, a Chebyshev fit). Coefficients of P from t^0 up.
ERFC_COEFFICIENTS = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
                     -1.13520398, 1.48851587, -0.82215223, 0.17087277)

# tanh(x) = x + x^3 (-1/3 + x^2 (2/15 + x^2 (-17/315))) for |x| < 1/8 (Taylor, error < 3e-10);
# above, (1 - e) / (1 + e) with e = exp(-2|x|) loses less than 3e-7 relative to cancellation.
TANH_SERIES = (-1 / 3, 2 / 15, -17 / 315)
TANH_SERIES_BOUND = 0.125


def f32(value: float) -> ir.Constant:
    return ir.Constant(F32, value)


def like(x: ir.Value, value) -> ir.Constant:
    """The constant `value` of x's type: a scalar, or splat over every lane of a vector."""
    if isinstance(x.type, ir.VectorType):
        return ir.Constant(x.type, [value] * x.type.count)
    return ir.Constant(x.type, value)


def _shaped(x: ir.Value, element: ir.Type) -> ir.Type:
    """`element`, or a vector of it with as many lanes as x."""
    return ir.VectorType(element, x.type.count) if isinstance(x.type, ir.VectorType) else element


def float_intrinsic(builder: ir.IRBuilder, base: str, arguments: list[ir.Value], name: str) -> ir.Value:
    """llvm.<base>.f32, or .v<N>f32 on vectors, of the f32 values `arguments`."""
    x = arguments[0]
    suffix = f"v{x.type.count}f32" if isinstance(x.type, ir.VectorType) else "f32"
    return call_intrinsic(builder, f"llvm.{base}.{suffix}", x.type, arguments, name)


def fabs(builder: ir.IRBuilder, x: ir.Value, name: str = "") -> ir.Value:
    return float_intrinsic(builder, "fabs", [x], name)


def polynomial(builder: ir.IRBuilder, t: ir.Value, coefficients: tuple[float, ...], name: str) -> ir.Value:
    """c0 + t (c1 + t (c2 + ...)) by Horner's rule; coefficients from t^0 up. Each step is
    llvm.fmuladd: one FMA where the target has it (x86-64-v3 and up, AArch64), else a multiply and
    an add; a fused step rounds once, so it is no less accurate."""
    result = like(t, coefficients[-1])
    for coefficient in reversed(coefficients[:-1]):
        result = float_intrinsic(builder, "fmuladd", [result, t, like(t, coefficient)], name)
    return result


def power_of_two(builder: ir.IRBuilder, exponent: ir.Value, name: str) -> ir.Value:
    """2^exponent as f32, for an i32 exponent in [-126, 127]: the exponent field set directly."""
    biased = builder.add(exponent, like(exponent, 127), name=f"{name}.biased")
    return builder.bitcast(builder.shl(biased, like(exponent, 23)), _shaped(exponent, F32), name=name)


def exp(builder: ir.IRBuilder, x: ir.Value, name: str = "exp") -> ir.Value:
    """e^x (see EXP_COEFFICIENTS): exp(-inf) = 0, exp(inf) = inf, NaN stays NaN."""
    too_low = builder.fcmp_ordered("<", x, like(x, EXP_LOWEST), name=f"{name}.too_low")
    clamped = builder.select(too_low, like(x, EXP_LOWEST), x)
    too_high = builder.fcmp_ordered(">", clamped, like(x, EXP_HIGHEST), name=f"{name}.too_high")
    clamped = builder.select(too_high, like(x, EXP_HIGHEST), clamped, name=f"{name}.clamped")

    shifted = builder.fadd(builder.fmul(clamped, like(x, LOG2_E)), like(x, ROUND_TO_INTEGER), name=f"{name}.shifted")
    n_float = builder.fsub(shifted, like(x, ROUND_TO_INTEGER), name=f"{name}.n_float")
    bits = builder.bitcast(shifted, _shaped(x, I32))
    n = builder.sub(bits, like(bits, int(np.float32(ROUND_TO_INTEGER).view(np.int32))), name=f"{name}.n")
    r = builder.fsub(clamped, builder.fmul(n_float, like(x, LN2_HIGH)))
    r = builder.fsub(r, builder.fmul(n_float, like(x, LN2_LOW)), name=f"{name}.r")

    p = polynomial(builder, r, EXP_COEFFICIENTS, f"{name}.p")
    exp_r = builder.fadd(builder.fadd(builder.fmul(p, builder.fmul(r, r)), r), like(x, 1.0), name=f"{name}.exp_r")
    # 2^n as 2^half * 2^(n - half): both factors stay normal although n may be -150 or 128
    half = builder.ashr(n, like(n, 1), name=f"{name}.half")
    scaled = builder.fmul(exp_r, power_of_two(builder, half, f"{name}.scale"))
    return builder.fmul(scaled, power_of_two(builder, builder.sub(n, half), f"{name}.rest"), name=name)


def log(builder: ir.IRBuilder, x: ir.Value, name: str = "") -> ir.Value:
    return float_intrinsic(builder, "log", [x], name)


def sqrt(builder: ir.IRBuilder, x: ir.Value, name: str = "") -> ir.Value:
    return float_intrinsic(builder, "sqrt", [x], name)


def tanh(builder: ir.IRBuilder, x: ir.Value, name: str = "tanh") -> ir.Value:
    """tanh(x) without overflow: sign(x) (1 - e) / (1 + e), e = exp(-2|x|); a series near 0."""
    magnitude = fabs(builder, x, f"{name}.abs")
    e = exp(builder, builder.fmul(magnitude, like(x, -2.0)), f"{name}.e")
    ratio = builder.fdiv(builder.fsub(like(x, 1.0), e), builder.fadd(like(x, 1.0), e), name=f"{name}.ratio")
    signed = float_intrinsic(builder, "copysign", [ratio, x], f"{name}.large")
    square = builder.fmul(x, x, name=f"{name}.x2")
    series = polynomial(builder, square, TANH_SERIES, f"{name}.series")
    small = builder.fadd(x, builder.fmul(builder.fmul(x, square), series), name=f"{name}.small")
    near_zero = builder.fcmp_ordered("<", magnitude, like(x, TANH_SERIES_BOUND), name=f"{name}.near_zero")
    return builder.select(near_zero, small, signed, name=name)


def sigmoid(builder: ir.IRBuilder, x: ir.Value, name: str = "sigmoid") -> ir.Value:
    """1 / (1 + e^-x), computed as the numpy reference does so that it never overflows."""
    e = exp(builder, builder.fneg(fabs(builder, x, f"{name}.abs")), f"{name}.e")
    denominator = builder.fadd(like(x, 1.0), e, name=f"{name}.denominator")
    positive = builder.fdiv(like(x, 1.0), denominator, name=f"{name}.positive")
    negative = builder.fdiv(e, denominator, name=f"{name}.negative")
    is_positive = builder.fcmp_ordered(">=", x, like(x, 0.0), name=f"{name}.is_positive")
    return builder.select(is_positive, positive, negative, name=name)


def gelu_tanh(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in the reference's order of operations."""
    cube = builder.fmul(builder.fmul(builder.fmul(like(x, 0.044715), x), x), x, name="gelu.cube")
    inner = builder.fmul(like(x, math.sqrt(2 / math.pi)), builder.fadd(x, cube), name="gelu.inner")
    one_plus = builder.fadd(like(x, 1.0), tanh(builder, inner, "gelu.tanh"), name="gelu.one_plus")
    return builder.fmul(builder.fmul(like(x, 0.5), x), one_plus, name="gelu")


def gelu_sigmoid(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """x sigmoid(1.702 x), TinyTorch's GELU."""
    scaled = builder.fmul(like(x, 1.702), x, name="gelu.scaled")
    return builder.fmul(x, sigmoid(builder, scaled, "gelu.sigmoid"), name="gelu")


def erfc_of_magnitude(builder: ir.IRBuilder, z: ir.Value, name: str = "erfc") -> ir.Value:
    """erfc(|z|), with relative error below 1.2e-7 (see ERFC_COEFFICIENTS) plus about z^2 * 2^-24 from
    rounding z^2 in f32: under 1e-5 while |z| < 7, where erfc is 1e-23 and GELU's -x erfc/2 is 4e-23."""
    magnitude = fabs(builder, z, f"{name}.abs")
    t = builder.fdiv(like(z, 1.0), builder.fadd(like(z, 1.0), builder.fmul(like(z, 0.5), magnitude)), name=f"{name}.t")
    exponent = builder.fsub(polynomial(builder, t, ERFC_COEFFICIENTS, f"{name}.p"),
                            builder.fmul(magnitude, magnitude), name=f"{name}.exponent")
    return builder.fmul(t, exp(builder, exponent, f"{name}.exp"), name=name)


def gelu_exact(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """0.5 x (1 + erf(x / sqrt 2)): x (1 - erfc(z)/2) for z >= 0 and x erfc(-z)/2 below.

    Writing it with erfc keeps the relative error small in the negative tail, where 1 + erf
    would cancel.
    """
    z = builder.fmul(x, like(x, 1 / math.sqrt(2)), name="gelu.z")
    half_erfc = builder.fmul(like(x, 0.5), erfc_of_magnitude(builder, z, "gelu.erfc"), name="gelu.half_erfc")
    positive = builder.fmul(x, builder.fsub(like(x, 1.0), half_erfc), name="gelu.positive")
    negative = builder.fmul(x, half_erfc, name="gelu.negative")
    is_positive = builder.fcmp_ordered(">=", z, like(x, 0.0), name="gelu.is_positive")
    return builder.select(is_positive, positive, negative, name="gelu")


# erf(x) = 2/sqrt(pi) (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320) for |x| < 0.5: the next
# term is under 1.3e-8 there, and 1 - erfc(|x|) would lose digits to cancellation near 0
ERF_SERIES = tuple(2 / math.sqrt(math.pi) * c for c in (1, -1 / 3, 1 / 10, -1 / 42, 1 / 216, -1 / 1320))
ERF_SERIES_BOUND = 0.5


def erf(builder: ir.IRBuilder, x: ir.Value, name: str = "erf") -> ir.Value:
    """The error function: an odd series near 0, sign(x) (1 - erfc(|x|)) beyond (see erfc_of_magnitude)."""
    square = builder.fmul(x, x, name=f"{name}.x2")
    series = builder.fmul(x, polynomial(builder, square, ERF_SERIES, f"{name}.series"), name=f"{name}.near")
    far = builder.fsub(like(x, 1.0), erfc_of_magnitude(builder, x, f"{name}.erfc"), name=f"{name}.far_abs")
    signed = float_intrinsic(builder, "copysign", [far, x], f"{name}.far")
    near = builder.fcmp_ordered("<", fabs(builder, x, f"{name}.abs"), like(x, ERF_SERIES_BOUND), name=f"{name}.is_near")
    return builder.select(near, series, signed, name=name)


def power(builder: ir.IRBuilder, x: ir.Value, y: ir.Value, name: str = "pow") -> ir.Value:
    """x ** y as C's pow and numpy compute it: |x| ** y = exp(y log|x|), negated for a negative x (-0 and
    -inf too) and an odd whole y, NaN for a finite negative x and a fractional y; x ** 0 and 1 ** y are
    1 (NaN included), (-1) ** +-inf is 1."""
    magnitude = exp(builder, builder.fmul(y, log(builder, fabs(builder, x, f"{name}.abs")), name=f"{name}.ylog"),
                    f"{name}.exp")
    whole = builder.fcmp_ordered("==", float_intrinsic(builder, "rint", [y], f"{name}.y_rounded"), y,
                                 name=f"{name}.whole")
    half = builder.fmul(y, like(y, 0.5), name=f"{name}.y_half")
    odd = builder.and_(whole, builder.fcmp_ordered("!=", float_intrinsic(builder, "rint", [half], f"{name}.h"), half),
                       name=f"{name}.odd")
    sign = float_intrinsic(builder, "copysign", [like(x, 1.0), x], f"{name}.sign")
    negative = builder.fcmp_ordered("<", sign, like(x, 0.0), name=f"{name}.negative")
    result = builder.select(builder.and_(negative, odd), builder.fneg(magnitude), magnitude, name=f"{name}.signed")
    finite_negative = builder.fcmp_ordered("<", x, like(x, 0.0), name=f"{name}.below_zero")
    finite_negative = builder.and_(finite_negative, builder.fcmp_ordered("!=", x, like(x, -math.inf)))
    fractional = builder.and_(builder.not_(whole), builder.fcmp_ordered("!=", fabs(builder, y, f"{name}.y_abs"),
                                                                          like(y, math.inf)))
    result = builder.select(builder.and_(finite_negative, fractional), like(x, math.nan), result, name=f"{name}.nan")
    unit = builder.fcmp_ordered("==", fabs(builder, x, f"{name}.x_abs"), like(x, 1.0), name=f"{name}.unit")
    infinite_y = builder.fcmp_ordered("==", fabs(builder, y, f"{name}.y_abs2"), like(y, math.inf))
    one = builder.or_(builder.fcmp_ordered("==", x, like(x, 1.0)), builder.and_(unit, infinite_y))
    one = builder.or_(one, builder.fcmp_ordered("==", y, like(y, 0.0)), name=f"{name}.one")
    return builder.select(one, like(x, 1.0), result, name=name)


def relu(builder: ir.IRBuilder, x: ir.Value, name: str = "relu") -> ir.Value:
    """np.maximum(x, 0) on an f32 scalar or vector: NaN stays NaN."""
    zero = like(x, 0.0)
    return builder.select(builder.fcmp_unordered(">=", x, zero, name=f"{name}.keep"), x, zero, name=name)


def relu6(builder: ir.IRBuilder, x: ir.Value, name: str = "relu6") -> ir.Value:
    """The clip op with min=0, max=6 (ir.ops_nn.RELU6_BOUNDS) on an f32 scalar or vector: NaN stays
    NaN, -0.0 stays -0.0 (the comparisons are ordered, as in scalar.clip)."""
    low, high = like(x, 0.0), like(x, 6.0)
    x = builder.select(builder.fcmp_ordered("<", x, low, name=f"{name}.below"), low, x, name=f"{name}.low")
    return builder.select(builder.fcmp_ordered(">", x, high, name=f"{name}.above"), high, x, name=name)


def activation(builder: ir.IRBuilder, name: str | None, x: ir.Value) -> ir.Value:
    """A contraction's fused `activation` (ir.ops_nn.LINEAR_ACTIVATIONS) on an f32 scalar or vector."""
    if name is None:
        return x
    if name == "relu":
        return relu(builder, x)
    if name == "relu6":
        return relu6(builder, x)
    return GELU_ACTIVATIONS[name](builder, x)


GELU = {"tanh": gelu_tanh, "sigmoid": gelu_sigmoid, "exact": gelu_exact}
# a contraction's fused gelu, by its `activation` attribute (ir.ops_nn.GELU_ACTIVATIONS)
GELU_ACTIVATIONS = {f"gelu_{approximation}": function for approximation, function in GELU.items()}
