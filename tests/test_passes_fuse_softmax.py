"""fuse-softmax (passes/fuse_softmax.py): a scaling by a one-element constant and a causal mask in
front of a softmax become its prologue (`scale`, `causal`), only where that is legal; the fused
op's reference equals the unfused ops bit for bit, and its code (codegen/ops/reduce.py) equals
the reference on the host and on armv8.
"""

from __future__ import annotations

import numpy as np
import pytest
from codegen_harness import assert_matches_reference, compile_and_run, reference_outputs
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.ir import OpError
from tensorforge.ir.registry import infer_type
from tensorforge.passes import PassContext, run_pipeline
from tensorforge.passes.fuse_softmax import fuse_softmax


@st.composite
def attention_scores(draw):
    """(graph, inputs, fused attrs expected): softmax(mask?(scores * c?)) over random shapes, where
    the pass must fuse or must leave a part: the factor not one element, another user of a
    middle value, a middle value as an output, the softmax not over the last axis."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    rank = draw(st.integers(2, 4))
    queries = draw(st.integers(1, 9))  # a causal mask needs at least as many keys as queries
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=rank - 2, max_size=rank - 2))) + (
        queries, queries + draw(st.integers(0, 8)))
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType(shape, ir.DType.f32))
    inputs = [(rng.standard_normal(shape) * 3).astype(np.float32)]
    value, expected = x, {}
    scaling = draw(st.sampled_from([None, "scalar", "scalar first", "one-element", "vector"]))
    if scaling is not None:
        factor = {"vector": rng.standard_normal(shape[-1]).astype(np.float32),
                  "one-element": np.full((1,) * rank, 0.3, np.float32)}.get(scaling, np.float32(0.125))
        constant = graph.constant(factor, "c")
        value = graph.call("mul", [constant, value] if scaling == "scalar first" else [value, constant])
        if scaling != "vector":
            expected["scale"] = float(np.asarray(factor).reshape(()))
    scaled = value
    if draw(st.booleans()):
        value = graph.call("causal_mask", [value])
        expected["causal"] = True
    axis = draw(st.sampled_from([rank - 1, rank - 1, 0]))
    softmax = graph.call("softmax", [value], {"axis": axis})
    extra = draw(st.sampled_from([None, None, "second user", "output"]))
    outputs = [softmax]
    if extra is not None and value is not x:
        middle = scaled if scaled is not x and draw(st.booleans()) else value
        outputs.append(graph.call("neg", [middle]) if extra == "second user" else middle)
        if middle is value:  # the softmax's own operand is needed elsewhere: nothing fuses
            expected = {}
        else:  # the mul is needed elsewhere: only the mask fuses
            expected.pop("scale", None)
    if axis != rank - 1:
        expected = {}
    graph.outputs = outputs
    return graph, inputs, expected


@given(attention_scores())
def test_fuses_exactly_where_legal_and_equals_the_unfused_ops_bit_for_bit(case):
    graph, inputs, expected = case
    fused = fuse_softmax(graph.copy())
    fused.verify()
    (softmax,) = [node for node in fused.op_nodes() if node.op == "softmax"]
    assert softmax.attrs["scale"] == expected.get("scale")
    assert softmax.attrs["causal"] == expected.get("causal", False)
    absorbed = {"mul": "scale" in expected, "causal_mask": "causal" in expected}
    for op, gone in absorbed.items():
        before = sum(node.op == op for node in graph.op_nodes())
        assert sum(node.op == op for node in fused.op_nodes()) == before - gone
    for got, wanted in zip(reference_outputs(fused, inputs), reference_outputs(graph, inputs), strict=True):
        np.testing.assert_array_equal(got, wanted)  # the same f32 steps: NaN where the unfused has NaN


@settings(max_examples=min(40, settings.default.max_examples))
@given(attention_scores(), st.sampled_from([1, 3]))
def test_the_fused_softmax_compiles_to_the_reference_host(case, threads):
    graph, inputs, _ = case
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert_matches_reference(compile_and_run(optimized, *inputs, threads=threads), graph, inputs,
                             rtol=1e-5, atol=1e-6)


@settings(max_examples=min(6, settings.default.max_examples))
@given(attention_scores())
def test_the_fused_softmax_compiles_to_the_reference_armv8(case):
    graph, inputs, _ = case
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert_matches_reference(compile_and_run(optimized, *inputs, target="armv8"), graph, inputs,
                             rtol=1e-5, atol=1e-6)


def test_masked_scores_and_nan_match_the_unfused_ops():
    """More keys than queries (the queries are the last positions): query i sees keys up to
    i + keys - queries; a NaN score stays in its row and an inf score takes the row's whole weight."""
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((2, 4, 7), ir.DType.f32))
    graph.outputs = [graph.call("softmax", [graph.call("causal_mask", [graph.call("mul", [
        x, graph.constant(np.float32(0.25), "c")])])], {"axis": -1})]
    scores = np.random.default_rng(0).standard_normal((2, 4, 7)).astype(np.float32)
    scores[0, 1, 2], scores[1, 3, 0], scores[1, 0, 6] = np.nan, np.inf, np.nan  # the last one is masked
    expected = ir.interpret(graph, scores)
    fused = fuse_softmax(graph.copy())
    assert [node.op for node in fused.op_nodes()] == ["softmax"]
    np.testing.assert_array_equal(ir.interpret(fused, scores), expected)
    assert np.isnan(expected[0, 1]).all() and not np.isnan(expected[1, 0]).any()
    for target in ("host", "armv8"):
        (got,) = compile_and_run(fused, scores, target=target)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_causal_needs_the_last_axis_of_a_matrix_with_enough_keys():
    with pytest.raises(OpError, match="causal=true masks"):
        infer_type("softmax", [ir.TensorType((4, 4), ir.DType.f32)], {"axis": 0, "causal": True})
    with pytest.raises(OpError, match="causal=true masks"):
        infer_type("softmax", [ir.TensorType((4,), ir.DType.f32)], {"axis": 0, "causal": True})
    with pytest.raises(OpError, match="5 queries but only 3 keys"):
        infer_type("softmax", [ir.TensorType((5, 3), ir.DType.f32)], {"causal": True})
    assert infer_type("softmax", [ir.TensorType((3, 4), ir.DType.f32)], {"scale": 2, "causal": True})[0].shape == (3, 4)


