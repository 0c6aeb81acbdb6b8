"""Provenance: which value of the graph before a rewrite each new node stands for.

A pass rewrites a graph in place; `graph.begin_rewrite()` (the pass manager calls it before every
pass) starts a new epoch. From then on every node the rewrite creates is *new*, and the graph
records, by the new node's name, an `Origin` naming values of the graph as it was when the epoch
began:

    %1 = conv2d(%x, %w) : f32[1,4,6,6]                    %5 = conv2d(%x, %w_bn, %b_bn) : f32[1,4,6,6]
    %2 = batch_norm(%1, %g, %b, %m, %v) : f32[1,4,6,6]  ->
        graph.provenance["5"] == Origin(("2",), "same")
        graph.provenance["w_bn"] == Origin(("w", "g", "b", "m", "v"), "derived")

    "same"     the node computes what values[0] computed (within float rounding; an int8 code may be
               one off): `node.replace_all_uses_with(new)` records it, so every rewrite does
    "concat"   the node computes the values concatenated along the last axis (fuse-sibling-linears)
    "derived"  computed from the values but equal to none of them: a folded weight, an intermediate
               of a rewrite; its value is checked through the "same" node that reads it

A chain of rewrites inside one epoch resolves to the values before it (a node replacing a new node
inherits that node's origin). Nodes that are not new existed before the rewrite, under the same
name. `check.py` uses this to compare a pass's output with its input value by value, and
`meta["layer"]` (set by the rewrite helpers) keeps the name of the model's layer a fused node computes.
"""

from __future__ import annotations

from dataclasses import dataclass

RELATIONS = ("same", "concat", "derived")


@dataclass(frozen=True)
class Origin:
    """The values (names in the graph before the rewrite) a new node stands for, and how."""

    values: tuple[str, ...]
    relation: str = "same"

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise ValueError(f"an Origin's relation is one of {RELATIONS}, got {self.relation!r}")
        if not self.values:
            raise ValueError("an Origin names at least one value")

    def __str__(self) -> str:
        names = ", ".join(f"%{name}" for name in self.values)
        return {"same": f"stands for {names}", "concat": f"the concatenation of {names}",
                "derived": f"derived from {names}"}[self.relation]
