"""eliminate-common-subexpressions: nodes computing the same thing become one.

    %1 = exp(%x)                         %1 = exp(%x)
    %2 = exp(%x)                  ->     %3 = add(%1, %1)
    %3 = add(%1, %2)

Two op nodes are the same when op, operands and attributes are equal (operands in either order for
commutative ops); two constants when dtype, shape and bytes are equal. A constant is keyed by its
bytes when small, else by a fingerprint (ir/arrays.py), and equal fingerprints are compared a chunk
at a time: no copy of the weights (a GPT-2's are 0.5 GB) is made to find the equal ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ir
from ..ir.arrays import fingerprint, same_bytes
from .manager import PassContext
from .registry import register_pass
from .rewrite import replace_node

SMALL_CONSTANT = 4096  # bytes: a constant this small is keyed by its bytes themselves


def _attr_key(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    return (type(value).__name__, value)


def _key(node: ir.Node) -> tuple:
    if node.op == "constant":
        return ("constant", _attr_key(node.value))
    operands = tuple(id(operand) for operand in node.inputs)
    if "commutative" in ir.get_op(node.op).traits:
        operands = tuple(sorted(operands))
    return (node.op, operands, tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items())))


def _equal_large_constant(node: ir.Node, large: dict[tuple, list[ir.Node]]) -> ir.Node | None:
    """The first earlier constant with `node`'s bytes among those of its fingerprint; None (and `node`
    becomes one of them) when there is none."""
    candidates = large.setdefault(fingerprint(node.value), [])
    first = next((other for other in candidates if same_bytes(other.value, node.value)), None)
    if first is None:
        candidates.append(node)
    return first


@register_pass("eliminate-common-subexpressions", opt_level=2,
               description="merge nodes with equal op, operands and attributes, and equal constants",
               after={"fold-constants": "after folding, equal constants and equal ops are visible"})
def eliminate_common_subexpressions(graph: ir.Graph, ctx: PassContext | None = None) -> ir.Graph:
    """Replace each node by the first earlier node with the same key (see `_key`), in one sweep."""
    seen: dict[tuple, ir.Node] = {}
    large: dict[tuple, list[ir.Node]] = {}  # fingerprint -> the distinct large constants that have it
    for node in list(graph.nodes):
        if node.op == "input":
            continue
        if node.op == "constant" and node.value.nbytes > SMALL_CONSTANT:
            first = _equal_large_constant(node, large)
        else:
            key = _key(node)
            first = seen.get(key)
            if first is None or first.type != node.type:
                seen.setdefault(key, node)
                continue
        if first is not None:
            replace_node(node, first)
    return graph
