"""Functional ops: one function per IR op, run eagerly on numpy arrays or recorded on traced values.

    relu(np.array([-1.0, 2.0], np.float32))     -> array([0., 2.], dtype=float32)   (eager)
    relu(proxy)                                 -> Proxy of `%3 = relu(%x)`          (traced)

Every function goes through `apply(op, operands, attrs)`: when an operand is a tracer `Proxy` it
records `graph.call(op, ...)`; otherwise it runs the op's numpy reference (`ir.evaluate`). So eager
results ARE the reference semantics, and a model computes the same before and after tracing.
Python scalars take the dtype of the tensor they meet (f32 array + 1.0 -> f32, as numpy's NEP 50);
float64 arrays become float32; shapes broadcast as in numpy (see `tracer.operand_array`).

`getitem`, `power`, `stack` and `expand_dims` are compositions of ops. `NUMPY_UFUNCS` and
`NUMPY_FUNCTIONS` say which numpy functions a traced value accepts, and what they record.
"""

from __future__ import annotations

import builtins
import inspect
import operator
from collections.abc import Sequence

import numpy as np

from .. import ir
from .proxy import Proxy, TraceError, operand_array, tensor_dtype


def apply(op: str, operands: Sequence, attrs: dict | None = None):
    """Run `op` eagerly with its numpy reference, or record it when an operand is traced."""
    attrs = dict(attrs or {})
    tracer = next((value.tracer for value in operands if isinstance(value, Proxy)), None)
    if tracer is not None:
        return tracer.record(op, operands, attrs)
    dtype = tensor_dtype(operands)
    return ir.evaluate(op, [operand_array(value, dtype, op) for value in operands], attrs)


def _shape(x) -> tuple[int, ...]:
    return x.shape if isinstance(x, (Proxy, np.ndarray)) else np.shape(x)


# --- generated from the registry: every op registered with functional=True -----------------------

def _generated(op: str):
    """F.<op>(*operands, **attrs): records or evaluates `op`; the signature names its operands and attributes."""
    opdef = ir.get_op(op)
    operand_names = ["x"] if opdef.max_operands == 1 else ["a", "b", "c", "d"][:opdef.min_operands]

    def function(*operands, **attrs):
        return apply(op, operands, attrs)  # the operand count is checked where the op is typed

    parameters = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_ONLY) for name in operand_names]
    parameters += [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=default)
                   for key, default in opdef.attrs.items()]
    function.__signature__ = inspect.Signature(parameters)
    function.__name__ = function.__qualname__ = op
    function.__module__ = __name__
    kind = "with numpy broadcasting " if "binary" in opdef.traits else ""
    function.__doc__ = f"Elementwise `{op}` {kind}(the `{op}` op; its reference: {opdef.reference.__name__})."
    return function


GENERATED = {name: _generated(name) for name, opdef in ir.OPS.items() if opdef.functional}
globals().update(GENERATED)  # F.add, F.exp, F.relu, ... (one per registration)


def gelu(x, approximate: str = "tanh"):
    """GELU; `approximate` is "tanh", "sigmoid" (x * sigmoid(1.702 x), TinyTorch's) or "exact" (erf)."""
    return apply("gelu", [x], {"approximation": approximate})


def cast(x, dtype):
    """x.astype(dtype) by the cast op's rules: float -> int truncates and saturates, NaN -> 0.

    `dtype` is a numpy dtype (np.int8, "float32") or an ir.DType (or its name, "i8")."""
    if isinstance(dtype, str) and dtype in ir.DType.__members__:
        dtype = ir.DType[dtype]
    return apply("cast", [x], {"dtype": dtype if isinstance(dtype, ir.DType) else ir.DType.from_numpy(dtype)})


# --- contractions and normalizations ------------------------------------------------------------

