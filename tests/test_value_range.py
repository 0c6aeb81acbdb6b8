"""value_range (ir/ops_quant.py) and split-range (passes/split_range.py): dynamic_qlinear's range of x
computed by blocks of rows in its own node, split among threads.

The reference is checked against numpy directly; the compiled op equals the reference exactly on the
host and armv8, on one thread and split into parts; dynamic_qlinear with the ranges equals itself
without them bit for bit (reference and compiled code); the pass fires for x of 8 rows or more,
shares one value_range among the layers that read one x, and leaves the model's outputs unchanged."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from codegen_harness import compile_and_run, single_op_graph
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.codegen.threads import parallel
from tensorforge.ir import DType, OpError, TensorType
from tensorforge.passes import run_pipeline
from tensorforge.passes.split_range import split_range

ARMV8_EXAMPLES = min(6, settings.default.max_examples)


@st.composite
def range_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 13), min_size=1, max_size=3)))
    blocks = draw(st.integers(1, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["normal", "positive", "negative", "nan", "inf"]))
    x = (rng.standard_normal(shape) * 10).astype(np.float32)
    x = {"positive": np.abs(x) + 1, "negative": -np.abs(x) - 1}.get(kind, x)
    if kind in ("nan", "inf"):
        for _ in range(draw(st.integers(1, 3))):
            x.reshape(-1)[rng.integers(x.size)] = np.nan if kind == "nan" else rng.choice([np.inf, -np.inf])
    return x, blocks


def expected_ranges(x: np.ndarray, blocks: int) -> np.ndarray:
    """Written out, independent of the reference: rows of the last axis, ceil(rows / blocks) each."""
    rows = x.reshape(-1, x.shape[-1])
    per = -(-rows.shape[0] // blocks)
    out = np.zeros((2, blocks), np.float32)
    for block in range(blocks):
        values = [v for v in rows[block * per:(block + 1) * per].reshape(-1).tolist() if v == v]  # NaN dropped
        out[0, block], out[1, block] = min([0.0, *values]), max([0.0, *values])
    return out


@given(range_cases())
def test_the_reference_takes_each_block_s_range_with_zero(case):
    x, blocks = case
    np.testing.assert_array_equal(ir.evaluate("value_range", [x], {"blocks": blocks}), expected_ranges(x, blocks))


def test_blocks_past_the_rows_are_zero_and_bad_attributes_are_named():
    x = np.array([[1.0, -2.0], [3.0, 4.0], [-5.0, 0.5]], np.float32)  # 3 rows in 4 blocks of 1 row
    np.testing.assert_array_equal(ir.evaluate("value_range", [x], {"blocks": 4}),
                                  [[-2.0, 0.0, -5.0, 0.0], [1.0, 4.0, 0.5, 0.0]])
    with pytest.raises(OpError, match="blocks must be a positive int"):
        ir.evaluate("value_range", [x], {"blocks": 0})
    with pytest.raises(OpError, match="needs an f32 operand"):
        ir.evaluate("value_range", [x.astype(np.int32)], {"blocks": 2})
    w, scale, bias = np.ones((2, 3), np.int8), np.ones(3, np.float32), np.zeros(3, np.float32)
    with pytest.raises(OpError, match="the ranges must be f32\\[2, blocks\\]"):
        ir.evaluate("dynamic_qlinear", [x, w, scale, bias, np.zeros(4, np.float32)], {"ranged": True})
    with pytest.raises(OpError, match="and the ranges, got 4 operands"):
        ir.evaluate("dynamic_qlinear", [x, w, scale, bias], {"ranged": True})


def check(x: np.ndarray, blocks: int, target: str, threads: int) -> None:
    graph, inputs = single_op_graph("value_range", [x], {"blocks": blocks})
    with mock.patch.object(parallel, "PARALLEL_BYTES", 0):  # split however small
        (actual,) = compile_and_run(graph, *inputs, target=target, threads=threads)
    np.testing.assert_array_equal(actual, expected_ranges(x, blocks))


@given(range_cases(), st.sampled_from([1, 2, 3]))
def test_value_range_is_exact_on_the_host(case, threads):
    check(*case, "host", threads)


@given(range_cases())
@settings(max_examples=ARMV8_EXAMPLES, deadline=None)
def test_value_range_is_exact_on_armv8(case):
    check(*case, "armv8", 2)


def test_long_rows_take_the_vector_loops_and_their_tails():
    """Rows of 4 chains of vectors, then whole vectors, then single floats (width 16 or 4)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 64 * 3 + 16 * 2 + 5)).astype(np.float32)
    x[8, -1], x[3, 70] = -50.0, 60.0  # the extremes in a tail float and in a chain
    for target, threads in (("host", 1), ("host", 3), ("armv8", 2)):
        check(x, 8, target, threads)


