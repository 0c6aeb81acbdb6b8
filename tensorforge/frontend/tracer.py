"""The tracer: runs a model once on Proxy values and records every op it applies as an ir.Graph.

    graph = trace(nn.Sequential(nn.Linear(64, 32), nn.ReLU()), x)
    graph(%x: f32[4,64]) {
      %layers.0.weight = constant() : f32[64,32]
      %layers.0.bias = constant() : f32[32]
      %0 = linear(%x, %layers.0.weight, %layers.0.bias) : f32[4,32]
      %1 = relu(%0) : f32[4,32]
      return %1
    }

A `Proxy` stands for a value known only at run time. It behaves like the numpy array it stands
for: its operators (`+ - * / @ **`, indexing, `reshape`, `sum`...) and the numpy functions that
have an op record nodes, through `functional`. Shapes are static, so `x.shape` and `len(x)` are
plain Python values. Anything that needs the contents (`if x.sum() > 0`, `float(x)`,
`np.asarray(x)`) or has no op (`np.sort(x)`) raises `TraceError` saying what to do instead.
Arrays the model holds become constants named by their attribute path (`fc1.weight`,
`layers.0.bias`); the same array used twice is one constant.
"""

from __future__ import annotations

import inspect
import os
import traceback
import types
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import ir


class TraceError(Exception):
    """The model does something a static trace cannot record; the message says what to do instead."""


def _functional():
    """functional.py, imported when first needed (it imports this module)."""
    from . import functional

    return functional


_LIBRARY_FILES = (os.path.dirname(__file__), os.path.dirname(np.__file__), "<__array_function__")


