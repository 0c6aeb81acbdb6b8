"""select-winograd: 3 x 3 convolutions with enough channels are computed by Winograd's F(2x2, 3x3).

    %y = conv2d(%x, %w, %b) {padding=[1, 1], activation="relu"} : f32[64,64,16,16]
        ->  %y = conv2d(%x, %w, %b) {padding=[1, 1], activation="relu", winograd=true} : f32[64,64,16,16]

Winograd's minimal filtering computes each 2 x 2 block of outputs from a 4 x 4 block of input with
16 multiplications per input channel instead of 36: the convolution becomes 16 GEMMs of depth C
(codegen/ops/conv/winograd.py), 2.25x fewer multiply-adds, plus transforms of the input and output
made of additions. The weight's transform is done once, at compile time. Its rounding differs from
the direct sum's (a few ulps of the inputs' magnitudes, within the f32 tolerances), and an infinite
input gives NaN where the direct sum may give an infinity (the transforms subtract it from itself).

Fires on f32 conv2d with a constant 3 x 3 weight, stride 1, dilation 1 and one group (a residual is
added in the output transform: ResNet-18, whose basic blocks end so, ran 1.05x faster at batch 1 and 8),
when both channel counts are at least MIN_CHANNELS (a shallow GEMM leaves the transforms' cost
uncovered: the CIFAR CNN's first conv, 3 input channels, stays direct) and an image has at least
MIN_TILES output tiles. Below that (ResNet's 7 x 7: 16 tiles) the GEMMs are too narrow for their weight,
16/9 the direct one's, read once per image: ResNet-50 with its 7 x 7 convs by Winograd ran 2% slower at
batch 8 (an in-process A/B, 2026-12-07), and 512 -> 512 channels at 7 x 7 alone 1.6x slower
at batch 1. From 14 x 14 (49 tiles) Winograd was faster at every channel count tried: 256 -> 256 alone
0.62 ms against 0.82 direct at batch 1. Disable it by name (`tf.compile(..., disabled=["select-winograd"])`)
for the direct convolution's rounding.
"""

from __future__ import annotations

from .. import ir
from ..ir.ops_nn import unpooled_conv2d_type, winograd_computes
from .registry import register_pass
from .rewrite import replace_node

MIN_CHANNELS = 16
MIN_TILES = 49  # 2 x 2 output tiles of one image: a 13 x 13 or 14 x 14 output


def winograd_fits(node: ir.Node) -> bool:
    """Whether the pass selects Winograd for conv2d `node`."""
    if node.op != "conv2d" or node.attrs["winograd"]:
        return False
    x, weight = node.inputs[:2]
    if not (winograd_computes([operand.type for operand in node.inputs], node.attrs) and weight.op == "constant"
            and min(x.shape[1], weight.shape[0]) >= MIN_CHANNELS):
        return False
    out_height, out_width = unpooled_conv2d_type(node).shape[2:]
    return -(-out_height // 2) * -(-out_width // 2) >= MIN_TILES


@register_pass("select-winograd", opt_level=2, description="compute 3x3 convolutions by Winograd's F(2x2, 3x3)",
               after={"fold-batch-norm": "a conv's weight is final", "fuse-residual": "a conv's residual is final"})
def select_winograd(graph: ir.Graph, ctx=None) -> ir.Graph:
    for node in list(graph.nodes):
        if not winograd_fits(node):
            continue
        with graph.inserting_before(node):
            chosen = graph.call("conv2d", list(node.inputs), {**node.attrs, "winograd": True})
        replace_node(node, chosen)
    return graph