def matmul(a, b, transpose_a: bool = False, transpose_b: bool = False):
    """a @ b; batch axes broadcast. `transpose_b=True` reads b's last two axes swapped (q @ k^T
    without a transpose node). A vector operand follows numpy: `a` of rank 1 is a row, `b` of rank 1
    a column, and that axis is dropped from the result (reshapes around a matmul op of rank >= 2)."""
    a_shape, b_shape = _shape(a), _shape(b)
    if len(a_shape) == 1 or len(b_shape) == 1:
        if transpose_a or transpose_b:
            raise ir.OpError("matmul: transpose_a/transpose_b need operands of rank >= 2, got shapes "
                             f"{a_shape} and {b_shape}")
        product = matmul(reshape(a, (1, *a_shape)) if len(a_shape) == 1 else a,
                         reshape(b, (*b_shape, 1)) if len(b_shape) == 1 else b)
        shape = _shape(product)
        return reshape(product, shape[:-2] + shape[-2:-1] * (len(a_shape) > 1) + shape[-1:] * (len(b_shape) > 1))
    return apply("matmul", [a, b], {"transpose_a": transpose_a, "transpose_b": transpose_b})


def linear(x, weight, bias=None):
    """x @ weight (+ bias), with `weight` stored (in_features, out_features) as TinyTorch does."""
    return apply("linear", [x, weight] if bias is None else [x, weight, bias])


def softmax(x, axis: int = -1):
    """exp(x - max) / sum(exp(x - max)) along `axis`."""
    return apply("softmax", [x], {"axis": axis})


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1):
    """NCHW convolution with weight (out, in / groups, kh, kw); stride, padding, dilation: int or (h, w)."""
    operands = [x, weight] if bias is None else [x, weight, bias]
    return apply("conv2d", operands, {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups})


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """NCHW max pooling; `stride` defaults to the kernel size, padding never wins the max."""
    return apply("max_pool2d", [x], {"kernel": kernel_size, "stride": stride, "padding": padding})


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """NCHW average pooling; `stride` defaults to the kernel size, padding counts as zeros."""
    return apply("avg_pool2d", [x], {"kernel": kernel_size, "stride": stride, "padding": padding})


def batch_norm(x, gamma, beta, mean, var, eps: float = 1e-5):
    """Inference batch norm over axis 1: (x - mean) / sqrt(var + eps) * gamma + beta."""
    return apply("batch_norm", [x, gamma, beta, mean, var], {"eps": eps})


# --- transformers -------------------------------------------------------------------------------

def _ids(indices):
    """Token ids as an integer tensor: lists become int64 arrays, float ids (TinyTorch's) are cast to int64."""
    if not isinstance(indices, (Proxy, np.ndarray)):
        indices = np.asarray(indices)
    if indices.dtype.kind == "f":
        return cast(indices, ir.DType.i64)
    return indices


def constant_like(value, like, name: str | None = None):
    """`value` (an array known while tracing, e.g. np.arange(seq) positions) as a constant node of the
    trace `like` belongs to, named `name`, so that ops applied to it are recorded rather than computed
    while tracing; the array itself when `like` is not traced."""
    array = np.array(value)
    if not isinstance(like, Proxy):
        return array
    if not like.tracer.active:
        raise TraceError("constant_like() was called after trace() returned")
    return Proxy(like.tracer, like.tracer.graph.constant(operand_array(array, None, "constant"), name))


def embedding(indices, weight):
    """weight[indices]: one row of weight[vocab, dim] per id (the gather op); float ids are truncated
    to int64 first, as TinyTorch's `astype(int)`. Ids are clamped into the table (see ops_transformer)."""
    return apply("gather", [weight, _ids(indices)])


