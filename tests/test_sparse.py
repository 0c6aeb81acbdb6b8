"""Unstructured sparsity (issue 4): the sparse_linear op (ir/ops_sparse.py), its kernel
(codegen/ops/sparse/linear.py, ops/sparse/slices.py, ops/sparse/layout.py), the sparsify pass and the prune
report's kernel column.

The compiled kernel is checked against the op's reference and against the dense linear it replaces,
over random shapes (primes, sizes below one vector, few and many rows of x) and random sparsity
patterns (empty rows, fully dense, all zero), with and without threads, on the host and on armv8
under qemu-user (fewer examples there).
"""

from __future__ import annotations

import re
from unittest import mock

import numpy as np
import pytest
from codegen_harness import compile_and_run
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorforge as tf
from tensorforge import ir
from tensorforge.codegen import CodegenError, build
from tensorforge.codegen.ops.sparse.layout import WindowedWeight, sliced, windowed
from tensorforge.codegen.ops.sparse.linear import balanced_bounds
from tensorforge.codegen.target import Target
from tensorforge.codegen.threads import parallel
from tensorforge.ir import DType, OpError, TensorType
from tensorforge.ir.ops_sparse import densify, to_csr
from tensorforge.models import mlp
from tensorforge.passes import PassContext, run_pipeline
from tensorforge.passes.sparsify import BREAK_EVEN, WINDOWED_BREAK_EVEN, sparsify

ARMV8_EXAMPLES = min(8, settings.default.max_examples)
SIZES = st.integers(1, 40) | st.sampled_from([1, 2, 3, 5, 7, 13, 17, 31, 61, 67])
LEADS = st.sampled_from([(), (1,), (2,), (3,), (2, 3), (33,), (70,)])
PATTERNS = ("random", "empty rows", "dense", "zero")