def _user_location(error: BaseException) -> str:
    """' (at model.py:12, in forward)': the innermost frame of the model's code that led to `error`."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(_LIBRARY_FILES)]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {os.path.basename(frame.filename)}:{frame.lineno}, in {frame.name})"


# --- operands ----------------------------------------------------------------------------------

def _narrow_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype.kind == "f" else dtype


def _narrow_float(array: np.ndarray) -> np.ndarray:
    return array.astype(_narrow_dtype(array.dtype), copy=False)


def tensor_dtype(operands: Sequence) -> np.dtype | None:
    """The dtype of the first tensor (Proxy or ndarray) operand; Python scalars and lists adopt it."""
    for value in operands:
        if isinstance(value, Proxy):
            return value.dtype
        if isinstance(value, np.ndarray):
            return _narrow_dtype(value.dtype)
    return None


def operand_array(value, dtype: np.dtype | None, op: str) -> np.ndarray:
    """An operand of `op` that is not traced, as an array of a dtype the IR has.

    Arrays keep their dtype, except float64/float16, which become float32 (the IR's one float type,
    as `ir.coerce_input` does). Python scalars, lists and numpy scalars are weakly typed, as in
    numpy's NEP 50: they take `dtype`, the dtype of the op's tensor operand, so f32 x + 1.0 stays
    f32; a float joining an int tensor, or an int that does not fit its dtype, is refused.
    """
    if isinstance(value, np.ndarray):
        return _narrow_float(value)
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ir.OpError(f"op '{op}': operand {value!r} ({type(value).__name__}) is not a number or an array")
    if dtype is None or array.dtype == dtype:
        return _narrow_float(array)
    if array.dtype.kind == "f" and dtype.kind != "f":
        raise ir.OpError(f"op '{op}': the float value {value!r} cannot join a {dtype} tensor without losing its "
                         f"fraction; cast the tensor first (x.astype(np.float32))")
    if dtype.kind == "b" and array.dtype.kind != "b":
        raise ir.OpError(f"op '{op}': the number {value!r} cannot join a bool tensor; use True/False")
    if dtype.kind in "iu" and array.dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise ir.OpError(f"op '{op}': the value {value!r} does not fit the {dtype} tensor it joins")
    return array.astype(dtype)


class Tracer:
    """The graph being recorded and the names of the arrays the model holds (by identity)."""

    def __init__(self, graph: ir.Graph, array_names: dict[int, str]):
        self.graph = graph
        self.array_names = array_names
        self.active = True  # False once trace() has returned: the graph is finished
        self._constants: dict[int, tuple[np.ndarray, ir.Node]] = {}

    def constant(self, value, dtype: np.dtype | None = None, op: str = "output") -> ir.Node:
        """The constant node of an untraced operand; one node per array object, named by its path if it has one."""
        key = id(value) if isinstance(value, np.ndarray) else None
        if key in self._constants:
            return self._constants[key][1]
        # a copy: changing the model's arrays after tracing does not change the graph
        array = np.array(operand_array(value, dtype, op))
        node = self.graph.constant(array, self.array_names.get(key))
        if key is not None:
            self._constants[key] = (value, node)  # keeps `value` alive, so its id is not reused
        return node

    def record(self, op: str, operands: Sequence, attrs: dict[str, Any]) -> Proxy:
        """Add `op(operands) {attrs}` to the graph; untraced operands become constants."""
        for value in operands:
            if isinstance(value, Proxy) and value.tracer is not self:
                raise TraceError(f"'{op}' mixes values of two different traces")
        if not self.active:
            raise TraceError(f"'{op}' was applied to a traced value after trace() returned; traced values are "
                             "only valid while the model runs")
        dtype = tensor_dtype(operands)
        try:
            nodes = [value.node if isinstance(value, Proxy) else self.constant(value, dtype, op) for value in operands]
            node = self.graph.call(op, nodes, attrs)
        except ir.OpError as error:
            raise TraceError(f"while tracing: {error}") from None
        return Proxy(self, node)


# --- Proxy -------------------------------------------------------------------------------------

def _method(function_name: str) -> Callable:
    def method(self, *args, **kwargs):
        return getattr(_functional(), function_name)(self, *args, **kwargs)

    method.__name__ = function_name
    return method


def _reflected(function_name: str) -> Callable:
    def method(self, other):
        return getattr(_functional(), function_name)(other, self)

    method.__name__ = f"reflected_{function_name}"
    return method


def _refuse(what: str, hint: str) -> Callable:
    def method(self, *args, **kwargs):
        raise TraceError(f"{what} of the traced value %{self.node.name} ({self.node.type}) needs its contents, "
                         f"which are only known at run time; {hint}")

    return method


BRANCH_HINT = ("branch on what is static (x.shape, x.ndim, x.dtype) instead, or compute both branches and "
               "blend them with a 0/1 mask array: m * a + (1 - m) * b")


class Proxy:
    """A traced value: a node of the graph being recorded, with the operators of a numpy array."""

    def __init__(self, tracer: Tracer, node: ir.Node):
        self.tracer = tracer
        self.node = node

    # static facts: plain Python values
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
        return self.node.type.size

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object (a 0-d traced value)")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Proxy(%{self.node.name}: {self.node.type})"

    __hash__ = object.__hash__  # by identity; == is refused below

    @property
    def T(self) -> Proxy:  # noqa: N802  (numpy's name)
        return _functional().transpose(self)

    def flatten(self) -> Proxy:
        """numpy's flatten: all axes into one (functional.flatten keeps the batch axis)."""
        return _functional().reshape(self, -1)

    ravel = flatten

    def __pos__(self) -> Proxy:
        return self

    def __iter__(self):
        raise TraceError(f"Iteration over the traced value %{self.node.name} ({self.node.type}) is not supported; "
                         "index it instead: [x[i] for i in range(x.shape[0])]")

    def __setitem__(self, key, value):
        raise TraceError(f"assigning into the traced value %{self.node.name} ({self.node.type}) is not supported: "
                         "traced values are immutable; build a new value (concat, arithmetic with a mask)")

    # TinyTorch's Tensor.data / .numpy(): the raw array, which a trace does not have
    data = property(_refuse("Reading .data", "use tensor operations on the value itself, not its raw array"))
    numpy = _refuse(".numpy()", "use tensor operations on the value itself, not its raw array")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        function = _functional().NUMPY_UFUNCS.get(ufunc)
        if method != "__call__" or function is None:
            raise TraceError(f"{name} is not supported on traced values: tensorforge has no op for it "
                             f"(numpy functions with an op: {_numpy_names()})")
        if kwargs:
            raise TraceError(f"{name} is supported on traced values only without keyword arguments "
                             f"(got {', '.join(sorted(kwargs))})")
        return function(*inputs)

    def __array_function__(self, func, types_, args, kwargs):
        module = func.__module__.replace("numpy", "np", 1) if func.__module__.startswith("numpy") else func.__module__
        name = f"{module}.{func.__name__}"
        function = _functional().NUMPY_FUNCTIONS.get(func)
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
    functional = _functional()
    names = [f.__name__ for f in list(functional.NUMPY_UFUNCS) + list(functional.NUMPY_FUNCTIONS)]
    return ", ".join(sorted(set(names)))


# Python operator -> functional function; each also gets its reflected form (__radd__ for 1.0 + x).
BINARY_OPERATORS = {"add": "add", "sub": "sub", "mul": "mul", "truediv": "div", "matmul": "matmul", "pow": "power"}
# array methods and unary operators -> functional function, called as function(self, *args, **kwargs)
METHODS = {"__neg__": "neg", "__abs__": "abs", "__getitem__": "getitem", "reshape": "reshape", "transpose": "transpose",
           "sum": "sum", "mean": "mean", "max": "max", "argmax": "argmax", "astype": "cast", "matmul": "matmul"}
# what needs the contents of a value -> (what it is, what to do instead)
REFUSED = {
    "__bool__": ("Python control flow on the truth (if, while, and, or, not)", BRANCH_HINT),
    "__float__": ("float()", "keep it a tensor: tensor ops and operators accept traced values"),
    "__int__": ("int()", "keep it a tensor, or take sizes from x.shape, which is static"),
    "__index__": ("Using as an index or a size", "index with Python ints and slices; take sizes from x.shape"),
    "__complex__": ("complex()", "keep it a tensor"),
    "__array__": ("Converting to a numpy array (np.asarray, np.array)",
                  "use tensorforge ops, operators and the numpy functions that have an op"),
    "item": (".item()", "keep it a tensor: tensor ops and operators accept traced values"),
    "tolist": (".tolist()", "keep it a tensor: tensor ops and operators accept traced values"),
}
COMPARISONS = {"__lt__": "<", "__le__": "<=", "__gt__": ">", "__ge__": ">=", "__eq__": "==", "__ne__": "!="}

