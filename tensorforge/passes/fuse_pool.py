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
from .rewrite import Pattern, rebuilt, rewrite_to_fixpoint


def _two_by_two(pool: ir.Node) -> bool:
    return pool.attrs["kernel"] == (2, 2) and pool.attrs["stride"] == (2, 2) and pool.attrs["padding"] == (0, 0)


def _open_f32(conv: ir.Node) -> bool:
    """An f32 conv2d with no pool and no residual yet, of at least one element (an empty batch has no
    tiled convolution to pool in)."""
    return (conv.dtype is ir.DType.f32 and conv.attrs["pool"] is None and not conv.attrs["residual"]
            and conv.type.size > 0)


CONV = Pattern("conv2d", name="conv", where=_open_f32, single_use=True)

RULES = [
    # max_pool2d(conv2d(x, w, b)){kernel=[2,2], stride=[2,2]} -> conv2d(x, w, b){pool="max_2x2"}
    (Pattern("max_pool2d", [CONV], where=_two_by_two), lambda m: rebuilt(m["conv"], pool="max_2x2")),
]


@register_pass("fuse-pool", opt_level=2, description="fold a 2x2 max pool into the preceding f32 conv2d",
               after={"fuse-activation": "conv -> relu -> 2x2 max pool is one conv"})
def fuse_pool(graph: ir.Graph, ctx=None) -> ir.Graph:
    return rewrite_to_fixpoint(graph, RULES)
