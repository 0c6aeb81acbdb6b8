"""fuse-reduce (passes/fuse_reduce.py): a reduction of an elementwise op or chain becomes one
fused_reduce, only where that is legal; its reference equals the unfused ops bit for bit, and its
code (codegen/ops/reduce.py, split among threads by blocks of a kept axis) equals the reference on
the host and on armv8.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from codegen_harness import assert_matches_reference, compile_and_run, reference_outputs
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.codegen import build
from tensorforge.codegen.ops.reduce import reduce_parts
from tensorforge.codegen.threads import parallel
from tensorforge.ir import OpError
from tensorforge.ir.registry import infer_type
from tensorforge.passes import PassContext, run_pipeline
from tensorforge.passes.fuse_elementwise import fuse_elementwise
from tensorforge.passes.fuse_reduce import fuse_reduce

REDUCTIONS = ["reduce_sum", "reduce_mean", "reduce_max"]
CHAIN_OPS = ["add", "sub", "mul", "relu", "tanh", "exp", "neg"]


@st.composite
def reduced_chains(draw):
    """(graph, inputs, fuses): a reduction of a chain of 1-3 elementwise ops over x and a broadcast
    operand (a row vector, or a keepdims mean of x: a variance), where the pass must fuse or must
    not: the chain's last value has a second user, or is an output."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=3)))
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType(shape, ir.DType.f32))
    inputs = [rng.standard_normal(shape).astype(np.float32)]
    if draw(st.booleans()):
        other = graph.call("reduce_mean", [x], {"axes": [len(shape) - 1], "keepdims": True})
    else:
        other = graph.constant(rng.standard_normal(shape[-1:]).astype(np.float32), "w")
    value = x
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(CHAIN_OPS))
        if op in ("add", "sub", "mul"):
            partner = draw(st.sampled_from([other, value]))
            value = graph.call(op, draw(st.permutations([value, partner])))
        else:
            value = graph.call(op, [value])
    axes = draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape), unique=True))
    reduction = draw(st.sampled_from(REDUCTIONS))
    reduced = graph.call(reduction, [value], {"axes": axes, "keepdims": draw(st.booleans())})
    extra = draw(st.sampled_from([None, None, "second user", "output"]))
    graph.outputs = [reduced]
    if extra == "second user":
        graph.outputs.append(graph.call("softmax", [value], {"axis": -1}))
    elif extra == "output":
        graph.outputs.append(value)
    return graph, inputs, extra is None and value is not x


@given(reduced_chains())
def test_fuses_exactly_where_legal_and_equals_the_unfused_ops_bit_for_bit(case):
    graph, inputs, fuses = case
    chained = fuse_elementwise(graph.copy())
    fused = fuse_reduce(chained.copy())
    fused.verify()
    before = [node.op for node in chained.op_nodes()]
    after = [node.op for node in fused.op_nodes()]
    if fuses:
        assert after.count("fused_reduce") == 1
        assert len(after) == len(before) - 1  # the chain and the reduction became one node
    else:
        assert after == before
    for got, wanted in zip(reference_outputs(fused, inputs), reference_outputs(graph, inputs), strict=True):
        np.testing.assert_array_equal(got, wanted)


@settings(max_examples=min(40, settings.default.max_examples))
@given(reduced_chains(), st.sampled_from([1, 3]))
def test_the_fused_reduction_compiles_to_the_reference_host(case, threads):
    graph, inputs, _ = case
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert_matches_reference(compile_and_run(optimized, *inputs, threads=threads), graph, inputs,
                             rtol=1e-4, atol=1e-5)


@settings(max_examples=min(6, settings.default.max_examples))
@given(reduced_chains())
def test_the_fused_reduction_compiles_to_the_reference_armv8(case):
    graph, inputs, _ = case
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert_matches_reference(compile_and_run(optimized, *inputs, target="armv8", threads=2), graph, inputs,
                             rtol=1e-4, atol=1e-5)


