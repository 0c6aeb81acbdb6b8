"""fold-batch-norm: an inference batch norm after a conv2d (or linear) becomes part of its weights.

    %c = conv2d(%x, %w, %b) : f32[N,O,H,W]                       %5 = conv2d(%x, %w_bn, %b_bn) : f32[N,O,H,W]
    %y = batch_norm(%c, %g, %beta, %m, %v) {eps} : ...     ->
with scale = g / sqrt(v + eps):  w_bn = w * scale (per output channel),  b_bn = (b - m) * scale + beta.

Fires only when the weight, the bias (if any) and the four statistics are constants, the conv/linear
has no other user (its own value is still needed otherwise) and no fused activation, and is f32.
linear(x, w[in,out], b) followed by a batch norm of its rank-2 output scales w's columns (a batch
norm of a rank-3 linear output normalizes axis 1, which is not the feature axis: left alone).
The arithmetic is done in float64 and stored as float32. The new bias is named after the old bias,
or after the batch norm's beta when the conv/linear had none. The old constants are erased unless
something else reads them. The new conv/linear stands for the batch norm's value and carries the
conv's layer name (`meta["layer"]`); its constants are derived from the old ones and the statistics.
"""

from __future__ import annotations

import numpy as np

from .. import ir
from .manager import PassContext
from .registry import register_pass
from .rewrite import carry_layer, derive, derived_name, erase_if_unused, single_use


def _folded(producer: ir.Node, norm: ir.Node) -> tuple[np.ndarray, np.ndarray]:
    gamma, beta, mean, var = (operand.value.astype(np.float64) for operand in norm.inputs[1:])
    scale = gamma / np.sqrt(var + norm.attrs["eps"])
    weight = producer.inputs[1].value.astype(np.float64)
    bias = producer.inputs[2].value.astype(np.float64) if len(producer.inputs) == 3 else np.zeros(scale.shape[0])
    if producer.op == "conv2d":  # weight[O, C/groups, kh, kw]: scale each output channel
        weight = weight * scale.reshape(-1, 1, 1, 1)
    else:  # weight[in, out]: scale each column
        weight = weight * scale.reshape(1, -1)
    return weight.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)


def _can_fold(norm: ir.Node) -> bool:
    producer = norm.inputs[0]
    if (producer.op not in ("conv2d", "linear") or producer.attrs.get("activation") is not None
            or producer.attrs.get("residual")):  # a residual is added after the bias: scaling would reach it
        return False
    if not single_use(producer) or producer.dtype is not ir.DType.f32:
        return False
    if producer.op == "linear" and len(producer.shape) != 2:
        return False
    return all(operand.op == "constant" for operand in list(producer.inputs[1:]) + list(norm.inputs[1:]))


def _no_norm_of_a_pooled_conv(graph: ir.Graph) -> bool:
    return not any(node.op == "batch_norm" and node.inputs[0].op == "conv2d" and node.inputs[0].attrs["pool"]
                   for node in graph.nodes)


@register_pass("fold-batch-norm", opt_level=2, description="fold inference batch norms into the conv/linear before",
               after={"fold-constants": "it needs conv/linear weights as constants, and weight-only subgraphs "
                                        "(transposes, scalings) are constants after folding"},
               before={"fuse-pool": "a batch norm's scale, negative where gamma is, does not commute with a pool's "
                                    "max"},
               requires={"no batch_norm reads a conv2d with a fused pool (a negative scale does not commute with "
                         "the pool's max)": _no_norm_of_a_pooled_conv})
def fold_batch_norm(graph: ir.Graph, ctx: PassContext | None = None) -> ir.Graph:
    """Replace each foldable `batch_norm(conv2d|linear(...))` by one conv2d/linear with new constants."""
    erased: set[ir.Node] = set()
    for norm in list(graph.nodes):
        if norm in erased or norm.op != "batch_norm" or not _can_fold(norm):
            continue
        producer = norm.inputs[0]
        weight, bias = _folded(producer, norm)
        old_bias = producer.inputs[2] if len(producer.inputs) == 3 else norm.inputs[2]
        with graph.inserting_before(producer):
            new_weight = graph.constant(weight, derived_name(producer.inputs[1], "bn"))
            new_bias = graph.constant(bias, derived_name(old_bias, "bn"))
            replacement = graph.call(producer.op, [producer.inputs[0], new_weight, new_bias], producer.attrs)
        derive(new_weight, producer.inputs[1], *norm.inputs[1:])
        derive(new_bias, *producer.inputs[2:], *norm.inputs[1:])
        carry_layer(replacement, [producer])
        norm.replace_all_uses_with(replacement)
        erase_if_unused(graph, norm, erased)  # with the conv/linear and the constants only they read
    return graph
