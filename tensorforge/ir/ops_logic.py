"""Comparisons, logical ops and where: the bool-valued elementwise ops and the select that reads them.

    %m = less(%ids, %n) : bool[1,8]                 numpy broadcasting; operands of one dtype
    %k = logical_not(%m) : bool[1,8]
    %y = where(%k, %x, %fill) : f32[1,8]            %k ? %x : %fill, element by element

Comparisons follow IEEE: anything compared with NaN is false, except `not_equal`, which is true;
`is_nan(x)` tells which elements are NaN.
"""

from __future__ import annotations

import numpy as np

from .registry import OpError, need_float, register_op, same_dtype
from .types import DType, TensorType, broadcast_shapes


def _broadcast(op: str, types: list[TensorType]) -> tuple[int, ...]:
    shape: tuple[int, ...] = ()
    try:
        for t in types:
            shape = broadcast_shapes(shape, t.shape)
    except ValueError as err:
        raise OpError(f"op '{op}': {err}") from None
    return shape


def _infer_comparison(op):
    def infer(types, attrs):
        same_dtype(op, types)
        return TensorType(_broadcast(op, types), DType.bool)

    return infer


def _comparison(name, method, numpy_function, commutative=False):
    traits = {"elementwise", "binary", "fusable", *(["commutative"] if commutative else [])}
    register_op(name, infer=_infer_comparison(name), operands=2, traits=traits, flops=1, functional=True,
                methods=(method,), numpy=(numpy_function,))(numpy_function)


_comparison("equal", "__eq__", np.equal, commutative=True)
_comparison("not_equal", "__ne__", np.not_equal, commutative=True)
_comparison("less", "__lt__", np.less)
_comparison("less_equal", "__le__", np.less_equal)
_comparison("greater", "__gt__", np.greater)
_comparison("greater_equal", "__ge__", np.greater_equal)


def _infer_is_nan(types, attrs):
    need_float("is_nan", types[0])
    return TensorType(types[0].shape, DType.bool)


register_op("is_nan", infer=_infer_is_nan, traits={"elementwise", "unary", "fusable"}, flops=1, functional=True,
            numpy=(np.isnan,))(np.isnan)


def _infer_logical(op):
    def infer(types, attrs):
        for t in types:
            if t.dtype is not DType.bool:
                raise OpError(f"op '{op}' needs bool operands, got {', '.join(str(t) for t in types)}; "
                              "compare first (not_equal(x, 0))")
        return TensorType(_broadcast(op, types), DType.bool)

    return infer


register_op("logical_not", infer=_infer_logical("logical_not"), traits={"elementwise", "unary", "fusable"}, flops=1,
            functional=True, methods=("__invert__",), numpy=(np.logical_not,))(np.logical_not)
for _name, _method, _function in (("logical_and", "__and__", np.logical_and), ("logical_or", "__or__", np.logical_or),
                                  ("logical_xor", "__xor__", np.logical_xor)):
    register_op(_name, infer=_infer_logical(_name), operands=2, flops=1, functional=True, methods=(_method,),
                traits={"elementwise", "binary", "fusable", "commutative"}, numpy=(_function,))(_function)


def _infer_where(types, attrs):
    condition, a, b = types
    if condition.dtype is not DType.bool:
        raise OpError(f"op 'where' needs a bool condition, got {condition}; compare first (not_equal(c, 0))")
    dtype = same_dtype("where", [a, b])
    return TensorType(_broadcast("where", types), dtype)


@register_op("where", infer=_infer_where, operands=3, traits={"elementwise", "fusable"}, flops=1, functional=True,
             numpy=())
def where(condition, a, b):
    """a where condition holds, else b (numpy broadcasting of all three)."""
    return np.where(condition, a, b)
