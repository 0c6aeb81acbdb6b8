"""eliminate-dead-code: erase every node (constants included) that no graph output depends on.

    %1 = exp(%x)          (unused)            ->    (erased)
    %2 = relu(%x)                                   %2 = relu(%x)
    return %2                                       return %2
Graph inputs always stay: they are the graph's signature.
"""

from __future__ import annotations

from .. import ir
from .manager import PassContext
from .registry import register_pass
from .rewrite import needed_by_outputs


@register_pass("eliminate-dead-code", opt_level=1, description="erase nodes no output depends on")
def eliminate_dead_code(graph: ir.Graph, ctx: PassContext | None = None) -> ir.Graph:
    """Erase every node but the inputs that no output depends on, users before their operands."""
    live = needed_by_outputs(graph)
    for node in reversed(list(graph.nodes)):
        if node not in live and node.op != "input":
            graph.erase(node)
    return graph
