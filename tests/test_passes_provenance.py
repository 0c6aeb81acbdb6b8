"""No pass is trusted by name: every node a pass leaves either was there before (and computes the same
value) or records which value(s) of its input it stands for (ir/provenance.py), and computes them.

Checked for every pass of PIPELINE, each on the graphs the passes before it made: random graphs
(tensorforge.testing) through the whole pipeline, and a targeted graph per pass that random graphs do
not reach (QDQ layers, siblings, pools, Winograd, sparse weights, attention's softmax, ...); a test
asserts that every pass of PIPELINE changes at least one of them, so none goes unchecked.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note

import tensorforge as tfg
from tensorforge import ir, models
from tensorforge.ir import DType, TensorType
from tensorforge.ir.export import _label
from tensorforge.passes import PIPELINE, PassContext, run_pipeline
from tensorforge.testing import random_graphs

RTOL, ATOL = 1e-4, 1e-5


def _agree(expected: np.ndarray, actual: np.ndarray) -> bool:
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        return False
    if expected.dtype in (np.int8, np.uint8):  # lower-quant's integer layer rounds once: a code may be one off
        return bool(np.all(np.abs(expected.astype(np.int64) - actual.astype(np.int64)) <= 1))
    if expected.dtype.kind != "f":
        return bool(np.array_equal(expected, actual))
    return bool(np.allclose(actual, expected, rtol=RTOL, atol=ATOL, equal_nan=True))


def assert_provenance(name: str, before: ir.Graph, after: ir.Graph, inputs) -> None:
    """Every node of `after` (the graph pass `name` made of `before`) accounted for, by value."""
    old = {node.name: value for node, value in ir.run_graph(before, inputs).items()}
    new = ir.run_graph(after, inputs)
    for node in after.nodes:
        if node.op == "input":
            continue
        if not after.is_new(node):
            assert node.name in old, f"{name}: %{node.name} is not new, yet not in the graph it was given"
            expected = old[node.name]
        else:
            origin = after.provenance.get(node.name)
            assert origin is not None, f"{name} made {node.format()} and recorded no provenance"
            missing = [value for value in origin.values if value not in old]
            assert not missing, f"{name}: {node.format()} names {missing}, not values of the graph it was given"
            if origin.relation == "derived":
                assert node not in after.outputs, f"{name}: output {node.format()} is only derived"
                continue
            expected = (old[origin.values[0]] if origin.relation == "same"
                        else np.concatenate([old[value] for value in origin.values], axis=-1))
        assert _agree(expected, new[node]), (
            f"{name}: {node.format()} does not compute the value it stands for\n{before}\n->\n{after}")


def assert_pipeline_provenance(graph: ir.Graph, inputs, ctx: PassContext | None = None) -> list[str]:
    """Run the pipeline; check provenance after each pass; return the passes that changed the graph."""
    result = run_pipeline(graph, ctx or PassContext())
    changed = []
    for (_, before), (name, after), row in zip(result.snapshots, result.snapshots[1:], result.report.rows):
        assert_provenance(name, before, after, inputs)
        if row.changed:
            changed.append(name)
    return changed


@given(case=random_graphs())
def test_every_pass_records_provenance_on_random_graphs(case):
    graph, inputs = case
    note(str(graph))
    assert_pipeline_provenance(graph, inputs)


# --- graphs that reach the passes random graphs do not ----------------------------------------------

def _rng(seed=0):
    return np.random.default_rng(seed)


def _weight(graph, shape, seed=0, zeros=0.0):
    value = (_rng(seed).standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
    value[_rng(seed + 1).random(shape) < zeros] = 0
    return graph.constant(value)


def quantized_mlp():
    x = _rng().standard_normal((4, 16)).astype(np.float32)
    graph = tfg.trace(models.mlp((16, 12, 8, 4)), x)
    qdq, _ = tfg.quantize(graph, _rng(1).standard_normal((32, 16)).astype(np.float32), "int8")
    return qdq, (x,)


def cnn_with_pool_and_norm():
    x = _rng().standard_normal((2, 3, 12, 12)).astype(np.float32)
    return tfg.trace(models.small_cnn(), x), (x,)


def winograd_conv():
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((1, 16, 16, 16), DType.f32))
    conv = graph.call("conv2d", [x, _weight(graph, (16, 16, 3, 3)), _weight(graph, (16,), 1)], {"padding": 1})
    graph.outputs = [graph.call("relu", [conv])]
    return graph, (_rng().standard_normal((1, 16, 16, 16)).astype(np.float32),)


def siblings_sparse_and_residual():
    """q, k, v linears of one input (siblings), a mostly-zero weight (sparsify), a skip connection."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((4, 32), DType.f32))
    q, k, v = (graph.call("linear", [x, _weight(graph, (32, 32), seed), _weight(graph, (32,), seed + 1)])
               for seed in (2, 4, 6))
    sparse = graph.call("linear", [v, _weight(graph, (32, 32), 8, zeros=0.97)])
    total = graph.call("add", [graph.call("linear", [graph.call("add", [q, k]), _weight(graph, (32, 32), 9)]), sparse])
    graph.outputs = [graph.call("relu", [total])]
    return graph, (_rng().standard_normal((4, 32)).astype(np.float32),)


