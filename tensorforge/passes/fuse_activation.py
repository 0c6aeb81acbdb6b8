"""fuse-activation: a relu right after a linear, conv2d or an f32 int8 layer becomes the contraction's
epilogue; so does a gelu right after an f32 linear (activation "gelu_" + its approximation).

    %1 = linear(%x, %w, %b) : f32[4,32]                 %2 = linear(%x, %w, %b) {activation="relu"} : f32[4,32]
    %2 = relu(%1) : f32[4,32]                     ->
    %2 = gelu(%1) {approximation="tanh"}          ->    %2 = linear(%x, %w, %b) {activation="gelu_tanh"}

The codegen applies the activation while the GEMM tile is still in registers, so the result is
written once instead of written, read back and written again. Fires only when the contraction has
no other user (else its un-activated value is still needed), is f32, and has no activation yet.
"""

from __future__ import annotations

from .. import ir
from .registry import register_pass

# f32 results only: an int8 qlinear's relu is its clip at the zero point, which lower-quant sets
CONTRACTIONS = ("linear", "conv2d", "dynamic_qlinear", "qlinear", "qconv2d")


@register_pass("fuse-activation", opt_level=2, description="fold a relu (or a gelu) into the preceding linear/conv2d")
def fuse_activation(graph: ir.Graph, ctx=None) -> ir.Graph:
    for node in list(graph.nodes):
        if node.op == "relu":
            activation, contractions = "relu", CONTRACTIONS
        elif node.op == "gelu":
            activation, contractions = f"gelu_{node.attrs['approximation']}", ("linear",)
        else:
            continue
        producer = node.inputs[0]
        if (producer.op not in contractions or producer.attrs["activation"] is not None
                or len(producer.users) != 1 or producer in graph.outputs or producer.dtype is not ir.DType.f32):
            continue
        with graph.inserting_before(node):
            fused = graph.call(producer.op, list(producer.inputs), {**producer.attrs, "activation": activation})
        node.replace_all_uses_with(fused)
        graph.erase(node)
        graph.erase(producer)
    return graph
