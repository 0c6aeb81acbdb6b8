"""fuse-pool: a 2 x 2 max pool right after an f32 conv2d becomes the conv's epilogue.

    %1 = conv2d(%x, %w, %b) {padding=[1,1], activation="relu"} : f32[64,32,32,32]
    %2 = max_pool2d(%1) {kernel=[2,2], stride=[2,2], padding=[0,0]} : f32[64,32,16,16]
        ->  %2 = conv2d(%x, %w, %b) {padding=[1,1], activation="relu", pool="max_2x2"} : f32[64,32,16,16]

The tiled conv (codegen/ops/conv/conv_gemm.py) then computes two rows of its output at a time into a
small buffer that stays in L1 and writes only their pooled row: the full-size result is never
written to memory and read back, and the pool is no kernel of its own. Fires only for a kernel 2,
stride 2, unpadded max pool of an f32 conv2d that has no other user, no residual and no pool yet
(floor semantics: an odd last row or column of the conv's result is dropped, as the pool does).
Runs after fuse-activation (the relu is applied before the max: max(relu(a), relu(b)) is
relu(max(a, b)) anyway) and before fuse-elementwise.
"""

from __future__ import annotations

from .. import ir
from .registry import register_pass


def _fusable(pool: ir.Node, graph: ir.Graph) -> bool:
    conv = pool.inputs[0]
    return (pool.attrs["kernel"] == (2, 2) and pool.attrs["stride"] == (2, 2) and pool.attrs["padding"] == (0, 0)
            and conv.op == "conv2d" and conv.dtype is ir.DType.f32 and conv.attrs["pool"] is None
            and not conv.attrs["residual"] and len(conv.users) == 1 and conv not in graph.outputs)


@register_pass("fuse-pool", opt_level=2, description="fold a 2x2 max pool into the preceding f32 conv2d")
def fuse_pool(graph: ir.Graph, ctx=None) -> ir.Graph:
    for node in list(graph.nodes):
        if node.op != "max_pool2d" or not _fusable(node, graph):
            continue
        conv = node.inputs[0]
        with graph.inserting_before(node):
            fused = graph.call("conv2d", list(conv.inputs), {**conv.attrs, "pool": "max_2x2"})
        node.replace_all_uses_with(fused)
        graph.erase(node)
        graph.erase(conv)
    return graph
