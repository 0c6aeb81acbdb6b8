"""Graph and Node: the IR every part of tensorforge reads and writes.

A Graph is an ordered list of nodes (each defined before it is used), its inputs and its outputs.
There is one Node class; a node's kind is its `op`: "input" for a graph input, "constant" for a
value known at compile time (weights), and any registered op name otherwise.

    graph(%x: f32[4,64]) {
      %fc.weight = constant() : f32[64,32]
      %1 = linear(%x, %fc.weight) : f32[4,32]
      %2 = relu(%1) : f32[4,32]
      return %2
    }

Use-def edges stay right on their own: assign `node.inputs`, or call `replace_all_uses_with`,
`graph.erase`; `node.users` is then always up to date. After `graph.begin_rewrite()`, the nodes
made are new and `graph.provenance` records which earlier value each stands for (provenance.py).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import registry
from .export import to_dot, to_networkx
from .printer import format_node, print_graph
from .provenance import Origin
from .types import DType, TensorType
from .verifier import verify

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*|[0-9]+")


class Node:
    """One value of the graph: `name = op(inputs) {attrs} : type`. `meta` holds analysis results."""

    def __init__(self, graph: Graph, name: str, op: str, inputs: Sequence[Node], attrs: dict[str, Any],
                 type_: TensorType):
        self.graph = graph
        self.name = name
        self.op = op
        self.attrs = attrs
        self.type = type_
        self.users: dict[Node, None] = {}
        self.meta: dict[str, Any] = {}
        self.born = graph.epoch  # the rewrite epoch that made the node (Graph.begin_rewrite)
        self._inputs: tuple[Node, ...] = ()
        self.inputs = inputs

    @property
    def inputs(self) -> tuple[Node, ...]:
        return self._inputs

    @inputs.setter
    def inputs(self, new: Sequence[Node]) -> None:
        for old in self._inputs:
            old.users.pop(self, None)
        self._inputs = tuple(new)
        for node in self._inputs:
            node.users[self] = None

    @property
    def value(self) -> np.ndarray:
        """The array of a constant node."""
        if self.op != "constant":
            raise TypeError(f"%{self.name} is a '{self.op}' node, not a constant")
        return self.attrs["value"]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    def replace_input(self, old: Node, new: Node) -> None:
        self.inputs = [new if n is old else n for n in self._inputs]

    def replace_all_uses_with(self, new: Node) -> None:
        """Make every user of this node (and the graph's outputs) use `new` instead."""
        if new.type != self.type:
            raise TypeError(f"cannot replace %{self.name} : {self.type} with %{new.name} : {new.type}")
        for user in list(self.users):
            user.replace_input(self, new)
        self.graph.outputs = [new if n is self else n for n in self.graph.outputs]
        if self.graph.is_new(new) and new.name not in self.graph.provenance:
            self.graph.provenance[new.name] = self.graph.origin(self)
            new.meta.setdefault("layer", self.meta.get("layer", self.name))

    def format(self) -> str:
        return format_node(self)

    def __repr__(self) -> str:
        return f"<Node %{self.name} = {self.op} : {self.type}>"


class Graph:
    """An ordered list of nodes with named inputs and a list of outputs."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.inputs: list[Node] = []
        self.outputs: list[Node] = []
        # how the outputs nest into what the model returned (ir/structure.py), set by the importer that
        # made the graph; None: flat. copy() leaves it out: a rewrite may change the outputs' meaning
        self.output_structure = None
        self._names: set[str] = set()
        self._counter = 0
        self._insert_at: Node | None = None  # None: append at the end
        self.epoch = 0  # nodes born in this epoch are new: made by the rewrite under way
        self.provenance: dict[str, Origin] = {}  # new node's name -> the earlier values it stands for
        self._recorders: list[list[Node]] = []

    # --- building -------------------------------------------------------------------------

    def _fresh_name(self, hint: str | None) -> str:
        if hint is not None:
            if not NAME_RE.fullmatch(hint):
                raise ValueError(f"{hint!r} is not a valid value name (letters, digits, '_' and '.')")
            if hint not in self._names:
                return hint
            base = None if hint.isdigit() else hint  # "0_1" would not be a valid name
        else:
            base = None
        while True:
            name = str(self._counter) if base is None else f"{base}_{self._counter}"
            self._counter += 1
            if name not in self._names:
                return name

    def _insert(self, node: Node) -> Node:
        self._names.add(node.name)
        for recorder in self._recorders:
            recorder.append(node)
        if self._insert_at is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(self._insert_at), node)
        return node

    def add_input(self, name: str, type_: TensorType, **attrs: Any) -> Node:
        """Append a graph input. `attrs` may mark it, e.g. state=True for an in-place state buffer."""
        if name in self._names:
            raise ValueError(f"graph already has a value named %{name}")
        node = Node(self, self._fresh_name(name), "input", (), dict(attrs), type_)
        self.inputs.append(node)
        self._names.add(node.name)
        self.nodes.insert(len(self.inputs) - 1, node)
        return node

    def rename(self, node: Node, name: str) -> None:
        """Give `node` the free value name `name` (an importer naming a graph output after the model's)."""
        if node.graph is not self:
            raise ValueError(f"%{node.name} is not a value of this graph")
        if name == node.name:
            return
        if not NAME_RE.fullmatch(name) or any(other.name == name for other in self.nodes):
            raise ValueError(f"cannot rename %{node.name} to {name!r}: not a valid value name, or taken")
        node.meta.setdefault("layer", node.name)  # pictures and the check still name the model's node
        self._names.discard(node.name)
        node.name = name
        self._names.add(name)

    def constant(self, value, name: str | None = None) -> Node:
        array = np.asarray(value)
        return self._insert(Node(self, self._fresh_name(name), "constant", (), {"value": array},
                                 TensorType.of(array)))

    def call(self, op: str, inputs: Sequence[Node], attrs: dict[str, Any] | None = None,
             name: str | None = None) -> Node:
        """Add `op(inputs) {attrs}`; its type comes from the op's type inference."""
        for node in inputs:
            if not isinstance(node, Node) or node.graph is not self:
                raise TypeError(f"operand {node!r} of '{op}' is not a value of this graph")
        if op in ("input", "constant"):
            raise ValueError(f"use add_input/constant to create '{op}' nodes")
        type_, full = registry.infer_type(op, [n.type for n in inputs], dict(attrs or {}))
        return self._insert(Node(self, self._fresh_name(name), op, inputs, full, type_))

    @contextlib.contextmanager
    def inserting_before(self, node: Node) -> Iterator[None]:
        """New nodes created inside the block go before `node` instead of at the end."""
        saved, self._insert_at = self._insert_at, node
        try:
            yield
        finally:
            self._insert_at = saved

    # --- provenance (provenance.py) -----------------------------------------------------------

    def begin_rewrite(self) -> None:
        """Start a rewrite: nodes made from now on are new, and provenance is recorded against the
        graph as it is now (the record of the previous rewrite is dropped)."""
        self.epoch += 1
        self.provenance = {}

    def is_new(self, node: Node) -> bool:
        """Made since `begin_rewrite` (before any begin_rewrite: every node)."""
        return node.born == self.epoch

    def origin(self, node: Node) -> Origin:
        """The values before the rewrite that `node` stands for: its recorded Origin when it is new,
        else itself."""
        if self.is_new(node) and node.name in self.provenance:
            return self.provenance[node.name]
        return Origin((node.name,))

    def record_origin(self, node: Node, sources: Sequence[Node], relation: str = "derived") -> None:
        """Record that new `node` is derived from (or the concatenation of) `sources`, resolved to the
        values before the rewrite; a node that is not new, or already has an origin, is left alone."""
        if not self.is_new(node) or node.name in self.provenance:
            return
        values = tuple(dict.fromkeys(name for source in sources for name in self.origin(source).values))
        if values:
            self.provenance[node.name] = Origin(values, relation)

    @contextlib.contextmanager
    def recording_created(self) -> Iterator[list[Node]]:
        """The nodes made inside the block, in order, in the list it yields."""
        created: list[Node] = []
        self._recorders.append(created)
        try:
            yield created
        finally:
            self._recorders.remove(created)

    def erase(self, node: Node) -> None:
        if node.users:
            names = ", ".join(f"%{u.name}" for u in node.users)
            raise ValueError(f"cannot erase %{node.name}: it is still used by {names}")
        if node in self.outputs:
            raise ValueError(f"cannot erase %{node.name}: it is a graph output")
        if node.op == "input":
            raise ValueError(f"cannot erase %{node.name}: it is a graph input")
        node.inputs = ()
        self.nodes.remove(node)
        self._names.discard(node.name)
        self.provenance.pop(node.name, None)

    # --- reading --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no value %{name} in the graph")

    def op_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.op not in ("input", "constant")]

    def constants(self) -> dict[str, np.ndarray]:
        """The arrays of all constant nodes, by node name (what `parse` needs to read text back)."""
        return {n.name: n.value for n in self.nodes if n.op == "constant"}

    def needed_by_outputs(self) -> set[Node]:
        """The nodes some graph output depends on (outputs included); every other node is dead."""
        needed: set[Node] = set()
        pending = list(self.outputs)
        while pending:
            node = pending.pop()
            if node not in needed:
                needed.add(node)
                pending.extend(node.inputs)
        return needed

    def copy(self) -> Graph:
        """A structural copy; constant arrays are shared (they are never written to)."""
        new = Graph()
        mapping: dict[Node, Node] = {}
        for node in self.nodes:
            clone = Node(new, node.name, node.op, [mapping[i] for i in node.inputs], dict(node.attrs), node.type)
            clone.meta = dict(node.meta)
            clone.born = node.born
            new.nodes.append(clone)
            new._names.add(clone.name)
            mapping[node] = clone
        new.inputs = [mapping[n] for n in self.inputs]
        new.outputs = [mapping[n] for n in self.outputs]
        new._counter = self._counter
        new.epoch, new.provenance = self.epoch, dict(self.provenance)
        return new

    def __str__(self) -> str:
        return print_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {len(self.inputs)} inputs, {len(self.nodes)} nodes, {len(self.outputs)} outputs>"

    def to_networkx(self):
        return to_networkx(self)

    def to_dot(self, title: str | None = None):
        return to_dot(self, title)

    def verify(self) -> None:
        verify(self)