def attention_scores():
    """softmax(causal_mask(q @ k^T * c)) (absorb-transpose, fuse-softmax) and a variance (fuse-reduce)."""
    graph = ir.Graph()
    q = graph.add_input("q", TensorType((2, 6, 8), DType.f32))
    k = graph.add_input("k", TensorType((2, 6, 8), DType.f32))
    scores = graph.call("matmul", [q, graph.call("transpose", [k], {"perm": (0, 2, 1)})])
    scaled = graph.call("mul", [scores, graph.constant(np.float32(0.35))])
    probs = graph.call("softmax", [graph.call("causal_mask", [scaled])], {"axis": 2})
    centered = graph.call("sub", [q, graph.call("reduce_mean", [q], {"axes": (2,), "keepdims": True})])
    variance = graph.call("reduce_mean", [graph.call("mul", [centered, centered])], {"axes": (2,)})
    graph.outputs = [probs, variance]
    rng = _rng()
    return graph, tuple(rng.standard_normal((2, 6, 8)).astype(np.float32) for _ in range(2))


def exported_feed_forward():
    """An ONNX-exported BERT feed-forward block: bias adds after bias-less linears (fuse-bias), the exact
    gelu written out with erf (fuse-activation), a skip connection."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((4, 16), DType.f32))
    hidden = graph.call("add", [_weight(graph, (32,), 1), graph.call("linear", [x, _weight(graph, (16, 32), 2)])])
    erf = graph.call("erf", [graph.call("div", [hidden, graph.constant(np.float32(np.sqrt(2.0)))])])
    gelu = graph.call("mul", [graph.call("mul", [hidden, graph.call("add", [erf, graph.constant(np.float32(1))])]),
                              graph.constant(np.float32(0.5))])
    out = graph.call("add", [_weight(graph, (16,), 3), graph.call("linear", [gelu, _weight(graph, (32, 16), 4)])])
    graph.outputs = [graph.call("add", [out, x])]
    return graph, (_rng().standard_normal((4, 16)).astype(np.float32),)


def dynamic_int8_layers():
    """Two dynamic_qlinear on an x of 8 rows (split-range), the second after a relu."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((8, 16), DType.f32))
    rng = _rng(3)

    def layer(source):
        return graph.call("dynamic_qlinear", [source, graph.constant(rng.integers(-127, 128, (16, 16)).astype(np.int8)),
                                              graph.constant(np.full(16, 0.01, np.float32)),
                                              graph.constant(rng.standard_normal(16).astype(np.float32))])

    graph.outputs = [layer(graph.call("relu", [layer(x)]))]
    return graph, (rng.standard_normal((8, 16)).astype(np.float32),)


TARGETED = [quantized_mlp, cnn_with_pool_and_norm, winograd_conv, siblings_sparse_and_residual, attention_scores,
            exported_feed_forward, dynamic_int8_layers]


@pytest.mark.parametrize("make", TARGETED, ids=lambda make: make.__name__)
def test_every_pass_records_provenance_on_targeted_graphs(make):
    graph, inputs = make()
    assert_pipeline_provenance(graph, inputs)


def test_every_pass_of_the_pipeline_is_exercised():
    """The targeted graphs (and one with dead code, equal expressions, x*1 and a constant subgraph) make every
    pass of PIPELINE rewrite something."""
    changed = set()
    for make in TARGETED:
        graph, inputs = make()
        changed.update(assert_pipeline_provenance(graph, inputs))
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((3, 4), DType.f32))
    dead = graph.call("exp", [x])  # noqa: F841 - eliminate-dead-code's
    twice = [graph.call("add", [graph.call("sigmoid", [x]), graph.constant(np.ones(4, np.float32))]) for _ in range(2)]
    scale = graph.call("tanh", [graph.constant(np.full(4, 0.5, np.float32))])  # fold-constants'
    one = graph.constant(np.ones(4, np.float32))  # simplify's x * 1
    graph.outputs = [graph.call("mul", [graph.call("mul", [twice[0], scale]), one]), twice[1]]
    changed.update(assert_pipeline_provenance(graph, (_rng().standard_normal((3, 4)).astype(np.float32),)))
    assert set(PIPELINE) - changed == set()


def test_fold_batch_norm_and_fusions_carry_the_layer_name():
    """The conv that fold-batch-norm makes (a numbered node) still names the model's layer."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((1, 2, 5, 5), DType.f32))
    conv = graph.call("conv2d", [x, _weight(graph, (3, 2, 3, 3))], {"padding": 1}, name="block1.conv")
    stats = [graph.constant(np.full(3, value, np.float32)) for value in (1.5, 0.1, 0.2, 2.0)]
    norm = graph.call("batch_norm", [conv, *stats], name="block1.bn")
    graph.outputs = [graph.call("relu", [norm], name="block1.relu")]
    (fused,) = run_pipeline(graph, PassContext()).graph.op_nodes()
    assert fused.op == "conv2d" and fused.attrs["activation"] == "relu"
    assert fused.meta["layer"] == "block1.conv"
    assert "layer %block1.conv" in _label(fused)  # pictures name it
