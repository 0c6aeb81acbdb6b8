"""gather, layer_norm, causal_mask and argmax (ir/ops_transformer.py, codegen/ops/transformer.py):
references against independent formulas, type errors that name the problem, compiled code equal to
the reference on host and armv8 over random shapes, and what happens to out-of-range token ids."""

from __future__ import annotations

import numpy as np
import pytest
from codegen_harness import compile_and_run, single_op_graph
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorforge as tf
from tensorforge import ir
from tensorforge.ir import DType, InputError, OpError, TensorType, evaluate

RNG = np.random.default_rng(5)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# --- references ---------------------------------------------------------------------------------

def test_layer_norm_is_the_biased_formula_over_the_last_axis():
    x, gamma, beta = randn(3, 4, 10) * np.float32(3) + np.float32(2), randn(10), randn(10)
    got = evaluate("layer_norm", [x, gamma, beta], {})
    wide = x.astype(np.float64)
    mean = wide.mean(axis=-1, keepdims=True)
    var = ((wide - mean) ** 2).sum(axis=-1, keepdims=True) / 10  # biased: divided by n, not n - 1
    np.testing.assert_allclose(got, (wide - mean) / np.sqrt(var + 1e-5) * gamma + beta, rtol=1e-5, atol=1e-5)
    assert got.dtype == np.float32
    constant_rows = evaluate("layer_norm", [np.full((2, 4), 7, np.float32), gamma[:4], beta[:4]], {"eps": 1e-5})
    np.testing.assert_allclose(constant_rows, np.broadcast_to(beta[:4], (2, 4)), atol=1e-6)  # eps keeps it finite


def test_gather_looks_up_rows_and_clamps_ids():
    table = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(evaluate("gather", [table, np.array([[4, 0], [2, 2]], np.int32)], {}),
                                  table[[[4, 0], [2, 2]]])
    clamped = evaluate("gather", [table, np.array([-1, 5, 100, -100], np.int64)], {})
    np.testing.assert_array_equal(clamped, table[[0, 4, 4, 0]])  # -1 is row 0, not numpy's last row
    assert evaluate("gather", [table, np.array(3, np.int64)], {}).shape == (3,)


def test_causal_mask_keeps_the_lower_triangle_and_lets_later_queries_see_earlier_keys():
    square = evaluate("causal_mask", [np.zeros((3, 3), np.float32)], {})
    np.testing.assert_array_equal(np.isinf(square), np.triu(np.ones((3, 3), bool), k=1))
    assert np.all(square[np.isinf(square)] < 0)
    wide = evaluate("causal_mask", [np.zeros((2, 4), np.float32)], {})  # queries are positions 2 and 3
    np.testing.assert_array_equal(np.isinf(wide), [[False, False, False, True], [False, False, False, False]])
    probabilities = evaluate("softmax", [evaluate("causal_mask", [randn(2, 5, 5)], {})], {"axis": -1})
    np.testing.assert_array_equal(probabilities[..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]], 0)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1, rtol=1e-6)


def test_argmax_takes_the_first_maximum_and_the_first_nan():
    x = np.array([[1, 3, 3, 0], [np.nan, 5, np.nan, 9], [-np.inf, -np.inf, -np.inf, -np.inf]], np.float32)
    assert evaluate("argmax", [x], {"axis": 1}).tolist() == [1, 0, 0]
    result = evaluate("argmax", [x], {"axis": 0, "keepdims": True, "dtype": "i32"})
    assert result.dtype == np.int32 and result.shape == (1, 4)


@pytest.mark.parametrize("op, types, attrs, message", [
    ("gather", [((5, 3), "f32"), ((2,), "f32")], {}, "integer indices"),
    ("gather", [((0, 3), "f32"), ((2,), "i64")], {}, "at least one row"),
    ("layer_norm", [((2, 4), "f32"), ((3,), "f32"), ((4,), "f32")], {}, r"gamma must be \[4\]"),
    ("layer_norm", [((2, 4), "i32"), ((4,), "i32"), ((4,), "i32")], {}, "float"),
    ("layer_norm", [((2, 4), "f32"), ((4,), "f32"), ((4,), "f32")], {"eps": -1.0}, "non-negative"),
    ("causal_mask", [((4,), "f32")], {}, "queries, keys"),
    ("causal_mask", [((5, 3), "f32")], {}, "5 queries but only 3 keys"),
    ("argmax", [((2, 0), "f32")], {"axis": 1}, "non-empty axis"),
    ("argmax", [((2, 3), "f32")], {"dtype": "f32"}, "i32 or i64"),
    ("argmax", [((2, 3), "f32")], {"axis": 2}, "out of range"),
])
def test_type_errors_name_the_problem(op, types, attrs, message):
    with pytest.raises(OpError, match=message):
        ir.infer_type(op, [TensorType(s, DType[d]) for s, d in types], attrs)


