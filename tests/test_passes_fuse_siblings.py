"""fuse-sibling-linears (passes/fuse_siblings.py): linears reading one input become one linear and
slices of its result, only where that is legal, and the compiled code computes the same.
"""

from __future__ import annotations

import numpy as np
from codegen_harness import assert_matches_reference, compile_and_run, reference_outputs
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.passes import PassContext, run_pipeline
from tensorforge.passes.fuse_siblings import SIBLING_ROWS, fuse_sibling_linears


@st.composite
def sibling_layers(draw):
    """(graph, inputs, expected linear count after the pass): 1-4 linears on x (leading axes 1-2, rows up
    to SIBLING_ROWS or more), each with a bias or not and its own width; some may read another input,
    have a weight that is an input, a relu fused (activation), or a residual: those must not join the
    others' group. With more than SIBLING_ROWS rows nothing fuses."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    graph = ir.Graph()
    leading = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=2))) if draw(st.booleans()) else \
        (draw(st.integers(1, 3)), SIBLING_ROWS // 2 + draw(st.integers(-1, 2)))
    features = draw(st.integers(1, 40))
    x = graph.add_input("x", ir.TensorType((*leading, features), ir.DType.f32))
    other = graph.add_input("y", x.type)
    inputs = [rng.standard_normal(x.shape).astype(np.float32), rng.standard_normal(x.shape).astype(np.float32)]
    groups: dict[object, int] = {}
    layers = []
    for index in range(draw(st.integers(1, 4))):
        width = draw(st.sampled_from([1, 3, 16, 33]))
        kind = draw(st.sampled_from(["plain", "plain", "plain", "other input", "weight input", "relu", "residual"]))
        if kind == "weight input":
            weight = graph.add_input(f"w{index}", ir.TensorType((features, width), ir.DType.f32))
            inputs.append((rng.standard_normal((features, width)) / 6).astype(np.float32))
        else:
            weight = graph.constant((rng.standard_normal((features, width)) / 6).astype(np.float32), f"w{index}")
        operands = [other if kind == "other input" else x, weight]
        if draw(st.booleans()) or kind == "residual":
            operands.append(graph.constant(rng.standard_normal(width).astype(np.float32), f"b{index}"))
        attrs = {"activation": "relu" if kind == "relu" else None}
        if kind == "residual":  # x @ w + b + x: the weight square
            square = (rng.standard_normal((features, features)) / 6).astype(np.float32)
            operands[1:] = [graph.constant(square, f"r{index}"),
                            graph.constant(rng.standard_normal(features).astype(np.float32), f"rb{index}"), x]
            attrs["residual"] = True
        layers.append(graph.call("linear", operands, attrs))
        key = {"plain": "x", "relu": "x relu", "other input": "y"}.get(kind, index)
        groups[key] = groups.get(key, 0) + 1
    graph.outputs = [graph.call("neg", [layer]) if draw(st.booleans()) else layer for layer in layers]
    return graph, inputs, len(groups) if int(np.prod(leading)) <= SIBLING_ROWS else len(layers)


@given(sibling_layers())
def test_fuses_exactly_the_sibling_groups_and_keeps_the_outputs(case):
    graph, inputs, groups = case
    fused = fuse_sibling_linears(graph.copy())
    ir.verify(fused)
    assert sum(node.op == "linear" for node in fused.nodes) == groups
    assert_matches_reference(reference_outputs(fused, inputs), graph, inputs, rtol=1e-5, atol=1e-5)


@settings(max_examples=min(10, settings.default.max_examples))
@given(sibling_layers(), st.sampled_from(["host", "armv8"]), st.sampled_from([1, 3]))
def test_the_fused_layers_compile_to_the_same_values(case, target, threads):
    graph, inputs, _ = case
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert_matches_reference(compile_and_run(optimized, *inputs, target=target, threads=threads), graph, inputs,
                             rtol=1e-4, atol=1e-5)


def test_attention_projections_become_one_linear():
    """q, k and v of a GPT block (tensorforge.nn) read one layer norm: one linear of three widths."""
    from tensorforge import nn
    from tensorforge.frontend.tracing import trace

    model = nn.GPT(16, 8, 1, 2, 4, rng=np.random.default_rng(0))
    tokens = np.array([[1, 2, 3, 4]], np.int64)
    graph = trace(model, tokens)
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    widths = sorted(node.shape[-1] for node in optimized.nodes if node.op == "linear")
    assert widths == [8, 8, 16, 24, 32]  # out_proj, MLP down, lm head, q|k|v, MLP up
    np.testing.assert_allclose(ir.interpret(optimized, tokens), ir.interpret(graph, tokens), rtol=1e-5, atol=1e-6)
