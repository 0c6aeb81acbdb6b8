"""fuse-residual: a skip connection added to a linear's or conv2d's result goes into its epilogue.

    %c = conv2d(%x, %w, %b) : f32[N,C,H,W]        %c = conv2d(%x, %w, %b, %x) {residual=true} : f32[N,C,H,W]
    %y = add(%c, %x) : f32[N,C,H,W]          ->
    %z = relu(%y)                                 (fuse-activation then adds activation="relu" to it)

The GEMM adds the residual's tile while its result tile is in registers (codegen/gemm/micro_kernel.py),
so the sum is written once instead of the contraction's result being written, read back with the
residual and written again. Fires when the contraction is f32, has no activation or residual yet,
no other user, is not a graph output, and the other addend has exactly the result's shape (a
broadcast addend, such as a bias, is left to the elementwise passes).
"""

from __future__ import annotations

from .. import ir
from .registry import register_pass


def _fusable(contraction: ir.Node, add: ir.Node, other: ir.Node) -> bool:
    return (contraction.op in ("linear", "conv2d") and contraction.dtype is ir.DType.f32
            and contraction.attrs["activation"] is None and not contraction.attrs["residual"]
            and len(contraction.users) == 1 and contraction not in contraction.graph.outputs
            and other is not contraction and other.type == contraction.type == add.type)


@register_pass("fuse-residual", opt_level=2, description="add a skip connection in the linear/conv2d epilogue")
def fuse_residual(graph: ir.Graph, ctx=None) -> ir.Graph:
    for node in list(graph.nodes):
        if node.op != "add":
            continue
        for index in (0, 1):
            contraction, other = node.inputs[index], node.inputs[1 - index]
            if not _fusable(contraction, node, other):
                continue
            with graph.inserting_before(node):
                fused = graph.call(contraction.op, [*contraction.inputs, other],
                                   {**contraction.attrs, "residual": True})
            node.replace_all_uses_with(fused)
            graph.erase(node)
            graph.erase(contraction)
            break
    return graph