def sparse_weight(rng: np.random.Generator, shape: tuple[int, int], pattern: str, density: float) -> np.ndarray:
    """A weight w[in, out] with the given pattern of zeros (kept in f32)."""
    weight = (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
    if pattern == "dense":
        return weight
    keep = rng.random(shape) < density
    if pattern == "empty rows":  # whole output neurons without a single weight
        keep[:, rng.random(shape[1]) < 0.4] = False
    elif pattern == "zero":
        keep[:] = False
    return weight * keep


def sparse_graph(weight: np.ndarray, lead: tuple[int, ...], bias: np.ndarray | None = None,
                 residual: bool = False, activation: str | None = None) -> ir.Graph:
    """y = sparse_linear(x, to_csr(weight), bias?, residual?) with x (and the residual) as inputs."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((*lead, weight.shape[0]), DType.f32))
    operands = [x] + [graph.constant(array, name) for array, name in zip(to_csr(weight), ("v", "c", "r"))]
    if bias is not None:
        operands.append(graph.constant(bias, "b"))
    if residual:
        operands.append(graph.add_input("skip", TensorType((*lead, weight.shape[1]), DType.f32)))
    graph.outputs = [graph.call("sparse_linear", operands, {"activation": activation, "residual": residual})]
    return graph


def dense_result(x, weight, bias, skip, activation) -> np.ndarray:
    """What linear(x, weight, bias) (+ skip), then the activation, gives."""
    y = np.matmul(x, weight)
    y = y if bias is None else y + bias
    y = y if skip is None else y + skip
    if activation == "relu6":
        return np.clip(y, np.float32(0), np.float32(6))
    return np.maximum(y, np.float32(0)) if activation == "relu" else y


@st.composite
def sparse_cases(draw):
    lead, k, n = draw(LEADS), draw(SIZES), draw(SIZES)
    pattern = draw(st.sampled_from(PATTERNS))
    density = draw(st.sampled_from([0.02, 0.1, 0.3, 0.7]))
    return (lead, k, n, pattern, density, draw(st.booleans()), draw(st.booleans()),
            draw(st.sampled_from([None, "relu", "relu6"])), draw(st.integers(0, 2**16)))


def check_sparse(target: str, case, threads: int = 1) -> None:
    lead, k, n, pattern, density, has_bias, residual, activation, seed = case
    rng = np.random.default_rng(seed)
    weight = sparse_weight(rng, (k, n), pattern, density)
    bias = rng.standard_normal(n).astype(np.float32) if has_bias else None
    graph = sparse_graph(weight, lead, bias, residual, activation)
    inputs = [rng.standard_normal((*lead, k)).astype(np.float32)]
    if residual:
        inputs.append(rng.standard_normal((*lead, n)).astype(np.float32))
    (actual,) = compile_and_run(graph, *inputs, target=target, threads=threads)
    expected = ir.interpret(graph, *inputs)
    assert actual.dtype == expected.dtype == np.float32 and actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
    dense = dense_result(inputs[0], weight, bias, inputs[1] if residual else None, activation)
    np.testing.assert_allclose(actual, dense, rtol=1e-4, atol=1e-5)


# --- the op ----------------------------------------------------------------------------------------

@given(sparse_cases())
def test_reference_is_linear_of_the_dense_weight(case):
    lead, k, n, pattern, density, has_bias, _, activation, seed = case
    rng = np.random.default_rng(seed)
    weight = sparse_weight(rng, (k, n), pattern, density)
    np.testing.assert_array_equal(densify(*to_csr(weight), k), weight)
    x = rng.standard_normal((*lead, k)).astype(np.float32)
    bias = [rng.standard_normal(n).astype(np.float32)] if has_bias else []
    attrs = {"activation": activation}
    expected = ir.evaluate("linear", [x, weight, *bias], attrs)
    np.testing.assert_allclose(ir.evaluate("sparse_linear", [x, *to_csr(weight), *bias], attrs), expected,
                               rtol=1e-5, atol=1e-6)


def test_csr_holds_the_transpose_by_output_and_repeated_columns_add_up():
    weight = np.array([[1, 0, 0], [0, 0, 2], [3, 0, 4]], np.float32)  # w[in=3, out=3]
    values, columns, row_starts = to_csr(weight)
    assert values.tolist() == [1, 3, 2, 4] and columns.tolist() == [0, 2, 1, 2] and row_starts.tolist() == [0, 2, 2, 4]
    x = np.array([1, 10, 100], np.float32)
    twice = ir.evaluate("sparse_linear", [x, np.array([1, 1], np.float32), np.array([2, 2], np.int32),
                                          np.array([0, 2], np.int32)], {})
    assert twice.tolist() == [200.0]


def test_an_inf_in_x_reaches_only_the_rows_that_read_it():
    """Only stored entries are multiplied (the dense product would make every output NaN)."""
    weight = np.array([[1, 0], [0, 1]], np.float32)
    graph = sparse_graph(weight, (1,))
    x = np.array([[np.inf, 2]], np.float32)
    expected = ir.interpret(graph, x)
    assert expected.tolist() == [[np.inf, 2.0]]
    batch = np.repeat(x, 5, 0)  # batch lanes instead of slices
    for target in ("host", "armv8"):
        np.testing.assert_array_equal(compile_and_run(graph, x, target=target)[0], expected)
        np.testing.assert_array_equal(compile_and_run(sparse_graph(weight, (5,)), batch, target=target)[0],
                                      np.repeat(expected, 5, 0))


TYPES = {"x": TensorType((2, 4), DType.f32), "values": TensorType((3,), DType.f32),
         "columns": TensorType((3,), DType.i32), "row_starts": TensorType((6,), DType.i32)}


@pytest.mark.parametrize("change, message", [
    ({"x": TensorType((2, 4), DType.i32)}, "needs x f32"),
    ({"values": TensorType((3, 1), DType.f32)}, "values must be f32"),
    ({"columns": TensorType((3,), DType.i64)}, "columns must be i32"),
    ({"columns": TensorType((4,), DType.i32)}, "like values"),
    ({"row_starts": TensorType((0,), DType.i32)}, "row_starts must be i32"),
    ({"bias": TensorType((4,), DType.f32)}, r"bias must be f32\[5\]"),
], ids=str)
def test_type_inference_names_the_problem(change, message):
    types = {**TYPES, **change}
    operands = [types[name] for name in ("x", "values", "columns", "row_starts", "bias") if name in types]
    with pytest.raises(OpError, match=message):
        ir.infer_type("sparse_linear", operands, {})


def test_residual_and_operand_count_are_checked():
    operands = list(TYPES.values())
    with pytest.raises(OpError, match="residual must be"):
        ir.infer_type("sparse_linear", [*operands, TensorType((2, 4), DType.f32)], {"residual": True})
    with pytest.raises(OpError, match="needs the residual"):
        ir.infer_type("sparse_linear", operands, {"residual": True})
    with pytest.raises(OpError, match="activation"):
        ir.infer_type("sparse_linear", operands, {"activation": "tanh"})
    assert ir.infer_type("sparse_linear", operands, {})[0] == TensorType((2, 5), DType.f32)


@pytest.mark.parametrize("columns, row_starts, message", [
    ([0, 1, 4], [0, 1, 3], r"columns must lie in \[0, 4\)"),
    ([0, -1, 2], [0, 1, 3], "columns must lie"),
    ([0, 1, 2], [1, 1, 3], "row_starts must run from 0"),
    ([0, 1, 2], [0, 1, 2], "row_starts must run from 0 to the 3"),
    ([0, 1, 2], [0, 2, 1, 3], "never decrease"),
], ids=str)
def test_bad_csr_arrays_are_named(columns, row_starts, message):
    operands = [np.ones(4, np.float32), np.ones(3, np.float32), np.array(columns, np.int32),
                np.array(row_starts, np.int32)]
    with pytest.raises(OpError, match=message):
        ir.evaluate("sparse_linear", operands, {})
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((4,), DType.f32))
    graph.outputs = [graph.call("sparse_linear", [x, *[graph.constant(array) for array in operands[1:]]])]
    with pytest.raises(OpError, match=message):
        build(graph, "host")


def test_index_arrays_must_be_constants_to_compile():
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((4,), DType.f32))
    columns = graph.add_input("columns", TensorType((3,), DType.i32))
    values, row_starts = graph.constant(np.ones(3, np.float32)), graph.constant(np.array([0, 3], np.int32))
    graph.outputs = [graph.call("sparse_linear", [x, values, columns, row_starts])]
    with pytest.raises(CodegenError, match="must be constants"):
        build(graph, "host")


# --- the kernel ------------------------------------------------------------------------------------

@given(sparse_cases())
def test_kernel_equals_the_dense_result_host(case):
    check_sparse("host", case)


@settings(max_examples=ARMV8_EXAMPLES)
@given(sparse_cases())
def test_kernel_equals_the_dense_result_armv8(case):
    check_sparse("armv8", case)


@pytest.mark.parametrize("target", ["x86-64-v3", "x86-64-v4"])
@settings(max_examples=min(25, settings.default.max_examples))
@given(case=sparse_cases())
def test_both_x86_slice_kernels_equal_the_dense_result(target, case):
    """AVX2 gathers x lane by lane (sliced layout), AVX-512 permutes windows of x (windowed layout);
    the host runs one of them, this runs both where the host can."""
    if not Target.parse(target).runs_in_process:
        pytest.skip(f"this host cannot run {target} code")
    check_sparse(target, case)
    check_sparse(target, case, threads=3)


@given(sparse_cases(), st.integers(2, 4))
def test_kernel_split_for_threads_host(case, threads):
    """Ranges of slices (few rows of x), or blocks of rows of x times ranges of output rows."""
    check_sparse("host", case, threads)


@settings(max_examples=min(4, settings.default.max_examples))
@given(sparse_cases(), st.integers(2, 3))
def test_kernel_split_for_threads_armv8(case, threads):
    check_sparse("armv8", case, threads)


@pytest.mark.parametrize("lead", [(1,), (64,)], ids=str)
def test_a_big_pruned_layer_and_without_packing(lead):
    """1024 x 1024 at 90% zeros (both loop nests, several slices and output chunks), and pack=False:
    few rows of x then run the batch-lanes loop nest on the CSR arrays as they are."""
    rng = np.random.default_rng(5)
    weight = sparse_weight(rng, (1024, 1024), "random", 0.1)
    graph = sparse_graph(weight, lead, rng.standard_normal(1024).astype(np.float32), activation="relu")
    x = rng.standard_normal((*lead, 1024)).astype(np.float32)
    for options in ({}, {"pack": False}):
        (actual,) = compile_and_run(graph, x, **options)
        np.testing.assert_allclose(actual, ir.interpret(graph, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lead, k, n", [((1,), 0, 5), ((4,), 0, 3), ((0,), 6, 4), ((1,), 6, 0), ((2, 0), 3, 3)],
                         ids=str)
def test_empty_shapes(lead, k, n):
    """No inputs (the result is the bias), no rows of x, no outputs."""
    rng = np.random.default_rng(6)
    graph = sparse_graph(np.zeros((k, n), np.float32), lead, rng.standard_normal(n).astype(np.float32))
    x = np.zeros((*lead, k), np.float32)
    for target in ("host", "armv8"):
        (actual,) = compile_and_run(graph, x, target=target)
        np.testing.assert_array_equal(actual, ir.interpret(graph, x))


def test_sliced_layout_sorts_rows_and_pads_with_the_zero_column():
    weight = np.zeros((4, 4), np.float32)  # rows (outputs) of lengths 2, 3, 1, 2
    weight[[0, 3], 0], weight[[1, 2, 3], 1], weight[0, 2], weight[[0, 1], 3] = 1, 2, 3, 4
    layout = sliced(*to_csr(weight), lanes=2, pad_column=4)
    assert layout.slices == 2 and layout.rows.tolist() == [1, 0, 3, 2] and layout.slice_starts.tolist() == [0, 3, 5]
    assert layout.columns.reshape(-1, 2).tolist() == [[1, 0], [2, 3], [3, 4], [0, 0], [1, 4]]
    assert layout.values.reshape(-1, 2).tolist() == [[2, 1], [2, 1], [2, 0], [4, 3], [4, 0]]


def decoded(layout: WindowedWeight) -> list:
    """Per step: (window start, each lane's byte, each lane's weight)."""
    records = layout.records.reshape(-1, layout.record_bytes)
    return [(int(record[:4].view("<i4")[0]), record[4:].tolist(), weights.tolist())
            for record, weights in zip(records, layout.values.reshape(-1, layout.lanes))]


def test_windowed_layout_steps_every_lane_through_a_window_of_x():
    weight = np.zeros((6, 2), np.float32)  # r0: a b . . c .   r1: . f g . . h   (w is [in, out])
    weight[[0, 1, 4], 0] = 1, 2, 3
    weight[[1, 2, 5], 1] = 4, 5, 6
    layout = windowed(*to_csr(weight), lanes=2, window=2, align=1, group=1)
    assert layout.slice_starts.tolist() == [0, 3]
    assert decoded(layout) == [(0, [0, 1], [1, 4]), (1, [0, 1], [2, 5]), (4, [0, 1], [3, 6])]
    pad = WindowedWeight.PAD
    layout = windowed(*to_csr(weight), lanes=2, window=2, align=2, group=4, per_window=2)
    assert layout.slice_starts.tolist() == [0, 8]  # 6 steps in windows of 2 steps, padded to a group of 4
    assert decoded(layout) == [(0, [0, 1], [1, 4]), (0, [1, pad], [2, 0]),  # g (column 2) waits
                               (2, [pad, 0], [0, 5]), (2, [pad, pad], [0, 0]),
                               (4, [0, 1], [3, 6]), (4, [pad, pad], [0, 0]),
                               (0, [pad, pad], [0, 0]), (0, [pad, pad], [0, 0])]
    with pytest.raises(ValueError, match="whole windows"):
        windowed(*to_csr(weight), lanes=2, window=2, align=1, group=3, per_window=2)


@settings(max_examples=min(20, settings.default.max_examples))
@given(st.integers(0, 40), st.integers(0, 90), st.sampled_from([0.02, 0.1, 0.5, 1.0]), st.integers(0, 2**16),
       st.sampled_from([(1, 1), (8, 2), (16, 4)]))
def test_windowed_layout_holds_every_entry_once(out, depth, density, seed, align_steps):
    """Adding every lane's weight at window start + byte gives back the dense weight (repeated CSR
    columns add up); a window's steps share its start, which is aligned."""
    rng = np.random.default_rng(seed)
    weight = np.where(rng.random((depth, out)) < density, rng.standard_normal((depth, out)), 0).astype(np.float32)
    align, per_window = align_steps
    layout = windowed(*to_csr(weight), lanes=16, window=32, align=align, group=8, per_window=per_window)
    rebuilt = np.zeros((layout.slices * 16, depth + 32), np.float32)
    for step, (start, lanes, weights) in enumerate(decoded(layout)):
        assert start % align == 0 and (step % per_window == 0 or start == decoded(layout)[step - 1][0])
        for lane, (column, value) in enumerate(zip(lanes, weights)):
            if column == WindowedWeight.PAD:
                assert value == 0
            else:
                rebuilt[(np.searchsorted(layout.slice_starts, step, side="right") - 1) * 16 + lane,
                        start + column] += value
    np.testing.assert_array_equal(rebuilt[:out, :depth], weight.T)


