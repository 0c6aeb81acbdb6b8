"""fuse-residual: a skip connection added to a linear's, conv2d's or dynamic_qlinear's result goes into its
epilogue.

    %c = conv2d(%x, %w, %b) : f32[N,C,H,W]        %c = conv2d(%x, %w, %b, %x) {residual=true} : f32[N,C,H,W]
    %y = add(%c, %x) : f32[N,C,H,W]          ->
    %z = relu(%y)                                 (fuse-activation then adds activation="relu" to it)

The GEMM adds the residual's tile while its result tile is in registers (codegen/gemm/micro_kernel.py),
so the sum is written once instead of the contraction's result being written, read back with the
residual and written again (dynamic_qlinear adds it where it adds the bias). Fires when the
contraction is f32, has no activation or residual yet, no other user, is not a graph output, and
the other addend has exactly the result's shape (a broadcast addend, such as a bias, is left to
the elementwise passes).
"""

from __future__ import annotations

from .. import ir
from .registry import register_pass
from .rewrite import Captures, Pattern, rebuilt, rewrite_to_fixpoint


def _open_f32(contraction: ir.Node) -> bool:
    """An f32 result with no activation and no residual yet."""
    return (contraction.dtype is ir.DType.f32 and contraction.attrs["activation"] is None
            and not contraction.attrs["residual"] and not contraction.attrs.get("ranged"))


def _with_residual(m: Captures) -> ir.Node | None:
    """The contraction with `other` as its residual, when `other` has exactly its type (a broadcast
    addend, such as a bias, is left to the elementwise passes)."""
    contraction, other = m["c"], m["other"]
    if other is contraction or not other.type == contraction.type == m["add"].type:
        return None
    return rebuilt(contraction, [*contraction.inputs, other], residual=True)


CONTRACTION = Pattern(("linear", "conv2d", "dynamic_qlinear"), name="c", where=_open_f32, single_use=True)
OTHER = Pattern(name="other")

RULES = [
    # conv2d(x, w, b) + r -> conv2d(x, w, b, r){residual=true}  (or a linear)
    (Pattern("add", [CONTRACTION, OTHER], name="add"), _with_residual),
    # r + conv2d(x, w, b) -> conv2d(x, w, b, r){residual=true}
    (Pattern("add", [OTHER, CONTRACTION], name="add"), _with_residual),
]


def _is_closed_conv(node: ir.Node) -> bool:
    """A conv2d with a fused pool: it takes no residual."""
    return node.op == "conv2d" and bool(node.attrs["pool"])


def _no_sum_of_a_closed_conv(graph: ir.Graph) -> bool:
    return not any(node.op == "add" and any(map(_is_closed_conv, node.inputs)) for node in graph.nodes)


@register_pass("fuse-residual", opt_level=2, description="add a skip connection in the linear/conv2d epilogue",
               before={"fuse-activation": "relu(conv + x) becomes one conv",
                       "fuse-pool": "a conv2d with a fused pool takes no residual"},
               requires={"no add reads a conv2d with a fused pool or computed by Winograd (neither takes a "
                         "residual)": _no_sum_of_a_closed_conv})
def fuse_residual(graph: ir.Graph, ctx=None) -> ir.Graph:
    return rewrite_to_fixpoint(graph, RULES)
