"""The tracer: run a model once on Proxy values and record every op it applies as an ir.Graph.

    graph = trace(nn.Sequential(nn.Linear(64, 32), nn.ReLU()), x)
    graph(%x: f32[4,64]) {
      %layers.0.weight = constant() : f32[64,32]
      %layers.0.bias = constant() : f32[32]
      %0 = linear(%x, %layers.0.weight, %layers.0.bias) : f32[4,32]
      %1 = relu(%0) : f32[4,32]
      return %1
    }

A `Proxy` stands for a value known only at run time. Its operators (`+ - * / @`, indexing,
`reshape`, `sum`...) and the numpy functions that have an op record nodes; anything that needs the
value itself (`if x > 0`, `float(x)`, an unsupported numpy function) raises `TraceError` saying why.
Shapes are static, so `x.shape` and `len(x)` are plain Python values. Arrays the model holds become
constants named by their attribute path (`fc1.weight`); the same array used twice is one constant.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import ir


class TraceError(Exception):
    """The model does something a static trace cannot record."""


def _functional():
    from . import functional

    return functional


class Tracer:
    """The graph being recorded, and the names of the model's arrays (by identity)."""

    def __init__(self, graph: ir.Graph, array_names: dict[int, str]):
        self.graph = graph
        self.array_names = array_names
        self._constants: dict[int, tuple[np.ndarray, ir.Node]] = {}

    def constant(self, array: np.ndarray) -> ir.Node:
        """The constant node of `array`: one per array object, named by its attribute path if it has one."""
        key = id(array)
        if key in self._constants:
            return self._constants[key][1]
        value = array
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        node = self.graph.constant(np.array(value), self.array_names.get(key))
        self._constants[key] = (array, node)  # keep `array` alive so its id is not reused
        return node


def _refuse(what: str, hint: str) -> Callable:
    def method(self, *args, **kwargs):
        raise TraceError(f"{what} of the traced value %{self.node.name} ({self.node.type}) needs its contents, "
                         f"which are only known at run time; {hint}")

    return method


UFUNC_OPS = {np.add: "add", np.subtract: "sub", np.multiply: "mul", np.divide: "div", np.negative: "neg",
             np.exp: "exp", np.log: "log", np.sqrt: "sqrt", np.tanh: "tanh", np.matmul: "matmul"}
FUNCTION_NAMES = {np.concatenate: "concat", np.reshape: "reshape", np.transpose: "transpose", np.sum: "sum",
                  np.mean: "mean", np.max: "max", np.amax: "max", np.matmul: "matmul"}


class Proxy:
    """A traced value: a node of the graph being recorded, with numpy-like operators."""

    __array_priority__ = 1000

    def __init__(self, tracer: Tracer, node: ir.Node):
        self.tracer = tracer
        self.node = node

    # static facts
    @property
    def shape(self) -> tuple[int, ...]:
        return self.node.type.shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.node.type.dtype.numpy

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d value")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Proxy(%{self.node.name}: {self.node.type})"

    # operators
    def __add__(self, other): return _functional().add(self, other)
    def __radd__(self, other): return _functional().add(other, self)
    def __sub__(self, other): return _functional().sub(self, other)
    def __rsub__(self, other): return _functional().sub(other, self)
    def __mul__(self, other): return _functional().mul(self, other)
    def __rmul__(self, other): return _functional().mul(other, self)
    def __truediv__(self, other): return _functional().div(self, other)
    def __rtruediv__(self, other): return _functional().div(other, self)
    def __matmul__(self, other): return _functional().matmul(self, other)
    def __rmatmul__(self, other): return _functional().matmul(other, self)
    def __neg__(self): return _functional().neg(self)
    def __pos__(self): return self

    # methods numpy arrays have
    def reshape(self, *shape): return _functional().reshape(self, *shape)
    def transpose(self, *perm): return _functional().transpose(self, *perm)
    def flatten(self): return _functional().reshape(self, -1)
    def sum(self, axis=None, keepdims=False): return _functional().sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _functional().mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _functional().max(self, axis, keepdims)
    def astype(self, dtype): return _functional().cast(self, dtype)

    @property
    def T(self):  # noqa: N802  (numpy's name)
        return _functional().transpose(self)

    def __getitem__(self, key):
        return _index(self, key)

    # what a static trace cannot do
    __bool__ = _refuse("Python control flow on the truth", "compute both branches and select with arithmetic "
                       "(e.g. a mask), or branch on x.shape, which is static")
    __float__ = _refuse("float()", "keep it as a tensor (tensor ops accept traced values)")
    __int__ = _refuse("int()", "keep it as a tensor, or use x.shape for sizes")
    __index__ = _refuse("Using it as an index", "index with Python ints or slices")
    __array__ = _refuse("Converting to a numpy array", "use tensorforge ops (or numpy functions that map to one)")
    __iter__ = _refuse("Iteration", "index with slices, whose bounds are static")
    __lt__ = __le__ = __gt__ = __ge__ = _refuse(
        "A comparison", "the IR has no comparison ops yet; for control flow, compute both branches")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__" or kwargs:
            raise TraceError(f"np.{ufunc.__name__}.{method} (with {sorted(kwargs)}) is not supported on traced values")
        if ufunc is np.maximum and any(np.isscalar(v) and v == 0 for v in inputs):
            return _functional().relu(next(v for v in inputs if isinstance(v, Proxy)))
        if ufunc not in UFUNC_OPS:
            raise TraceError(f"np.{ufunc.__name__} is not supported on traced values: tensorforge has no op for it "
                             f"(supported numpy functions: {', '.join(sorted(f.__name__ for f in UFUNC_OPS))}, "
                             "np.maximum(x, 0))")
        return _functional().apply(UFUNC_OPS[ufunc], inputs)

    def __array_function__(self, func, types, args, kwargs):
        name = FUNCTION_NAMES.get(func)
        if name is None:
            raise TraceError(f"np.{func.__name__} is not supported on traced values: tensorforge has no op for it "
                             f"(supported: {', '.join(sorted({f.__name__ for f in FUNCTION_NAMES}))})")
        functional = _functional()
        if name == "concat":
            return functional.concat(args[0], kwargs.get("axis", args[1] if len(args) > 1 else 0))
        return getattr(functional, name)(*args, **kwargs)


