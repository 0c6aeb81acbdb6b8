"""Magnitude pruning (issue 4): zero the weights of smallest |value| to a target sparsity.

    prune_magnitude(graph, 0.7)                  # one threshold over every weight (TinyTorch's way)
    prune_magnitude(graph, 0.7, scope="layer")   # 70% of each layer's weights

Weights are the constant weight operands of linear, conv2d and matmul nodes; biases are kept. The
threshold is the `sparsity` quantile of |w| (over all weights together, or per layer); weights
strictly below it become 0, and so do ties at it until the target is reached, so the sparsity is
exact. Shapes do not change: the dense kernels run as before. A weight that something other than
a contraction also reads is left alone (its other reader would see the zeros too).
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ..passes.rewrite import derived_name, replace_node

SCOPES = ("global", "layer")


def prunable_weights(graph: ir.Graph) -> list[ir.Node]:
    """The f32 constants read as the weight (operand 1) of an op the registry says holds a weight there
    (linear, conv2d, matmul), and by nothing else."""
    weights = []
    for node in graph.nodes:
        if node.op in ir.OPS and 1 in ir.OPS[node.op].weights and len(node.inputs) > 1:
            weight = node.inputs[1]
            if (weight.op == "constant" and weight.dtype is ir.DType.f32 and weight not in weights
                    and weight not in graph.outputs and all(user.inputs[1] is weight for user in weight.users)):
                weights.append(weight)
    return weights


def _zero_smallest(values: list[np.ndarray], sparsity: float) -> list[np.ndarray]:
    """The arrays with exactly round(sparsity * total) of their smallest-magnitude entries set to 0."""
    flat = np.concatenate([np.abs(value).reshape(-1) for value in values])
    count = int(round(sparsity * flat.size))
    if count == 0:
        return [value.copy() for value in values]
    order = np.argsort(flat, kind="stable")[:count]
    mask = np.ones(flat.size, bool)
    mask[order] = False
    pruned, start = [], 0
    for value in values:
        size = value.size
        pruned.append((value.reshape(-1) * mask[start:start + size]).reshape(value.shape).astype(value.dtype))
        start += size
    return pruned


def prune_magnitude(graph: ir.Graph, sparsity: float, scope: str = "global") -> dict[str, tuple[float, float]]:
    """Zero the smallest weights in place; returns, per weight, (sparsity before, sparsity after)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    weights = prunable_weights(graph)
    if not weights:
        return {}
    before = {weight.name: float(np.mean(weight.value == 0)) for weight in weights}
    if scope == "global":
        pruned = _zero_smallest([weight.value for weight in weights], sparsity)
    else:
        pruned = [_zero_smallest([weight.value], sparsity)[0] for weight in weights]
    report = {}
    for weight, value in zip(weights, pruned, strict=True):
        first_user = next(node for node in graph.nodes if weight in node.inputs)
        with graph.inserting_before(first_user):
            replacement = graph.constant(value, derived_name(weight, "pruned"))
        replace_node(weight, replacement)
        report[weight.name] = (before[weight.name], float(np.mean(value == 0)))
    return report
