"""fuse-softmax: the scaling and the causal mask in front of a softmax become its prologue.

    %t = mul(%s, %c) : f32[1,12,32,32]             (%c a one-element f32 constant: 1/sqrt(D))
    %m = causal_mask(%t) : f32[1,12,32,32]
    %p = softmax(%m) {axis=3} : f32[1,12,32,32]
        ->  %p = softmax(%s) {axis=3, scale=0.125, causal=true} : f32[1,12,32,32]

The attention of a traced decoder (and of its prefill after the KV-cache rewrite) is written that
way: q @ k^T, a scaling, the mask, the softmax. Fused, the softmax kernel scales and masks each
score as it reads it (codegen/ops/reduce.py): the two kernels, and the two score tensors they
wrote and read back, are gone. Each step is the unfused op's own (an f32 multiply, then -inf past
the query), so the result is the same bit for bit.

Fires on a softmax over the last axis whose operand is a causal_mask, a mul by a one-element f32
constant, or a causal_mask of such a mul, when every value it absorbs has no other user and is not
a graph output (else it is still needed), and the softmax has no prologue yet. Runs before
fuse-elementwise, which would otherwise take the mul into a chain of its own.
"""

from __future__ import annotations

from .. import ir
from .registry import register_pass


def _single_use(node: ir.Node, graph: ir.Graph) -> bool:
    return len(node.users) == 1 and node not in graph.outputs


def _scalar_factor(node: ir.Node) -> tuple[ir.Node, float] | None:
    """(the scaled value, the factor) when `node` multiplies an f32 value by a one-element f32 constant."""
    if node.op != "mul" or node.dtype is not ir.DType.f32:
        return None
    for value, factor in (node.inputs, node.inputs[::-1]):
        if (factor.op == "constant" and factor.type.size == 1 and factor.dtype is ir.DType.f32
                and value.shape == node.shape):
            return value, float(factor.attrs["value"].reshape(()))
    return None


@register_pass("fuse-softmax", opt_level=2, description="fold a scaling and a causal mask into the softmax after them")
def fuse_softmax(graph: ir.Graph, ctx=None) -> ir.Graph:
    for node in list(graph.nodes):
        if (node.op != "softmax" or node.attrs["scale"] is not None or node.attrs["causal"]
                or node.attrs["axis"] != node.type.rank - 1):
            continue
        operand, absorbed, attrs = node.inputs[0], [], {}
        if operand.op == "causal_mask" and _single_use(operand, graph):
            absorbed.append(operand)
            attrs["causal"] = True
            operand = operand.inputs[0]
        scaled = _scalar_factor(operand) if _single_use(operand, graph) else None
        if scaled is not None:
            absorbed.append(operand)
            operand, attrs["scale"] = scaled
        if not absorbed:
            continue
        with graph.inserting_before(node):
            fused = graph.call("softmax", [operand], {**node.attrs, **attrs})
        node.replace_all_uses_with(fused)
        graph.erase(node)
        for value in absorbed:  # outermost first: each is used only by the one erased before it
            graph.erase(value)
    return graph
