"""Elementwise ops, reductions, cast and constant: their types and numpy references.

    %2 = add(%0, %1) : f32[4,8]                 numpy broadcasting, one dtype
    %3 = reduce_sum(%2) {axes=[1], keepdims=false} : f32[4]
    %4 = gelu(%3) {approximation="tanh"} : f32[4]
"""

from __future__ import annotations

import math

import numpy as np

from .registry import OpError, need_float, normalize_axis, register_op, same_dtype
from .types import DType, TensorType, broadcast_shapes

F32 = np.float32


# --- constant ---------------------------------------------------------------------------------

def _infer_constant(types, attrs):
    value = attrs["value"]
    if not isinstance(value, np.ndarray):
        raise OpError("op 'constant' needs a numpy array as its 'value' attribute")
    return TensorType.of(value)


@register_op("constant", infer=_infer_constant, operands=0, attrs={"value": None, "name": ""},
             traits={"constant"})
def constant(*, value, name):
    return value


# --- elementwise binary -----------------------------------------------------------------------

def _infer_binary(op):
    def infer(types, attrs):
        dtype = same_dtype(op, types)
        if op == "div":
            need_float(op, types[0])
        if op == "sub" and dtype is DType.bool:
            raise OpError(f"op 'sub' is not defined on bool operands ({types[0]}, {types[1]})")
        try:
            shape = broadcast_shapes(types[0].shape, types[1].shape)
        except ValueError as err:
            raise OpError(f"op '{op}': {err}") from None
        return TensorType(shape, dtype)

    return infer


register_op("add", infer=_infer_binary("add"), operands=2,
            traits={"elementwise", "binary", "commutative"})(np.add)
register_op("sub", infer=_infer_binary("sub"), operands=2, traits={"elementwise", "binary"})(np.subtract)
register_op("mul", infer=_infer_binary("mul"), operands=2,
            traits={"elementwise", "binary", "commutative"})(np.multiply)
register_op("div", infer=_infer_binary("div"), operands=2, traits={"elementwise", "binary"})(np.divide)


# --- elementwise unary ------------------------------------------------------------------------

def _infer_unary(op, float_only):
    def infer(types, attrs):
        if float_only:
            need_float(op, types[0])
        if op == "neg" and types[0].dtype is DType.bool:
            raise OpError(f"op 'neg' is not defined on a bool operand ({types[0]})")
        return types[0]

    return infer


def _unary(name, float_only=True, attrs=None):
    return register_op(name, infer=_infer_unary(name, float_only), operands=1, attrs=attrs,
                       traits={"elementwise", "unary"})


_unary("neg", float_only=False)(np.negative)
_unary("exp")(np.exp)
_unary("log")(np.log)
_unary("sqrt")(np.sqrt)
_unary("abs")(np.abs)
_unary("tanh")(np.tanh)


@_unary("relu", float_only=False)
def relu(x):
    return np.maximum(x, np.zeros((), x.dtype))


@_unary("sigmoid")
def sigmoid(x):
    # 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) below: never overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, F32(1) / (F32(1) + e), e / (F32(1) + e)).astype(F32)


GELU_APPROXIMATIONS = ("tanh", "sigmoid", "exact")
_erf = np.frompyfunc(math.erf, 1, 1)


def _check_gelu(types, attrs):
    if attrs["approximation"] not in GELU_APPROXIMATIONS:
        raise OpError(f"op 'gelu': approximation must be one of {GELU_APPROXIMATIONS}, "
                      f"got {attrs['approximation']!r}")
    return attrs


@register_op("gelu", infer=_infer_unary("gelu", True), operands=1, attrs={"approximation": "tanh"},
             traits={"elementwise", "unary"}, normalize=_check_gelu)
def gelu(x, *, approximation):
    if approximation == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        inner = F32(math.sqrt(2 / math.pi)) * (x + F32(0.044715) * x * x * x)
        return F32(0.5) * x * (F32(1) + np.tanh(inner))
    if approximation == "sigmoid":  # x sigmoid(1.702 x), TinyTorch's GELU
        return x * sigmoid(F32(1.702) * x)
    erf = np.asarray(_erf(x.astype(np.float64) / math.sqrt(2)), dtype=np.float64)  # a 0-d x gives a Python float
    return (F32(0.5) * x * (F32(1) + erf.astype(F32))).astype(F32)


# --- cast -------------------------------------------------------------------------------------

def _normalize_cast(types, attrs):
    dtype = attrs["dtype"]
    return {"dtype": dtype if isinstance(dtype, DType) else DType.parse(str(dtype))}


@register_op("cast", infer=lambda types, attrs: TensorType(types[0].shape, attrs["dtype"]), operands=1,
             attrs={"dtype": None}, traits={"elementwise", "unary"}, normalize=_normalize_cast)
def cast(x, *, dtype):
    """float -> int truncates toward zero and saturates at the int range; NaN becomes 0.
    int -> int wraps around (two's complement); anything -> bool is `!= 0`."""
    target = dtype.numpy
    if dtype is DType.bool:
        return x != 0
    if x.dtype.kind == "f" and target.kind in "iu":
        info = np.iinfo(target)
        # Clip in float64: float32(2**31 - 1) rounds up to 2**31, which would wrap around.
        wide = np.trunc(np.nan_to_num(x.astype(np.float64), nan=0.0))
        top = wide >= float(info.max)
        out = np.where(top, 0.0, np.clip(wide, info.min, info.max)).astype(target)
        out[top] = info.max
        return out
    return x.astype(target)


# --- reductions -------------------------------------------------------------------------------

def _normalize_reduce(types, attrs):
    rank = types[0].rank if types else 0
    axes = attrs["axes"]
    if axes is None:
        axes = tuple(range(rank))
    elif isinstance(axes, (int, np.integer)):
        axes = (int(axes),)
    axes = tuple(sorted({normalize_axis("reduce", int(a), rank) for a in axes}))
    return {"axes": axes, "keepdims": bool(attrs["keepdims"])}


def _infer_reduce(op):
    def infer(types, attrs):
        if op == "reduce_mean":
            need_float(op, types[0])
        if op == "reduce_max" and 0 in [types[0].shape[a] for a in attrs["axes"]]:
            raise OpError(f"op '{op}' cannot reduce an empty axis of {types[0]}")
        axes = attrs["axes"]
        if attrs["keepdims"]:
            shape = tuple(1 if i in axes else d for i, d in enumerate(types[0].shape))
        else:
            shape = tuple(d for i, d in enumerate(types[0].shape) if i not in axes)
        return TensorType(shape, types[0].dtype)

    return infer


def _reduction(name):
    return register_op(name, infer=_infer_reduce(name), operands=1, attrs={"axes": None, "keepdims": False},
                       traits={"reduction"}, normalize=_normalize_reduce)


@_reduction("reduce_sum")
def reduce_sum(x, *, axes, keepdims):
    return np.sum(x, axis=axes, keepdims=keepdims, dtype=x.dtype)


@_reduction("reduce_mean")
def reduce_mean(x, *, axes, keepdims):
    return np.mean(x, axis=axes, keepdims=keepdims, dtype=x.dtype)


@_reduction("reduce_max")
def reduce_max(x, *, axes, keepdims):
    return np.max(x, axis=axes, keepdims=keepdims)
