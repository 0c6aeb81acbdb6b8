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


# Every pass erases the nodes its own rewrites leave unused, so dead code only needs removing once,
# before the passes that count a value's users.
@register_pass("eliminate-dead-code", opt_level=1, description="erase nodes no output depends on", before={
    "lower-quant": "a dead user would make lower-quant believe a layer's f32 result is still needed",
    "fold-batch-norm": "a dead user would make fold-batch-norm believe a conv's own value is still needed",
    "fuse-residual": "a dead user would make fuse-residual believe a conv's own value is still needed",
    "fuse-activation": "a dead user would make fuse-activation believe a conv's own value is still needed",
    "fuse-pool": "a dead user would make fuse-pool believe a conv's own value is still needed",
    "fuse-softmax": "a dead user would make fuse-softmax believe a scaling's own value is still needed",
    "fuse-elementwise": "a dead user would make fuse-elementwise believe a producer's own value is still needed",
    "fuse-reduce": "a dead user would make fuse-reduce believe a chain's own value is still needed",
})
def eliminate_dead_code(graph: ir.Graph, ctx: PassContext | None = None) -> ir.Graph:
    """Erase every node but the inputs that no output depends on, users before their operands."""
    live = needed_by_outputs(graph)
    for node in reversed(list(graph.nodes)):
        if node not in live and node.op != "input":
            graph.erase(node)
    return graph
