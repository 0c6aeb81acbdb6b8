"""Structured pruning (issue 4): remove whole output neurons of a linear layer or output channels of a
conv2d, and shrink every layer that reads them.

    %c = conv2d(%x, %w1[16,1,3,3], %b1) : f32[N,16,8,8]     ->  %c = conv2d(%x, %w1'[8,1,3,3], %b1'[8])
    %r = relu(%c) : f32[N,16,8,8]                                %r = relu(%c) : f32[N,8,8,8]
    %p = max_pool2d(%r) {kernel=[2, 2], ...} : f32[N,16,4,4]     %p = max_pool2d(%r) {...} : f32[N,8,4,4]
    %f = flatten(%p) {start_axis=1} : f32[N,256]                 %f = flatten(%p) {start_axis=1} : f32[N,128]
    %y = linear(%f, %w2[256,10], %b2) : f32[N,10]                %y = linear(%f, %w2'[128,10], %b2)

A producer is a linear or a conv2d (groups=1) of f32 with a constant weight and bias and no fused
residual. It loses the `fraction` of its output neurons / channels with the smallest L2 norm (of the
weight column or filter, and the bias entry); at least one is kept. Its value (neurons on the last
axis of a linear's result, channels on axis 1 of a conv's) is then followed to every node that
reads it, and each reader must be one of

  - a unary elementwise op (relu, tanh, gelu, neg, exp, ...): neuron j depends on neuron j only;
  - on axis 1, the channel axis: max_pool2d, avg_pool2d, batch_norm with constant parameters (the
    parameters of removed channels are removed);
  - flatten, or a reshape, that merges the neuron axis with the axes after it (channel c of
    [N,C,H,W] becomes the columns c*H*W ... c*H*W + H*W-1 of [N,C*H*W]) or leaves it as it is;
  - a consumer: a linear reading the neurons on its last axis, or a conv2d (groups=1) reading them as
    its input channels, with a constant weight; the weight rows / input channels that read removed
    neurons are removed, and the consumer's result keeps its shape.

Anything else anywhere on the way (a residual add, a concat, a softmax, a grouped or depthwise conv,
a graph output, a reading as another operand than the first) leaves the producer unpruned. A value
may reach several consumers (they all lose the same rows). The result is a smaller dense model,
faster on any CPU. When the removed neurons are exactly zero where the consumers read them (a zero
weight column / filter and bias, then relu(0) = 0, pooling zeros, a batch norm with beta = mean *
gamma / sqrt(var + eps)), the function is unchanged; otherwise it changes, which is what pruning
is: measure the accuracy (examples/digits/evaluate.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import ir
from ..ir.ops_nn import split_contraction
from ..ir.registry import OPS
from ..passes.rewrite import derived_name, erase_if_unused

OUTPUT_AXIS = {"linear": 1, "conv2d": 0}  # the weight axis of the output neurons: w[in, out], w[O, C, kh, kw]
INPUT_AXIS = {"linear": 0, "conv2d": 1}  # the weight axis that reads the input features


@dataclass(frozen=True)
class Neurons:
    """Where a producer's neurons sit in a value: along `axis`, neuron j on the `block` entries from j*block."""

    axis: int
    block: int = 1

    def indices(self, keep: np.ndarray) -> np.ndarray:
        """The entries along `axis` of the kept neurons, in order."""
        return (keep[:, None] * self.block + np.arange(self.block)).reshape(-1)


# --- how the neurons pass through a reader (None: they do not, and the producer stays) ---------

def _through_channelwise(node: ir.Node, neurons: Neurons) -> Neurons | None:
    """Pools act on each channel (axis 1) alone."""
    return neurons if neurons.axis == 1 else None


def _through_batch_norm(node: ir.Node, neurons: Neurons) -> Neurons | None:
    """Per channel (axis 1); the parameters must be constants to lose their removed entries."""
    constant = all(parameter.op == "constant" for parameter in node.inputs[1:])
    return neurons if neurons.axis == 1 and constant else None


def _through_flatten(node: ir.Node, neurons: Neurons) -> Neurons | None:
    """flatten(start_axis=a): a == neuron axis merges the axes after it into each neuron's block."""
    start, shape = node.attrs["start_axis"], node.inputs[0].shape
    if start > neurons.axis:
        return neurons
    if start == neurons.axis:
        return Neurons(start, neurons.block * math.prod(shape[start + 1:]))
    return None


def _through_reshape(node: ir.Node, neurons: Neurons) -> Neurons | None:
    """A reshape that keeps the axes up to the neuron axis, or is flatten(start_axis=neuron axis)."""
    before, after, axis = node.inputs[0].shape, node.shape, neurons.axis
    if after[:axis + 1] == before[:axis + 1]:
        return neurons
    if after == before[:axis] + (math.prod(before[axis:]),):
        return Neurons(axis, neurons.block * math.prod(before[axis + 1:]))
    return None


THROUGH = {
    "max_pool2d": _through_channelwise,
    "avg_pool2d": _through_channelwise,
    "batch_norm": _through_batch_norm,
    "flatten": _through_flatten,
    "reshape": _through_reshape,
}


def _through(node: ir.Node, neurons: Neurons) -> Neurons | None:
    if {"elementwise", "unary"} <= OPS[node.op].traits:  # relu(x)[..., j] = relu(x[..., j])
        return neurons
    rule = THROUGH.get(node.op)
    return None if rule is None else rule(node, neurons)


def _consumes(node: ir.Node, neurons: Neurons) -> bool:
    """A linear (last axis) or a conv2d with groups=1 (axis 1) whose input features are the neurons."""
    if node.op == "linear":
        axis = node.inputs[0].type.rank - 1
    elif node.op == "conv2d" and node.attrs["groups"] == 1:
        axis = 1
    else:
        return False
    return neurons.axis == axis and node.inputs[1].op == "constant"


