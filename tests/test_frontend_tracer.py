"""The tracer: models trace to graphs that interpret exactly as the models run, inputs and constants
are named, and what a static trace cannot record raises TraceError saying why and where."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensorforge import ir, nn
from tensorforge.frontend import F, Proxy, TraceError, trace

RNG = np.random.default_rng(3)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def assert_trace_matches_eager(model, *inputs) -> ir.Graph:
    graph = trace(model, inputs)
    eager, traced = model(*inputs), ir.interpret(graph, *inputs)
    eager = tuple(eager) if isinstance(eager, (tuple, list)) else (eager,)
    traced = traced if isinstance(traced, tuple) else (traced,)
    for expected, actual in zip(eager, traced, strict=True):
        np.testing.assert_array_equal(actual, expected)
    return graph


def test_the_tinytorch_snippet_traces_to_readable_ir():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax())
    graph = assert_trace_matches_eager(model, randn(4, 64))
    text = str(graph)
    assert text.startswith("graph(%x: f32[4,64]) {")
    assert "%layers.0.weight = constant() : f32[64,32]" in text
    assert "linear(%x, %layers.0.weight, %layers.0.bias) : f32[4,32]" in text
    assert [node.op for node in graph.op_nodes()] == ["linear", "relu", "linear", "softmax"]
    assert graph.outputs[0].type == ir.TensorType((4, 10), ir.DType.f32)


class Residual(nn.Module):
    def __init__(self):
        self.fc = nn.Linear(6, 6, rng=RNG)
        self.blocks = [nn.Linear(6, 6, rng=RNG), nn.Tanh()]
        self.scale = np.full(6, 0.5, np.float32)

    def forward(self, x):
        h = x + self.fc(x)
        for block in self.blocks:
            h = block(h)
        return (h * self.scale - 1.0) / 2.0 @ self.fc.weight, h.sum(axis=1), -h[:, :3].T


def test_user_module_with_submodules_residual_and_operators():
    graph = assert_trace_matches_eager(Residual(), randn(3, 6))
    constants = [node.name for node in graph.nodes if node.op == "constant"]
    assert {"fc.weight", "fc.bias", "blocks.0.weight", "blocks.0.bias", "scale"} <= set(constants)
    assert constants.count("fc.weight") == 1, "the same array used twice is one constant"
    assert len(graph.outputs) == 3


def test_lambda_with_two_inputs():
    a, b = randn(3, 5), randn(5, 2)
    graph = assert_trace_matches_eager(lambda a, b: a @ b + 1.0, a, b)
    assert [node.name for node in graph.inputs] == ["a", "b"]
    assert [node.op for node in graph.op_nodes()] == ["matmul", "add"]
    assert graph.outputs[0].type == ir.TensorType((3, 2), ir.DType.f32)


def test_input_names_come_from_the_signature():
    class TwoInputs(nn.Module):
        def forward(self, tokens, mask=None):
            return tokens * mask

    def star(*arrays):
        return arrays[0] + arrays[1]

    x = randn(2)
    assert [n.name for n in trace(TwoInputs(), (x, x)).inputs] == ["tokens", "mask"]
    assert [n.name for n in trace(star, (x, x)).inputs] == ["arrays0", "arrays1"]
    assert [n.name for n in trace(TwoInputs().forward, (x, x)).inputs] == ["tokens", "mask"]
    assert [n.name for n in trace(np.negative, x).inputs] == ["x"]


def test_closure_arrays_and_modules_are_named():
    weight, layer = randn(4, 3), nn.Linear(3, 2, rng=RNG)
    graph = assert_trace_matches_eager(lambda x: layer(x @ weight), randn(2, 4))
    assert {"weight", "layer.weight", "layer.bias"} <= set(graph.constants())


def test_float64_arrays_become_float32_constants_named_by_path():
    model = nn.Linear(2, 2, rng=RNG)
    model.bias = np.array([0.5, 1.5])  # float64, as np.array gives
    graph = trace(model, randn(1, 2))
    assert graph.node("bias").type == ir.TensorType((2,), ir.DType.f32)


def test_constants_are_snapshots_of_the_weights():
    model = nn.Linear(3, 2, rng=RNG)
    x = randn(1, 3)
    graph = trace(model, x)
    expected = model(x)
    model.weight[...] = 0
    np.testing.assert_array_equal(ir.interpret(graph, x), expected)


def test_outputs_may_be_constants_and_lists():
    graph = trace(lambda x: [x + 1.0, np.ones(2), 3.0], randn(2))
    assert [node.op for node in graph.outputs] == ["add", "constant", "constant"]
    assert [str(node.type) for node in graph.outputs] == ["f32[2]", "f32[2]", "f32[]"]
    identity = trace(nn.Dropout(), randn(2))
    assert identity.outputs == identity.inputs


def test_example_inputs_follow_the_interpreter_input_rules():
    graph = trace(lambda a, b, c: (a, b, c), ([1.0, 2.0], np.zeros(2, np.float16), np.arange(3, dtype=np.int8)))
    assert [str(node.type) for node in graph.inputs] == ["f32[2]", "f32[2]", "i8[3]"]
    assert str(trace(lambda x: x, np.ones((2, 2))).inputs[0].type) == "f32[2,2]", "float64 becomes float32"
    with pytest.raises(TypeError, match="example input 1 is None"):
        trace(lambda a, b: a + b, (randn(2), None))
    with pytest.raises(TypeError, match="example input 0 has dtype complex64, which tensorforge does not support"):
        trace(lambda a: a, np.ones(2, np.complex64))


def test_proxies_know_their_static_facts():
    seen = {}

    def record(x):
        seen.update(shape=x.shape, ndim=x.ndim, dtype=x.dtype, size=x.size, len=len(x), proxy=isinstance(x, Proxy))
        return x

    trace(record, randn(3, 4))
    assert seen == {"shape": (3, 4), "ndim": 2, "dtype": np.float32, "size": 12, "len": 3, "proxy": True}


# --- properties: random models trace to what they compute -----------------------------------------

@given(sizes=st.lists(st.integers(1, 12), min_size=2, max_size=4), batch=st.integers(1, 4),
       activation=st.sampled_from([nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU]), bias=st.booleans())
def test_random_mlps_trace_like_they_run(sizes, batch, activation, bias):
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out, bias=bias, rng=RNG), activation()]
    graph = assert_trace_matches_eager(nn.Sequential(*layers), randn(batch, sizes[0]))
    assert len(graph.op_nodes()) == 2 * (len(sizes) - 1)


@given(channels=st.integers(1, 3), out=st.integers(1, 4), kernel=st.integers(1, 3), stride=st.integers(1, 2),
       side=st.integers(4, 8), groups=st.sampled_from([1, 2]), pool=st.sampled_from([nn.MaxPool2d, nn.AvgPool2d]))
def test_random_cnns_trace_like_they_run(channels, out, kernel, stride, side, groups, pool):
    channels, out = channels * groups, out * groups
    conv = nn.Conv2d(channels, out, kernel, stride=stride, padding=kernel // 2, groups=groups, rng=RNG)
    size = (side + 2 * (kernel // 2) - kernel) // stride + 1
    model = nn.Sequential(conv, nn.BatchNorm2d(out), nn.ReLU(), pool(2), nn.Flatten(),
                          nn.Linear(out * (size // 2) ** 2, 3, rng=RNG), nn.Softmax())
    assert_trace_matches_eager(model, randn(2, channels, side, side))


# --- what a trace cannot record --------------------------------------------------------------------

def branch(x):
    if x.sum() > 0:
        return x
    return -x


@pytest.mark.parametrize("function, message", [
    (branch, r"Python control flow on the truth .* of the traced value %\d+ \(bool\[\]\) needs its contents, which are "
             r"only known at run time; branch on what is static .* \(at test_frontend_tracer.py:\d+, in branch\)"),
    (lambda x: x if x.sum() else -x, r"Python control flow on the truth .*only known at run time"),
    (lambda x: x * float(x), r"float\(\) of the traced value %x \(f32\[3,4\]\) needs its contents"),
    (lambda x: x * int(x[0, 0]), r"int\(\) of the traced value .* take sizes from x.shape"),
    (lambda x: x[0, 0].item(), r"\.item\(\) of the traced value"),
    (lambda x: np.asarray(x), r"Converting to a numpy array \(np.asarray, np.array\) of the traced value %x"),
    (lambda x: x.data, r"Reading .data of the traced value %x"),
    (lambda x: [row for row in x], r"Iteration over the traced value %x \(f32\[3,4\]\) is not supported"),
    (lambda x: x.__setitem__(0, 1.0), "assigning into the traced value %x"),
    (lambda x: np.sort(x), r"np.sort is not supported on traced values"),
    (lambda x: x @ np.ones((5, 2), np.float32), r"while tracing: op 'matmul': inner dimensions differ"),
    (lambda x: None, "output 0 of the model is a NoneType"),
    (lambda x: (), "returned an empty tuple"),
    (lambda x: {"y": x}, "output 0 of the model is a dict"),
])
def test_what_a_trace_cannot_record_raises_trace_error(function, message):
    with pytest.raises(TraceError, match=message):
        trace(function, randn(3, 4))


def test_values_of_a_finished_trace_cannot_be_used():
    kept = []
    trace(lambda x: kept.append(x) or x, randn(2))
    with pytest.raises(TraceError, match="after trace\\(\\) returned"):
        F.relu(kept[0])
    with pytest.raises(TraceError, match="mixes values of two different traces"):
        trace(lambda x: x + kept[0], randn(2))
