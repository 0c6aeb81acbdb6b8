"""Structured pruning (issue 4): drop whole output neurons of a linear layer and shrink its consumer.

    %h = linear(%x, %w1[784,256], %b1) {activation="relu"}        %h = linear(%x, %w1'[784,128], %b1'[128]) ...
    %y = linear(%h, %w2[256,10], %b2)                       ->    %y = linear(%h, %w2'[128,10], %b2)

For each linear whose result reaches exactly one other linear (directly, or through elementwise
ops of one operand such as relu, tanh or gelu, which act neuron by neuron) and nowhere else, the
`fraction` of its output neurons with the smallest L2 norm (of their weight column and bias) is
removed: the layer's weight columns and bias entries, and the rows of the consumer's weight that
read them. The result is a smaller dense model, faster on any CPU. When the removed neurons are
exactly zero (a zero weight column and bias, and relu(0) = 0), the function is unchanged; otherwise
it changes, which is what pruning is: measure the accuracy (examples/digits).

Convolutions (output channels through batch norm, pooling and flatten) are not pruned yet.
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ..ir.ops_nn import split_contraction
from .rewrite import erase_if_unused

NEURONWISE = ("relu", "tanh", "sigmoid", "gelu", "neg", "exp")  # unary: neuron j depends on neuron j only


def _path_to_consumer(producer: ir.Node) -> tuple[list[ir.Node], ir.Node] | None:
    """(the unary nodes between, the consuming linear) when the producer's value goes to one linear only."""
    between, node = [], producer
    while True:
        if len(node.users) != 1 or node in node.graph.outputs:
            return None
        (user,) = node.users
        if user.op in NEURONWISE:
            between.append(user)
            node = user
            continue
        if user.op == "linear" and user.inputs[0] is node and user.inputs[1] is not node:
            return between, user
        return None


def _prunable(node: ir.Node) -> bool:
    if node.op != "linear" or node.attrs["residual"] or node.dtype is not ir.DType.f32:
        return False
    _, weight, bias, _ = split_contraction(node.inputs, False)
    return weight.op == "constant" and (bias is None or bias.op == "constant")


def _keep(node: ir.Node, fraction: float) -> np.ndarray:
    """Indices of the output neurons kept: the largest L2 norms (weight column and bias), in order."""
    _, weight, bias, _ = split_contraction(node.inputs, False)
    norms = np.sum(weight.value.astype(np.float64) ** 2, axis=0)
    if bias is not None:
        norms = norms + bias.value.astype(np.float64) ** 2
    count = norms.size
    kept = max(1, count - int(round(fraction * count)))
    return np.sort(np.argsort(-norms, kind="stable")[:kept])


def prune_structured(graph: ir.Graph, fraction: float = 0.5) -> dict[str, tuple[int, int]]:
    """Remove `fraction` of the output neurons of every prunable linear, in place; returns, per pruned
    layer (its weight's name), (neurons before, neurons after)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the fraction of neurons to remove must be in [0, 1), got {fraction}")
    report = {}
    gone: set[ir.Node] = set()
    pruned: set[ir.Node] = set()  # the new, smaller layers: not pruned twice
    while True:
        candidates = ((node, _path_to_consumer(node)) for node in graph.nodes
                      if node not in pruned and _prunable(node))
        node, found = next(((node, found) for node, found in candidates
                            if found is not None and found[1].inputs[1].op == "constant"), (None, None))
        if node is None:
            return report
        between, consumer = found
        keep = _keep(node, fraction)
        x, weight, bias, _ = split_contraction(node.inputs, False)
        report[weight.name] = (weight.shape[1], keep.size)
        with graph.inserting_before(node):
            operands = [x, graph.constant(np.ascontiguousarray(weight.value[:, keep]), f"{weight.name}_pruned")]
            if bias is not None:
                operands.append(graph.constant(np.ascontiguousarray(bias.value[keep]), f"{bias.name}_pruned"))
            value = graph.call("linear", operands, dict(node.attrs))
            pruned.add(value)
            for unary in between:
                value = graph.call(unary.op, [value], dict(unary.attrs))
        with graph.inserting_before(consumer):  # the consumer's own operands are defined by now
            rows = graph.constant(np.ascontiguousarray(consumer.inputs[1].value[keep, :]),
                                  f"{consumer.inputs[1].name}_pruned")
            shrunk = graph.call("linear", [value, rows, *consumer.inputs[2:]], dict(consumer.attrs))
        consumer.replace_all_uses_with(shrunk)
        old_constants = [*node.inputs[1:], consumer.inputs[1]]
        for stale in [consumer, *reversed(between), node]:
            graph.erase(stale)
            gone.add(stale)
        for constant in old_constants:
            erase_if_unused(graph, constant, gone)
