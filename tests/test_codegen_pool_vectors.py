"""Pools in explicit vectors (codegen/ops/conv/pool.py: in_vectors, _emit_vector_windows): f32 windows
of a column stride 1 or 2, rows wide enough that whole vectors run in a loop and a last block takes
masked loads and a masked store. Against the reference interpreter: max pools exactly (NaN and -inf in
the input), average pools within f32 rounding; unpadded, padded through a copy (average) and clamped
in place (max); host with 1 and 3 threads, and armv8 (4 lanes, so more blocks per row)."""

import numpy as np
import pytest
from codegen_harness import compile_and_run, single_op_graph

from tensorforge import ir
from tensorforge.codegen.ops.conv.pool import in_vectors
from tensorforge.ir import DType

RNG = np.random.default_rng(7)
# (input shape, attrs): widths chosen so rows hold several 16-lane blocks and a ragged last one
CASES = [
    ((1, 2, 9, 111), {"kernel": 3, "stride": 2}),                            # SqueezeNet's: 55 outputs a row
    ((2, 2, 9, 112), {"kernel": 3, "stride": 2, "padding": 1}),              # ResNet's: edges clamped
    ((1, 3, 8, 70), {"kernel": 2, "stride": 2}),                             # VGG's
    ((1, 2, 7, 50), {"kernel": 3, "stride": 1}),                             # stride 1: 48, whole blocks
    ((1, 2, 6, 41), {"kernel": (2, 3), "stride": (1, 2), "padding": (1, 1)}),  # rectangular, padded
    ((1, 1, 5, 36), {"kernel": 4, "stride": 2, "padding": 2}),               # an even window past both edges
]


def _input(shape) -> np.ndarray:
    x = RNG.standard_normal(shape).astype(np.float32)
    x.flat[::13], x.flat[5::17] = -np.inf, np.nan
    return x


def _check(op: str, shape, attrs, target: str = "host", threads: int = 1) -> None:
    x = _input(shape) if op == "max_pool2d" else RNG.standard_normal(shape).astype(np.float32)
    graph, inputs = single_op_graph(op, [x], attrs)
    node = next(node for node in graph.nodes if node.op == op)
    assert in_vectors(node)
    (actual,) = compile_and_run(graph, *inputs, target=target, threads=threads)
    expected = ir.interpret(graph, *inputs)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if op == "max_pool2d":
        assert np.isnan(expected).any()
        np.testing.assert_array_equal(actual, expected)  # a maximum is exact; NaN where the window holds one
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)  # a sum of <= 16 f32 in another order


@pytest.mark.parametrize("shape, attrs", CASES, ids=str)
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("threads", [1, 3])
def test_pool_in_vectors(shape, attrs, op, threads):
    _check(op, shape, attrs, threads=threads)


@pytest.mark.parametrize("shape, attrs", CASES[:2] + CASES[4:5], ids=str)
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pool_in_vectors_on_armv8(shape, attrs, op):
    _check(op, shape, attrs, target="armv8", threads=2)


def test_vectors_are_f32_strides_up_to_two():
    def node(dtype: DType, stride: int, kernel: int = 3) -> ir.Node:
        graph, _ = single_op_graph("max_pool2d", [np.zeros((1, 1, 12, 12), dtype.numpy)],
                                   {"kernel": kernel, "stride": stride})
        return next(node for node in graph.nodes if node.op == "max_pool2d")

    assert in_vectors(node(DType.f32, 2)) and in_vectors(node(DType.f32, 1))
    assert not in_vectors(node(DType.f32, 3)) and not in_vectors(node(DType.i8, 2))
    assert not in_vectors(node(DType.f32, 1, kernel=5))  # a 25-tap window is not unrolled
