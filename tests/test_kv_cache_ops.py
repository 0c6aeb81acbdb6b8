"""cache_write and position_mask (ir/ops_kv_cache.py, codegen/ops/kv_cache.py): references against
independent formulas, type errors that name the problem, compiled code equal to the reference on
host and armv8, and the clamp that keeps a bad position inside the cache."""

from __future__ import annotations

import numpy as np
import pytest
from codegen_harness import compile_and_run
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.ir import DType, OpError, TensorType, evaluate

RNG = np.random.default_rng(11)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def test_cache_write_replaces_the_rows_at_pos_and_leaves_the_rest():
    cache, new = randn(1, 2, 6, 3), randn(1, 2, 2, 3)
    got = evaluate("cache_write", [cache, new, np.array([3], np.int64)], {})
    np.testing.assert_array_equal(got[:, :, 3:5], new)
    np.testing.assert_array_equal(np.delete(got, [3, 4], axis=2), np.delete(cache, [3, 4], axis=2))
    assert evaluate("cache_write", [cache, new, np.array(4, np.int32)], {})[0, 0, 5].tolist() == new[0, 0, 1].tolist()


@pytest.mark.parametrize("pos", [-1, 5, 100])
def test_cache_write_reference_refuses_rows_outside_the_cache(pos):
    with pytest.raises(OpError, match="outside a cache of 6 rows"):
        evaluate("cache_write", [randn(1, 2, 6, 3), randn(1, 2, 2, 3), np.array([pos], np.int64)], {})


def test_position_mask_keeps_keys_up_to_pos_plus_the_query():
    got = evaluate("position_mask", [np.zeros((2, 6), np.float32), np.array([2], np.int64)], {})
    np.testing.assert_array_equal(np.isneginf(got), np.arange(6)[None, :] > np.arange(2)[:, None] + 2)
    square = evaluate("position_mask", [randn(3, 4, 4), np.array(0, np.int32)], {})
    np.testing.assert_array_equal(square, evaluate("causal_mask", [square], {}))  # pos 0: the causal mask


@pytest.mark.parametrize("op, types, message", [
    ("cache_write", [((1, 2, 6, 3), "f32"), ((1, 2, 1, 3), "f32"), ((1,), "f32")], "one integer"),
    ("cache_write", [((1, 2, 6, 3), "f32"), ((1, 2, 1, 3), "f32"), ((2,), "i64")], "one integer"),
    ("cache_write", [((1, 2, 6, 3), "f32"), ((1, 3, 1, 3), "f32"), ((1,), "i64")], "every axis but the rows"),
    ("cache_write", [((1, 2, 6, 3), "f32"), ((1, 2, 7, 3), "f32"), ((1,), "i64")], "7 new rows do not fit"),
    ("cache_write", [((1, 2, 6, 3), "f32"), ((1, 2, 1, 3), "i32"), ((1,), "i64")], "dtype"),
    ("position_mask", [((4,), "f32"), ((1,), "i64")], "queries, keys"),
    ("position_mask", [((2, 4), "i32"), ((1,), "i64")], "float"),
])
def test_type_errors_name_the_problem(op, types, message):
    with pytest.raises(OpError, match=message):
        ir.infer_type(op, [TensorType(s, DType[d]) for s, d in types], {})


def cache_graph(cache_shape, count: int, pos_dtype: str) -> ir.Graph:
    """position_mask(new @ cache_write(cache, new, pos)^T, pos) and the written cache, as outputs."""
    graph = ir.Graph()
    cache = graph.add_input("cache", TensorType(cache_shape, DType.f32), state=True)
    new = graph.add_input("new", TensorType((*cache_shape[:-2], count, cache_shape[-1]), DType.f32))
    pos = graph.add_input("pos", TensorType((1,), DType[pos_dtype]))
    written = graph.call("cache_write", [cache, new, pos])
    scores = graph.call("matmul", [new, written], {"transpose_b": True})
    graph.outputs = [graph.call("position_mask", [scores, pos]), written]
    return graph


@st.composite
def cache_cases(draw):
    heads, rows, features = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 5))
    count = draw(st.integers(1, rows))
    pos = draw(st.integers(0, rows - count))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = (1, heads, rows, features)
    arrays = [rng.standard_normal(shape).astype(np.float32),
              rng.standard_normal((1, heads, count, features)).astype(np.float32)]
    dtype = draw(st.sampled_from(["i32", "i64"]))
    return cache_graph(shape, count, dtype), [*arrays, np.array([pos], DType[dtype].numpy)]


