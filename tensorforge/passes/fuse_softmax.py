"""fuse-softmax: the scaling, an additive mask and the causal mask in front of a softmax become its prologue.

    %t = mul(%s, %c) : f32[1,12,32,32]             (%c a one-element f32 constant: 1/sqrt(D))
    %m = causal_mask(%t) : f32[1,12,32,32]
    %p = softmax(%m) {axis=3} : f32[1,12,32,32]
        ->  %p = softmax(%s) {axis=3, scale=0.125, causal=true} : f32[1,12,32,32]

The attention of a traced decoder (and of its prefill after the KV-cache rewrite) is written that
way: q @ k^T, a scaling, the mask, the softmax. Fused, the softmax kernel scales and masks each
score as it reads it (codegen/ops/reduce.py): the two kernels, and the two score tensors they
wrote and read back, are gone. Each step is the unfused op's own (an f32 multiply, then -inf past
the query), so the result is the same bit for bit.

An encoder's attention adds a mask instead (BERT as PyTorch exports it: q @ k^T, scaled, plus the
padding mask broadcast over the heads):

    %a = add(%t, %mask) : f32[1,12,128,128]        (%mask : f32[1,1,128,128], or [1,1,1,128])
    %p = softmax(%a) {axis=3}                   ->  %p = softmax(%s, %mask) {axis=3, scale=0.125}

The mask becomes the softmax's second operand, added to each scaled score as it is read.

Fires on a softmax over the last axis whose operand is a causal_mask, a mul by a one-element f32
constant, a causal_mask of such a mul, or an f32 add (of the scores, or of such a mul, and a mask
that broadcasts to them), when every value it absorbs has no other user and is not a graph output
(else it is still needed), and the softmax has no prologue yet. Runs before fuse-elementwise,
which would otherwise take the mul or the add into a chain of its own.
"""

from __future__ import annotations

from .. import ir
from . import rewrite
from .registry import register_pass
from .rewrite import Captures, Pattern, rebuilt, rewrite_to_fixpoint


def _scalar_factor(node: ir.Node) -> tuple[ir.Node, float] | None:
    """(the scaled value, the factor) when `node` multiplies an f32 value by a one-element f32 constant."""
    if node.op != "mul" or node.dtype is not ir.DType.f32:
        return None
    for value, factor in (node.inputs, node.inputs[::-1]):
        if (factor.op == "constant" and factor.type.size == 1 and factor.dtype is ir.DType.f32
                and value.shape == node.shape):
            return value, float(factor.attrs["value"].reshape(()))
    return None


def _without_prologue(softmax: ir.Node) -> bool:
    """A softmax over the last axis that neither scales nor masks yet."""
    attrs = softmax.attrs
    return (attrs["scale"] is None and not attrs["causal"] and attrs["axis"] == softmax.type.rank - 1
            and len(softmax.inputs) == 1)


def _with_prologue(m: Captures) -> ir.Node | None:
    """The softmax of what the mask and/or the scaling read, with `causal` and/or `scale` set."""
    operand, attrs = m.get("x"), {}
    if "mask" in m:
        attrs["causal"] = True
    if "scaled" in m:
        found = _scalar_factor(m["scaled"])
        if found is None:
            return None
        operand, attrs["scale"] = found
    return rebuilt(m["softmax"], [operand], **attrs)


def _with_additive_mask(m: Captures) -> tuple[ir.Node, list[ir.Node]] | None:
    """The softmax of the scores with the other addend as its mask operand (and the scores' scaling as
    its `scale`, when they are a mul by a one-element constant that nothing else reads). The scores
    are the addend of the sum's shape; the mask may broadcast."""
    add, softmax = m["add"], m["softmax"]
    for scores, mask in (add.inputs, add.inputs[::-1]):
        if scores.type != add.type or mask.dtype is not ir.DType.f32:
            continue
        found = _scalar_factor(scores) if rewrite.single_use(scores) else None
        if found is None:
            return rebuilt(softmax, [scores, mask]), []
        return rebuilt(softmax, [found[0], mask], scale=found[1]), [scores]
    return None


def _softmax(operand: Pattern) -> Pattern:
    return Pattern("softmax", [operand], name="softmax", where=_without_prologue)


def _mask(operand: Pattern) -> Pattern:
    return Pattern("causal_mask", [operand], name="mask", single_use=True)


SCALED = Pattern("mul", name="scaled", single_use=True)  # by a one-element constant: _scalar_factor checks
X = Pattern(name="x")

RULES = [
    (_softmax(_mask(SCALED)), _with_prologue),   # softmax(causal_mask(x * c)) -> softmax(x){scale=c, causal=true}
    (_softmax(_mask(X)), _with_prologue),        # softmax(causal_mask(x)) -> softmax(x){causal=true}
    (_softmax(SCALED), _with_prologue),          # softmax(x * c) -> softmax(x){scale=c}
    # softmax(x * c + m) -> softmax(x, m){scale=c}; softmax(x + m) -> softmax(x, m)
    (_softmax(Pattern("add", name="add", single_use=True, where=lambda a: a.dtype is ir.DType.f32)),
     _with_additive_mask),
]


@register_pass("fuse-softmax", opt_level=2, description="fold a scaling and a causal mask into the softmax after them",
               before={"fuse-elementwise": "the scaling's mul goes into the softmax, not into a chain"})
def fuse_softmax(graph: ir.Graph, ctx=None) -> ir.Graph:
    return rewrite_to_fixpoint(graph, RULES)
