"""The frontend: eager modules equal their trace under the reference interpreter, constants are
named by path, and what a static trace cannot record raises TraceError saying why."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorforge as tf
from tensorforge import ir, nn
from tensorforge.frontend import F, TraceError

RNG = np.random.default_rng(0)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def assert_trace_matches_eager(model, *inputs) -> ir.Graph:
    graph = tf.trace(model, inputs)
    eager = model(*inputs)
    traced = tf.interpret(graph, *inputs)
    eager = eager if isinstance(eager, tuple) else (eager,)
    traced = traced if isinstance(traced, tuple) else (traced,)
    for expected, actual in zip(eager, traced, strict=True):
        np.testing.assert_array_equal(actual, expected)
    return graph


MODULES = [
    (lambda: nn.Linear(5, 3, rng=RNG), (4, 5)),
    (lambda: nn.Linear(5, 3, bias=False, rng=RNG), (2, 7, 5)),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=RNG), (2, 3, 7, 7)),
    (lambda: nn.Conv2d(4, 4, 3, dilation=2, groups=2, rng=RNG), (1, 4, 9, 9)),
    (lambda: nn.MaxPool2d(2), (1, 2, 6, 6)),
    (lambda: nn.AvgPool2d(3, stride=1, padding=1), (1, 2, 5, 5)),
    (lambda: nn.BatchNorm2d(3), (2, 3, 4, 4)),
    (nn.ReLU, (3, 4)), (nn.Sigmoid, (3, 4)), (nn.Tanh, (3, 4)),
    (lambda: nn.GELU("sigmoid"), (3, 4)), (lambda: nn.Softmax(dim=0), (3, 4)),
    (nn.Dropout, (3, 4)), (nn.Flatten, (2, 3, 4, 5)),
]


@pytest.mark.parametrize("make, shape", MODULES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_each_module_traces_to_what_it_computes(make, shape):
    assert_trace_matches_eager(make(), randn(*shape))


def test_the_usage_snippet_traces_to_readable_ir():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax())
    graph = assert_trace_matches_eager(model, randn(4, 64))
    text = str(graph)
    assert "%layers.0.weight = constant() : f32[64,32]" in text
    assert [node.op for node in graph.op_nodes()] == ["linear", "relu", "linear", "softmax"]


class Residual(nn.Module):
    def __init__(self):
        self.fc = nn.Linear(6, 6, rng=RNG)
        self.blocks = [nn.Linear(6, 6, rng=RNG), nn.Tanh()]
        self.scale = np.full(6, 0.5, np.float32)

    def forward(self, x):
        h = x + self.fc(x)
        for block in self.blocks:
            h = block(h)
        return (h * self.scale - 1.0) / 2.0 @ self.fc.weight, h.sum(axis=1)


def test_user_module_with_submodules_operators_and_two_outputs():
    graph = assert_trace_matches_eager(Residual(), randn(3, 6))
    names = {node.name for node in graph.nodes if node.op == "constant"}
    assert {"fc.weight", "fc.bias", "blocks.0.weight", "scale"} <= names
    assert sum(node.name == "fc.weight" for node in graph.nodes) == 1, "one constant per array"


def test_plain_functions_with_several_inputs():
    a, b = randn(3, 5), randn(5, 2)
    graph = assert_trace_matches_eager(lambda a, b: a @ b + 1.0, a, b)
    assert [node.name for node in graph.inputs] == ["a", "b"]
    assert graph.outputs[0].type == ir.TensorType((3, 2), ir.DType.f32)


def test_indexing_reshape_transpose_and_numpy_functions():
    def f(x):
        y = x[1:, None, ..., -1].T.reshape(4, -1)
        return np.concatenate([np.exp(y), np.maximum(y, 0), np.tanh(y)], axis=1).mean(axis=0, keepdims=True)

    assert_trace_matches_eager(f, np.arange(60, dtype=np.float32).reshape(3, 4, 5) / 60)


@given(sizes=st.lists(st.integers(1, 12), min_size=2, max_size=4), batch=st.integers(1, 4))
def test_random_mlps_trace_like_they_run(sizes, batch):
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out, rng=RNG), nn.ReLU()]
    assert_trace_matches_eager(nn.Sequential(*layers), randn(batch, sizes[0]))


@given(channels=st.integers(1, 3), out=st.integers(1, 4), kernel=st.integers(1, 3), stride=st.integers(1, 2),
       side=st.integers(4, 8))
def test_random_cnns_trace_like_they_run(channels, out, kernel, stride, side):
    model = nn.Sequential(nn.Conv2d(channels, out, kernel, stride=stride, padding=kernel // 2, rng=RNG),
                          nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    assert_trace_matches_eager(model, randn(2, channels, side, side))


@pytest.mark.parametrize("function, message", [
    (lambda x: x if x.sum() > 0 else -x, r"truth .* of the traced value %\d+ \(bool\[\]\).*np.where\(x > 0, a, b\)"),
    (lambda x: x if x.sum() else -x, "Python control flow on the truth.*only known at run time"),
    (lambda x: x * float(x[0]), r"float\(\) of the traced value"),
    (lambda x: np.sort(x), "np.sort is not supported on traced values"),
    (lambda x: np.sin(x), "np.sin is not supported on traced values"),
    (lambda x: x[::-1], "negative step"),
    (lambda x: x[[0, 1]], "index .* is not supported"),
    (lambda x: [v for v in x], "Iteration"),
    (lambda x: x @ np.ones((5, 2), np.float32), "while tracing: op 'matmul'"),
])
def test_what_a_trace_cannot_record_raises_trace_error(function, message):
    with pytest.raises(TraceError, match=message):
        tf.trace(function, randn(3, 4))


def test_bad_example_inputs_are_named():
    with pytest.raises(TypeError, match="example input 1 is None"):
        tf.trace(lambda a, b: a + b, (randn(2), None))
    with pytest.raises(TypeError, match="example input 0 has dtype complex64"):
        tf.trace(lambda a: a, np.ones(2, np.complex64))


def test_state_dict_round_trip(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=RNG), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3, rng=RNG))
    model.save(tmp_path / "model.npz")
    other = nn.Sequential(nn.Conv2d(1, 2, 3, rng=RNG), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3, rng=RNG))
    other.load(tmp_path / "model.npz")
    x = randn(1, 1, 4, 4)
    np.testing.assert_array_equal(other(x), model(x))
    assert len(model.parameters()) == 6  # conv w, b; gamma, beta; linear w, b (running stats are buffers)
    assert set(model.state_dict()) >= {"layers.1.running_mean", "layers.3.weight"}


def test_load_state_dict_names_the_bad_parameter():
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"layers.0.weight: expected shape \(4, 3\), got \(3, 4\)"):
        model.load_state_dict({"layers.0.weight": np.zeros((3, 4)), "layers.0.bias": np.zeros(3)})
    with pytest.raises(KeyError, match="missing \\['layers.0.bias'\\]"):
        model.load_state_dict({"layers.0.weight": np.zeros((4, 3))})


def test_functional_ops_run_eagerly_as_their_references():
    x = randn(2, 3)
    np.testing.assert_array_equal(F.relu(x), np.maximum(x, 0))
    assert F.add(x, 1.0).dtype == np.float32
    np.testing.assert_array_equal(F.transpose(x), x.T)