def test_parts_have_near_equal_entries_and_at_least_one_row():
    row_starts = np.array([0, 100, 100, 101, 102, 103, 200], np.int32)
    assert balanced_bounds(row_starts, 2) == [0, 1, 6]
    assert balanced_bounds(row_starts, 6) == [0, 1, 2, 3, 4, 5, 6]
    assert balanced_bounds(np.zeros(4, np.int32), 3) == [0, 1, 2, 3]


def test_slices_run_on_vector_fma_and_avx512_permutes_x():
    weight = sparse_weight(np.random.default_rng(0), (64, 64), "random", 0.1)
    for target, pattern in (("armv8", r"fmla\s+v\d+\.4s"), ("x86-64-v3", r"vfmadd\d+ps\s.*ymm"),
                            ("x86-64-v4", r"vperm[it]2ps\s.*zmm")):
        assert re.search(pattern, build(sparse_graph(weight, (1,)), target).assembly())


# --- the pass, and tf.compile's prune report --------------------------------------------------------

def linear_graph(weight: np.ndarray, rows: int = 1) -> ir.Graph:
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((rows, weight.shape[0]), DType.f32))
    bias = graph.constant(np.ones(weight.shape[1], np.float32), "b")
    hidden = graph.call("linear", [x, graph.constant(weight, "w"), bias])
    graph.outputs = [graph.call("relu", [hidden])]
    return graph