def _index(value: Proxy, key) -> Proxy:
    """x[1:3, ::2], x[..., 0], x[None]: a slice, then a reshape for the ints and Nones."""
    key = key if isinstance(key, tuple) else (key,)
    if sum(item is Ellipsis for item in key) > 1:
        raise TraceError("an index can have only one '...'")
    explicit = sum(item is not None and item is not Ellipsis for item in key)
    if explicit > value.ndim:
        raise TraceError(f"too many indices ({explicit}) for {value.node.type}")
    if Ellipsis in key:
        at = key.index(Ellipsis)
        key = key[:at] + (slice(None),) * (value.ndim - explicit) + key[at + 1:]
    key = key + (slice(None),) * (value.ndim - sum(item is not None for item in key))
    starts, stops, steps, shape = [], [], [], []
    axis = 0
    for item in key:
        if item is None:
            shape.append(1)
            continue
        size = value.shape[axis]
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            index = int(item) + size if item < 0 else int(item)
            if not 0 <= index < size:
                raise TraceError(f"index {item} is out of range for axis {axis} of size {size}")
            starts.append(index), stops.append(index + 1), steps.append(1)
        elif isinstance(item, slice):
            start, stop, step = item.indices(size)
            if step <= 0:
                raise TraceError(f"slices with a negative step are not supported (axis {axis}: {item})")
            starts.append(start), stops.append(stop), steps.append(step)
            shape.append(len(range(start, stop, step)))
        else:
            raise TraceError(f"index {item!r} is not supported on traced values: use ints, slices, None or '...'")
        axis += 1
    functional = _functional()
    result = value
    if any(a != 0 or b != d or c != 1 for a, b, c, d in zip(starts, stops, steps, value.shape)):
        result = functional.slice(value, starts, stops, steps)
    if tuple(shape) != result.shape:
        result = functional.reshape(result, tuple(shape))
    return result


def _named_arrays(model: Any) -> dict[int, str]:
    named = getattr(model, "named_arrays", None)
    if named is None:
        return {}
    return {id(array): name for name, array in named()}


def _input_names(model: Any, count: int) -> list[str]:
    function = model.forward if hasattr(model, "forward") else model
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:count]
    if len(names) < count or len(set(names)) < count or not all(ir.graph.NAME_RE.fullmatch(n) for n in names):
        return ["x"] if count == 1 else [f"x{i}" for i in range(count)]
    return names


def example_arrays(example_inputs) -> tuple[np.ndarray, ...]:
    """The example inputs as arrays: one array or a tuple/list of them; float64 becomes float32."""
    values = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    arrays = []
    for index, value in enumerate(values):
        if value is None:
            raise TypeError(f"example input {index} is None; pass an array of the shape the model takes")
        array = np.asarray(value)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        try:
            ir.DType.from_numpy(array.dtype)
        except TypeError:
            raise TypeError(f"example input {index} has dtype {array.dtype}, which tensorforge does not support "
                            f"(supported: {', '.join(d.value for d in ir.DType)})") from None
        arrays.append(np.ascontiguousarray(array) if array.ndim else array)
    return tuple(arrays)


def trace(model: Callable, example_inputs) -> ir.Graph:
    """Record `model(*example_inputs)` as a graph whose inputs have the example inputs' types."""
    arrays = example_arrays(example_inputs)
    graph = ir.Graph()
    tracer = Tracer(graph, _named_arrays(model))
    names = _input_names(model, len(arrays))
    proxies = [Proxy(tracer, graph.add_input(name, ir.TensorType.of(array))) for name, array in zip(names, arrays)]
    result = model(*proxies)
    results = result if isinstance(result, (tuple, list)) else (result,)
    outputs = []
    for value in results:
        if isinstance(value, Proxy):
            outputs.append(value.node)
        elif isinstance(value, (np.ndarray, np.generic, int, float)):
            outputs.append(tracer.constant(np.asarray(value)))
        else:
            raise TraceError(f"the model returned a {type(value).__name__}; it must return arrays (or a tuple of them)")
    graph.outputs = outputs
    ir.verify(graph)
    return graph
