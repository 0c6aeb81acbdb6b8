"""trace: runs a model once on Proxy values and records every op it applies as an ir.Graph.

    graph = trace(nn.Sequential(nn.Linear(64, 32), nn.ReLU()), x)
    graph(%x: f32[4,64]) {
      %layers.0.weight = constant() : f32[64,32]
      %layers.0.bias = constant() : f32[32]
      %0 = linear(%x, %layers.0.weight, %layers.0.bias) : f32[4,32]
      %1 = relu(%0) : f32[4,32]
      return %1
    }

The model runs on `Proxy` values (proxy.py), whose operators and numpy functions record nodes
through `functional`. Anything that needs the contents or has no op raises `TraceError`, and
trace() adds where in the model it happened.
Arrays the model holds become constants named by their attribute path (`fc1.weight`,
`layers.0.bias`); the same array used twice is one constant.
"""

from __future__ import annotations

import inspect
import os
import traceback
import types
from collections.abc import Callable

import numpy as np

from .. import ir
from . import functional  # noqa: F401  (installs the Proxy's operators)
from .modules import named_arrays
from .proxy import Proxy, TraceError, Tracer, narrow_float

_LIBRARY_FILES = (os.path.dirname(__file__), os.path.dirname(np.__file__), "<__array_function__")


def _user_location(error: BaseException) -> str:
    """' (at model.py:12, in forward)': the innermost frame of the model's code that led to `error`."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(_LIBRARY_FILES)]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {os.path.basename(frame.filename)}:{frame.lineno}, in {frame.name})"


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
            array = narrow_float(np.asarray(value))
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


def trace(model: Callable, example_inputs, *, copy_constants: bool = True) -> ir.Graph:
    """Record `model(*example_inputs)` as a verified graph whose inputs have the example inputs' types.

    `model` is a Module or any callable taking arrays; `example_inputs` is one array or a tuple/list
    of arrays (see `example_arrays`). The model returns one value or a tuple/list of values: traced
    values, or arrays and numbers, which become constant outputs. The graph's constants are copies
    of the model's arrays; `copy_constants=False` makes them read-only views of them instead (no
    second copy of a large model's weights: compile_generator), which see later changes to the model.
    """
    arrays = example_arrays(example_inputs)
    graph = ir.Graph()
    tracer = Tracer(graph, array_names(model), copy_constants)
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