def optimized(graph: ir.Graph, **config) -> ir.Graph:
    return run_pipeline(graph, PassContext(opt_level=2, config=config)).graph


@pytest.mark.parametrize("rows, measured", [(1, 1), (3, 2), (64, 64), (100, 64)])
def test_the_pass_fires_from_the_break_even_up(rows, measured):
    threshold = BREAK_EVEN[measured]
    rng = np.random.default_rng(1)
    for sparsity, fires in ((threshold - 0.05, False), (threshold, True), (0.99, True)):
        weight = rng.standard_normal((40, 50)).astype(np.float32)
        weight.reshape(-1)[rng.permutation(weight.size)[:round(sparsity * weight.size)]] = 0
        ops = [node.op for node in optimized(linear_graph(weight, rows)).op_nodes()]
        assert ops == (["sparse_linear"] if fires else ["linear"]), (sparsity, ops)


@pytest.mark.parametrize("target, rows, threshold", [("x86-64-v4", 1, WINDOWED_BREAK_EVEN),
                                                     ("x86-64-v4", 2, BREAK_EVEN[2]),
                                                     ("x86-64-v3", 1, BREAK_EVEN[1]), ("armv8", 1, BREAK_EVEN[1])])
def test_one_row_goes_sparse_earlier_where_the_kernel_permutes_windows_of_x(target, rows, threshold):
    rng = np.random.default_rng(2)
    for sparsity, fires in ((threshold - 0.05, False), (threshold, True)):
        weight = rng.standard_normal((40, 50)).astype(np.float32)
        weight.reshape(-1)[rng.permutation(weight.size)[:round(sparsity * weight.size)]] = 0
        ctx = PassContext(opt_level=2, target=Target.parse(target))
        ops = [node.op for node in run_pipeline(linear_graph(weight, rows), ctx).graph.op_nodes()]
        assert ops == (["sparse_linear"] if fires else ["linear"]), (sparsity, ops)