def check_compiled(case, target: str, threads: int = 1) -> None:
    graph, inputs = case
    actual = compile_and_run(graph, *inputs, target=target, threads=threads)
    expected = ir.interpret(graph, *inputs)
    for got, want in zip(actual, [expected] if len(graph.outputs) == 1 else expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@given(cache_cases())
def test_compiled_ops_equal_the_reference_on_the_host(case):
    check_compiled(case, "host")


@settings(max_examples=min(4, settings.default.max_examples))
@given(cache_cases())
def test_compiled_ops_equal_the_reference_on_armv8(case):
    check_compiled(case, "armv8")


@pytest.mark.parametrize("pos, start", [(-7, 0), (5, 4), (2**31 - 1, 4)])
def test_native_cache_write_clamps_a_bad_position_inside_the_cache(pos, start):
    graph = cache_graph((1, 2, 6, 3), 2, "i32")
    cache, new = randn(1, 2, 6, 3), randn(1, 2, 2, 3)
    _, written = compile_and_run(graph, cache, new, np.array([pos], np.int32))
    expected = cache.copy()
    expected[:, :, start:start + 2] = new
    np.testing.assert_array_equal(written, expected)


# --- cached_attention -----------------------------------------------------------------------------

def test_cached_attention_is_the_masked_softmax_attention_over_the_written_caches():
    q, k_cache, v_cache = randn(1, 2, 2, 4), randn(1, 2, 7, 4), randn(1, 2, 7, 4)
    k, v, pos = randn(1, 2, 2, 4), randn(1, 2, 2, 4), np.array([3], np.int64)
    keys, values = (evaluate("cache_write", [cache, new, pos], {}) for cache, new in ((k_cache, k), (v_cache, v)))
    scores = evaluate("mul", [evaluate("matmul", [q, keys], {"transpose_b": True}), np.float32(0.5)], {})
    weights = evaluate("softmax", [evaluate("position_mask", [scores, pos], {})], {"axis": -1})
    np.testing.assert_allclose(evaluate("cached_attention", [q, k_cache, v_cache, k, v, pos], {"scale": 0.5}),
                               evaluate("matmul", [weights, values], {}), rtol=1e-6, atol=1e-6)
    with pytest.raises(OpError, match="outside a cache of 7 rows"):
        evaluate("cached_attention", [q, k_cache, v_cache, k, v, np.array([6], np.int64)], {"scale": 1.0})


@pytest.mark.parametrize("types, attrs, message", [
    ([(1, 2, 1, 4), (1, 2, 6, 4), (1, 2, 5, 4), (1, 2, 1, 4), (1, 2, 1, 4)], {}, "k, v caches"),
    ([(1, 2, 1, 3), (1, 2, 6, 4), (1, 2, 6, 4), (1, 2, 1, 3), (1, 2, 1, 3)], {}, "same leading axes"),
    ([(1, 2, 1, 4), (1, 2, 6, 4), (1, 2, 6, 4), (1, 2, 2, 4), (1, 2, 2, 4)], {}, "queries, D"),
    ([(1, 2, 1, 4), (1, 2, 6, 4), (1, 2, 6, 4), (1, 2, 1, 4), (1, 2, 1, 4)], {"scale": float("inf")}, "finite"),
])
def test_cached_attention_type_errors_name_the_problem(types, attrs, message):
    operands = [TensorType(shape, DType.f32) for shape in types] + [TensorType((1,), DType.i64)]
    with pytest.raises(OpError, match=message):
        ir.infer_type("cached_attention", operands, attrs)


INT8_TYPES = [(1, 2, 1, 4), (1, 2, 6, 4), (1, 2, 6, 4), (1, 2, 1, 4), (1, 2, 1, 4)]  # q, caches, rows
SCALE_TYPES = [(1, 2, 6, 1), (1, 2, 6, 1), (1, 2, 1, 1), (1, 2, 1, 1)]


def int8_operands(codes=DType.i8, scales=SCALE_TYPES, count=10):
    types = [TensorType(INT8_TYPES[0], DType.f32)] + [TensorType(shape, codes) for shape in INT8_TYPES[1:]]
    types += [TensorType((1,), DType.i64)] + [TensorType(shape, DType.f32) for shape in scales]
    return types[:count]


@pytest.mark.parametrize("types, message", [
    (int8_operands(count=8), "takes 6 operands .* or 10 .*, got 8"),
    (int8_operands(codes=DType.u8), "with scales needs i8 codes, got k cache u8"),
    (int8_operands(scales=[(1, 2, 6, 1), (1, 2, 6, 4), (1, 2, 1, 1), (1, 2, 1, 1)]),
     r"the scales of the v cache must be f32\[1, 2, 6, 1\] \(one a row\), got f32\[1,2,6,4\]"),
    (int8_operands(scales=[(1, 2, 6, 1), (1, 2, 6, 1), (1, 2, 1, 1), (1, 2, 6, 1)]), "the scales of the v must"),
])
def test_int8_cached_attention_type_errors_name_the_problem(types, message):
    with pytest.raises(OpError, match=message):
        ir.infer_type("cached_attention", types, {})


def test_int8_cached_attention_is_attention_over_the_dequantized_written_caches():
    """The reference: the int8 rows and their scales written at pos, dequantized (zero point 0), then
    the f32 op's computation: the same as cached_attention on the dequantized arrays."""
    q = randn(1, 2, 2, 4)
    codes = [RNG.integers(-127, 128, shape).astype(np.int8) for shape in ((1, 2, 7, 4),) * 2 + ((1, 2, 2, 4),) * 2]
    scales = [RNG.random(shape).astype(np.float32) for shape in ((1, 2, 7, 1),) * 2 + ((1, 2, 2, 1),) * 2]
    pos = np.array([3], np.int64)
    zero = np.int32(0)
    dequantized = [evaluate("dequantize", [c, s, zero], {}) for c, s in zip(codes, scales, strict=True)]
    expected = evaluate("cached_attention", [q, *dequantized, pos], {"scale": 0.5})
    actual = evaluate("cached_attention", [q, *codes, pos, *scales], {"scale": 0.5})
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
    unscaled = evaluate("cached_attention", [q, *(c.astype(np.float32) for c in codes), pos], {"scale": 0.5})
    assert not np.allclose(actual, unscaled, rtol=1e-3)  # the codes alone are not the rows


@st.composite
def attention_cases(draw, int8: bool = False):
    # features below, at and above a vector (16 lanes on AVX-512, 4 on NEON), with short last vectors
    heads, rows = draw(st.integers(1, 3)), draw(st.integers(1, 20))
    features = draw(st.sampled_from([1, 3, 4, 5, 9, 16, 17, 32, 37, 64]))
    queries = draw(st.integers(1, min(3, rows)))
    pos = draw(st.integers(0, rows - queries))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    graph = ir.Graph()
    lengths = (("q", queries), ("k_cache", rows), ("v_cache", rows), ("k", queries), ("v", queries))
    nodes = [graph.add_input(name, TensorType((1, heads, length, features), DType.i8 if int8 and name != "q"
                                              else DType.f32)) for name, length in lengths]
    nodes.append(graph.add_input("pos", TensorType((1,), DType.i32)))
    if int8:
        nodes += [graph.add_input(f"{name}_scales", TensorType((1, heads, length, 1), DType.f32))
                  for name, length in lengths[1:]]
    graph.outputs = [graph.call("cached_attention", nodes, {"scale": draw(st.sampled_from([1.0, 0.35]))})]
    arrays = [rng.integers(-127, 128, node.shape).astype(np.int8) if node.dtype is DType.i8
              else (rng.standard_normal(node.shape) * 3).astype(np.float32) for node in nodes[:5]]
    scales = [(rng.random(node.shape) * 0.05).astype(np.float32) for node in nodes[6:]]
    return graph, [*arrays, np.array([pos], np.int32), *scales]


@given(attention_cases(), st.sampled_from([1, 2, 3]))
def test_compiled_cached_attention_equals_the_reference_on_the_host(case, threads):
    check_compiled(case, "host", threads)  # threads > 1: the heads split among them, however few


@settings(max_examples=min(4, settings.default.max_examples))
@given(attention_cases())
def test_compiled_cached_attention_equals_the_reference_on_armv8(case):
    check_compiled(case, "armv8", threads=2)


@given(attention_cases(int8=True), st.sampled_from([1, 2, 3]))
def test_compiled_int8_cached_attention_equals_the_reference_on_the_host(case, threads):
    """An int8 cache: the kernel scales a row's score and weight, the reference the row itself; the
    rounding differs by ulps, within the f32 tolerance."""
    check_compiled(case, "host", threads)


@settings(max_examples=min(4, settings.default.max_examples))
@given(attention_cases(int8=True))
def test_compiled_int8_cached_attention_equals_the_reference_on_armv8(case):
    check_compiled(case, "armv8", threads=2)
