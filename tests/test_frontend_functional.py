"""Functional ops: each computes the same eagerly (the op's numpy reference) and traced (interpreted),
Python scalars follow the tensor's dtype, indexing and numpy functions map to ops."""

from __future__ import annotations

import numpy as np
import pytest

from tensorforge import ir
from tensorforge.frontend import F, TraceError, trace

RNG = np.random.default_rng(1)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def positive(*shape: int) -> np.ndarray:
    return RNG.uniform(0.1, 2.0, shape).astype(np.float32)


def assert_same_eager_and_traced(function, *inputs) -> ir.Graph:
    """Trace `function`, interpret the graph, and compare with running it on the arrays: exactly equal."""
    graph = trace(function, inputs)
    eager, traced = function(*inputs), ir.interpret(graph, *inputs)
    eager = eager if isinstance(eager, tuple) else (eager,)
    traced = traced if isinstance(traced, tuple) else (traced,)
    for expected, actual in zip(eager, traced, strict=True):
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
    return graph


W4, B3, CONV_W, CONV_B = randn(4, 3), randn(3), randn(4, 2, 3, 3), randn(4)
GAMMA, BETA, MEAN, VAR = positive(3), randn(3), randn(3), positive(3)

# (op the graph must contain, function, input shapes) -- one line per functional op
OPS = [
    ("add", lambda a, b: F.add(a, b), [(3, 4), (4,)]),
    ("sub", lambda a, b: F.sub(a, b), [(3, 1), (1, 4)]),
    ("mul", lambda a, b: F.mul(a, b), [(2, 3), (2, 3)]),
    ("div", lambda a, b: F.div(a, b), [(2, 3), (3,)]),
    ("neg", lambda x: F.neg(x), [(5,)]),
    ("abs", lambda x: F.abs(x), [(5,)]),
    ("exp", lambda x: F.exp(x), [(2, 3)]),
    ("log", lambda x: F.log(F.exp(x)), [(2, 3)]),
    ("sqrt", lambda x: F.sqrt(F.mul(x, x)), [(2, 3)]),
    ("tanh", lambda x: F.tanh(x), [(2, 3)]),
    ("sigmoid", lambda x: F.sigmoid(x), [(2, 3)]),
    ("relu", lambda x: F.relu(x), [(2, 3)]),
    ("gelu", lambda x: F.gelu(x), [(2, 3)]),
    ("gelu", lambda x: F.gelu(x, approximate="sigmoid"), [(2, 3)]),
    ("gelu", lambda x: F.gelu(x, approximate="exact"), [(2, 3)]),
    ("matmul", lambda a, b: F.matmul(a, b), [(2, 3, 4), (4, 5)]),
    ("linear", lambda x: F.linear(x, W4, B3), [(2, 4)]),
    ("linear", lambda x: F.linear(x, W4), [(2, 5, 4)]),
    ("softmax", lambda x: F.softmax(x, axis=0), [(3, 4)]),
    ("reduce_sum", lambda x: F.sum(x), [(3, 4)]),
    ("reduce_sum", lambda x: F.sum(x, axis=(0, 2), keepdims=True), [(2, 3, 4)]),
    ("reduce_mean", lambda x: F.mean(x, axis=-1), [(3, 4)]),
    ("reduce_max", lambda x: F.max(x, axis=1, keepdims=True), [(3, 4)]),
    ("reshape", lambda x: F.reshape(x, 4, -1), [(2, 3, 4)]),
    ("reshape", lambda x: F.reshape(x, (6, 4)), [(2, 3, 4)]),
    ("transpose", lambda x: F.transpose(x), [(2, 3, 4)]),
    ("transpose", lambda x: F.transpose(x, 0, -1, 1), [(2, 3, 4)]),
    ("concat", lambda a, b: F.concat([a, b], axis=1), [(2, 3), (2, 5)]),
    ("slice", lambda x: F.slice(x, [1, 0], [3, 4], [1, 2]), [(4, 5)]),
    ("flatten", lambda x: F.flatten(x), [(2, 3, 4)]),
    ("cast", lambda x: F.cast(F.mul(x, 10.0), np.int32), [(2, 3)]),
    ("cast", lambda x: F.cast(x, "i8"), [(2, 3)]),
    ("conv2d", lambda x: F.conv2d(x, CONV_W, CONV_B, stride=2, padding=1), [(1, 2, 6, 6)]),
    ("conv2d", lambda x: F.conv2d(x, CONV_W[:, :1], None, dilation=2, groups=2), [(1, 2, 7, 7)]),
    ("max_pool2d", lambda x: F.max_pool2d(x, 2), [(1, 3, 4, 6)]),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 3, stride=1, padding=1), [(1, 3, 4, 4)]),
    ("batch_norm", lambda x: F.batch_norm(x, GAMMA, BETA, MEAN, VAR, eps=1e-3), [(2, 3, 2, 2)]),
]


