"""fuse-activation: a relu right after a linear, conv2d or an f32 int8 layer becomes the contraction's
epilogue; so does a gelu right after an f32 linear or dynamic_qlinear (activation "gelu_" + its
approximation), and relu6 (clip{min=0.0, max=6.0}, PyTorch's ReLU6 from ONNX) right after an f32
linear or conv2d.

    %1 = linear(%x, %w, %b) : f32[4,32]                 %2 = linear(%x, %w, %b) {activation="relu"} : f32[4,32]
    %2 = relu(%1) : f32[4,32]                     ->
    %2 = gelu(%1) {approximation="tanh"}          ->    %2 = linear(%x, %w, %b) {activation="gelu_tanh"}
    %2 = clip(%1) {min=0.0, max=6.0}              ->    %2 = linear(%x, %w, %b) {activation="relu6"}

The codegen applies the activation while the GEMM tile is still in registers, so the result is
written once instead of written, read back and written again. Fires only when the contraction has
no other user (else its un-activated value is still needed), is f32, and has no activation yet.

The exact gelu as exporters write it out, x * 0.5 * (1 + erf(x / sqrt(2))) (the product in any
order and grouping, the division or a multiplication by 1 / sqrt(2)), becomes one gelu op of any
f32 x when the formula's nodes are read only by the formula (`_written_out_gelu`); a linear x then
fuses it as above. ONNX files exported from PyTorch carry it in every BERT layer, after the int8
layers too (a bias add is between them). The gelu op computes erfc once, where the formula took an
erf (two branches) and a division; it rounds differently from the interpreter, within the f32
tolerances.
"""

from __future__ import annotations

import math

from .. import ir
from ..ir.ops_nn import RELU6_BOUNDS
from . import rewrite
from .registry import register_pass
from .rewrite import Captures, Pattern, rebuilt, rewrite_to_fixpoint

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


SQRT_HALF = math.sqrt(0.5)


def _scalar(node: ir.Node, value: float, rtol: float = 0.0) -> bool:
    """An f32 constant of one element within `rtol` of `value`."""
    return (node.op == "constant" and node.value.size == 1 and node.dtype is ir.DType.f32
            and abs(float(node.value.reshape(())) - value) <= rtol * abs(value))


def _factors(node: ir.Node, root: ir.Node, muls: list[ir.Node]) -> list[ir.Node]:
    """The operands of a product of muls (an inner mul that only the product reads is opened up, and
    added to `muls`)."""
    if node.op == "mul" and (node is root or rewrite.single_use(node)):
        if node is not root:
            muls.append(node)
        return [leaf for operand in node.inputs for leaf in _factors(operand, root, muls)]
    return [node]


def _erf_of_scaled(one_plus: ir.Node) -> tuple[ir.Node, list[ir.Node]] | None:
    """(x, the formula's nodes) when `one_plus` is 1 + erf(x / sqrt(2)) (or erf(x * (1 / sqrt(2)))),
    each node read once."""
    if one_plus.op != "add" or not rewrite.single_use(one_plus):
        return None
    erf = next((value for value, other in (one_plus.inputs, one_plus.inputs[::-1])
                if value.op == "erf" and _scalar(other, 1.0)), None)
    if erf is None or not rewrite.single_use(erf):
        return None
    scaled = erf.inputs[0]
    if not rewrite.single_use(scaled) or scaled.op not in ("div", "mul"):
        return None
    pairs = [scaled.inputs] if scaled.op == "div" else [scaled.inputs, scaled.inputs[::-1]]
    factor = math.sqrt(2.0) if scaled.op == "div" else SQRT_HALF
    x = next((x for x, constant in pairs if _scalar(constant, factor, 1e-6)), None)
    return None if x is None else (x, [one_plus, erf, scaled])


def _written_out_gelu(m: Captures) -> tuple[ir.Node, list[ir.Node]] | None:
    """gelu(x){approximation="exact"} when the matched mul is x * 0.5 * (1 + erf(x / sqrt(2))) of an f32
    x; the formula's nodes are absorbed. A linear x then takes it as its epilogue (the gelu rule)."""
    product, muls = m["op"], []
    factors = _factors(product, product, muls)
    if len(factors) != 3 or product.dtype is not ir.DType.f32:
        return None
    for x in factors:
        rest = [node for node in factors if node is not x]
        if len(rest) != 2 or x.dtype is not ir.DType.f32:
            continue
        half, one_plus = rest if _scalar(rest[0], 0.5) else rest[::-1]
        formula = _erf_of_scaled(one_plus) if _scalar(half, 0.5) else None
        if formula is not None and formula[0] is x and product.type == x.type:
            return product.graph.call("gelu", [x], {"approximation": "exact"}), [*muls, *formula[1]]
    return None


RULES = [
    # relu(linear(x, w, b)) -> linear(x, w, b){activation="relu"}  (or conv2d, qlinear, ...)
    (Pattern("relu", [_contraction(CONTRACTIONS)]), lambda m: rebuilt(m["c"], activation="relu")),
    # gelu(linear(x, w, b)){approximation=a} -> linear(x, w, b){activation="gelu_a"}  (or dynamic_qlinear)
    (Pattern("gelu", [_contraction(("linear", "dynamic_qlinear"))], name="gelu"),
     lambda m: rebuilt(m["c"], activation=f"gelu_{m['gelu'].attrs['approximation']}")),
    # clip(conv2d(x, w, b)){min=0.0, max=6.0} -> conv2d(x, w, b){activation="relu6"}  (or linear)
    (Pattern("clip", [_contraction(("linear", "conv2d"))], where=_relu6),
     lambda m: rebuilt(m["c"], activation="relu6")),
    # x * 0.5 * (1 + erf(x / sqrt(2))) -> gelu(x){approximation="exact"}  (then the rule above, for a linear x)
    (Pattern("mul", name="op"), _written_out_gelu),
]


@register_pass("fuse-activation", opt_level=2, description="fold a relu (gelu, relu6) into the preceding linear/conv2d",
               after={"fold-batch-norm": "so conv -> batch norm -> relu is one conv"})
def fuse_activation(graph: ir.Graph, ctx=None) -> ir.Graph:
    return rewrite_to_fixpoint(graph, RULES)
