"""Helpers shared by the passes, and the rewrite driver: a rule is a pattern and what replaces it.

    RULES = [
        # relu(linear(x, w)) -> linear(x, w){activation=relu}
        (Pattern("relu", [Pattern("linear", name="lin", single_use=True)]),
         lambda m: rebuilt(m["lin"], activation="relu")),
    ]
    rewrite_to_fixpoint(graph, RULES)

    %1 = linear(%x, %w) : f32[4,32]            ->     %2 = linear(%x, %w) {activation="relu"} : f32[4,32]
    %2 = relu(%1) : f32[4,32]

A Pattern matches a node by its op (a name, a tuple of names, or None for any op), its operands
(one pattern per operand, nested as deep as the rule needs; None: any operands) and a predicate
`where(node)`. `single_use=True` also asks that nothing else read the node (`single_use`): a
producer that a fusion absorbs must have no other reader. A pattern's `name` binds the node it
matched; the rule's function gets these captures as a dict (`m["lin"]`), and a name used twice
must bind one node. The function returns the node that replaces the matched one (an existing
node, or one it makes with graph.call or `rebuilt`, which the driver places right before the
matched node) or None when the rule does not apply after all. The driver does the bookkeeping:
every use of the matched node goes to the replacement, then the nodes the pattern matched that
nothing reads any more are erased.

Provenance (ir/provenance.py): the replacement stands for the matched node's value (recorded by
`replace_all_uses_with`); other nodes a rule makes are recorded as derived from the matched nodes;
`meta["layer"]` of a fused node names the model's layer it computes (`layer_of`), e.g. the conv,
not the relu, of `relu(conv(x))`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import ir

Predicate = Callable[[ir.Node], bool]
Captures = dict[str, ir.Node]


@dataclass(frozen=True)
class Pattern:
    """What a node must be: its op(s), a pattern per operand, a predicate; `name` binds it."""

    op: str | tuple[str, ...] | None = None
    operands: Sequence[Pattern] | None = None
    name: str | None = None
    where: Predicate | None = None
    single_use: bool = False

    @property
    def ops(self) -> tuple[str, ...] | None:
        """The op names this pattern accepts (None: any op)."""
        return (self.op,) if isinstance(self.op, str) else self.op


# A rule's function returns the replacement, None (no rewrite), or (replacement, nodes it absorbed
# beyond its pattern: they are erased when unused and lend their layer name, as the matched nodes do).
Rule = tuple[Pattern, Callable[[Captures], "ir.Node | tuple[ir.Node, Sequence[ir.Node]] | None"]]


def single_use(node: ir.Node) -> bool:
    """One node reads `node` (perhaps more than once) and it is not a graph output: once that
    reader is rewritten, nothing needs the value itself any more."""
    return len(node.users) == 1 and node not in node.graph.outputs


def _match(pattern: Pattern, node: ir.Node, captures: Captures, matched: list[ir.Node]) -> bool:
    """Match `pattern` at `node`, adding to `captures` and to `matched` (every node matched, outermost first)."""
    if pattern.ops is not None and node.op not in pattern.ops:
        return False
    if (pattern.single_use and not single_use(node)) or (pattern.where is not None and not pattern.where(node)):
        return False
    if pattern.name is not None:
        if captures.setdefault(pattern.name, node) is not node:
            return False
    if node not in matched:
        matched.append(node)
    if pattern.operands is None:
        return True
    return len(pattern.operands) == len(node.inputs) and all(
        _match(operand, value, captures, matched) for operand, value in zip(pattern.operands, node.inputs))


def match(pattern: Pattern, node: ir.Node) -> Captures | None:
    """The captures (name -> node) of `pattern` matched at `node`, or None when it does not match."""
    captures: Captures = {}
    return captures if _match(pattern, node, captures, []) else None


def rebuilt(node: ir.Node, operands: Sequence[ir.Node] | None = None, **attrs) -> ir.Node:
    """A new node of `node`'s op over `operands` (default: its own), its attributes updated with `attrs`."""
    inputs = node.inputs if operands is None else operands
    return node.graph.call(node.op, list(inputs), {**node.attrs, **attrs})


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


def erase_unused(graph: ir.Graph, nodes: Iterable[ir.Node]) -> list[ir.Node]:
    """Erase those of `nodes` that nothing reads (users before their operands; graph inputs stay),
    not their other operands; returns the erased nodes."""
    pending = [node for node in dict.fromkeys(nodes) if node.op != "input"]
    erased: list[ir.Node] = []
    while unused := [node for node in pending if not is_live(node)]:
        for node in unused:
            graph.erase(node)
        erased += unused
        pending = [node for node in pending if node not in unused]
    return erased


def layer_of(node: ir.Node) -> str:
    """The name of the model's layer `node` computes: its own, or the one a rewrite carried over."""
    return node.meta.get("layer", node.name)


def carry_layer(new: ir.Node, nodes: Sequence[ir.Node]) -> None:
    """Name `new` (when the running rewrite made it) after the layer of the first of `nodes` with its
    op (the conv of `relu(conv(x))` rebuilt with activation="relu"), else after the first of them."""
    if nodes and new.graph.is_new(new) and "layer" not in new.meta:
        same_op = [node for node in nodes if node.op == new.op]
        new.meta["layer"] = layer_of(same_op[0] if same_op else nodes[0])


def derive(node: ir.Node, *sources: ir.Node) -> ir.Node:
    """Record that new `node` (a weight or intermediate a rewrite made) is computed from `sources`."""
    node.graph.record_origin(node, sources, "derived")
    return node


def replace_node(node: ir.Node, replacement: ir.Node, absorbed: Iterable[ir.Node] = ()) -> list[ir.Node]:
    """Make every reader of `node` read `replacement`, then erase `node` and those of `absorbed` that
    nothing reads any more (erase_unused); returns the erased nodes. The replacement stands for
    `node`'s value (provenance) and carries the layer name of what it absorbed (carry_layer)."""
    absorbed = list(absorbed)
    carry_layer(replacement, [node, *absorbed])
    node.replace_all_uses_with(replacement)
    return erase_unused(node.graph, [node, *absorbed])


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


def rewrite_to_fixpoint(graph: ir.Graph, rules: Sequence[Rule], max_rounds: int = 1000) -> ir.Graph:
    """Apply `rules` to every live node, round after round, until a round changes nothing.

    At each node the rules are tried in order and the first that returns a replacement wins. Nodes
    that were dead before are not touched: they are eliminate-dead-code's.
    """
    by_op: dict[str, list[Rule]] = {}
    for _ in range(max_rounds):
        changed, erased = False, set()
        for node in list(graph.nodes):
            if node in erased or not is_live(node):
                continue
            if node.op not in by_op:
                by_op[node.op] = [rule for rule in rules if rule[0].ops is None or node.op in rule[0].ops]
            for pattern, function in by_op[node.op]:
                captures, matched = {}, []
                if not _match(pattern, node, captures, matched):
                    continue
                with graph.inserting_before(node), graph.recording_created() as created:
                    replacement = function(captures)
                if isinstance(replacement, tuple):
                    replacement, absorbed = replacement
                    matched += [absorbed_node for absorbed_node in absorbed if absorbed_node not in matched]
                if replacement is None or replacement is node:
                    continue
                for made in created:  # a rule's intermediates: computed from what it matched
                    if made is not replacement:
                        derive(made, *matched)
                erased.update(replace_node(node, replacement, matched))
                changed = True
                break
        if not changed:
            return graph
    raise RuntimeError(f"the rewrite rules did not reach a fixpoint in {max_rounds} rounds; two rules undo each other")
