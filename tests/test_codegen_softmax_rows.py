"""softmax rows in registers (codegen/ops/reduce.py, `softmax_row_vectors`): a softmax along the last
axis whose rows are whole vectors (at most MAX_ROW_VECTORS) computes each row in vector code. The
cases below take that path on an AVX-512, AVX2 or NEON target alike (their lengths are multiples of
16), at 1 and 3 threads and on armv8, against the reference interpreter: scaled, causal (as many
keys as queries, and more), with an additive mask along the keys or broadcast over them, NaN and
inf scores, and a row that the mask hides entirely (NaN, as numpy gives)."""

from __future__ import annotations

import numpy as np
import pytest
from codegen_harness import compile_and_run

from tensorforge import ir
from tensorforge.codegen.ops.reduce import MAX_ROW_VECTORS, softmax_row_vectors
from tensorforge.codegen.target import Target

TARGETS = [("host", 1), ("host", 3), ("armv8", 2)]


def softmax_graph(shape, attrs, mask_shape=None) -> ir.Graph:
    graph = ir.Graph()
    operands = [graph.add_input("x", ir.TensorType(shape, ir.DType.f32))]
    if mask_shape is not None:
        operands.append(graph.add_input("mask", ir.TensorType(mask_shape, ir.DType.f32)))
    graph.outputs = [graph.call("softmax", operands, {"axis": len(shape) - 1, **attrs}, name="softmax")]
    return graph


def check(graph: ir.Graph, inputs: list[np.ndarray]) -> np.ndarray:
    softmax = graph.node("softmax")
    for target in ("host", "armv8"):
        assert softmax_row_vectors(softmax, Target.parse(target)) > 0, target
    expected = ir.interpret(graph, *inputs)
    for target, threads in TARGETS:
        (got,) = compile_and_run(graph, *inputs, target=target, threads=threads)
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-7, err_msg=f"{target}, {threads} threads")
        np.testing.assert_array_equal(got == 0, expected == 0)  # a hidden key's probability is exactly 0
    return expected


@pytest.mark.parametrize("shape, attrs", [
    ((3, 5, 32), {}),
    ((2, 12, 32, 32), {"scale": 0.125, "causal": True}),  # GPT-2's prefill of 32 positions, two images
    ((1, 2, 8, 48), {"causal": True}),  # 48 keys, the queries the last 8 positions
    ((4, 16), {"scale": -3.0}),
    ((2, 3, 64), {"scale": 0.5}),  # 16 vectors of NEON's 4
], ids=str)
def test_rows_in_registers_match_the_reference(shape, attrs):
    scores = (np.random.default_rng(7).standard_normal(shape) * 4).astype(np.float32)
    expected = check(softmax_graph(shape, attrs), [scores])
    if attrs.get("causal"):  # the last query sees every key, the first only keys - queries + 1 of them
        queries, keys = shape[-2:]
        assert (expected[..., 0, keys - queries + 1:] == 0).all() and (expected[..., -1, :] > 0).all()


@pytest.mark.parametrize("mask_shape", [(2, 1, 32), (2, 3, 1)], ids=["along the keys", "broadcast over them"])
def test_an_additive_mask_along_the_keys_or_broadcast(mask_shape):
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((2, 3, 32)).astype(np.float32)
    mask = rng.standard_normal(mask_shape).astype(np.float32)
    if mask_shape[-1] == 32:
        mask[0, 0, 5:] = -np.inf  # the first image's keys from 5 on are hidden
    expected = check(softmax_graph((2, 3, 32), {"scale": 0.25}, mask_shape), [scores, mask])
    if mask_shape[-1] == 32:
        assert (expected[0, :, 5:] == 0).all()


def test_nan_and_inf_scores_and_a_row_hidden_entirely():
    """A NaN score makes its row NaN, and so does an inf score (inf - its row's max inf); a row whose
    keys the mask hides entirely is NaN too (-inf - -inf); the other rows are unaffected."""
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((4, 32)).astype(np.float32)
    scores[0, 7] = np.nan
    scores[1, 20] = np.inf
    mask = np.zeros((4, 32), np.float32)
    mask[2, :] = -np.inf
    graph = softmax_graph((4, 32), {}, (4, 32))
    expected = ir.interpret(graph, scores, mask)
    assert np.isnan(expected[:3]).all() and not np.isnan(expected[3]).any()
    for target, threads in TARGETS:
        (got,) = compile_and_run(graph, scores, mask, target=target, threads=threads)
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-7)


def test_other_rows_take_the_loops():
    """A row that is not whole vectors, one longer than MAX_ROW_VECTORS vectors, or a softmax along
    another axis keeps the loops (still right: checked here too)."""
    host = Target.parse("host")
    too_long = host.vector_width * (MAX_ROW_VECTORS + 1)
    cases = [softmax_graph((3, 30), {"causal": True}), softmax_graph((2, too_long), {}),
             softmax_graph((3, 32), {"causal": False})]
    transposed = ir.Graph()  # along axis 0 of a [32, 3]
    x = transposed.add_input("x", ir.TensorType((32, 3), ir.DType.f32))
    transposed.outputs = [transposed.call("softmax", [x], {"axis": 0}, name="softmax")]
    assert softmax_row_vectors(cases[0].node("softmax"), host) == 0
    assert softmax_row_vectors(cases[1].node("softmax"), host) == 0
    assert softmax_row_vectors(cases[2].node("softmax"), host) == 32 // host.vector_width
    assert softmax_row_vectors(transposed.node("softmax"), host) == 0
    rng = np.random.default_rng(9)
    for graph in (cases[0], cases[1], transposed):
        inputs = [rng.standard_normal(node.shape).astype(np.float32) for node in graph.inputs]
        (got,) = compile_and_run(graph, *inputs)
        np.testing.assert_allclose(got, ir.interpret(graph, *inputs), rtol=2e-6, atol=1e-7)