# --- finding what to prune --------------------------------------------------------------------

@dataclass
class Reach:
    """Everything a producer's value flows into: where the neurons sit in each node on the way (the
    producer included), and the consumers that read them."""

    neurons: dict[ir.Node, Neurons]
    consumers: list[ir.Node]


def _reach(producer: ir.Node) -> Reach | None:
    """The producer's reach, or None when some reader cannot lose the removed neurons."""
    graph = producer.graph
    axis = 1 if producer.op == "conv2d" else producer.type.rank - 1
    reach = Reach({producer: Neurons(axis)}, [])
    pending = [producer]
    while pending:
        node = pending.pop()
        if node in graph.outputs or not node.users:  # an output's width is visible; a dead end is odd
            return None
        for user in node.users:
            if user.inputs[0] is not node or user.inputs.count(node) != 1:
                return None
            if _consumes(user, reach.neurons[node]):
                reach.consumers.append(user)
                continue
            neurons = _through(user, reach.neurons[node])
            if neurons is None:
                return None
            reach.neurons[user] = neurons
            pending.append(user)
    return reach


def _prunable(node: ir.Node) -> bool:
    if node.op not in OUTPUT_AXIS or node.attrs["residual"] or node.dtype is not ir.DType.f32:
        return False
    if node.op == "conv2d" and node.attrs["groups"] != 1:
        return False
    _, weight, bias, _ = split_contraction(node.inputs, False)
    return weight.op == "constant" and (bias is None or bias.op == "constant")


def _keep(node: ir.Node, fraction: float) -> np.ndarray:
    """Indices of the output neurons kept: the largest L2 norms (weight column or filter, and bias), in order."""
    _, weight, bias, _ = split_contraction(node.inputs, False)
    per_neuron = np.moveaxis(weight.value.astype(np.float64), OUTPUT_AXIS[node.op], 0)
    norms = np.sum(per_neuron.reshape(per_neuron.shape[0], -1) ** 2, axis=1)
    if bias is not None:
        norms = norms + bias.value.astype(np.float64) ** 2
    count = norms.size
    kept = max(1, count - int(round(fraction * count)))
    return np.sort(np.argsort(-norms, kind="stable")[:kept])


# --- rebuilding smaller -----------------------------------------------------------------------

def _shrink(graph: ir.Graph, producer: ir.Node, reach: Reach, keep: np.ndarray, pruned: set[ir.Node]) -> None:
    """Rebuild the producer, the nodes on the way and the consumers for the kept neurons only."""
    smaller: dict[tuple, ir.Node] = {}

    def take(constant: ir.Node, indices: np.ndarray, axis: int) -> ir.Node:
        """The constant's entries `indices` along `axis` (one copy per constant and selection)."""
        key = (constant, axis, indices.tobytes())
        if key not in smaller:
            value = np.ascontiguousarray(np.take(constant.value, indices, axis=axis))
            smaller[key] = graph.constant(value, derived_name(constant, "pruned"))
        return smaller[key]

    new: dict[ir.Node, ir.Node] = {}
    for node in [node for node in graph.nodes if node in reach.neurons or node in reach.consumers]:
        with graph.inserting_before(node):  # its operands are defined by now, new ones included
            if node is producer:
                x, weight, bias, _ = split_contraction(node.inputs, False)
                operands = [x, take(weight, keep, OUTPUT_AXIS[node.op])]
                operands += [] if bias is None else [take(bias, keep, 0)]
                new[node] = graph.call(node.op, operands, dict(node.attrs))
                pruned.add(new[node])
            elif node in reach.consumers:
                indices = reach.neurons[node.inputs[0]].indices(keep)
                weight = take(node.inputs[1], indices, INPUT_AXIS[node.op])
                new[node] = graph.call(node.op, [new[node.inputs[0]], weight, *node.inputs[2:]], dict(node.attrs))
            else:
                neurons = reach.neurons[node]
                indices = neurons.indices(keep)
                parameters = [take(parameter, indices, 0) for parameter in node.inputs[1:]]  # batch norm's
                attrs = dict(node.attrs)
                if node.op == "reshape":
                    attrs["shape"] = node.shape[:neurons.axis] + (indices.size,) + node.shape[neurons.axis + 1:]
                new[node] = graph.call(node.op, [new[node.inputs[0]], *parameters], attrs)
    erased: set[ir.Node] = set()
    for consumer in reach.consumers:
        consumer.replace_all_uses_with(new[consumer])
        erase_if_unused(graph, consumer, erased)  # and the old nodes on the way, the producer, old weights


def _next_producer(graph: ir.Graph, pruned: set[ir.Node]) -> tuple[ir.Node, Reach] | None:
    """The first layer, in graph order, that can be pruned and has not been."""
    for node in graph.nodes:
        if node not in pruned and _prunable(node):
            reach = _reach(node)
            if reach is not None:
                return node, reach
    return None


def prune_structured(graph: ir.Graph, fraction: float = 0.5) -> dict[str, tuple[int, int]]:
    """Remove `fraction` of the output neurons / channels of every prunable linear and conv2d, in place;
    returns, per pruned layer (its weight's name), (neurons before, neurons after)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the fraction of neurons to remove must be in [0, 1), got {fraction}")
    report = {}
    pruned: set[ir.Node] = set()  # the new, smaller layers: not pruned twice
    while True:
        found = _next_producer(graph, pruned)
        if found is None:
            return report
        producer, reach = found
        keep = _keep(producer, fraction)
        weight = producer.inputs[1]
        report[weight.name] = (weight.shape[OUTPUT_AXIS[producer.op]], keep.size)
        _shrink(graph, producer, reach, keep, pruned)