def layer_norm(shape: tuple[int, ...]) -> ir.Graph:
    """A layer norm written with tensor operators: its variance is mean((x - mean)^2)."""
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType(shape, ir.DType.f32))
    mean = graph.call("reduce_mean", [x], {"axes": [-1], "keepdims": True})
    centered = graph.call("sub", [x, mean])
    variance = graph.call("reduce_mean", [graph.call("mul", [centered, centered])], {"axes": [-1], "keepdims": True})
    deviation = graph.call("sqrt", [graph.call("add", [variance, graph.constant(np.float32(1e-5))])])
    graph.outputs = [graph.call("div", [graph.call("sub", [x, mean]), deviation])]
    return graph


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_split_reductions_equal_one_thread_bit_for_bit(threads):
    """Parts take blocks of a kept axis, so each output sums the same values in the same order."""
    x = np.random.default_rng(0).standard_normal((37, 5, 129)).astype(np.float32)
    graph = run_pipeline(layer_norm(x.shape), PassContext(opt_level=2)).graph
    assert "fused_reduce" in [node.op for node in graph.op_nodes()]
    with mock.patch.object(parallel, "MIN_PARALLEL_FLOPS", 0):  # as compile_and_run below
        split = build(graph, "host", 2, threads=threads)
    reductions = [name for name, parts in split.parts.items() if "reduce" in graph.node(name).op]
    assert reductions and all(split.parts[name] > 1 for name in reductions)
    (one,) = compile_and_run(graph, x)
    (many,) = compile_and_run(graph, x, threads=threads)
    np.testing.assert_array_equal(many, one)
    assert_matches_reference([many], layer_norm(x.shape), [x], rtol=1e-4, atol=1e-5)


def test_a_reduction_over_its_outer_axis_stays_on_one_thread():
    """Parts must own disjoint outputs: a sum over the outermost axis has none to share out."""
    node = ir.Graph()
    x = node.add_input("x", ir.TensorType((4096, 512), ir.DType.f32))
    over_rows = node.call("reduce_sum", [x], {"axes": [0]})
    over_columns = node.call("reduce_sum", [x], {"axes": [1]})
    assert reduce_parts(over_rows, None, 2) == 1
    assert reduce_parts(over_columns, None, 2) == 2


def test_nan_and_inf_match_the_unfused_ops():
    graph = layer_norm((3, 6))
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    x[0, 2], x[1, 4] = np.nan, np.inf
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert "fused_reduce" in [node.op for node in optimized.op_nodes()]
    expected = ir.interpret(graph, x)
    assert np.isnan(expected[0]).all() and np.isnan(expected[1]).all() and not np.isnan(expected[2]).any()
    for target in ("host", "armv8"):
        (got,) = compile_and_run(optimized, x, target=target)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_bad_fused_reductions_are_refused_by_name():
    f32, i32 = ir.TensorType((4, 5), ir.DType.f32), ir.TensorType((4, 5), ir.DType.i32)
    square = [["mul", ["in", 0], ["in", 0]]]
    with pytest.raises(OpError, match="'reduction' must be one of"):
        infer_type("fused_reduce", [f32], {"program": square, "reduction": "reduce_min"})
    with pytest.raises(OpError, match="reduce_mean"):
        infer_type("fused_reduce", [i32], {"program": square, "reduction": "reduce_mean"})
    with pytest.raises(OpError, match="op 'fused_reduce': instruction 0"):
        infer_type("fused_reduce", [f32], {"program": [["mul", ["in", 0], ["in", 1]]], "reduction": "reduce_sum"})
    with pytest.raises(OpError, match="cannot reduce an empty axis"):
        infer_type("fused_reduce", [ir.TensorType((0, 5), ir.DType.f32)],
                   {"program": square, "reduction": "reduce_max", "axes": [0]})
    result, attrs = infer_type("fused_reduce", [f32], {"program": square, "reduction": "reduce_sum", "axes": -1})
    assert result == ir.TensorType((4,), ir.DType.f32) and attrs["axes"] == (1,)
