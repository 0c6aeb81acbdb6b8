"""fold-constants: a node whose operands are all constants becomes a constant, computed with the
op's numpy reference (ir.evaluate), so folding means exactly what the interpreter means.

    %w = constant() : f32[32,64]
    %wt = transpose(%w) {perm=[1, 0]} : f32[64,32]   ->   %wt_folded = constant() : f32[64,32]
    %2 = matmul(%x, %wt) : f32[4,32]                      %2 = matmul(%x, %wt_folded) : f32[4,32]

The new constant is named after the folded node (`wt` -> `wt_folded`, `7` -> `folded_7`). One sweep
in graph order folds whole chains, since a folded node's users then see a constant operand.
Operands left unused are erased; nodes that were dead already are eliminate-dead-code's.

Not folded: results that would grow the weights a lot, i.e. more than 4x the elements of all the
operands together and more than `ctx.config["fold_max_elements"]` (default 1M) elements, e.g. a
scalar broadcast to a huge tensor, which is cheaper to compute than to store and load.
"""

from __future__ import annotations

import math

import numpy as np

from .. import ir
from .manager import PassContext
from .registry import register_pass
from .rewrite import derived_name, erase_if_unused, is_live

DEFAULT_MAX_ELEMENTS = 1 << 20


def _too_big(node: ir.Node, limit: int) -> bool:
    result = math.prod(node.shape)
    operands = sum(math.prod(operand.shape) for operand in node.inputs)
    return result > limit and result > 4 * operands


def _foldable(node: ir.Node, limit: int) -> bool:
    if node.op in ("input", "constant") or not node.inputs or not is_live(node):
        return False
    return all(operand.op == "constant" for operand in node.inputs) and not _too_big(node, limit)


@register_pass("fold-constants", opt_level=1, description="evaluate nodes whose operands are all constants")
def fold_constants(graph: ir.Graph, ctx: PassContext | None = None) -> ir.Graph:
    """Replace every live node whose operands are all constants by the constant it computes."""
    config = ctx.config if ctx is not None else {}
    limit = config.get("fold_max_elements", DEFAULT_MAX_ELEMENTS)
    erased: set[ir.Node] = set()
    for node in list(graph.nodes):
        if node in erased or not _foldable(node, limit):
            continue
        value = ir.evaluate(node.op, [operand.value for operand in node.inputs], node.attrs)
        value = np.require(value, requirements="C")  # a view (transpose, slice) becomes its own array
        with graph.inserting_before(node):
            folded = graph.constant(value, derived_name(node, "folded"))
        node.replace_all_uses_with(folded)
        erase_if_unused(graph, node, erased)
    return graph
