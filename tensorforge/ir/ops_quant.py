"""Quantization ops (issue 4): f32 <-> int8/uint8 with a scale and a zero point, numpy-broadcast.

    %q = quantize(%x, %scale, %zero_point) {dtype=i8} : i8[4,8]      scale f32, zero_point i32
    %y = dequantize(%q, %scale, %zero_point) : f32[4,8]
    %c = matmul_integer(%a, %b, %za, %zb) : i32[4,16]                 (a - za) @ (b - zb), exact in int32
    %y = qlinear(%xq, %wq, %bias, %m, %zx, %zy) {dtype=i8, activation=relu} : i8[4,16]
    %z = qconv2d(%xq, %wq, %bias, %m, %zx, %zy) {stride=[1,1], padding=[1,1], dtype=i8} : i8[1,32,8,8]

    quantize:    q = clip(round(x / scale) + zero_point, qmin, qmax)   round half to even, in f32;
                 NaN becomes zero_point (the code of 0.0)
    dequantize:  y = float32(q - zero_point) * scale                    the difference in int32

qlinear is an int8 linear layer (what passes/lower_quant.py makes of dequantize -> linear ->
quantize): an exact int32 accumulator, then requantization in f32 (the scheme of ONNX's
QLinearMatMul; a float multiply and a rint cost the same as gemmlowp's fixed-point multiply and
shift here, and match the reference bit for bit):

    acc = (x - zx) @ w + bias                        int32, wrapping; w i8 [in, out], bias i32 [out]
    i8/u8 out:  y = clip(rint(f32(acc) * m) + zy, lo, hi)     lo = max(qmin, zy) with relu
    f32 out:    y = f32(acc) * m   (then relu)                m f32 [out] or []: sx * sw / sy

dynamic_qlinear is dynamic quantization (ONNX Runtime's and PyTorch's "dynamic"): x's scale and
zero point come from x itself at run time, per call (asymmetric i8 over [min(x, 0), max(x, 0)]),
the weight is int8 with a scale per column, and the result is f32:

    sx = (hi - lo) / 255 (1 if 0); zx = clip(rint(-128 - lo / sx)); xq = quantize(x, sx, zx)
    y = f32((xq - zx) @ w) * (sx * sw) + bias   (then relu or a gelu)   all in f32, NaN in x ignored

x's range may come computed already (passes/split_range.py), as value_range's partial ranges of
blocks of x's rows, its last operand with ranged=true: the same lo and hi, so the same result:

    %r = value_range(%x) {blocks=8} : f32[2,8]      [min(0, block), max(0, block)] per block of rows
    %y = dynamic_qlinear(%x, %w, %sw, %b, %r) {ranged=true} : f32[128,768]

qconv2d is the same for a convolution (NCHW, groups 1; w i8 [O, C, kh, kw], bias and m per output
channel); padding holds x's zero point, the code of 0.0, so padded taps contribute nothing.

`scale` and `zero_point` broadcast against x as in numpy: shape [] per tensor; per channel, the
channel axis kept and the others 1 (a conv weight's [O,1,1,1], a linear weight's [out] on its
last axis). Both are usually constants computed by calibration.
"""

from __future__ import annotations

import math

import numpy as np

from .ops_nn import LINEAR_ACTIVATIONS, activate, conv2d, normalize_window, out_size
from .registry import OpError, register_op
from .types import DType, TensorType, broadcast_shapes

F32 = np.float32
QUANTIZED = (DType.i8, DType.u8)


def _check_parameters(op: str, value: TensorType, scale: TensorType, zero_point: TensorType) -> tuple[int, ...]:
    if scale.dtype is not DType.f32 or zero_point.dtype is not DType.i32:
        raise OpError(f"op '{op}' needs an f32 scale and an i32 zero point, got {scale} and {zero_point}")
    try:
        shape = broadcast_shapes(value.shape, scale.shape, zero_point.shape)
    except ValueError as err:
        raise OpError(f"op '{op}': scale {scale} and zero point {zero_point} do not broadcast to {value}: {err}") \
            from None
    if shape != value.shape:
        raise OpError(f"op '{op}': scale {scale} and zero point {zero_point} must broadcast to {value}, not widen it")
    return shape