def layer_norm(x, gamma, beta, eps: float = 1e-5):
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis, with the biased variance."""
    return apply("layer_norm", [x, gamma, beta], {"eps": eps})


def causal_mask(scores):
    """scores[..., i, j] where key j is not after query i, -inf elsewhere (before softmax)."""
    return apply("causal_mask", [scores])


def argmax(x, axis: int | None = None, keepdims: bool = False, dtype=ir.DType.i64):
    """The index of the first largest value along `axis` (None: of the flattened value, as numpy),
    as int64 (or `dtype` i32)."""
    if axis is None:
        flat = apply("argmax", [reshape(x, -1)], {"axis": 0, "keepdims": keepdims, "dtype": dtype})
        return reshape(flat, (1,) * len(_shape(x))) if keepdims else flat
    return apply("argmax", [x], {"axis": axis, "keepdims": keepdims, "dtype": dtype})


# --- reductions ----------------------------------------------------------------------------------

def _axes(axis) -> tuple[int, ...] | None:
    if axis is None:
        return None
    if isinstance(axis, (tuple, list)):
        return tuple(operator.index(a) for a in axis)
    return (operator.index(axis),)


def sum(x, axis=None, keepdims: bool = False):
    """Sum over `axis` (None: all axes; an int or a tuple)."""
    return apply("reduce_sum", [x], {"axes": _axes(axis), "keepdims": keepdims})


def mean(x, axis=None, keepdims: bool = False):
    """Mean over `axis` (None: all axes; an int or a tuple)."""
    return apply("reduce_mean", [x], {"axes": _axes(axis), "keepdims": keepdims})


def max(x, axis=None, keepdims: bool = False):
    """Maximum over `axis` (None: all axes; an int or a tuple)."""
    return apply("reduce_max", [x], {"axes": _axes(axis), "keepdims": keepdims})


# --- data movement -------------------------------------------------------------------------------

def reshape(x, *shape):
    """x.reshape(shape): the shape as one tuple or as ints; one entry may be -1."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return apply("reshape", [x], {"shape": tuple(operator.index(d) for d in shape)})


def transpose(x, *perm):
    """Permute the axes: the permutation as one tuple or as ints; none reverses the axes (numpy's rule)."""
    if len(perm) == 1 and (perm[0] is None or isinstance(perm[0], (tuple, list))):
        perm = perm[0] or ()
    rank = len(_shape(x))
    perm = tuple(operator.index(p) + rank if operator.index(p) < 0 else operator.index(p) for p in perm)
    return apply("transpose", [x], {"perm": perm or None})


def flatten(x, start_axis: int = 1):
    """Merge the axes from `start_axis` on into one (x.reshape(x.shape[:start_axis] + (-1,)))."""
    return apply("flatten", [x], {"start_axis": start_axis})


def concat(values: Sequence, axis: int = 0):
    """Join values along an existing axis."""
    return apply("concat", list(values), {"axis": axis})


def slice(x, starts: Sequence[int], stops: Sequence[int], steps: Sequence[int] | None = None):
    """x[starts[0]:stops[0]:steps[0], ...] for the leading len(starts) axes; steps are positive."""
    return apply("slice", [x], {"starts": tuple(starts), "stops": tuple(stops),
                                "steps": None if steps is None else tuple(steps)})


def _index_bounds(item, axis: int, size: int) -> tuple[int, int, int]:
    """(start, stop, step) of one int or slice index on an axis of `size`, checked as numpy checks it."""
    if isinstance(item, builtins.slice):
        start, stop, step = item.indices(size)
        if step <= 0:
            raise TraceError(f"index {item} on axis {axis}: slices with a negative step are not supported "
                             "(the slice op steps forward)")
        return start, stop, step
    index = operator.index(item)
    if not -size <= index < size:
        raise IndexError(f"index {index} is out of bounds for axis {axis} with size {size}")
    index %= size
    return index, index + 1, 1


def _check_index(item) -> None:
    if isinstance(item, Proxy):
        raise TraceError(f"indexing with the traced value {item!r} (a gather) is not supported; index with "
                         "Python ints and slices, whose values are static")
    if isinstance(item, (bool, np.bool_)) or not (item is None or item is Ellipsis or isinstance(
            item, (int, np.integer, builtins.slice))):
        raise TraceError(f"index {item!r} is not supported on traced values: use ints, slices with a positive "
                         "step, None and '...'")


