"""The verifier: checks that a graph is well formed, with errors that name the node and the fix.

Checks: every name defined once; every operand defined before use and in this graph; use-def
edges consistent; operand counts and attributes accepted by the op; re-running type inference
reproduces the stored type; outputs are values of the graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import registry

if TYPE_CHECKING:  # annotations only: graph.py imports this module
    from .graph import Graph, Node


class VerifyError(ValueError):
    """The graph breaks an invariant of the IR."""


def _same_attrs(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype == y.dtype
                    and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")):
                return False
        elif x != y:
            return False
    return True


def verify(graph: Graph) -> None:
    defined: set[Node] = set()
    names: set[str] = set()
    for node in graph.nodes:
        where = f"%{node.name} = {node.op}(...)"
        if node.graph is not graph:
            raise VerifyError(f"{where} belongs to another graph; create nodes with graph.call")
        if node.name in names:
            raise VerifyError(f"{where}: the name %{node.name} is defined twice; give each value its own name")
        names.add(node.name)
        for operand in node.inputs:
            if operand not in defined:
                raise VerifyError(f"{where} uses %{operand.name} before it is defined; "
                                  "insert new nodes with graph.inserting_before(user)")
            if node not in operand.users:
                raise VerifyError(f"{where} is missing from the users of %{operand.name}; "
                                  "assign node.inputs instead of changing _inputs")
        for user in node.users:
            if node not in user.inputs:
                raise VerifyError(f"%{user.name} is listed as a user of %{node.name} but does not use it")
        if node.op == "input":
            if node not in graph.inputs:
                raise VerifyError(f"{where} is an input node missing from graph.inputs")
        elif node.op == "constant":
            value = node.attrs.get("value")
            if not isinstance(value, np.ndarray) or value.shape != node.type.shape or \
                    value.dtype != node.type.dtype.numpy:
                raise VerifyError(f"{where}: its value does not match its type {node.type}")
        else:
            try:
                type_, attrs = registry.infer_type(node.op, [n.type for n in node.inputs], node.attrs)
            except ValueError as err:
                raise VerifyError(f"{where}: {err}") from None
            if type_ != node.type:
                raise VerifyError(f"{where} is typed {node.type} but its op gives {type_}; "
                                  "create a new node instead of changing operands in place")
            if not _same_attrs(attrs, node.attrs):
                raise VerifyError(f"{where}: attributes {node.attrs} are not in canonical form {attrs}")
        defined.add(node)
    for node in graph.inputs:
        if node not in defined:
            raise VerifyError(f"graph input %{node.name} is not among the graph's nodes")
    if not graph.outputs:
        raise VerifyError("the graph has no outputs")
    for node in graph.outputs:
        if node not in defined:
            raise VerifyError(f"output %{node.name} is not a value of this graph")