def _normalize_quantize(types, attrs):
    dtype = attrs["dtype"]
    dtype = dtype if isinstance(dtype, DType) else DType.parse(str(dtype))
    if dtype not in QUANTIZED:
        raise OpError(f"op 'quantize': dtype must be i8 or u8, got {dtype.name}")
    return {"dtype": dtype}


def _infer_quantize(types, attrs):
    x, scale, zero_point = types
    if x.dtype is not DType.f32:
        raise OpError(f"op 'quantize' needs an f32 operand, got {x}")
    return TensorType(_check_parameters("quantize", x, scale, zero_point), attrs["dtype"])


@register_op("quantize", infer=_infer_quantize, operands=3, attrs={"dtype": DType.i8},
             traits={"elementwise"}, normalize=_normalize_quantize, flops=3, cost=8)
def quantize(x, scale, zero_point, *, dtype):
    info = np.iinfo(dtype.numpy)
    with np.errstate(all="ignore"):
        shifted = np.round(x / scale) + zero_point.astype(F32)  # f32 throughout, as the compiled code
        clipped = np.clip(shifted, F32(info.min), F32(info.max))
    codes = np.where(np.isnan(clipped), zero_point.astype(F32), clipped)
    return codes.astype(dtype.numpy)


def _infer_dequantize(types, attrs):
    q, scale, zero_point = types
    if q.dtype not in (*QUANTIZED, DType.i32):
        raise OpError(f"op 'dequantize' needs an i8, u8 or i32 operand, got {q}")
    return TensorType(_check_parameters("dequantize", q, scale, zero_point), DType.f32)


@register_op("dequantize", infer=_infer_dequantize, operands=3, traits={"elementwise"}, flops=3)
def dequantize(q, scale, zero_point):
    return (q.astype(np.int32) - zero_point).astype(F32) * scale


# --- integer matrix product -------------------------------------------------------------------

def _infer_matmul_integer(types, attrs):
    a, b = types[0], types[1]
    if a.dtype not in QUANTIZED or b.dtype not in QUANTIZED:
        raise OpError(f"op 'matmul_integer' needs i8 or u8 operands, got {a} and {b}")
    if a.rank < 2 or b.rank != 2 or a.shape[-1] != b.shape[0]:
        raise OpError(f"op 'matmul_integer' needs a[..., M, K] and b[K, N], got {a} and {b}")
    for name, zero_point in zip(("a", "b"), types[2:]):
        if zero_point.dtype is not DType.i32 or zero_point.shape != ():
            raise OpError(f"op 'matmul_integer': the zero point of {name} must be an i32 scalar, got {zero_point}")
    return TensorType(a.shape[:-1] + (b.shape[1],), DType.i32)


@register_op("matmul_integer", infer=_infer_matmul_integer, operands=(2, 4), traits={"contraction"})
def matmul_integer(a, b, a_zero_point=None, b_zero_point=None):
    """(a - a_zero_point) @ (b - b_zero_point) accumulated exactly in int32 (ONNX's MatMulInteger):
    int8/uint8 operands, per-tensor zero points (0 when absent). Sums of up to 2^15 products of
    8-bit values fit in int32; the result wraps beyond that, as int32 arithmetic does."""
    wide_a = a.astype(np.int64) - (0 if a_zero_point is None else int(a_zero_point))
    wide_b = b.astype(np.int64) - (0 if b_zero_point is None else int(b_zero_point))
    return integer_matmul(wide_a, wide_b).astype(np.int32)


FLOAT64_BLOCK = 1 << 21  # elements of b converted to float64 at a time (16 MB)


def _exact_in_float64(a: np.ndarray, b: np.ndarray, terms: int) -> bool:
    """Whether every sum of `terms` products of an element of a and one of b is an integer a float64
    holds exactly (below 2^53 in magnitude), whatever order the sum is taken in."""
    largest = [max(-int(array.min()), int(array.max())) if array.size else 0 for array in (a, b)]
    return largest[0] * largest[1] * terms < 2**53


