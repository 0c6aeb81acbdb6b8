"""The text form of a graph, one line per node; `parser.parse` reads it back.

    graph(%x: f32[4,64]) {
      %w = constant() : f32[64,32]                        large constants: value passed to parse()
      %c = constant() {value=[1.0, 2.0]} : f32[2]         small constants are written inline
      %1 = linear(%x, %w) : f32[4,32]
      %2 = reduce_sum(%1) {axes=[1], keepdims=false} : f32[4]
      return %2
    }
"""

from __future__ import annotations

import json
import math

import numpy as np

from .registry import OPS
from .types import DType

INLINE_CONSTANT_LIMIT = 16  # constants with at most this many elements are printed inline


def format_scalar(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def format_attr(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, DType):
        return value.name
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, np.ndarray):
        return format_attr(value.tolist()) if value.ndim else format_scalar(value[()])
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    return format_scalar(value)


def format_node(node) -> str:
    attrs = dict(node.attrs)
    if node.op in OPS:  # an unset optional attribute (None or False, its default) is left out
        defaults = OPS[node.op].attrs
        attrs = {k: v for k, v in attrs.items()
                 if not ((v is None and defaults.get(k, 0) is None) or (v is False and defaults.get(k) is False))}
    if node.op == "constant" and attrs["value"].size > INLINE_CONSTANT_LIMIT:
        del attrs["value"]
    operands = ", ".join(f"%{n.name}" for n in node.inputs)
    text = f"%{node.name} = {node.op}({operands})"
    if attrs:
        text += " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in attrs.items()) + "}"
    return f"{text} : {node.type}"


def print_graph(graph) -> str:
    def input_decl(node):
        text = f"%{node.name}: {node.type}"
        if node.attrs:
            text += " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in node.attrs.items()) + "}"
        return text

    lines = ["graph(" + ", ".join(input_decl(n) for n in graph.inputs) + ") {"]
    lines += ["  " + format_node(n) for n in graph.nodes if n.op != "input"]
    lines.append("  return " + ", ".join(f"%{n.name}" for n in graph.outputs))
    lines.append("}")
    return "\n".join(lines)
