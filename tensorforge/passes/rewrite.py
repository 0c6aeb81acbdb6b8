"""Helpers shared by the passes: names for new values, constant tests, and the local-rewrite driver.

    rewrite_to_fixpoint(graph, RULES)   applies `(op, rule)` rules until none fires; a rule returns the
                                        node that replaces its match, or None when it does not apply
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import ir

Rule = Callable[[ir.Node], "ir.Node | None"]


def derived_name(node: ir.Node, suffix: str) -> str | None:
    """`fc.weight` -> `fc.weight_bn`; numbered values get a fresh number instead (None)."""
    return f"{node.name}_{suffix}" if not node.name[0].isdigit() else None


def is_filled_with(node: ir.Node, value: float) -> bool:
    """A constant whose every element equals `value` (any shape, at least one element)."""
    return node.op == "constant" and node.value.size > 0 and bool(np.all(node.value == value))


def rewrite_to_fixpoint(graph: ir.Graph, rules: list[tuple[str, Rule]], max_rounds: int = 100) -> ir.Graph:
    """Apply `rules` (each for one op) to every node, repeatedly, until a round changes nothing."""
    by_op: dict[str, list[Rule]] = {}
    for op, rule in rules:
        by_op.setdefault(op, []).append(rule)
    erased: set[ir.Node] = set()
    for _ in range(max_rounds):
        changed = False
        for node in list(graph.nodes):
            if node in erased:
                continue
            for rule in by_op.get(node.op, ()):
                with graph.inserting_before(node):
                    replacement = rule(node)
                if replacement is None or replacement is node:
                    continue
                node.replace_all_uses_with(replacement)
                if not node.users and node not in graph.outputs:
                    graph.erase(node)
                    erased.add(node)
                changed = True
                break
        if not changed:
            return graph
    return graph