def integer_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b of integer arrays (b: a weight, int8 or wider), exactly, as int64. numpy multiplies
    integers without BLAS (a GPT-2-size int8 check took minutes); products of 8-bit values summed over
    any practical depth stay far below 2^53, so float64 BLAS gives the same integers in any summation
    order, b converted a block of columns at a time. Larger values take int64."""
    if not _exact_in_float64(a, b, a.shape[-1]) or b.ndim != 2:
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    wide, columns = a.astype(np.float64), b.shape[1]
    out = np.empty((*a.shape[:-1], columns), np.int64)
    step = max(1, FLOAT64_BLOCK // max(1, b.shape[0]))  # b in column blocks: no float64 copy of a whole weight
    for first in range(0, columns, step):
        out[..., first:first + step] = np.matmul(wide, b[:, first:first + step].astype(np.float64))
    return out


# --- quantized linear layer -------------------------------------------------------------------

QLINEAR_OUTPUTS = (DType.i8, DType.u8, DType.f32)


def _normalize_qlinear(types, attrs):
    dtype = attrs["dtype"]
    dtype = dtype if isinstance(dtype, DType) else DType.parse(str(dtype))
    if dtype not in QLINEAR_OUTPUTS:
        raise OpError(f"op 'qlinear': dtype must be i8, u8 or f32, got {dtype.name}")
    if attrs["activation"] not in (None, "relu"):
        raise OpError(f"op 'qlinear': activation must be None or 'relu', got {attrs['activation']!r}")
    return {"dtype": dtype, "activation": attrs["activation"]}


def _infer_qlinear(types, attrs):
    x, w, bias, multiplier, x_zero, y_zero = types
    if x.dtype not in QUANTIZED or w.dtype is not DType.i8:
        raise OpError(f"op 'qlinear' needs an i8 or u8 x and an i8 weight, got {x} and {w}")
    if w.rank != 2 or x.rank < 1 or x.shape[-1] != w.shape[0]:
        raise OpError(f"op 'qlinear' needs x[..., in] and weight[in, out], got {x} and {w}")
    out = w.shape[1]
    if bias.dtype is not DType.i32 or bias.shape != (out,):
        raise OpError(f"op 'qlinear': bias must be i32[{out}], got {bias}")
    if multiplier.dtype is not DType.f32 or multiplier.shape not in ((), (out,)):
        raise OpError(f"op 'qlinear': the multiplier must be f32[] or f32[{out}], got {multiplier}")
    for name, zero in (("x", x_zero), ("y", y_zero)):
        if zero.dtype is not DType.i32 or zero.shape != ():
            raise OpError(f"op 'qlinear': the zero point of {name} must be an i32 scalar, got {zero}")
    return TensorType(x.shape[:-1] + (out,), attrs["dtype"])


@register_op("qlinear", infer=_infer_qlinear, operands=6, traits={"contraction"},
             attrs={"dtype": DType.i8, "activation": None}, normalize=_normalize_qlinear)
def qlinear(x, weight, bias, multiplier, x_zero_point, y_zero_point, *, dtype, activation):
    """(x - zx) @ weight + bias in int32, requantized with the f32 multiplier (module docstring)."""
    product = integer_matmul(x.astype(np.int64) - int(x_zero_point), weight)
    accumulator = (product + bias).astype(np.int32)
    return requantize(accumulator, multiplier, y_zero_point, dtype, activation)


def requantize(accumulator: np.ndarray, multiplier: np.ndarray, y_zero_point, dtype: DType, activation) -> np.ndarray:
    """The requantization of qlinear and qconv2d: f32(acc) * m (+ zy, rounded and clipped for int results)."""
    scaled = accumulator.astype(F32) * multiplier
    if dtype is DType.f32:
        return np.maximum(scaled, F32(0)) if activation == "relu" else scaled
    low, high = requantize_limits(dtype, int(y_zero_point), activation)
    codes = np.clip(np.rint(scaled) + F32(y_zero_point), F32(low), F32(high))
    return codes.astype(dtype.numpy)


def requantize_limits(dtype: DType, zero_point: int, activation) -> tuple[int, int]:
    """The codes a requantized result may take: the dtype's range, from the zero point up with relu."""
    info = np.iinfo(dtype.numpy)
    low = max(int(info.min), min(zero_point, int(info.max))) if activation == "relu" else int(info.min)
    return low, int(info.max)


# --- dynamic quantization ---------------------------------------------------------------------

def range_parameters(low, high) -> tuple[np.float32, np.int32]:
    """(scale, zero point) for dynamic quantization of values in [low, high] (low <= 0 <= high), in
    f32 steps the compiled code repeats."""
    low, high = F32(low), F32(high)
    scale = F32((high - low) / F32(255))
    if not scale > 0:
        scale = F32(1)
    zero = np.clip(np.rint(F32(-128) - low / scale), F32(-128), F32(127))
    return scale, np.int32(zero)