@st.composite
def dynamic_ranged_cases(draw):
    rows, depth, columns = draw(st.integers(1, 40)), draw(st.integers(1, 70)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = (rng.standard_normal((rows, depth)) * rng.uniform(0.01, 100)).astype(np.float32)
    if draw(st.booleans()):
        x.reshape(-1)[rng.integers(x.size)] = np.nan
    operands = [x, rng.integers(-127, 128, (depth, columns)).astype(np.int8),
                rng.uniform(1e-4, 1e-1, columns).astype(np.float32), rng.standard_normal(columns).astype(np.float32)]
    residual = draw(st.booleans())
    if residual:
        operands.append(rng.standard_normal((rows, columns)).astype(np.float32))
    attrs = {"activation": draw(st.sampled_from([None, "relu"])), "residual": residual}
    return operands, attrs, draw(st.integers(1, 9))


@given(dynamic_ranged_cases(), st.sampled_from(["host", "armv8"]))
@settings(deadline=None, max_examples=max(ARMV8_EXAMPLES, settings.default.max_examples // 2))
def test_dynamic_qlinear_with_ranges_equals_it_without(case, target):
    """Reference and compiled code: the ranges give the same scale and zero point as x itself."""
    operands, attrs, blocks = case
    plain = ir.evaluate("dynamic_qlinear", operands, attrs)
    ranges = ir.evaluate("value_range", [operands[0]], {"blocks": blocks})
    np.testing.assert_array_equal(ir.evaluate("dynamic_qlinear", [*operands, ranges], {**attrs, "ranged": True}),
                                  plain)
    graph = ir.Graph()
    x = graph.add_input("x", TensorType.of(operands[0]))
    others = [graph.constant(value, f"c{i}") for i, value in enumerate(operands[1:4])]
    if attrs["residual"]:
        others.append(graph.add_input("r", TensorType.of(operands[4])))
    measured = graph.call("value_range", [x], {"blocks": blocks})
    graph.outputs = [graph.call("dynamic_qlinear", [x, *others, measured], {**attrs, "ranged": True})]
    with mock.patch.object(parallel, "PARALLEL_BYTES", 0):
        (actual,) = compile_and_run(graph, *[operands[0], *operands[4:]], target=target, threads=2)
    np.testing.assert_array_equal(actual, plain)


def encoder_like(rows: int) -> tuple[ir.Graph, np.ndarray]:
    """x -> three dynamic_qlinear reading it (q, k, v-like), one with a residual add after it."""
    rng = np.random.default_rng(rows)
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((rows, 32), DType.f32))

    def layer(name: str, source: ir.Node) -> ir.Node:
        return graph.call("dynamic_qlinear", [source, graph.constant(rng.integers(-127, 128, (32, 32)).astype(np.int8),
                                                                      f"{name}.w"),
                                              graph.constant(np.full(32, 1e-3, np.float32), f"{name}.s"),
                                              graph.constant(rng.standard_normal(32).astype(np.float32), f"{name}.b")],
                          {"activation": None}, name=name)

    q, k, v = layer("q", x), layer("k", x), layer("v", x)
    total = graph.call("add", [graph.call("add", [q, k]), v])
    out = layer("out", total)
    graph.outputs = [graph.call("add", [out, x])]
    return graph, (rng.standard_normal((rows, 32)) * 3).astype(np.float32)


def test_split_range_shares_one_node_per_x_and_keeps_the_outputs():
    graph, x = encoder_like(16)
    result = run_pipeline(graph).graph
    layers = [node for node in result.nodes if node.op == "dynamic_qlinear"]
    ranges = [node for node in result.nodes if node.op == "value_range"]
    assert len(layers) == 4 and len(ranges) == 2  # q, k, v share x's; out has its own
    assert all(layer.attrs["ranged"] and layer.inputs[-1].op == "value_range" for layer in layers)
    out = next(layer for layer in layers if layer.inputs[1].name == "out.w")  # fuse-residual first: the skip,
    assert out.attrs["residual"] and out.inputs[4].name == "x" and out.inputs[5].op == "value_range"  # then ranges
    np.testing.assert_array_equal(ir.interpret(result, x), ir.interpret(graph, x))
    with mock.patch.object(parallel, "PARALLEL_BYTES", 0):
        (compiled,) = compile_and_run(result, x, threads=2)
    np.testing.assert_array_equal(compiled, ir.interpret(graph, x))


def test_split_range_leaves_x_of_fewer_rows_than_blocks():
    graph, _ = encoder_like(7)
    assert not any(node.op == "value_range" for node in split_range(graph).nodes)
