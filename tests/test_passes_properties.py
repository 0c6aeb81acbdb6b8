"""Properties of every pass and of each pipeline on random graphs (tensorforge.testing.random_graphs):
the result verifies, the interpreter's outputs do not change (floats within rtol 1e-4 / atol 1e-5,
integers exactly), a second run changes nothing, no pass leaves dead nodes behind, and the
optimized graph prints and parses back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note

from tensorforge import ir
from tensorforge.passes import PIPELINE, PassContext, VerifyInstrument, run_pipeline
from tensorforge.testing import random_graphs


def outputs_of(graph: ir.Graph, inputs) -> list[np.ndarray]:
    values = ir.run_graph(graph, inputs)
    return [values[node] for node in graph.outputs]


def assert_same_outputs(before: ir.Graph, after: ir.Graph, inputs) -> None:
    for expected, actual in zip(outputs_of(before, inputs), outputs_of(after, inputs), strict=True):
        assert expected.shape == actual.shape and expected.dtype == actual.dtype
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
        else:
            np.testing.assert_array_equal(actual, expected)


def dead_nodes(graph: ir.Graph) -> list[str]:
    live, pending = set(), list(graph.outputs)
    while pending:
        node = pending.pop()
        if node not in live:
            live.add(node)
            pending.extend(node.inputs)
    return [node.name for node in graph.nodes if node not in live and node.op != "input"]


def assert_parses_back(graph: ir.Graph) -> None:
    assert str(ir.parse(str(graph), graph.constants())) == str(graph)


@pytest.mark.parametrize("name", PIPELINE)
@given(case=random_graphs())
def test_pass_preserves_outputs_and_is_idempotent(name, case):
    graph, inputs = case
    note(str(graph))
    ctx = PassContext(instruments=[VerifyInstrument()])
    once = run_pipeline(graph, ctx, passes=[name]).graph
    note(f"after {name}:\n{once}")
    assert_same_outputs(graph, once, inputs)
    assert len(once) <= len(graph)
    assert set(dead_nodes(once)) <= set(dead_nodes(graph)), f"{name} left nodes it made unused"
    assert_parses_back(once)
    twice = run_pipeline(once, ctx, passes=[name])
    assert not twice.report.rows[0].changed, f"a second run of {name} changed the graph into\n{twice.graph}"


@pytest.mark.parametrize("opt_level", [0, 1, 2])
@given(case=random_graphs())
def test_pipeline_preserves_outputs(opt_level, case):
    graph, inputs = case
    note(str(graph))
    text = str(graph)
    result = run_pipeline(graph, PassContext(opt_level=opt_level, instruments=[VerifyInstrument()]))
    note(f"after the level-{opt_level} pipeline:\n{result.graph}")
    assert str(graph) == text, "run_pipeline must not modify the caller's graph"
    assert_same_outputs(graph, result.graph, inputs)
    assert len(result.graph) <= len(graph)
    assert [name for name, _ in result.snapshots] == ["input"] + [row.name for row in result.report.rows]
    if opt_level >= 1:
        assert dead_nodes(result.graph) == []
    assert_parses_back(result.graph)


@given(case=random_graphs())
def test_random_graphs_verify_and_parse_back(case):
    graph, inputs = case
    ir.verify(graph)
    assert len(inputs) == len(graph.inputs)
    assert_parses_back(graph)