def value_range_of(x: np.ndarray) -> tuple[np.float32, np.float32]:
    """(min(0, x), max(0, x)), NaN skipped."""
    finite = np.where(np.isnan(x), F32(0), x)
    return min(F32(0), F32(finite.min(initial=0))), max(F32(0), F32(finite.max(initial=0)))


def dynamic_parameters(x: np.ndarray) -> tuple[np.float32, np.int32]:
    """(scale, zero point) of x for dynamic quantization, in f32 steps the compiled code repeats."""
    return range_parameters(*value_range_of(x))


def range_rows(shape: tuple[int, ...], blocks: int) -> tuple[int, int, int]:
    """(rows, row length, rows per block) of value_range: x as rows of its last axis, in `blocks`
    blocks of ceil(rows / blocks) rows (the last ones may hold fewer, or none)."""
    length = shape[-1] if shape else 1
    rows = math.prod(shape[:-1]) if shape else 1
    return rows, length, max(1, -(-rows // blocks))


def _infer_value_range(types, attrs):
    (x,) = types
    if x.dtype is not DType.f32:
        raise OpError(f"op 'value_range' needs an f32 operand, got {x}")
    return TensorType((2, attrs["blocks"]), DType.f32)


def _normalize_value_range(types, attrs):
    blocks = attrs["blocks"]
    if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)) or blocks < 1:
        raise OpError(f"op 'value_range': blocks must be a positive int, got {blocks!r}")
    return {"blocks": int(blocks)}


@register_op("value_range", infer=_infer_value_range, operands=1, attrs={"blocks": 8},
             normalize=_normalize_value_range)
def value_range(x, *, blocks):
    """[[min(0, block)], [max(0, block)]] for each block of x's rows (range_rows), NaN skipped; an
    empty block gives 0 and 0."""
    rows, length, per_block = range_rows(x.shape, blocks)
    flat = x.reshape(rows, length)
    ranges = np.zeros((2, blocks), F32)
    for block in range(blocks):
        ranges[:, block] = value_range_of(flat[block * per_block:(block + 1) * per_block])
    return ranges


def _infer_dynamic_qlinear(types, attrs):
    extra = bool(attrs["residual"]) + bool(attrs["ranged"])
    if len(types) != 4 + extra:
        named = " and ".join(name for name, on in (("the residual", attrs["residual"]),
                                                    ("the ranges", attrs["ranged"])) if on)
        raise OpError(f"op 'dynamic_qlinear' takes x, weight, weight scale, bias"
                      f"{' and ' + named if named else ''}, got {len(types)} operands")
    x, w, w_scale, bias = types[:4]
    if x.dtype is not DType.f32 or w.dtype is not DType.i8:
        raise OpError(f"op 'dynamic_qlinear' needs an f32 x and an i8 weight, got {x} and {w}")
    if w.rank != 2 or x.rank < 1 or x.shape[-1] != w.shape[0]:
        raise OpError(f"op 'dynamic_qlinear' needs x[..., in] and weight[in, out], got {x} and {w}")
    out = w.shape[1]
    for name, value in (("weight scale", w_scale), ("bias", bias)):
        if value.dtype is not DType.f32 or value.shape != (out,):
            raise OpError(f"op 'dynamic_qlinear': the {name} must be f32[{out}], got {value}")
    result = TensorType(x.shape[:-1] + (out,), DType.f32)
    if attrs["residual"] and types[4] != result:
        raise OpError(f"op 'dynamic_qlinear': the residual must be {result}, got {types[4]}")
    ranges = types[-1]
    if attrs["ranged"] and (ranges.dtype is not DType.f32 or ranges.rank != 2 or ranges.shape[0] != 2):
        raise OpError(f"op 'dynamic_qlinear': the ranges must be f32[2, blocks] (value_range), got {ranges}")
    return result


def _normalize_dynamic(types, attrs):

    if attrs["activation"] not in LINEAR_ACTIVATIONS:
        raise OpError(f"op 'dynamic_qlinear': activation must be one of {LINEAR_ACTIVATIONS}, "
                      f"got {attrs['activation']!r}")
    return {"activation": attrs["activation"], "residual": bool(attrs.get("residual", False)),
            "ranged": bool(attrs.get("ranged", False))}


