"""Helpers shared by the passes: names for new values, constant tests, and the local-rewrite driver.

    rewrite_to_fixpoint(graph, [("neg", double_negation)])

    %1 = neg(%x) : f32[4]
    %2 = neg(%1) : f32[4]          ->     %3 = relu(%x) : f32[4]
    %3 = relu(%2) : f32[4]

A rule is `(op, function)`: the function gets a node of that op and returns the node that replaces
it (an existing one, or one it creates with graph.call; new nodes go right before the matched one),
or None when it does not apply.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import ir

Rule = Callable[[ir.Node], "ir.Node | None"]


def suffixed_name(name: str, suffix: str) -> str:
    """`name` with `suffix`, still a valid value name: `fc.weight` -> `fc.weight_bn`, `7` -> `bn_7`."""
    return f"{suffix}_{name}" if name[0].isdigit() else f"{name}_{suffix}"


def derived_name(node: ir.Node, suffix: str) -> str:
    """The name of a value computed from `node` (suffixed_name); the graph adds a number if it is taken."""
    return suffixed_name(node.name, suffix)


def is_filled_with(node: ir.Node, value: float) -> bool:
    """A constant whose every element equals `value` (any shape, at least one element)."""
    return node.op == "constant" and node.value.size > 0 and bool(np.all(node.value == value))


def is_live(node: ir.Node) -> bool:
    """Something still reads the node: another node, or the graph's outputs."""
    return bool(node.users) or node in node.graph.outputs


def needed_by_outputs(graph: ir.Graph) -> set[ir.Node]:
    """The nodes some graph output depends on (itself included); every other node is dead."""
    return graph.needed_by_outputs()


def erase_if_unused(graph: ir.Graph, node: ir.Node, erased: set[ir.Node]) -> None:
    """Erase `node`, and then its operands, for as long as they are op nodes or constants nobody reads."""
    pending = [node]
    while pending:
        current = pending.pop()
        if current in erased or current.op == "input" or is_live(current):
            continue
        operands = current.inputs
        graph.erase(current)
        erased.add(current)
        pending.extend(operands)


def rewrite_to_fixpoint(graph: ir.Graph, rules: list[tuple[str, Rule]], max_rounds: int = 1000) -> ir.Graph:
    """Apply `rules` to every live node, round after round, until a round changes nothing.

    A matched node is replaced (all its uses) and erased, with whatever only it kept alive. Nodes
    that were dead before are not touched: they are eliminate-dead-code's.
    """
    by_op: dict[str, list[Rule]] = {}
    for op, rule in rules:
        by_op.setdefault(op, []).append(rule)
    erased: set[ir.Node] = set()
    for _ in range(max_rounds):
        changed = False
        for node in list(graph.nodes):
            if node in erased or not is_live(node):
                continue
            for rule in by_op.get(node.op, ()):
                with graph.inserting_before(node):
                    replacement = rule(node)
                if replacement is None or replacement is node:
                    continue
                node.replace_all_uses_with(replacement)
                erase_if_unused(graph, node, erased)
                changed = True
                break
        if not changed:
            return graph
    raise RuntimeError(f"the rewrite rules did not reach a fixpoint in {max_rounds} rounds; two rules undo each other")
