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
from .rewrite import Pattern, rebuilt, rewrite_to_fixpoint

# f32 results only: an int8 qlinear's relu is its clip at the zero point, which lower-quant sets
CONTRACTIONS = ("linear", "conv2d", "dynamic_qlinear", "qlinear", "qconv2d")


def _contraction(ops: str | tuple[str, ...]) -> Pattern:
    """One of `ops` with an f32 result and no activation yet, which only the activation reads."""
    return Pattern(ops, name="c", single_use=True,
                   where=lambda c: c.dtype is ir.DType.f32 and c.attrs["activation"] is None)


RULES = [
    # relu(linear(x, w, b)) -> linear(x, w, b){activation="relu"}  (or conv2d, qlinear, ...)
    (Pattern("relu", [_contraction(CONTRACTIONS)]), lambda m: rebuilt(m["c"], activation="relu")),
    # gelu(linear(x, w, b)){approximation=a} -> linear(x, w, b){activation="gelu_a"}
    (Pattern("gelu", [_contraction("linear")], name="gelu"),
     lambda m: rebuilt(m["c"], activation=f"gelu_{m['gelu'].attrs['approximation']}")),
]


@register_pass("fuse-activation", opt_level=2, description="fold a relu (or a gelu) into the preceding linear/conv2d",
               after={"fold-batch-norm": "so conv -> batch norm -> relu is one conv"})
def fuse_activation(graph: ir.Graph, ctx=None) -> ir.Graph:
    return rewrite_to_fixpoint(graph, RULES)
