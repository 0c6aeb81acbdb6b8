"""Structured pruning of linear layers (prune/structured.py): smaller dense layers; the
function is unchanged when the removed neurons are exactly zero; layers it must not touch stay."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import tensorforge as tf
from tensorforge import ir
from tensorforge.models import mlp
from tensorforge.prune.structured import prune_structured


def zero_neurons(model, layer: int, fraction: float, rng) -> np.ndarray:
    """Zero `fraction` of layer `layer`'s output neurons (weight columns and bias); their indices."""
    linear = model.layers[layer]
    count = linear.weight.shape[1]
    dead = rng.choice(count, int(round(fraction * count)), replace=False)
    linear.weight[:, dead] = 0.0
    linear.bias[dead] = 0.0
    return dead


@given(st.integers(0, 2**16), st.sampled_from([0.25, 0.5, 0.75]), st.integers(1, 9))
def test_pruning_zero_neurons_keeps_the_function_and_shrinks_the_layers(seed, fraction, batch):
    rng = np.random.default_rng(seed)
    model = mlp((20, 16, 12, 5), seed=seed)
    zero_neurons(model, 0, fraction, rng)
    zero_neurons(model, 2, fraction, rng)
    x = rng.standard_normal((batch, 20)).astype(np.float32)
    graph = tf.trace(model, x)
    expected = ir.interpret(graph, x)
    report = prune_structured(graph, fraction)
    ir.verify(graph)
    assert sorted(report.values()) == sorted([(16, 16 - round(fraction * 16)), (12, 12 - round(fraction * 12))])
    np.testing.assert_allclose(ir.interpret(graph, x), expected, rtol=1e-5, atol=1e-6)
    shapes = sorted(node.shape for node in graph.nodes if node.op == "constant" and node.type.rank == 2)
    assert (20, 16 - round(fraction * 16)) in shapes
    with tf.compile(graph, target="host") as compiled:  # and the smaller graph compiles
        np.testing.assert_allclose(compiled(x), expected, rtol=1e-4, atol=1e-5)


def test_the_largest_neurons_are_kept():
    model = mlp((4, 6, 3), seed=0)
    model.layers[0].weight[:] = np.arange(6, dtype=np.float32)  # column j has norm ~ j
    model.layers[0].bias[:] = 0.0
    graph = tf.trace(model, np.zeros((1, 4), np.float32))
    prune_structured(graph, 0.5)
    first = next(node for node in graph.nodes if node.op == "linear")
    np.testing.assert_array_equal(first.inputs[1].value[0], [3, 4, 5])


def test_a_layer_read_twice_or_an_output_is_left_alone():
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((2, 4), ir.DType.f32))
    rng = np.random.default_rng(0)
    hidden = graph.call("linear", [x, graph.constant(rng.standard_normal((4, 6)).astype(np.float32), "w1")])
    out = graph.call("linear", [graph.call("relu", [hidden]),
                                graph.constant(rng.standard_normal((6, 3)).astype(np.float32), "w2")])
    graph.outputs = [out, hidden]  # the hidden layer is also an output: its width is visible
    assert prune_structured(graph, 0.5) == {}
    assert hidden.shape == (2, 6)


def test_constants_without_names_are_pruned():
    """Numbered weights ("1", "2") get valid derived names ("pruned_1")."""
    rng = np.random.default_rng(0)
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((2, 6), ir.DType.f32))
    hidden = graph.call("relu", [graph.call("linear", [x, graph.constant(rng.standard_normal((6, 8)).astype(
        np.float32))])])
    graph.outputs = [graph.call("linear", [hidden, graph.constant(rng.standard_normal((8, 3)).astype(np.float32))])]
    prune_structured(graph, 0.5)
    graph.verify()
    assert [node.shape for node in graph.nodes if node.op == "constant"] == [(6, 4), (4, 3)]