def getitem(x, key):
    """x[key] for ints, slices with a positive step, None and '...', as numpy indexes: one slice op,
    then one reshape that drops the int axes and inserts the None axes."""
    if not isinstance(x, Proxy):
        x = operand_array(x, None, "slice")
    shape = _shape(x)
    items = key if isinstance(key, tuple) else (key,)
    for item in items:
        _check_index(item)
    ellipses = [i for i, item in enumerate(items) if item is Ellipsis]
    explicit = len([item for item in items if item is not None and item is not Ellipsis])
    if len(ellipses) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if explicit > len(shape):
        raise IndexError(f"too many indices: {explicit} for a value of shape {shape}")
    rest = (builtins.slice(None),) * (len(shape) - explicit)
    items = items[:ellipses[0]] + rest + items[ellipses[0] + 1:] if ellipses else items + rest
    bounds, result_shape, axis = [], [], 0
    for item in items:
        if item is None:
            result_shape.append(1)
            continue
        start, stop, step = _index_bounds(item, axis, shape[axis])
        bounds.append((start, stop, step))
        if isinstance(item, builtins.slice):
            result_shape.append(len(range(start, stop, step)))
        axis += 1
    result = x
    if any(bound != (0, size, 1) for bound, size in zip(bounds, shape)):
        starts, stops, steps = zip(*bounds)
        result = slice(x, starts, stops, steps)
    if tuple(result_shape) != _shape(result):
        result = reshape(result, tuple(result_shape))
    return result


def expand_dims(x, axis: int):
    """Insert an axis of size 1 at `axis` (a reshape)."""
    shape = list(_shape(x))
    if not -len(shape) - 1 <= axis <= len(shape):
        raise ir.OpError(f"expand_dims: axis {axis} is out of range for a value of rank {len(shape)}")
    axis = axis % (len(shape) + 1)
    return reshape(x, tuple(shape[:axis] + [1] + shape[axis:]))


def stack(values: Sequence, axis: int = 0):
    """Join values along a new axis (expand_dims, then concat)."""
    return concat([expand_dims(value, axis) for value in values], axis)


def power(x, exponent):
    """x ** exponent: the exponents 1, 2 (x * x), 0.5 (sqrt) and -1 (1 / x) as numpy computes them, any
    other (a tensor too) by the pow op."""
    if isinstance(exponent, Proxy) or not isinstance(exponent, (int, float, np.number)):
        return apply("pow", [x, exponent])
    if exponent == 1:
        return x
    if exponent == 2:
        return apply("mul", [x, x])
    if exponent == 0.5:
        return apply("sqrt", [x])
    if exponent == -1:
        return apply("div", [1, x])
    return apply("pow", [x, exponent])


def _maximum(a, b):
    """np.maximum(x, 0) is relu (which the GEMM epilogues take in); any other maximum is the maximum op."""
    for tensor, other in ((a, b), (b, a)):
        if isinstance(other, (int, float, np.number)) and other == 0:
            return apply("relu", [tensor])
    return apply("maximum", [a, b])


# numpy ufunc -> function: every op's registered numpy functions, then the compositions;
# Proxy.__array_ufunc__ refuses every other ufunc by name
NUMPY_UFUNCS = {ufunc: GENERATED[name] for name, opdef in ir.OPS.items() if opdef.functional for ufunc in opdef.numpy}
NUMPY_UFUNCS.update({np.matmul: matmul, np.maximum: _maximum, np.power: power,
                     np.square: lambda x: apply("mul", [x, x])})
