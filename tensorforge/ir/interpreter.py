"""The reference interpreter: runs a graph node by node with each op's numpy reference.

It is the oracle every optimized or compiled result is checked against.

    y = interpret(graph, x)            # one output: an array; several: a tuple
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from . import registry
from .graph import Graph, Node
from .types import TensorType


class InputError(ValueError):
    """An argument given for a graph input has the wrong count, shape or dtype."""


def coerce_input(name: str, expected: TensorType, value) -> np.ndarray:
    """Check one argument against the input's type; convert where that is safe and documented.

    Accepted conversions: Python lists and scalars, float64/float16 -> f32, any int -> the
    input's int dtype when every value fits, non-contiguous or Fortran-order -> C-contiguous copy.
    """
    if value is None:
        raise InputError(f"input '{name}' is None; expected an array {expected}")
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    target = expected.dtype.numpy
    if array.dtype != target:
        kinds = (array.dtype.kind, target.kind)
        fits = kinds[0] in "iu" and kinds[1] in "iu" and array.size and \
            np.iinfo(target).min <= array.min() and array.max() <= np.iinfo(target).max
        if kinds == ("f", "f") or (kinds[0] in "iu" and kinds[1] in "iu" and (fits or array.size == 0)):
            array = array.astype(target)
        else:
            raise InputError(f"input '{name}' has dtype {array.dtype}, expected {target} ({expected})")
    if array.shape != expected.shape:
        raise InputError(f"input '{name}' has shape {array.shape}, expected {expected.shape} ({expected})")
    return np.ascontiguousarray(array)


def coerce_inputs(graph: Graph, args: Sequence) -> list[np.ndarray]:
    if len(args) != len(graph.inputs):
        names = ", ".join(n.name for n in graph.inputs)
        raise InputError(f"the model takes {len(graph.inputs)} input(s) ({names}), got {len(args)}")
    return [coerce_input(node.name, node.type, arg) for node, arg in zip(graph.inputs, args)]


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