@register_op("dynamic_qlinear", infer=_infer_dynamic_qlinear, operands=(4, 6), traits={"contraction"},
             attrs={"activation": None, "residual": False, "ranged": False}, normalize=_normalize_dynamic)
def dynamic_qlinear(x, weight, weight_scale, bias, *extra, activation, residual, ranged):
    """x quantized with parameters from x itself (or from its ranges, value_range's, the last operand
    with `ranged`), the int8 product, back to f32, + bias (+ the residual, fuse-residual's skip
    connection), then the activation (module docstring)."""
    if ranged:
        ranges = extra[-1]
        scale, zero = range_parameters(min(F32(0), ranges[0].min()), max(F32(0), ranges[1].max()))
    else:
        scale, zero = dynamic_parameters(x)
    skip = extra[:1] if residual else ()
    codes = quantize(x, scale, zero, dtype=DType.i8)
    accumulator = integer_matmul(codes.astype(np.int64) - int(zero), weight).astype(np.int32)
    y = accumulator.astype(F32) * (scale * weight_scale) + bias
    return activate(y + skip[0] if residual else y, activation)


def _infer_qconv2d(types, attrs):

    x, w, bias, multiplier, x_zero, y_zero = types
    if x.dtype not in QUANTIZED or w.dtype is not DType.i8:
        raise OpError(f"op 'qconv2d' needs an i8 or u8 x and an i8 weight, got {x} and {w}")
    if x.rank != 4 or w.rank != 4 or x.shape[1] != w.shape[1]:
        raise OpError(f"op 'qconv2d' needs x[N,C,H,W] and weight[O,C,kh,kw], got {x} and {w}")
    out = w.shape[0]
    if bias.dtype is not DType.i32 or bias.shape != (out,):
        raise OpError(f"op 'qconv2d': bias must be i32[{out}], got {bias}")
    if multiplier.dtype is not DType.f32 or multiplier.shape not in ((), (out,)):
        raise OpError(f"op 'qconv2d': the multiplier must be f32[] or f32[{out}], got {multiplier}")
    for name, zero in (("x", x_zero), ("y", y_zero)):
        if zero.dtype is not DType.i32 or zero.shape != ():
            raise OpError(f"op 'qconv2d': the zero point of {name} must be an i32 scalar, got {zero}")
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    n, _, h, width = x.shape
    kh, kw = w.shape[2:]
    return TensorType((n, out, out_size("qconv2d", h, kh, sh, ph, dh), out_size("qconv2d", width, kw, sw, pw, dw)),
                      attrs["dtype"])


def _normalize_qconv2d(types, attrs):

    window = normalize_window("qconv2d")(types, {k: attrs[k] for k in ("stride", "padding", "dilation")})
    return {**window, **_normalize_qlinear(types, {"dtype": attrs["dtype"], "activation": attrs["activation"]})}


@register_op("qconv2d", infer=_infer_qconv2d, operands=6, traits={"contraction"},
             attrs={"stride": 1, "padding": 0, "dilation": 1, "dtype": DType.i8, "activation": None},
             normalize=_normalize_qconv2d)
def qconv2d(x, weight, bias, multiplier, x_zero_point, y_zero_point, *, stride, padding, dilation, dtype, activation):
    """The int8 convolution: x padded with its zero point, int32 sums of (x - zx) * w, + bias, requantized."""

    (ph, pw), zero = padding, int(x_zero_point)
    padded = np.pad(x.astype(np.int64) - zero, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # (x - zx) pads with 0
    wide = weight.astype(np.int64)
    if _exact_in_float64(padded, wide, math.prod(weight.shape[1:])):  # as integer_matmul: exact, faster
        padded, wide = padded.astype(np.float64), wide.astype(np.float64)
    accumulator = conv2d(padded, wide, stride=stride, padding=(0, 0), dilation=dilation, groups=1).astype(np.int64)
    accumulator = (accumulator + bias.reshape(1, -1, 1, 1)).astype(np.int32)
    scale = multiplier.reshape(1, -1, 1, 1) if multiplier.ndim else multiplier
    return requantize(accumulator, scale, y_zero_point, dtype, activation)