# numpy function -> the same computation, with numpy's argument names; Proxy.__array_function__ refuses the rest
NUMPY_FUNCTIONS = {
    np.concatenate: lambda arrays, axis=0: concat(arrays, axis),
    np.stack: lambda arrays, axis=0: stack(arrays, axis),
    np.reshape: lambda a, shape: reshape(a, shape),
    np.ravel: lambda a: reshape(a, -1),
    np.transpose: lambda a, axes=None: transpose(a, axes),
    np.expand_dims: lambda a, axis: expand_dims(a, axis),
    np.sum: lambda a, axis=None, keepdims=False: sum(a, axis, keepdims),
    np.mean: lambda a, axis=None, keepdims=False: mean(a, axis, keepdims),
    np.max: lambda a, axis=None, keepdims=False: max(a, axis, keepdims),
    np.argmax: lambda a, axis=None, keepdims=False: argmax(a, axis, keepdims),
    np.amax: lambda a, axis=None, keepdims=False: max(a, axis, keepdims),
    np.where: lambda condition, x, y: apply("where", [condition, x, y]),
    np.clip: lambda a, a_min, a_max: apply("clip", [a], {"min": a_min, "max": a_max}),
    np.shape: lambda a: a.shape,
    np.ndim: lambda a: a.ndim,
    np.size: lambda a: a.size,
}


# --- the Proxy's operators and numpy protocols ----------------------------------------------------

def _array_ufunc(self, ufunc, method, *inputs, **kwargs):
    name = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
    function = NUMPY_UFUNCS.get(ufunc)
    if method != "__call__" or function is None:
        raise TraceError(f"{name} is not supported on traced values: tensorforge has no op for it "
                         f"(numpy functions with an op: {_numpy_names()})")
    if kwargs:
        raise TraceError(f"{name} is supported on traced values only without keyword arguments "
                         f"(got {', '.join(sorted(kwargs))})")
    return function(*inputs)


def _array_function(self, func, types_, args, kwargs):
    module = func.__module__.replace("numpy", "np", 1) if func.__module__.startswith("numpy") else func.__module__
    name = f"{module}.{func.__name__}"
    function = NUMPY_FUNCTIONS.get(func)
    if function is None:
        raise TraceError(f"{name} is not supported on traced values: tensorforge has no op for it "
                         f"(numpy functions with an op: {_numpy_names()})")
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError:
        usage = f"{name}{inspect.signature(function)}"
        raise TraceError(f"{name} is supported on traced values only as {usage}") from None
    return function(*args, **kwargs)


def _numpy_names() -> str:
    names = [f.__name__ for f in list(NUMPY_UFUNCS) + list(NUMPY_FUNCTIONS)]
    return ", ".join(sorted(set(names)))


def _method(function):
    def method(self, *args, **kwargs):
        return function(self, *args, **kwargs)

    method.__name__ = function.__name__
    return method


def _reflected(function):
    def method(self, other):
        return function(other, self)

    method.__name__ = f"reflected_{function.__name__}"
    return method


# Proxy method or operator -> function, called as function(self, *args, **kwargs): the registry's
# (an op's `methods`), then the compositions and ops with attributes
METHODS = {method: GENERATED[name] for name, opdef in ir.OPS.items() if opdef.functional for method in opdef.methods}
METHODS.update({"__matmul__": matmul, "__pow__": power, "__getitem__": getitem, "reshape": reshape,
                "transpose": transpose, "sum": sum, "mean": mean, "max": max, "argmax": argmax, "astype": cast,
                "matmul": matmul, "flatten": lambda x: reshape(x, -1), "ravel": lambda x: reshape(x, -1)})
# a binary operator also gets its reflected form (__radd__ for 1.0 + x)
# Python's operators with a reflected form (1.0 + x calls x.__radd__; 1 < x calls x.__gt__, no __rlt__)
REFLECTED = [name for name in METHODS if name in ("__add__", "__sub__", "__mul__", "__truediv__", "__matmul__",
                                                  "__pow__", "__and__", "__or__", "__xor__")]

for _name, _function in METHODS.items():
    setattr(Proxy, _name, _method(_function))
for _name in REFLECTED:
    setattr(Proxy, _name.replace("__", "__r", 1), _reflected(METHODS[_name]))
Proxy.T = property(lambda self: transpose(self), doc="numpy's x.T: the axes reversed")
Proxy.__array_ufunc__ = _array_ufunc
Proxy.__array_function__ = _array_function