@pytest.mark.parametrize("op, function, shapes", OPS, ids=[f"{case[0]}-{i}" for i, case in enumerate(OPS)])
def test_each_op_is_the_same_eagerly_and_traced(op, function, shapes):
    graph = assert_same_eager_and_traced(function, *[randn(*shape) for shape in shapes])
    assert op in [node.op for node in graph.op_nodes()]


def test_eager_results_are_the_numpy_references():
    x = randn(2, 3)
    np.testing.assert_array_equal(F.relu(x), np.maximum(x, 0))
    np.testing.assert_array_equal(F.transpose(x), x.T)
    np.testing.assert_array_equal(F.linear(x, W4[:3], B3), x @ W4[:3] + B3)
    np.testing.assert_allclose(F.softmax(x).sum(axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(F.getitem(x, (slice(None), 1)), x[:, 1])


# --- Python scalars and dtypes --------------------------------------------------------------------

def test_python_scalars_take_the_dtype_of_the_tensor():
    assert F.add(randn(3), 1.0).dtype == np.float32
    assert F.mul(2, np.arange(3, dtype=np.int8)).dtype == np.int8
    assert F.add(np.ones(3), 1.0).dtype == np.float32, "float64 arrays become float32"
    graph = trace(lambda x: 1.0 - x * 2, randn(3))
    assert {str(node.type) for node in graph.nodes if node.op == "constant"} == {"f32[]"}
    int_graph = trace(lambda x: x + 1, np.arange(3, dtype=np.int32))
    assert int_graph.outputs[0].type == ir.TensorType((3,), ir.DType.i32)


@pytest.mark.parametrize("tensor, scalar, message", [
    (np.arange(3, dtype=np.int32), 1.5, "float value 1.5 cannot join a int32 tensor"),
    (np.arange(3, dtype=np.int8), 300, "300 does not fit the int8 tensor"),
    (np.arange(3, dtype=np.int8), "a", "is not a number or an array"),
])
def test_scalars_that_do_not_fit_are_refused(tensor, scalar, message):
    with pytest.raises(ir.OpError, match=message):
        F.add(tensor, scalar)
    with pytest.raises(TraceError, match="while tracing: op 'add': .*" + message):
        trace(lambda x: x + scalar, tensor)


# --- indexing ---------------------------------------------------------------------------------------

KEYS = [1, -1, (slice(None), 2), (slice(1, None), None, Ellipsis, -1), (Ellipsis, slice(None, None, 2)),
        (None, 0, slice(1, 3)), (slice(None),), (), (slice(-2, None), 1, slice(None, 100))]


@pytest.mark.parametrize("key", KEYS, ids=[str(k) for k in KEYS])
def test_indexing_is_numpy_indexing(key):
    x = randn(3, 4, 5)
    assert_same_eager_and_traced(lambda x: x[key], x)
    np.testing.assert_array_equal(F.getitem(x, key), x[key])


def test_indexing_records_one_slice_and_one_reshape():
    graph = trace(lambda x: x[1:, None, ..., -1], randn(3, 4, 5))
    assert [node.op for node in graph.op_nodes()] == ["slice", "reshape"]
    assert trace(lambda x: x[...], randn(3)).outputs[0].op == "input"


@pytest.mark.parametrize("function, error, message", [
    (lambda x: x[::-1], TraceError, r"index slice\(None, None, -1\) on axis 0: .*negative step"),
    (lambda x: x[[0, 1]], TraceError, r"index \[0, 1\] is not supported"),
    (lambda x: x[True], TraceError, "index True is not supported"),
    (lambda x: x[x[0, 0]], TraceError, "indexing with the traced value .* is not supported"),
    (lambda x: x[0, 0, 0], IndexError, "too many indices"),
    (lambda x: x[..., ...], IndexError, "single ellipsis"),
    (lambda x: x[3], IndexError, "index 3 is out of bounds for axis 0 with size 3"),
])
def test_unsupported_indices_are_named(function, error, message):
    with pytest.raises(error, match=message):
        trace(function, randn(3, 4))


# --- numpy functions and operators on traced values --------------------------------------------------

NUMPY_CASES = [
    lambda x: np.exp(x) + np.tanh(x) - np.negative(x),
    lambda x: np.abs(x) + abs(x - 1.0) - np.absolute(-x),
    lambda x: np.log(np.sqrt(x * x + 1.0)),
    lambda x: np.add(x, 1.0) * np.multiply(2.0, x) / np.divide(x, 3.0) - np.subtract(x, 1.0),
    lambda x: np.maximum(x, 0) + np.maximum(0.0, x),
    lambda x: np.matmul(x, x.T) @ x,
    lambda x: np.concatenate([x, x * 2], axis=1),
    lambda x: np.stack([x, x], axis=1),
    lambda x: np.reshape(x, (4, 3)) + np.ravel(x).sum(),
    lambda x: np.transpose(x, (1, 0)) + np.expand_dims(x, 0).sum(axis=(0, 2)),
    lambda x: np.sum(x, axis=0) + np.mean(x, axis=0, keepdims=True) + np.max(x) + np.amax(x, 1).sum(),
    lambda x: x * np.shape(x)[0] + np.ndim(x) + np.size(x),
    lambda x: (x ** 2, at_least_one(x) ** 0.5, (x + 5.0) ** -1, x ** 1, np.square(x), np.power(x, 2)),
    lambda x: (x.T, x.transpose(), x.transpose(1, 0), x.reshape(-1), x.flatten(), x.ravel(), +x, -x),
    lambda x: (x.sum(), x.sum(0), x.mean(axis=1, keepdims=True), x.max(1), x.astype(np.int32)),
    lambda x: (2.0 - x, 2.0 * x, 2.0 / (x * x + 1.0), 2.0 + x, np.float32(3) * x, x @ np.eye(4, dtype=np.float32)),
    lambda x: (np.maximum(x, 1.0), np.minimum(x, x.T.T * 2), x ** 3, 2.0 ** x, np.power(at_least_one(x), x)),
    lambda x: (x > 0, x <= 0.5, 0.5 < x, x == x, x != 1.0, ~(x > 0) & (x < 1) | (x == 0) ^ (x > 2)),
    lambda x: (np.where(x > 0, x, 0.1 * x), np.clip(x, -0.5, 0.5), np.logical_not(x > 0), np.less(x, x * x)),
]


def at_least_one(x):
    """x * x + 1: a value sqrt and 1 / x are exact and finite on."""
    return x * x + 1.0


@pytest.mark.parametrize("function", NUMPY_CASES, ids=[str(i) for i in range(len(NUMPY_CASES))])
def test_numpy_functions_and_operators_trace_as_they_run(function):
    assert_same_eager_and_traced(function, randn(3, 4))


@pytest.mark.parametrize("function, message", [
    (lambda x: np.sort(x), r"np.sort is not supported on traced values: tensorforge has no op for it \(numpy "
                           r"functions with an op: absolute, add, amax, argmax, clip, concatenate"),
    (lambda x: np.linalg.norm(x), "np.linalg.norm is not supported on traced values"),
    (lambda x: np.add.reduce(x), "np.add.reduce is not supported on traced values"),
    (lambda x: np.add(x, 1, out=x), r"np.add is supported on traced values only without keyword arguments \(got out\)"),
    (lambda x: np.reshape(x, (12,), order="F"), r"np.reshape is supported on traced values only as "
                                                r"np.reshape\(a, shape\)"),
    (lambda x: np.clip(x, 0, 1, out=x), r"np.clip is supported on traced values only as np.clip\(a, a_min, a_max\)"),
])
def test_numpy_functions_without_an_op_are_named(function, message):
    with pytest.raises(TraceError, match=message):
        trace(function, randn(3, 4))