for _name, _function in BINARY_OPERATORS.items():
    setattr(Proxy, f"__{_name}__", _method(_function))
    setattr(Proxy, f"__r{_name}__", _reflected(_function))
for _name, _function in METHODS.items():
    setattr(Proxy, _name, _method(_function))
for _name, (_what, _hint) in REFUSED.items():
    setattr(Proxy, _name, _refuse(_what, _hint))
for _name, _symbol in COMPARISONS.items():
    setattr(Proxy, _name, _refuse("A comparison", f"tensorforge has no comparison ops (here {_symbol}); {BRANCH_HINT}"))


# --- trace -------------------------------------------------------------------------------------

def example_arrays(example_inputs) -> tuple[np.ndarray, ...]:
    """The example inputs as arrays: one value, or a tuple/list of values (one per model argument).

    As `ir.coerce_input` does: Python scalars and lists become arrays; float64 and float16 become
    float32, the IR's float type; any other dtype is kept if the IR has it.
    """
    values = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    arrays = []
    for index, value in enumerate(values):
        if value is None:
            raise TypeError(f"example input {index} is None; pass an array of the shape the model takes")
        if isinstance(value, Proxy):
            raise TypeError(f"example input {index} is a traced value; pass a numpy array")
        try:
            array = _narrow_float(np.asarray(value))
        except ValueError as error:
            raise TypeError(f"example input {index} cannot be read as an array: {error}") from None
        try:
            ir.DType.from_numpy(array.dtype)
        except TypeError:
            raise TypeError(f"example input {index} has dtype {array.dtype}, which tensorforge does not support "
                            f"(supported: {', '.join(d.value for d in ir.DType)})") from None
        arrays.append(array)
    return tuple(arrays)


def input_names(model: Callable, count: int) -> list[str]:
    """The graph input names: the model's (or its forward's) positional parameter names, else x / x0, x1..."""
    function = getattr(model, "forward", model)
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    names = []
    for parameter in parameters:
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            names.append(parameter.name)
        elif parameter.kind is parameter.VAR_POSITIONAL:
            names += [f"{parameter.name}{i}" for i in range(count - len(names))]
    names = [name if ir.graph.NAME_RE.fullmatch(name) else None for name in names[:count]]
    names += [None] * (count - len(names))
    return [name or ("x" if count == 1 else f"x{i}") for i, name in enumerate(names)]


def array_names(model: Callable) -> dict[int, str]:
    """Names for the arrays the model holds, by id: attribute paths of a Module (or of any object with
    a `forward`), and for a plain function the names of the arrays and modules it refers to."""
    from .modules import named_arrays  # imported here: modules imports this module through functional

    if inspect.ismethod(model):
        owner = model.__self__
    elif inspect.isfunction(model):
        try:
            referred = inspect.getclosurevars(model)
        except (TypeError, ValueError):
            return {}
        owner = types.SimpleNamespace(**referred.globals, **referred.nonlocals)
    else:
        owner = model
    names: dict[int, str] = {}
    for path, array, _ in named_arrays(owner):
        if ir.graph.NAME_RE.fullmatch(path):
            names.setdefault(id(array), path)
    return names


def trace(model: Callable, example_inputs) -> ir.Graph:
    """Record `model(*example_inputs)` as a verified graph whose inputs have the example inputs' types.

    `model` is a Module or any callable taking arrays; `example_inputs` is one array or a tuple/list
    of arrays (see `example_arrays`). The model returns one value or a tuple/list of values: traced
    values, or arrays and numbers, which become constant outputs.
    """
    arrays = example_arrays(example_inputs)
    graph = ir.Graph()
    tracer = Tracer(graph, array_names(model))
    proxies = [Proxy(tracer, graph.add_input(name, ir.TensorType.of(array)))
               for name, array in zip(input_names(model, len(arrays)), arrays)]
    try:
        result = model(*proxies)
        results = tuple(result) if isinstance(result, (tuple, list)) else (result,)
        if not results:
            raise TraceError("the model returned an empty tuple; it must return at least one value")
        graph.outputs = [_output_node(tracer, index, value) for index, value in enumerate(results)]
    except TraceError as error:
        error.args = (f"{error}{_user_location(error)}",)  # say where in the model, keeping the traceback
        raise
    finally:
        tracer.active = False
    ir.verify(graph)
    return graph


def _output_node(tracer: Tracer, index: int, value) -> ir.Node:
    if isinstance(value, Proxy):
        if value.tracer is not tracer:
            raise TraceError(f"output {index} is a value of another trace")
        return value.node
    if isinstance(value, (np.ndarray, np.generic, bool, int, float)):
        return tracer.constant(value)
    raise TraceError(f"output {index} of the model is a {type(value).__name__}; a model returns arrays or numbers "
                     "(one, or a tuple/list of them)")
