"""Properties of every pass and of each pipeline, on random graphs (tensorforge.testing):
the result verifies, the interpreter's outputs do not change, and a second run changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note

from tensorforge import ir
from tensorforge.passes import PASSES, PIPELINE, PassContext, VerifyInstrument, run_pipeline
from tensorforge.testing import random_graphs


def outputs_of(graph: ir.Graph, inputs) -> list[np.ndarray]:
    values = ir.run_graph(graph, inputs)
    return [values[node] for node in graph.outputs]


def assert_same_outputs(before: ir.Graph, after: ir.Graph, inputs) -> None:
    for expected, actual in zip(outputs_of(before, inputs), outputs_of(after, inputs), strict=True):
        assert expected.shape == actual.shape and expected.dtype == actual.dtype
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", PIPELINE)
@given(case=random_graphs())
def test_pass_preserves_outputs_and_is_idempotent(name, case):
    graph, inputs = case
    note(str(graph))
    ctx = PassContext(instruments=[VerifyInstrument()])
    once = run_pipeline(graph, ctx, passes=[name]).graph
    assert_same_outputs(graph, once, inputs)
    twice = run_pipeline(once, ctx, passes=[name])
    assert not twice.report.rows[0].changed, f"a second run of {name} changed:\n{once}\ninto\n{twice.graph}"


@pytest.mark.parametrize("opt_level", [0, 1, 2])
@given(case=random_graphs())
def test_pipeline_preserves_outputs(opt_level, case):
    graph, inputs = case
    note(str(graph))
    text = str(graph)
    result = run_pipeline(graph, PassContext(opt_level=opt_level, instruments=[VerifyInstrument()]))
    assert str(graph) == text, "run_pipeline must not modify the caller's graph"
    assert_same_outputs(graph, result.graph, inputs)
    assert len(result.graph) <= len(graph) or opt_level == 0


@given(case=random_graphs())
def test_the_printed_graph_parses_back(case):
    graph, _ = case
    assert str(ir.parse(str(graph), graph.constants())) == str(graph)


def test_every_registered_pass_is_in_the_pipeline():
    assert sorted(PASSES) == sorted(PIPELINE)
