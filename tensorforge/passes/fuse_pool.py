"""fuse-pool: a max pool right after an f32 conv2d becomes the conv's epilogue.

    %1 = conv2d(%x, %w, %b) {padding=[1,1], activation="relu"} : f32[64,32,32,32]
    %2 = max_pool2d(%1) {kernel=[2,2], stride=[2,2], padding=[0,0]} : f32[64,32,16,16]
        ->  %2 = conv2d(%x, %w, %b) {padding=[1,1], activation="relu", pool="max_2x2"} : f32[64,32,16,16]
    %2 = max_pool2d(%1) {kernel=[3,3], stride=[2,2], padding=[1,1]}     (ResNet's stem)
        ->  %2 = conv2d(...) {..., pool="max_3x3_s2x2_p1x1"}

The tiled conv (codegen/ops/conv/conv_gemm.py) then computes the rows of its output that a pooled row
reads into a small ring buffer that stays in cache and writes only the pooled rows: the full-size
result is never written to memory and read back, and the pool is no kernel of its own (SqueezeNet's
and ResNet's stems: 64 channels at 111 x 111 and 112 x 112). Fires for a max pool of any window of an
f32 conv2d that has no other user, no residual and no pool yet. Only the 2 x 2 pool (stride 2, no
padding) fuses into a conv Winograd could compute (3 x 3, stride 1, one group), which fuses that one
itself, and into a grouped conv (a depthwise conv has its own kernel, which pools nothing): others
keep their pool. Runs after fuse-activation (the relu is applied before the max: max(relu(a),
relu(b)) is relu(max(a, b)) anyway) and before fuse-elementwise.
"""

from __future__ import annotations

from .. import ir
from ..ir.ops_nn import fused_pool_name, winograd_computes
from .registry import register_pass
from .rewrite import Pattern, rebuilt, rewrite_to_fixpoint


def _fuses(pool: ir.Node) -> bool:
    """A max pool whose window the conv below it takes: any, but the 2 x 2 one only (see the module)."""
    conv = pool.inputs[0]
    if conv.op != "conv2d":  # (the operand's own pattern refuses it)
        return False
    window = (pool.attrs["kernel"], pool.attrs["stride"], pool.attrs["padding"])
    if fused_pool_name(*window) == "max_2x2":
        return True
    return conv.attrs["groups"] == 1 and not winograd_computes([operand.type for operand in conv.inputs],
                                                                {**conv.attrs, "pool": None})


def _open_f32(conv: ir.Node) -> bool:
    """An f32 conv2d with no pool and no residual yet, of at least one element (an empty batch has no
    tiled convolution to pool in)."""
    return (conv.dtype is ir.DType.f32 and conv.attrs["pool"] is None and not conv.attrs["residual"]
            and conv.type.size > 0)


CONV = Pattern("conv2d", name="conv", where=_open_f32, single_use=True)

RULES = [
    # max_pool2d(conv2d(x, w, b)){kernel, stride, padding} -> conv2d(x, w, b){pool=fused_pool_name(...)}
    (Pattern("max_pool2d", [CONV], where=_fuses, name="pool"),
     lambda m: rebuilt(m["conv"], pool=fused_pool_name(m["pool"].attrs["kernel"], m["pool"].attrs["stride"],
                                                       m["pool"].attrs["padding"]))),
]


@register_pass("fuse-pool", opt_level=2, description="fold a max pool into the preceding f32 conv2d",
               after={"fuse-activation": "conv -> relu -> max pool is one conv"})
def fuse_pool(graph: ir.Graph, ctx=None) -> ir.Graph:
    return rewrite_to_fixpoint(graph, RULES)
