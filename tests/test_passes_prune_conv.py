"""Structured pruning of conv2d output channels (prune/structured.py): the channels go through
activations, batch norm, pooling and flatten/reshape into the next conv or linear, which lose the
matching input channels / the matching block of rows; the function is unchanged when the removed
channels are exactly zero; a conv whose channels reach something the pass cannot shrink stays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorforge as tf
from tensorforge import ir
from tensorforge.models import digits_cnn
from tensorforge.prune.structured import prune_structured

F32 = ir.DType.f32


def removed(count: int, fraction: float) -> int:
    """How many of `count` neurons the pass removes (it keeps at least one)."""
    return min(count - 1, int(round(fraction * count)))


def const(graph: ir.Graph, value: np.ndarray, name: str) -> ir.Node:
    return graph.constant(np.asarray(value, np.float32), name)


def conv_stack(rng, batch: int, channels: int, size: int, widths: tuple[int, int], fraction: float,
               pool: str, batch_norm: bool, activation: str, to_matrix: str) -> ir.Graph:
    """conv -> [batch norm] -> activation -> pool -> conv -> relu -> pool -> flatten|reshape -> linear,
    with `fraction` of each conv's output channels exactly zero (filter, bias, and the batch norm's
    beta and mean, so the normalized channel stays 0)."""
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((batch, channels, size, size), F32))
    value, fan_in = x, channels
    for layer, width in enumerate(widths):
        weight = rng.standard_normal((width, fan_in, 3, 3)).astype(np.float32)
        bias = rng.standard_normal(width).astype(np.float32)
        dead = rng.choice(width, int(round(fraction * width)), replace=False)
        weight[dead], bias[dead] = 0.0, 0.0
        value = graph.call("conv2d", [value, const(graph, weight, f"conv{layer}.weight"),
                                      const(graph, bias, f"conv{layer}.bias")], {"padding": 1})
        if layer == 0 and batch_norm:
            beta, mean = rng.normal(0, 0.5, width), rng.normal(0, 0.5, width)
            beta[dead], mean[dead] = 0.0, 0.0
            parameters = [rng.uniform(0.5, 1.5, width), beta, mean, rng.uniform(0.5, 2.0, width)]
            value = graph.call("batch_norm", [value, *(const(graph, p, f"bn.{name}") for p, name in
                                                       zip(parameters, ("gamma", "beta", "mean", "var")))])
        value = graph.call(activation if layer == 0 else "relu", [value])
        value = graph.call(pool, [value], {"kernel": 2})
        fan_in = width
    if to_matrix == "flatten":
        value = graph.call("flatten", [value], {"start_axis": 1})
    else:
        value = graph.call("reshape", [value], {"shape": (batch, -1)})
    weight = rng.standard_normal((value.shape[1], 5)).astype(np.float32)
    graph.outputs = [graph.call("linear", [value, const(graph, weight, "fc.weight"),
                                           const(graph, rng.standard_normal(5), "fc.bias")])]
    return graph


def weight_shapes(graph: ir.Graph) -> list[tuple[int, ...]]:
    return [node.inputs[1].shape for node in graph.nodes if node.op in ("conv2d", "linear")]


@given(st.integers(0, 2**16), st.sampled_from([0.25, 0.5, 0.75]), st.integers(1, 3), st.integers(1, 3),
       st.sampled_from([4, 6, 8]), st.integers(2, 8), st.integers(2, 8), st.sampled_from(["max_pool2d", "avg_pool2d"]),
       st.booleans(), st.sampled_from(["relu", "tanh", "gelu"]), st.sampled_from(["flatten", "reshape"]))
def test_pruning_zero_channels_keeps_the_function_and_shrinks_every_reader(
        seed, fraction, batch, channels, size, width0, width1, pool, batch_norm, activation, to_matrix):
    rng = np.random.default_rng(seed)
    graph = conv_stack(rng, batch, channels, size, (width0, width1), fraction, pool, batch_norm, activation,
                       to_matrix)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    expected = ir.interpret(graph, x)
    report = prune_structured(graph, fraction)
    ir.verify(graph)
    kept0, kept1 = width0 - removed(width0, fraction), width1 - removed(width1, fraction)
    assert sorted(report.values()) == sorted([(width0, kept0), (width1, kept1)])
    side = size // 4
    assert weight_shapes(graph) == [(kept0, channels, 3, 3), (kept1, kept0, 3, 3), (kept1 * side * side, 5)]
    if batch_norm:
        norm = next(node for node in graph.nodes if node.op == "batch_norm")
        assert all(parameter.shape == (kept0,) for parameter in norm.inputs[1:])
    np.testing.assert_allclose(ir.interpret(graph, x), expected, rtol=1e-5, atol=1e-5)
    with tf.compile(graph, target="host") as compiled:  # and the smaller graph compiles
        np.testing.assert_allclose(compiled(x), expected, rtol=1e-4, atol=1e-4)


def test_pruned_conv_stack_on_armv8():
    rng = np.random.default_rng(7)
    graph = conv_stack(rng, 2, 3, 8, (6, 8), 0.5, "max_pool2d", True, "relu", "flatten")
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = ir.interpret(graph, x)
    prune_structured(graph, 0.5)
    assert weight_shapes(graph) == [(3, 3, 3, 3), (4, 3, 3, 3), (16, 5)]
    with tf.compile(graph, target="armv8") as compiled:
        np.testing.assert_allclose(compiled(x), expected, rtol=1e-4, atol=1e-4)


def test_flatten_keeps_each_kept_channel_block_of_rows_in_order():
    """Channel c of [N,C,H,W] is the columns c*H*W ... c*H*W + H*W - 1 of the flattened value."""
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((1, 2, 4, 4), F32))
    weight = np.ones((4, 2, 3, 3), np.float32) * np.array([1.0, 4.0, 2.0, 3.0], np.float32)[:, None, None, None]
    value = graph.call("conv2d", [x, const(graph, weight, "conv.weight")], {"padding": 1})
    value = graph.call("flatten", [graph.call("max_pool2d", [value], {"kernel": 2})], {"start_axis": 1})
    rows = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)  # row r holds 3r, 3r+1, 3r+2
    graph.outputs = [graph.call("linear", [value, const(graph, rows, "fc.weight")])]
    assert prune_structured(graph, 0.5) == {"conv.weight": (4, 2)}
    linear = graph.outputs[0]
    kept_rows = linear.inputs[1].value[:, 0] / 3
    np.testing.assert_array_equal(kept_rows, [4, 5, 6, 7, 12, 13, 14, 15])  # channels 1 and 3 (the largest)


def test_a_channel_read_by_two_convs_shrinks_both():
    rng = np.random.default_rng(3)
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((2, 3, 6, 6), F32))
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    weight[[0, 2]] = 0.0
    hidden = graph.call("relu", [graph.call("conv2d", [x, const(graph, weight, "conv.weight")], {"padding": 1})])
    graph.outputs = [graph.call("conv2d", [hidden, const(graph, rng.standard_normal((5, 4, 1, 1)), f"head{i}")])
                     for i in range(2)]
    inputs = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    expected = ir.interpret(graph, inputs)
    assert prune_structured(graph, 0.5) == {"conv.weight": (4, 2)}
    ir.verify(graph)
    assert weight_shapes(graph) == [(2, 3, 3, 3), (5, 2, 1, 1), (5, 2, 1, 1)]
    for got, want in zip(ir.interpret(graph, inputs), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# --- what the pass must leave alone -----------------------------------------------------------

def conv_then(reader, channels: int = 4, groups: int = 1) -> tuple[ir.Graph, ir.Node]:
    """x -> conv(4 channels) -> relu -> reader(graph, x, relu) -> conv -> output; (graph, first conv)."""
    rng = np.random.default_rng(0)
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((1, channels, 6, 6), F32))
    conv = graph.call("conv2d", [x, const(graph, rng.standard_normal((channels, channels // groups, 3, 3)), "w1"),
                                 const(graph, rng.standard_normal(channels), "b1")], {"padding": 1, "groups": groups})
    value = reader(graph, x, graph.call("relu", [conv]))
    last = graph.call("conv2d", [value, const(graph, rng.standard_normal((2, value.shape[1], 1, 1)), "w2")])
    graph.outputs = [*graph.outputs, last]
    return graph, conv


def residual(graph, x, value):
    return graph.call("add", [value, x])


def concat(graph, x, value):
    return graph.call("concat", [value, x], {"axis": 1})


def read_twice(graph, x, value):
    """Read by the conv after it, and by a mean over the image that nothing can shrink (an output)."""
    graph.outputs = [graph.call("reduce_mean", [value], {"axes": (2, 3)})]
    return value


def also_an_output(graph, x, value):
    """The activation is a graph output too: its width is visible."""
    graph.outputs = [value]
    return value


def as_residual(graph, x, value):
    """Read by a conv, but as the residual added to its result, not as its input channels."""
    weight = np.random.default_rng(1).standard_normal((4, 4, 1, 1)).astype(np.float32)
    return graph.call("conv2d", [x, const(graph, weight, "skip"), value], {"residual": True})


def depthwise(graph, x, value):
    weight = np.random.default_rng(1).standard_normal((4, 1, 3, 3)).astype(np.float32)
    return graph.call("conv2d", [value, const(graph, weight, "depthwise")], {"padding": 1, "groups": 4})


def batch_into_channels(graph, x, value):
    """A reshape that merges the batch axis into the channels: channel c is no longer one block."""
    return graph.call("reshape", [value], {"shape": (2, 2, 6, 6)})


@pytest.mark.parametrize("reader", [residual, concat, read_twice, also_an_output, as_residual, depthwise,
                                    batch_into_channels])
def test_a_conv_whose_channels_reach_what_cannot_shrink_is_left_alone(reader):
    """The last conv is an output and the depthwise conv is grouped: nothing else is a producer."""
    graph, conv = conv_then(reader)
    before = str(graph)
    x = np.random.default_rng(2).standard_normal((1, 4, 6, 6)).astype(np.float32)
    expected = ir.interpret(graph, x)
    assert prune_structured(graph, 0.5) == {}
    assert str(graph) == before and conv in graph.nodes
    ir.verify(graph)
    for got, want in zip(ir.interpret(graph, x), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_grouped_conv_is_not_pruned():
    graph, conv = conv_then(lambda graph, x, value: value, groups=2)
    assert prune_structured(graph, 0.5) == {}
    assert conv.inputs[1].shape == (4, 2, 3, 3)


# --- the digits CNN -----------------------------------------------------------------------------

@pytest.mark.parametrize("sparsity", [0.25, 0.5])
def test_digits_cnn_pruned_compiles_runs_and_reports_its_shapes(sparsity):
    model = digits_cnn(seed=1)
    x = np.random.default_rng(0).random((5, 1, 8, 8), np.float32)
    with tf.compile(model, x, prune=tf.PruneConfig(method="structured", sparsity=sparsity)) as compiled:
        np.testing.assert_allclose(compiled(x), ir.interpret(compiled.source_graph, x), rtol=1e-4, atol=1e-5)
        rows = {name: (before, after) for name, _, before, after, _ in compiled.prune_report().rows}
    first, second = 16 - int(16 * sparsity), 32 - int(32 * sparsity)
    assert rows == {"layers.0.weight": ((16, 1, 3, 3), (first, 1, 3, 3)),
                    "layers.3.weight": ((32, 16, 3, 3), (second, first, 3, 3)),
                    "layers.7.weight": ((128, 10), (second * 4, 10))}

