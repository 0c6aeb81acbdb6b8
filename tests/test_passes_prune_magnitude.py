"""Magnitude pruning (prune/magnitude.py): exact sparsity, smallest weights first, global or
per layer, biases and shared constants untouched, and the pruned graph compiles to what it means."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorforge as tf
from tensorforge import ir
from tensorforge.models import mlp, small_cnn
from tensorforge.prune.magnitude import prunable_weights, prune_magnitude


def weights_of(graph):
    return {node.name: node.value for node in prunable_weights(graph)}


@given(st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.9]), st.sampled_from(["global", "layer"]), st.integers(0, 2**16))
def test_sparsity_is_exact_and_the_smallest_weights_go(sparsity, scope, seed):
    model = mlp((12, 10, 8, 4), seed=seed)
    x = np.random.default_rng(seed).standard_normal((3, 12)).astype(np.float32)
    graph = tf.trace(model, x)
    before = weights_of(graph)
    report = prune_magnitude(graph, sparsity, scope)
    after = list(weights_of(graph).values())
    total = sum(value.size for value in after)
    zeros = sum(int(np.sum(value == 0)) for value in after)
    if scope == "global":
        assert zeros == round(sparsity * total)
        kept = np.concatenate([np.abs(value[value != 0]) for value in after])
        dropped = np.concatenate([np.abs(old[new == 0]) for old, new in zip(before.values(), after, strict=True)])
        assert kept.size == 0 or dropped.size == 0 or dropped.max() <= kept.min()  # smallest first
    else:
        for value in after:
            assert int(np.sum(value == 0)) == round(sparsity * value.size)
    assert set(report) == set(before)
    for old, new in zip(before.values(), after, strict=True):  # survivors are unchanged
        np.testing.assert_array_equal(new[new != 0], old[new != 0])
    with tf.compile(graph, target="host") as compiled:
        np.testing.assert_allclose(compiled(x), ir.interpret(graph, x), rtol=1e-4, atol=1e-5)


def test_conv_weights_are_pruned_and_biases_kept():
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    graph = tf.trace(small_cnn(), x)
    biases = {node.name: node.value.copy() for node in graph.nodes if node.op == "constant" and node.type.rank == 1}
    report = prune_magnitude(graph, 0.5, "layer")
    assert any(node.op == "conv2d" for node in graph.nodes) and len(report) >= 2
    for node in graph.nodes:
        if node.name in biases:
            np.testing.assert_array_equal(node.value, biases[node.name])


def test_bad_arguments_are_named():
    graph = tf.trace(mlp((4, 3)), np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="sparsity"):
        prune_magnitude(graph, 1.0)
    with pytest.raises(ValueError, match="scope"):
        prune_magnitude(graph, 0.5, "row")


@pytest.mark.parametrize("method", ["magnitude", "structured"])
def test_compile_with_a_prune_config_reports_each_layer(method):
    x = np.random.default_rng(1).standard_normal((4, 784)).astype(np.float32)
    model = mlp()
    with tf.compile(model, x, prune=tf.PruneConfig(method=method, sparsity=0.5)) as cm:
        report = cm.prune_report()
        rows = {name: (sparsity, before, after) for name, sparsity, before, after, _ in report.rows}
        np.testing.assert_allclose(cm(x), ir.interpret(cm.source_graph, x), rtol=1e-4, atol=1e-5)
    if method == "magnitude":
        assert all(before == after for _, before, after in rows.values())
        total = sum(np.prod(before) for _, before, _ in rows.values())
        zeros = sum(sparsity * np.prod(before) for sparsity, before, _ in rows.values())
        assert abs(zeros / total - 0.5) < 1e-3
    else:
        assert rows["layers.0.weight"][1:] == ((784, 256), (784, 128))
        assert rows["layers.2.weight"][1:] == ((256, 128), (128, 64))
        assert rows["layers.4.weight"][1:] == ((128, 10), (64, 10))
    assert "shape before" in str(report)


def test_prune_config_is_checked_and_prune_report_needs_it():
    with pytest.raises(ValueError, match="method"):
        tf.PruneConfig(method="random")
    with pytest.raises(ValueError, match="sparsity"):
        tf.PruneConfig(sparsity=1.5)
    with tf.compile(mlp((4, 3)), np.zeros((1, 4), np.float32)) as cm, pytest.raises(ValueError, match="prune"):
        cm.prune_report()


def test_constants_without_names_are_pruned():
    """A numbered weight ("3") gets a valid derived name ("pruned_3")."""
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((2, 6), ir.DType.f32))
    weight = graph.constant(np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32))
    graph.outputs = [graph.call("linear", [x, weight])]
    assert weight.name.isdigit()
    prune_magnitude(graph, 0.5)
    graph.verify()
    (kept,) = [node for node in graph.nodes if node.op == "constant"]
    assert np.count_nonzero(kept.attrs["value"]) == 12
