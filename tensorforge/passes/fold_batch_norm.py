"""fold-batch-norm: an inference batch norm after a conv2d (or linear) becomes part of its weights.

    %1 = conv2d(%x, %w, %b) : f32[N,O,H,W]                   %1 = conv2d(%x, %w', %b') : f32[N,O,H,W]
    %2 = batch_norm(%1, %g, %beta, %m, %v) {eps} : ...  ->
with scale = g / sqrt(v + eps):  w' = w * scale (per output channel),  b' = (b - m) * scale + beta.

Fires only when every weight and statistic is a constant and the conv/linear has no other user.
linear(x, w[in,out], b) followed by a batch norm on its rank-2 output scales w's columns.
The arithmetic is done in float64 and stored as float32.
"""

from __future__ import annotations

import numpy as np

from .. import ir
from .registry import register_pass
from .rewrite import derived_name


def _folded(producer: ir.Node, norm: ir.Node) -> tuple[np.ndarray, np.ndarray]:
    gamma, beta, mean, var = (operand.value.astype(np.float64) for operand in norm.inputs[1:])
    scale = gamma / np.sqrt(var + norm.attrs["eps"])
    weight = producer.inputs[1].value.astype(np.float64)
    channels = scale.shape[0]
    bias = producer.inputs[2].value.astype(np.float64) if len(producer.inputs) == 3 else np.zeros(channels)
    if producer.op == "conv2d":
        weight = weight * scale.reshape(-1, 1, 1, 1)
    else:
        weight = weight * scale.reshape(1, -1)
    return weight.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)


def _can_fold(norm: ir.Node) -> bool:
    producer = norm.inputs[0]
    if producer.op not in ("conv2d", "linear") or len(producer.users) != 1 or producer in producer.graph.outputs:
        return False
    if producer.op == "linear" and len(producer.shape) != 2:
        return False
    operands = list(producer.inputs[1:]) + list(norm.inputs[1:])
    return producer.dtype is ir.DType.f32 and all(operand.op == "constant" for operand in operands)


@register_pass("fold-batch-norm", opt_level=2, description="fold inference batch norms into the conv/linear before")
def fold_batch_norm(graph: ir.Graph, ctx=None) -> ir.Graph:
    for norm in list(graph.nodes):
        if norm.op != "batch_norm" or not _can_fold(norm):
            continue
        producer = norm.inputs[0]
        weight, bias = _folded(producer, norm)
        with graph.inserting_before(producer):
            new_weight = graph.constant(weight, derived_name(producer.inputs[1], "bn"))
            new_bias = graph.constant(bias, derived_name(norm.inputs[1], "bias"))
            replacement = graph.call(producer.op, [producer.inputs[0], new_weight, new_bias], producer.attrs)
        norm.replace_all_uses_with(replacement)
        graph.erase(norm)
        graph.erase(producer)
    return graph
