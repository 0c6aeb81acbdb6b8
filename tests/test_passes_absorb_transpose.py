"""absorb-transpose: matmul reads transposed operands in place of a transpose node (passes/absorb_transpose.py).

Property: on random matmuls of transposed (or not) operands, with batch axes and every kind of
perm, the pass keeps the interpreter's outputs and the compiled code (host, armv8) agrees; it
fires exactly for perms that swap the last two axes, and a transpose read elsewhere stays.
"""

from __future__ import annotations

import numpy as np
from codegen_harness import assert_matches_reference, compile_and_run, reference_outputs
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.passes import PassContext, run_pipeline
from tensorforge.passes.absorb_transpose import absorb_transpose, swaps_last_two_axes


def stored_shape(shape: tuple[int, ...], perm: tuple[int, ...]) -> tuple[int, ...]:
    """The shape x must have so that transpose(x, perm) has `shape`."""
    stored = [0] * len(shape)
    for axis, source in enumerate(perm):
        stored[source] = shape[axis]
    return tuple(stored)



@st.composite
def transposed_matmuls(draw):
    """(graph, inputs, swaps): matmul(op_a(a), op_b(b)) with each op a transpose (any perm) or nothing."""
    batch = draw(st.sampled_from([(), (2,), (3, 1)]))
    m, k, n = (draw(st.integers(1, 9)) for _ in range(3))
    graph, inputs, operands, swaps = ir.Graph(), [], [], []
    for name, shape in (("a", (*batch, m, k)), ("b", (*batch, k, n))):
        rank = len(shape)
        perm = draw(st.sampled_from([None, tuple(range(rank - 2)) + (rank - 1, rank - 2),
                                     tuple(draw(st.permutations(range(rank))))]))
        if perm is None:
            value = graph.add_input(name, ir.TensorType(shape, ir.DType.f32))
            inputs.append(np.random.default_rng(len(inputs)).standard_normal(shape).astype(np.float32))
        else:
            source = graph.add_input(name, ir.TensorType(stored_shape(shape, perm), ir.DType.f32))
            inputs.append(np.random.default_rng(len(inputs)).standard_normal(source.shape).astype(np.float32))
            value = graph.call("transpose", [source], {"perm": perm})
        swaps.append(value.op == "transpose" and swaps_last_two_axes(value))
        operands.append(value)
    graph.outputs = [graph.call("matmul", operands)]
    if draw(st.booleans()) and operands[0].op == "transpose":  # the transpose has another reader
        graph.outputs.append(graph.call("neg", [operands[0]]))
    return graph, inputs, swaps


@given(transposed_matmuls())
def test_absorbing_keeps_the_outputs_and_fires_exactly_on_last_two_axes_swaps(case):
    graph, inputs, swaps = case
    original_operands = [node.op for node in next(n for n in graph.nodes if n.op == "matmul").inputs]
    absorbed = absorb_transpose(graph.copy())
    (matmul,) = [node for node in absorbed.nodes if node.op == "matmul"]
    assert (matmul.attrs["transpose_a"], matmul.attrs["transpose_b"]) == tuple(swaps)
    for operand, swapped, op in zip(matmul.inputs, swaps, original_operands, strict=True):
        assert operand.op == ("input" if swapped else op)  # an absorbed transpose reads the stored input
    ir.verify(absorbed)
    assert_matches_reference(reference_outputs(absorbed, inputs), graph, inputs, rtol=1e-5, atol=1e-6)
    kept = [node for node in absorbed.nodes if node.op == "transpose"]
    assert all(node.users or node in absorbed.outputs for node in kept)


@settings(max_examples=min(10, settings.default.max_examples))
@given(transposed_matmuls(), st.sampled_from(["host", "armv8"]))
def test_compiled_transposed_reads_match_the_interpreter(case, target):
    graph, inputs, _ = case
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert_matches_reference(compile_and_run(optimized, *inputs, target=target), graph, inputs, rtol=1e-4, atol=1e-5)


def test_the_printer_writes_the_flags_only_when_set():
    graph = ir.Graph()
    q = graph.add_input("q", ir.TensorType((4, 8), ir.DType.f32))
    k = graph.add_input("k", ir.TensorType((6, 8), ir.DType.f32))
    graph.outputs = [graph.call("matmul", [q, k], {"transpose_b": True})]
    text = str(graph)
    assert "transpose_b=true" in text and "transpose_a" not in text
    assert str(ir.parse(text)) == text
