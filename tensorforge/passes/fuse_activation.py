"""fuse-activation: a relu right after a linear, conv2d or an f32 int8 layer becomes the contraction's
epilogue; so does a gelu right after an f32 linear (activation "gelu_" + its approximation), and
relu6 (clip{min=0.0, max=6.0}, PyTorch's ReLU6 from ONNX) right after an f32 linear or conv2d.

    %1 = linear(%x, %w, %b) : f32[4,32]                 %2 = linear(%x, %w, %b) {activation="relu"} : f32[4,32]
    %2 = relu(%1) : f32[4,32]                     ->
    %2 = gelu(%1) {approximation="tanh"}          ->    %2 = linear(%x, %w, %b) {activation="gelu_tanh"}
    %2 = clip(%1) {min=0.0, max=6.0}              ->    %2 = linear(%x, %w, %b) {activation="relu6"}

The codegen applies the activation while the GEMM tile is still in registers, so the result is
written once instead of written, read back and written again. Fires only when the contraction has
no other user (else its un-activated value is still needed), is f32, and has no activation yet.
"""

from __future__ import annotations

import math

from .. import ir
from ..ir.ops_nn import RELU6_BOUNDS
from .registry import register_pass
from .rewrite import Pattern, rebuilt, rewrite_to_fixpoint

# f32 results only: an int8 qlinear's relu is its clip at the zero point, which lower-quant sets
CONTRACTIONS = ("linear", "conv2d", "dynamic_qlinear", "qlinear", "qconv2d")


def _contraction(ops: str | tuple[str, ...]) -> Pattern:
    """One of `ops` with an f32 result and no activation yet, which only the activation reads."""
    return Pattern(ops, name="c", single_use=True,
                   where=lambda c: c.dtype is ir.DType.f32 and c.attrs["activation"] is None)


def _relu6(clip: ir.Node) -> bool:
    """clip{min=0.0, max=6.0} exactly (min=-0.0 would give -0.0 for negative x, relu6 gives 0.0)."""
    low, high = clip.attrs["min"], clip.attrs["max"]
    return low is not None and high is not None and (low, high) == RELU6_BOUNDS and math.copysign(1.0, low) > 0


RULES = [
    # relu(linear(x, w, b)) -> linear(x, w, b){activation="relu"}  (or conv2d, qlinear, ...)
    (Pattern("relu", [_contraction(CONTRACTIONS)]), lambda m: rebuilt(m["c"], activation="relu")),
    # gelu(linear(x, w, b)){approximation=a} -> linear(x, w, b){activation="gelu_a"}
    (Pattern("gelu", [_contraction("linear")], name="gelu"),
     lambda m: rebuilt(m["c"], activation=f"gelu_{m['gelu'].attrs['approximation']}")),
    # clip(conv2d(x, w, b)){min=0.0, max=6.0} -> conv2d(x, w, b){activation="relu6"}  (or linear)
    (Pattern("clip", [_contraction(("linear", "conv2d"))], where=_relu6),
     lambda m: rebuilt(m["c"], activation="relu6")),
]


@register_pass("fuse-activation", opt_level=2, description="fold a relu (gelu, relu6) into the preceding linear/conv2d",
               after={"fold-batch-norm": "so conv -> batch norm -> relu is one conv"})
def fuse_activation(graph: ir.Graph, ctx=None) -> ir.Graph:
    return rewrite_to_fixpoint(graph, RULES)