def test_the_pass_keeps_bias_and_fused_relu_and_stores_a_shared_weight_once():
    weight = np.diag(np.arange(1, 5, dtype=np.float32))
    graph = linear_graph(weight)
    first = graph.outputs[0]
    graph.outputs = [graph.call("linear", [first, graph.node("w")], {"activation": "relu"})]
    result = optimized(graph, sparse_threshold=0.5)
    text = str(result)
    assert "sparse_linear(%x, %w_csr_values, %w_csr_columns, %w_csr_row_starts, %b) {activation=\"relu\"" in text
    assert text.count("csr_values = constant") == 1 and "linear(" not in text.replace("sparse_linear(", "")
    x = np.arange(4, dtype=np.float32).reshape(1, 4) - 2
    np.testing.assert_allclose(ir.interpret(result, x), ir.interpret(graph, x))
    with tf.compile(graph, target="host", config={"sparse_threshold": 0.5}) as compiled:
        assert "sparse_linear" in str(compiled.snapshots[-1][1])
        np.testing.assert_allclose(compiled(x), ir.interpret(graph, x), rtol=1e-5)


def test_the_pass_leaves_dense_integer_and_computed_weights_alone():
    assert [n.op for n in optimized(linear_graph(np.ones((8, 8), np.float32))).op_nodes()] == ["linear"]
    zeros = np.zeros((8, 8), np.float32)
    assert [n.op for n in optimized(linear_graph(zeros), sparse_threshold=1.1).op_nodes()] == ["linear"]
    graph = ir.Graph()
    x, w = (graph.add_input(name, TensorType((8, 8), DType.f32)) for name in ("x", "w"))
    graph.outputs = [graph.call("linear", [x, w])]
    assert str(sparsify(graph.copy(), None)) == str(graph)
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((2, 8), DType.i32))
    graph.outputs = [graph.call("linear", [x, graph.constant(np.zeros((8, 3), np.int32))])]
    assert str(sparsify(graph.copy(), None)) == str(graph)


