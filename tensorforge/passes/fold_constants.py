"""fold-constants: a node whose operands are all constants becomes a constant, computed with the
op's numpy reference (ir.evaluate), so folding means exactly what the interpreter means.

    %w = constant() : f32[32,64]                   %w = constant() : f32[32,64]      (now dead)
    %1 = transpose(%w) {perm=[1, 0]} : f32[64,32]   ->   %1 = constant() : f32[64,32]
    %2 = matmul(%x, %1) : f32[4,32]                 %2 = matmul(%x, %1) : f32[4,32]

Not folded: results that would grow the weights a lot (more than 4x the elements of the operands
and over `config["fold_max_elements"]`, default 1M elements), e.g. a broadcast of a scalar to a
huge tensor, which is cheaper to compute than to store.
"""

from __future__ import annotations

import math

from .. import ir
from .registry import register_pass
from .rewrite import derived_name

DEFAULT_MAX_ELEMENTS = 1 << 20


def _too_big(node: ir.Node, limit: int) -> bool:
    result = math.prod(node.shape)
    operands = sum(math.prod(operand.shape) for operand in node.inputs)
    return result > limit and result > 4 * operands


@register_pass("fold-constants", opt_level=1, description="evaluate nodes whose operands are all constants")
def fold_constants(graph: ir.Graph, ctx=None) -> ir.Graph:
    limit = (ctx.config if ctx is not None else {}).get("fold_max_elements", DEFAULT_MAX_ELEMENTS)
    for node in list(graph.nodes):
        if node.op in ("input", "constant") or not node.inputs:
            continue
        if not all(operand.op == "constant" for operand in node.inputs) or _too_big(node, limit):
            continue
        value = ir.evaluate(node.op, [operand.value for operand in node.inputs], node.attrs)
        with graph.inserting_before(node):
            folded = graph.constant(value, derived_name(node, "folded"))
        node.replace_all_uses_with(folded)
        graph.erase(node)
    return graph