def test_the_ops_print_and_parse_back():
    graph = ir.Graph()
    ids = graph.add_input("ids", TensorType((2, 3), DType.i32))
    table, gamma, beta = (graph.constant(value, name) for value, name in
                          ((randn(5, 4), "table"), (randn(4), "gamma"), (randn(4), "beta")))
    normed = graph.call("layer_norm", [graph.call("gather", [table, ids]), gamma, beta], {"eps": 1e-3})
    scores = graph.call("causal_mask", [graph.call("matmul", [normed, normed], {"transpose_b": True})])
    graph.outputs = [graph.call("argmax", [scores], {"dtype": "i32"})]
    text = str(graph)
    assert "argmax(%3) {axis=2, dtype=i32} : i32[2,3]" in text and "layer_norm(%0, %gamma, %beta) {eps=0.001}" in text
    assert str(ir.parse(text, graph.constants())) == text


# --- compiled against the reference -------------------------------------------------------------

@st.composite
def op_cases(draw):
    """(op, operands, attrs, constants): one of the four ops on a random shape and dtype."""
    op = draw(st.sampled_from(["gather", "layer_norm", "causal_mask", "argmax"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
    if op == "gather":
        rows = draw(st.integers(1, 20))
        dtype = draw(st.sampled_from(["i32", "i64", "u8"]))
        ids = rng.integers(0, rows, shape).astype(DType[dtype].numpy)
        table = rng.standard_normal((rows, *shape[:draw(st.integers(0, 1))])).astype(np.float32)
        return op, [table, ids], {}, draw(st.sampled_from([(), (0,)]))
    if op == "layer_norm":
        x = (rng.standard_normal(shape) * rng.uniform(0.1, 10) + rng.uniform(-5, 5)).astype(np.float32)
        gamma, beta = (rng.standard_normal(shape[-1:]).astype(np.float32) for _ in range(2))
        return op, [x, gamma, beta], {"eps": draw(st.sampled_from([1e-5, 1e-3]))}, (1, 2)
    if op == "causal_mask":
        queries = draw(st.integers(1, 9))
        keys = queries + draw(st.integers(0, 3))
        return op, [rng.standard_normal((*shape[:2], queries, keys)).astype(np.float32)], {}, ()
    dtype = draw(st.sampled_from(["f32", "i8", "i32"]))
    x = rng.standard_normal(shape) * 3 if dtype == "f32" else rng.integers(-4, 4, shape)  # integers: many ties
    attrs = {"axis": draw(st.integers(-len(shape), len(shape) - 1)), "keepdims": draw(st.booleans()),
             "dtype": draw(st.sampled_from(["i32", "i64"]))}
    return op, [x.astype(DType[dtype].numpy)], attrs, ()


def check_compiled(case, target: str) -> None:
    op, operands, attrs, constants = case
    graph, inputs = single_op_graph(op, operands, attrs, constants)
    (actual,) = compile_and_run(graph, *inputs, target=target)
    expected = ir.interpret(graph, *inputs)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_array_equal(actual, expected)


@given(op_cases())
def test_compiled_ops_equal_the_reference_on_the_host(case):
    check_compiled(case, "host")


@settings(max_examples=min(6, settings.default.max_examples))
@given(op_cases())
def test_compiled_ops_equal_the_reference_on_armv8(case):
    check_compiled(case, "armv8")


@pytest.mark.parametrize("target", ["host", "armv8"])
def test_masked_softmax_gives_exact_zeros_above_the_diagonal(target):
    """The -inf scores reach softmax as -inf: exp gives exactly 0 there, and each row still sums to 1."""
    graph = ir.Graph()
    scores = graph.add_input("scores", TensorType((2, 7, 7), DType.f32))
    graph.outputs = [graph.call("softmax", [graph.call("causal_mask", [scores])], {"axis": -1})]
    x = randn(2, 7, 7) * np.float32(20)
    (actual,) = compile_and_run(graph, x, target=target)
    np.testing.assert_allclose(actual, ir.interpret(graph, x), rtol=1e-4, atol=1e-6)
    assert np.all(actual[:, np.triu(np.ones((7, 7), bool), k=1)] == 0)
    np.testing.assert_allclose(actual.sum(axis=-1), 1, rtol=1e-5)


@pytest.mark.parametrize("target", ["host", "armv8"])
def test_argmax_nan_and_ties_compile_like_numpy(target):
    x = np.array([[1, 3, 3, 0], [np.nan, 5, np.nan, 9], [2, 9, np.nan, 9], [-np.inf] * 4], np.float32)
    graph, inputs = single_op_graph("argmax", [x], {"axis": 1})
    (actual,) = compile_and_run(graph, *inputs, target=target)
    assert actual.tolist() == np.argmax(x, axis=1).tolist() == [1, 0, 2, 0]


# --- out-of-range ids -----------------------------------------------------------------------------

def computed_ids_graph(table: np.ndarray, ids_type: TensorType) -> ir.Graph:
    """gather(table, ids + 0): the ids are computed in the graph, so no input check sees them."""
    graph = ir.Graph()
    ids = graph.add_input("ids", ids_type)
    shifted = graph.call("add", [ids, graph.constant(np.zeros((), ids_type.dtype.numpy))])
    graph.outputs = [graph.call("gather", [graph.constant(table, "table"), shifted])]
    return graph


@pytest.mark.parametrize("target", ["host", "armv8"])
def test_native_gather_clamps_computed_ids_like_the_reference(target):
    table = randn(6, 5)
    ids = np.array([[-2**31, -1, 0, 5], [6, 7, 2**31 - 1, 3]], np.int32)
    graph = computed_ids_graph(table, TensorType.of(ids))
    (actual,) = compile_and_run(graph, ids, target=target)
    np.testing.assert_array_equal(actual, table[np.clip(ids, 0, 5)])
    np.testing.assert_array_equal(actual, ir.interpret(graph, ids))


def test_ids_from_an_input_are_checked_before_anything_runs():
    table = randn(17, 4)
    graph = ir.Graph()
    tokens = graph.add_input("tokens", TensorType((2, 3), DType.i64))
    graph.outputs = [graph.call("gather", [graph.constant(table, "wte"), graph.call("reshape", [tokens],
                                                                                     {"shape": (6,)})])]
    bad = np.array([[0, 1, 2], [3, 17, 5]])
    message = r"input 'tokens' holds the id 17 at \[1, 1\], outside \[0, 17\): it indexes a table of 17 rows"
    with pytest.raises(InputError, match=message):
        ir.interpret(graph, bad)
    with tf.compile(graph) as compiled:
        with pytest.raises(InputError, match=message):
            compiled(bad)
        with pytest.raises(InputError, match="holds the id -1 at"):
            compiled(np.array([[0, 1, 2], [3, 4, -1]]))
        good = np.array([[0, 16, 2], [3, 4, 5]])
        np.testing.assert_array_equal(compiled(good), table[good.reshape(-1)])


def test_ids_are_checked_on_every_bound_call():
    """CompiledModel.bind checks its arrays once, but the ids they hold on every call (a decode
    step's single token takes a quick path: the same refusal)."""
    table = randn(17, 4)
    graph = ir.Graph()
    token = graph.add_input("token", TensorType((1, 1), DType.i64))
    graph.outputs = [graph.call("gather", [graph.constant(table, "wte"), graph.call("reshape", [token],
                                                                                    {"shape": (1,)})])]
    with tf.compile(graph) as compiled:
        ids = np.zeros((1, 1), np.int64)
        step = compiled.bind(ids)
        for good in (0, 16, 5):
            ids[0, 0] = good
            np.testing.assert_array_equal(step(), table[[good]])
        for bad in (17, -1):
            ids[0, 0] = bad
            with pytest.raises(InputError, match=rf"input 'token' holds the id {bad} at \[0, 0\], outside \[0, 17\)"):
                step()


@pytest.mark.parametrize("threads", [2, 3])
def test_a_split_layer_norm_takes_blocks_of_rows(threads):
    """Its rows split among parts (the last part shorter with 3): each row normalized once, by the
    reference, on host and armv8."""
    x = (RNG.standard_normal((2, 7, 40)) * 3 + 1).astype(np.float32)
    gamma, beta = randn(40), randn(40)
    graph, inputs = single_op_graph("layer_norm", [x, gamma, beta], {"eps": 1e-5}, (1, 2))
    expected = ir.interpret(graph, *inputs)
    for target in ("host", "armv8"):
        (actual,) = compile_and_run(graph, *inputs, target=target, threads=threads)
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
