"""tensorforge.frontend.functional: one function per op, usable on numpy arrays and on traced values.

    relu(np.array([-1.0, 2.0], np.float32))     -> array([0., 2.], dtype=float32)   (eager)
    relu(proxy)                                 -> Proxy of `%3 = relu(%x)`          (traced)

Every function goes through `apply(op, operands, attrs)`: when any operand is a tracer `Proxy` it
records `graph.call(op, ...)`; otherwise it runs the op's numpy reference (`ir.evaluate`). So eager
results ARE the reference semantics, and a model behaves the same before and after compiling.
Python scalars take the dtype of the tensor they meet (f32 array + 1.0 -> f32, as numpy's NEP 50).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import ir
from .tracer import Proxy, TraceError


def _tensor_dtype(operands: Sequence) -> np.dtype | None:
    for value in operands:
        if isinstance(value, Proxy):
            return value.dtype
        if isinstance(value, np.ndarray):
            return value.dtype
    return None


def _as_array(value, dtype: np.dtype | None) -> np.ndarray:
    if isinstance(value, (bool, int, float, np.generic)) and dtype is not None:
        return np.asarray(value, dtype=dtype)
    array = np.asarray(value)
    return array.astype(np.float32) if array.dtype == np.float64 else array


def apply(op: str, operands: Sequence, attrs: dict | None = None):
    """Run `op` eagerly with its numpy reference, or record it when an operand is traced."""
    attrs = dict(attrs or {})
    tracer = next((value.tracer for value in operands if isinstance(value, Proxy)), None)
    dtype = _tensor_dtype(operands)
    if tracer is None:
        return ir.evaluate(op, [_as_array(value, dtype) for value in operands], attrs)
    nodes = [value.node if isinstance(value, Proxy) else tracer.constant(_as_array(value, dtype))
             for value in operands]
    if any(isinstance(value, Proxy) and value.tracer is not tracer for value in operands):
        raise TraceError(f"'{op}' mixes values of two different traces")
    try:
        node = tracer.graph.call(op, nodes, attrs)
    except ir.OpError as error:
        raise TraceError(f"while tracing: {error}") from None
    return Proxy(tracer, node)


def _unary(op: str):
    def function(x):
        return apply(op, [x])

    function.__name__ = op
    function.__doc__ = f"Elementwise `{op}` (the `{op}` op)."
    return function


def _binary(op: str):
    def function(a, b):
        return apply(op, [a, b])

    function.__name__ = op
    function.__doc__ = f"Elementwise `{op}` with numpy broadcasting (the `{op}` op)."
    return function


add, sub, mul, div = (_binary(op) for op in ("add", "sub", "mul", "div"))
neg, exp, log, sqrt, tanh, sigmoid, relu = (_unary(op) for op in ("neg", "exp", "log", "sqrt", "tanh", "sigmoid",
                                                                  "relu"))


def gelu(x, approximation: str = "tanh"):
    """GELU: `approximation` is "tanh", "sigmoid" (x * sigmoid(1.702 x), TinyTorch's) or "exact" (erf)."""
    return apply("gelu", [x], {"approximation": approximation})


def matmul(a, b):
    return apply("matmul", [a, b])


def linear(x, weight, bias=None):
    """x @ weight (+ bias), with `weight` stored (in_features, out_features) as TinyTorch does."""
    return apply("linear", [x, weight] if bias is None else [x, weight, bias])


def softmax(x, axis: int = -1):
    return apply("softmax", [x], {"axis": axis})


def _axes(axis) -> tuple[int, ...] | None:
    if axis is None:
        return None
    return tuple(axis) if isinstance(axis, (tuple, list)) else (int(axis),)


def sum(x, axis=None, keepdims: bool = False):
    return apply("reduce_sum", [x], {"axes": _axes(axis), "keepdims": keepdims})


def mean(x, axis=None, keepdims: bool = False):
    return apply("reduce_mean", [x], {"axes": _axes(axis), "keepdims": keepdims})


def max(x, axis=None, keepdims: bool = False):
    return apply("reduce_max", [x], {"axes": _axes(axis), "keepdims": keepdims})


def reshape(x, *shape):
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return apply("reshape", [x], {"shape": tuple(int(d) for d in shape)})


def transpose(x, *perm):
    perm = tuple(perm[0]) if len(perm) == 1 and isinstance(perm[0], (tuple, list)) else perm
    rank = len(x.shape) if hasattr(x, "shape") else np.ndim(x)
    return apply("transpose", [x], {"perm": tuple(perm) if perm else tuple(reversed(range(rank)))})


def flatten(x, start_axis: int = 1):
    return apply("flatten", [x], {"start_axis": start_axis})


def concat(values: Sequence, axis: int = 0):
    return apply("concat", list(values), {"axis": axis})


def slice(x, starts, stops, steps=None):
    return apply("slice", [x], {"starts": tuple(starts), "stops": tuple(stops),
                                "steps": None if steps is None else tuple(steps)})


def cast(x, dtype):
    dtype = dtype if isinstance(dtype, ir.DType) else ir.DType.from_numpy(np.dtype(dtype))
    return apply("cast", [x], {"dtype": dtype})


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1):
    """NCHW convolution with weight (O, I/groups, kh, kw)."""
    operands = [x, weight] if bias is None else [x, weight, bias]
    return apply("conv2d", operands, {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups})


def max_pool2d(x, kernel_size, stride=None, padding=0):
    return apply("max_pool2d", [x], {"kernel": kernel_size, "stride": stride, "padding": padding})


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    return apply("avg_pool2d", [x], {"kernel": kernel_size, "stride": stride, "padding": padding})


def batch_norm(x, gamma, beta, mean, var, eps: float = 1e-5):
    """Inference batch norm over axis 1: (x - mean) / sqrt(var + eps) * gamma + beta."""
    return apply("batch_norm", [x, gamma, beta, mean, var], {"eps": eps})