def test_the_decoders_attention_is_fused_in_the_pipeline():
    """The traced GPT's q @ k^T -> scale -> causal_mask -> softmax: one softmax per layer, and the
    compiled prefill equals the reference on the unfused graph."""
    import tensorforge as tf
    from tensorforge import nn

    model = nn.GPT(48, 32, 2, 2, 16, rng=np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 48, (1, 12))
    graph = tf.trace(model, tokens)
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    softmaxes = [node for node in optimized.op_nodes() if node.op == "softmax"]
    assert len(softmaxes) == 2 and all(node.attrs["causal"] and node.attrs["scale"] for node in softmaxes)
    assert not any(node.op in ("causal_mask", "mul") for node in optimized.op_nodes())
    assert_matches_reference(compile_and_run(optimized, tokens), graph, [tokens], rtol=1e-4, atol=1e-5)


@st.composite
def masked_scores(draw):
    """(graph, inputs, fused attrs expected, whether the add fuses): softmax(scores (* c) + mask) with a
    mask that broadcasts (dims of 1, fewer dims), either addend first; the add or the mul read
    elsewhere, or the softmax over another axis, where the pass must leave a part."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    rank = draw(st.integers(2, 4))
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=rank, max_size=rank)))
    mask_shape = tuple(extent if draw(st.booleans()) else 1 for extent in shape)[draw(st.integers(0, rank - 1)):]
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType(shape, ir.DType.f32))
    mask = rng.standard_normal(mask_shape).astype(np.float32) * 4
    mask[rng.random(mask_shape) < 0.3] = -np.inf if draw(st.booleans()) else np.finfo(np.float32).min
    scores = graph.call("mul", [x, graph.constant(np.float32(0.35), "c")]) if draw(st.booleans()) else x
    addends = [scores, graph.constant(mask, "mask")]
    added = graph.call("add", addends[::-1] if draw(st.booleans()) else addends)
    axis = draw(st.sampled_from([rank - 1, rank - 1, 0]))
    outputs = [graph.call("softmax", [added], {"axis": axis})]
    extra = draw(st.sampled_from([None, None, "add", "mul"]))
    if extra == "add" or (extra == "mul" and scores is not x):
        outputs.append(graph.call("neg", [added if extra == "add" else scores]))
    graph.outputs = outputs
    fuses = axis == rank - 1 and extra != "add"
    expected = {"scale": np.float32(0.35).item()} if fuses and scores is not x and extra != "mul" else {}
    values = (rng.standard_normal(shape) * 3).astype(np.float32)
    values.flat[::11] = np.nan
    return graph, [values], expected, fuses


@given(masked_scores())
def test_an_additive_mask_fuses_where_legal_and_equals_the_unfused_ops_bit_for_bit(case):
    graph, inputs, expected, fuses = case
    fused = fuse_softmax(graph.copy())
    fused.verify()
    (softmax,) = [node for node in fused.op_nodes() if node.op == "softmax"]
    assert (len(softmax.inputs) == 2) == fuses and softmax.attrs["scale"] == expected.get("scale")
    assert sum(node.op == "add" for node in fused.op_nodes()) == (0 if fuses else 1)
    for got, wanted in zip(reference_outputs(fused, inputs), reference_outputs(graph, inputs), strict=True):
        np.testing.assert_array_equal(got, wanted)


@settings(max_examples=min(40, settings.default.max_examples))
@given(masked_scores(), st.sampled_from([1, 3]))
def test_the_masked_softmax_compiles_to_the_reference_host(case, threads):
    graph, inputs, _, _ = case
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert_matches_reference(compile_and_run(optimized, *inputs, threads=threads), graph, inputs,
                             rtol=1e-5, atol=1e-6)


@settings(max_examples=min(6, settings.default.max_examples))
@given(masked_scores())
def test_the_masked_softmax_compiles_to_the_reference_armv8(case):
    graph, inputs, _, _ = case
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert_matches_reference(compile_and_run(optimized, *inputs, target="armv8"), graph, inputs,
                             rtol=1e-5, atol=1e-6)


def test_a_mask_on_another_axis_and_a_bad_mask():
    """The op itself takes a mask with any axis (the pass fuses only the last); a mask that does not
    broadcast to the scores, or of another dtype, is refused by name."""
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((3, 5, 4), ir.DType.f32))
    mask = np.random.default_rng(2).standard_normal((5, 1)).astype(np.float32)
    graph.outputs = [graph.call("softmax", [x, graph.constant(mask, "m")], {"axis": 1, "scale": 0.5})]
    scores = np.random.default_rng(3).standard_normal((3, 5, 4)).astype(np.float32)
    shifted = scores * np.float32(0.5) + mask
    expected = np.exp(shifted - shifted.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ir.interpret(graph, scores), expected, rtol=1e-6)
    for target in ("host", "armv8"):
        (got,) = compile_and_run(graph, scores, target=target)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    f32 = ir.DType.f32
    with pytest.raises(OpError, match="additive mask must be f32 and broadcast to the scores"):
        infer_type("softmax", [ir.TensorType((3, 4), f32), ir.TensorType((3, 3), f32)], {})
    with pytest.raises(OpError, match="additive mask"):
        infer_type("softmax", [ir.TensorType((3, 4), f32), ir.TensorType((2, 3, 4), f32)], {})
    with pytest.raises(OpError, match="additive mask"):
        infer_type("softmax", [ir.TensorType((3, 4), f32), ir.TensorType((4,), ir.DType.i32)], {})


@pytest.mark.parametrize("mask_shape", [(1, 1, 5, 6), (2, 1, 1, 6), (2, 3, 5, 1), (5, 6), (2, 1, 5, 6), (6,)], ids=str)
def test_each_broadcast_of_the_mask_reads_its_own_elements(mask_shape):
    """BERT's padding mask per image ([B, 1, 1, K]), a shared [1, 1, Q, K], a per-query constant along
    the keys (stride 0 on the softmax's axis), and masks that vary over images and heads."""
    rng = np.random.default_rng(4)
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((2, 3, 5, 6), ir.DType.f32))
    mask = (rng.standard_normal(mask_shape) * 3).astype(np.float32)
    graph.outputs = [graph.call("softmax", [graph.call("add", [x, graph.constant(mask, "m")])], {"axis": -1})]
    fused = fuse_softmax(graph.copy())
    assert [node.op for node in fused.op_nodes()] == ["softmax"]
    scores = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    expected = ir.interpret(graph, scores)
    for threads in (1, 2):
        (got,) = compile_and_run(fused, scores, threads=threads)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
