"""fuse-residual (passes/fuse_residual.py): a skip connection added to a linear/conv2d result becomes
part of the GEMM epilogue, only where that is legal, and the compiled code computes the same.
"""

from __future__ import annotations

import numpy as np
from codegen_harness import assert_matches_reference, compile_and_run, reference_outputs
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.passes import PassContext, run_pipeline
from tensorforge.passes.fuse_residual import fuse_residual


@st.composite
def residual_blocks(draw):
    """(graph, inputs, should_fuse): y = [relu](contraction(x) + r), r the input itself, another input, or a
    broadcast row; sometimes the contraction also feeds a second output (then it must stay)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    graph = ir.Graph()
    if draw(st.booleans()):
        n, c, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(3, 9)), draw(st.integers(3, 9))
        x = graph.add_input("x", ir.TensorType((n, c, h, w), ir.DType.f32))
        weight = graph.constant((rng.standard_normal((c, c, 3, 3)) / 3).astype(np.float32), "w")
        operands = [x, weight] + ([graph.constant(rng.standard_normal(c).astype(np.float32), "b")]
                                  if draw(st.booleans()) else [])
        contraction = graph.call("conv2d", operands, {"padding": (1, 1)})
    else:
        rows, features = draw(st.integers(1, 9)), draw(st.integers(1, 40))
        x = graph.add_input("x", ir.TensorType((rows, features), ir.DType.f32))
        weight = graph.constant((rng.standard_normal((features, features)) / 6).astype(np.float32), "w")
        operands = [x, weight] + ([graph.constant(rng.standard_normal(features).astype(np.float32), "b")]
                                  if draw(st.booleans()) else [])
        contraction = graph.call("linear", operands)
    kind = draw(st.sampled_from(["self", "other", "broadcast"]))
    inputs = [rng.standard_normal(x.shape).astype(np.float32)]
    if kind == "self":
        addend = x
    elif kind == "other":
        addend = graph.add_input("r", x.type)
        inputs.append(rng.standard_normal(x.shape).astype(np.float32))
    else:
        addend = graph.constant(rng.standard_normal(x.shape[-1:]).astype(np.float32), "row")
    total = graph.call("add", [addend, contraction] if draw(st.booleans()) else [contraction, addend])
    result = graph.call("relu", [total]) if draw(st.booleans()) else total
    shared = draw(st.booleans())
    graph.outputs = [result] + ([graph.call("neg", [contraction])] if shared else [])
    return graph, inputs, kind != "broadcast" and not shared


@given(residual_blocks())
def test_fuses_exactly_where_legal_and_keeps_the_outputs(case):
    graph, inputs, should_fuse = case
    fused = fuse_residual(graph.copy())
    ir.verify(fused)
    contractions = [node for node in fused.nodes if node.op in ("linear", "conv2d")]
    assert [node.attrs["residual"] for node in contractions] == [should_fuse]
    assert any(node.op == "add" for node in fused.nodes) != should_fuse
    assert_matches_reference(reference_outputs(fused, inputs), graph, inputs, rtol=1e-5, atol=1e-5)


@settings(max_examples=min(10, settings.default.max_examples))
@given(residual_blocks(), st.sampled_from(["host", "armv8"]), st.sampled_from([1, 3]))
def test_the_fused_epilogue_compiles_to_the_same_values(case, target, threads):
    graph, inputs, should_fuse = case
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    if should_fuse:  # relu(contraction + r) is a single node after the whole pipeline
        assert not any(node.op in ("add", "relu") for node in optimized.nodes)
    assert_matches_reference(compile_and_run(optimized, *inputs, target=target, threads=threads), graph, inputs,
                             rtol=1e-4, atol=1e-4)


def test_printer_and_parser_keep_the_residual():
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((2, 4), ir.DType.f32))
    w = graph.constant(np.eye(4, dtype=np.float32), "w")
    graph.outputs = [graph.call("linear", [x, w, x], {"residual": True, "activation": "relu"})]
    text = str(graph)
    assert "residual=true" in text
    assert str(ir.parse(text)) == text
    value = np.arange(-4, 4, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(ir.interpret(graph, value), np.maximum(2 * value, 0))