def test_the_pass_leaves_a_linear_with_a_fused_gelu_dense():
    """sparse_linear's epilogue has no gelu: such a linear stays a linear, whatever its zeros."""
    graph = linear_graph(np.eye(8, dtype=np.float32))
    linear = graph.outputs[0].inputs[0]
    graph.outputs = [graph.call("gelu", [linear])]
    result = optimized(graph, sparse_threshold=0.5)
    assert [(n.op, n.attrs.get("activation")) for n in result.op_nodes()] == [("linear", "gelu_tanh")]


def test_sparse_threshold_in_the_config_replaces_the_break_even():
    weight = np.eye(6, dtype=np.float32)  # 83% zeros
    assert [n.op for n in optimized(linear_graph(weight), sparse_threshold=0.9).op_nodes()] == ["linear"]
    assert [n.op for n in optimized(linear_graph(weight), sparse_threshold=0.5).op_nodes()] == ["sparse_linear"]


def test_prune_report_names_the_kernel_and_sparse_kernel_false_keeps_it_dense():
    x = np.random.default_rng(2).standard_normal((1, 784)).astype(np.float32)
    sparse = tf.PruneConfig(sparsity=0.95, scope="layer")
    dense = tf.PruneConfig(sparsity=0.95, scope="layer", sparse_kernel=False)
    for config, disabled, kernels in ((sparse, (), {"csr"}), (sparse, ("sparsify",), {"dense"}),
                                      (dense, (), {"dense"}), (tf.PruneConfig(sparsity=0.3), (), {"dense"})):
        with tf.compile(mlp(), x, prune=config, disabled=disabled) as compiled:
            report = compiled.prune_report()
            assert {row[4] for row in report.rows} == kernels, (config, disabled)
            np.testing.assert_allclose(compiled(x), ir.interpret(compiled.source_graph, x), rtol=1e-4, atol=1e-5)
            if kernels == {"csr"}:
                assert re.search(r"layers\.0\.weight\s+95\.0%\s+\[784, 256\]\s+\[784, 256\]\s+csr", str(report))


@pytest.mark.parametrize("batch", [1, 5])
def test_sparse_layers_of_one_shape_are_not_shared(batch):
    """Two sparse weights with the same shape and count of nonzeros but mirrored patterns: a split
    kernel's row ranges (balanced by nonzeros) and the slices follow the pattern, so each layer
    gets a function of its own (Lowering.reads_values), and both are right."""
    rng = np.random.default_rng(7)
    first = rng.standard_normal((32, 32)).astype(np.float32)
    first *= rng.random((32, 32)) < np.where(np.arange(32) < 8, 0.9, 0.05)  # the first outputs hold most
    second = first[:, ::-1].copy()
    graph = ir.Graph()
    value = graph.call("relu", [graph.add_input("x", TensorType((batch, 32), DType.f32))])  # both read the workspace
    for index, weight in enumerate((first, second)):
        arrays = [graph.constant(array, f"{name}{index}") for array, name in zip(to_csr(weight), ("v", "c", "r"))]
        value = graph.call("sparse_linear", [value, *arrays], {"activation": None, "residual": False})
    graph.outputs = [value]
    data = rng.standard_normal((batch, 32)).astype(np.float32)
    with mock.patch.object(parallel, "MIN_PARALLEL_FLOPS", 0):
        artifact = build(graph, "host", opt_level=0, threads=2)
    sparse_parts = [artifact.parts.get(name, 1) for name in (value.inputs[0].name, value.name)]
    assert min(sparse_parts) > 1  # split (4 parts with AVX2, 2 with AVX-512)
    assert len(re.findall(r'define internal void @"?sparse_linear\.\d+"?\(', artifact.llvm_ir)) == 2
    (y,) = compile_and_run(graph, data, threads=2)
    np.testing.assert_allclose(y, np.maximum(data, 0) @ first @ second, rtol=1e-4, atol=1e-5)
