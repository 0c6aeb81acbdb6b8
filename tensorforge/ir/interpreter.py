"""The reference interpreter: runs a graph node by node with each op's numpy reference.

It is the oracle every optimized or compiled result is checked against.

    y = interpret(graph, x)            # one output: an array; several: a tuple
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from . import registry
from .graph import Graph, Node
from .ops_transformer import index_inputs
from .types import TensorType


class InputError(ValueError):
    """An argument given for a graph input has the wrong count, shape or dtype."""


def coerce_input(name: str, expected: TensorType, value) -> np.ndarray:
    """Check one argument against the input's type; convert where that is safe and documented.

    Accepted conversions: Python lists and scalars (ints are accepted for float inputs),
    float64/float16 -> f32, any int -> the input's int dtype when every value fits,
    non-contiguous or Fortran-order -> C-contiguous copy. Everything else raises InputError.
    """
    if value is None:
        raise InputError(f"input '{name}' is None; expected an array {expected}")
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as err:
            raise InputError(f"input '{name}' cannot be read as an array {expected}: {err}") from None
    target = expected.dtype.numpy
    if array.dtype != target:
        array = _convert(name, expected, array, from_python=not isinstance(value, np.ndarray))
    if array.shape != expected.shape:
        raise InputError(f"input '{name}' has shape {array.shape}, expected {expected.shape} ({expected})")
    return np.require(array, requirements="C")


def _convert(name: str, expected: TensorType, array: np.ndarray, from_python: bool) -> np.ndarray:
    target = expected.dtype.numpy
    source, dest = array.dtype.kind, target.kind
    if (source, dest) == ("f", "f") or (from_python and source in "iu" and dest == "f"):
        return array.astype(target)
    if source in "iu" and dest in "iu":
        info = np.iinfo(target)
        if array.size and not (info.min <= array.min() and array.max() <= info.max):
            raise InputError(f"input '{name}' has {array.dtype} values in [{array.min()}, {array.max()}] that do "
                             f"not fit {target} ({expected})")
        return array.astype(target)
    raise InputError(f"input '{name}' has dtype {array.dtype}, expected {target} ({expected})")


def coerce_inputs(graph: Graph, args: Sequence) -> list[np.ndarray]:
    """Every argument through coerce_input, then the token ids a gather reads checked against its table."""
    if len(args) != len(graph.inputs):
        names = ", ".join(n.name for n in graph.inputs)
        raise InputError(f"the model takes {len(graph.inputs)} input(s) ({names}), got {len(args)}")
    arrays = [coerce_input(node.name, node.type, arg) for node, arg in zip(graph.inputs, args)]
    for ids in index_inputs(graph):
        problem = ids.problem(graph.inputs[ids.position].name, arrays[ids.position])
        if problem is not None:
            raise InputError(problem)
    return arrays


def run_graph(graph: Graph, args: Sequence, on_value: Callable[[Node, np.ndarray], None] | None = None
              ) -> dict[Node, np.ndarray]:
    """Evaluate every node; returns the value of each. `on_value(node, array)` sees each as computed."""
    values: dict[Node, np.ndarray] = dict(zip(graph.inputs, coerce_inputs(graph, args)))
    for node in graph.nodes:
        if node.op == "input":
            result = values[node]
        elif node.op == "constant":
            result = node.value
        else:
            try:
                result = registry.evaluate(node.op, [values[n] for n in node.inputs], node.attrs)
            except Exception as err:
                err.add_note(f"while interpreting {node.format()}")
                raise
        values[node] = result
        if on_value is not None:
            on_value(node, result)
    return values


def interpret(graph: Graph, *args):
    """Run `graph` on numpy arrays; returns one array, or a tuple when the graph has several outputs."""
    values = run_graph(graph, args)
    outputs = tuple(values[n].copy() for n in graph.outputs)
    return outputs[0] if len(outputs) == 1 else outputs
