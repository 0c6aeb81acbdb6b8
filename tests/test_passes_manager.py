"""The pass manager: pipelines per opt level, disabled passes, PassContext checks, the report,
snapshots and the instruments (a deliberately broken pass must be named)."""

from __future__ import annotations

import numpy as np
import pytest

from tensorforge import ir
from tensorforge.ir import DType, TensorType
from tensorforge.passes import (
    PASSES,
    PIPELINE,
    PassContext,
    PassOrderError,
    PassRequirementError,
    PassVerifyError,
    SnapshotInstrument,
    TimingInstrument,
    VerifyInstrument,
    check_order,
    order_constraints,
    pipeline_for,
    register_pass,
    registry,
    run_pipeline,
)
from tensorforge.passes.rewrite import Pattern, rebuilt, rewrite_to_fixpoint

LEVEL_1 = ["eliminate-dead-code", "lower-quant", "simplify", "fold-constants"]


def small_cnn_graph() -> ir.Graph:
    """x*1 -> conv2d -> batch_norm -> relu, with a dead node: every level-2 pass has work."""
    rng = np.random.default_rng(0)
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((2, 3, 6, 6), DType.f32))
    scaled = graph.call("mul", [x, graph.constant(np.ones((), np.float32), "one")], name="scaled")
    weight = graph.constant((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    conv = graph.call("conv2d", [scaled, weight], {"padding": 1}, name="conv")
    stats = [rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.1, 4), rng.normal(0, 0.1, 4), rng.uniform(0.5, 2, 4)]
    names = ["gamma", "beta", "mean", "var"]
    norm = graph.call("batch_norm", [conv] + [graph.constant(s.astype(np.float32), n) for s, n in zip(stats, names)],
                      name="bn")
    graph.call("exp", [norm], name="unused")
    graph.outputs = [graph.call("relu", [norm], name="y")]
    return graph


def test_pipeline_for_each_opt_level():
    assert pipeline_for(0) == []
    assert pipeline_for(1) == LEVEL_1
    assert pipeline_for(2) == PIPELINE == pipeline_for(3)
    assert pipeline_for(2, disabled=("eliminate-dead-code",)) == PIPELINE[1:]


def test_the_pipeline_lists_every_registered_pass_once():
    assert sorted(PIPELINE) == sorted(PASSES) and len(set(PIPELINE)) == len(PIPELINE)
    assert all(PASSES[name].description for name in PIPELINE)


def test_the_pipeline_meets_every_order_constraint():
    check_order(PIPELINE)
    constraints = order_constraints()
    assert len(constraints) >= 16 and all(c.reason for c in constraints)
    position = {name: index for index, name in enumerate(PIPELINE)}
    assert all(position[c.first] < position[c.second] for c in constraints)


@pytest.mark.parametrize(("first", "second"), [("fuse-activation", "fuse-pool"), ("lower-quant", "fold-constants"),
                                               ("fuse-elementwise", "fuse-reduce")])
def test_a_reordered_pipeline_is_refused_naming_both_passes(first, second):
    reordered = list(PIPELINE)
    i, j = reordered.index(first), reordered.index(second)
    reordered[i], reordered[j] = second, first
    with pytest.raises(PassOrderError, match=rf"'{second}' must run (after|before) '{first}'|'{first}' must run "
                                             rf"(after|before) '{second}'") as raised:
        check_order(reordered)
    assert f"here '{second}' runs before '{first}'" in str(raised.value)


def test_run_pipeline_checks_the_order_of_the_passes_it_runs():
    with pytest.raises(PassOrderError, match=r"'fuse-pool' must run after 'fuse-activation': conv -> relu -> max "
                                             r"pool is one conv \(here 'fuse-pool' runs before"):
        run_pipeline(small_cnn_graph(), passes=["fuse-pool", "fuse-activation"])
    ctx = PassContext(disabled=("fuse-activation",))  # a disabled pass is out of the check
    assert [row.name for row in run_pipeline(small_cnn_graph(), ctx, ["fuse-pool", "fuse-activation"]).report.rows] \
        == ["fuse-pool"]


def test_order_constraints_must_name_registered_passes():
    info = PASSES["simplify"].replace(before={"fold-everything": "no such pass"})
    with pytest.raises(ValueError, match="'simplify' names 'fold-everything'"):
        check_order(["simplify"], {"simplify": info})
    check_order(["simplify", "simplify", "fold-constants"])  # a pass listed twice meets its constraints twice
    with pytest.raises(PassOrderError, match="'simplify' must run before 'fold-constants'"):
        check_order(["simplify", "fold-constants", "simplify"])
    with pytest.raises(ValueError, match="cannot run after or before itself"):
        register_pass("something-new", 2, "loops", after={"something-new": "why not"})
    with pytest.raises(ValueError, match=r"must run both after and before \['simplify'\]"):
        register_pass("something-new", 2, "torn", after={"simplify": "a"}, before={"simplify": "b"})


def test_a_pass_runs_only_where_its_requirements_hold():
    pooled = ir.parse("""graph(%x: f32[1,1,4,4]) {
  %w = constant() {value=[[[[2.0]]]]} : f32[1,1,1,1]
  %c = constant() {value=[-1.0]} : f32[1]
  %conv = conv2d(%x, %w) {pool="max_2x2"} : f32[1,1,2,2]
  %bn = batch_norm(%conv, %c, %c, %c, %c) {eps=0.0} : f32[1,1,2,2]
  %y = add(%conv, %bn) : f32[1,1,2,2]
  return %y
}""")
    with pytest.raises(PassRequirementError, match=r"pass 'fold-batch-norm' requires that no batch_norm reads a "
                                                   r"conv2d with a fused pool \(a negative scale"):
        run_pipeline(pooled, passes=["fold-batch-norm"])
    with pytest.raises(PassRequirementError, match=r"pass 'fuse-residual' requires that no add reads a conv2d with "
                                                   r"a fused pool or computed by Winograd"):
        run_pipeline(pooled, passes=["fuse-residual"])
    run_pipeline(pooled, passes=["fuse-elementwise"])  # no requirement: runs


def test_report_and_snapshots():
    graph = small_cnn_graph()
    text = str(graph)
    timing = TimingInstrument()
    result = run_pipeline(graph, PassContext(opt_level=2, instruments=[VerifyInstrument(), timing]))
    assert str(graph) == text, "run_pipeline must not modify the caller's graph"
    names = [row.name for row in result.report.rows]
    assert names == PIPELINE
    assert [name for name, _ in result.snapshots] == ["input", *names]
    assert str(result.snapshots[0][1]) == text and str(result.snapshots[-1][1]) == str(result.graph)
    assert list(timing.seconds) == names and all(s >= 0 for s in timing.seconds.values())
    rows = {row.name: row for row in result.report.rows}
    simplified = rows["simplify"]
    assert simplified.changed and simplified.nodes_after == simplified.nodes_before - 2  # the mul and the ones
    assert rows["fold-batch-norm"].changed and rows["fold-constants"].changed is False
    assert rows["eliminate-dead-code"].nodes_after < rows["eliminate-dead-code"].nodes_before
    assert [node.op for node in result.graph.op_nodes()] == ["conv2d"]
    assert result.graph.op_nodes()[0].attrs["activation"] == "relu"


def test_report_prints_as_an_aligned_table_and_as_html():
    report = run_pipeline(small_cnn_graph(), PassContext(disabled=("fuse-activation",))).report
    lines = str(report).splitlines()
    assert lines[0].split() == ["pass", "time", "nodes", "changed"]
    assert [line.split()[0] for line in lines[1:-2]] == pipeline_for(2, ("fuse-activation",))
    assert lines[-2].startswith("total") and lines[-1] == "disabled: fuse-activation"
    assert len({line.index(" ms") for line in lines[1:-1]}) == 1, "the time column is aligned"
    page = report.to_html()
    assert page.startswith("<table") and page.endswith("</table>") and page.count("<tr>") == len(report.rows) + 2


def test_snapshot_instrument_given_by_the_caller_is_used():
    snapshots = SnapshotInstrument()
    result = run_pipeline(small_cnn_graph(), PassContext(opt_level=1, instruments=[snapshots]))
    assert result.snapshots == snapshots.snapshots
    assert [name for name, _ in result.snapshots] == ["input", *LEVEL_1]


def test_opt_level_zero_runs_nothing():
    graph = small_cnn_graph()
    result = run_pipeline(graph, PassContext(opt_level=0))
    assert result.report.rows == [] and str(result.graph) == str(graph) and result.graph is not graph
    assert [name for name, _ in result.snapshots] == ["input"]


def test_disabled_passes_are_skipped():
    result = run_pipeline(small_cnn_graph(), PassContext(disabled=("fold-batch-norm", "simplify")))
    assert [row.name for row in result.report.rows] == [n for n in PIPELINE if n not in ("fold-batch-norm", "simplify")]
    assert any(node.op == "batch_norm" for node in result.graph.nodes)
    assert any(node.op == "mul" for node in result.graph.nodes)
    ctx = PassContext(disabled=("simplify",))
    explicit = run_pipeline(small_cnn_graph(), ctx, passes=["simplify", "fold-constants"])
    assert [row.name for row in explicit.report.rows] == ["fold-constants"]


def test_config_reaches_the_passes():
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((1,), DType.f32))
    big = graph.call("add", [graph.constant(np.zeros((64, 1), np.float32)), graph.constant(np.zeros(64, np.float32))])
    graph.outputs = [graph.call("mul", [x, graph.call("reduce_sum", [big], {"axes": (0, 1)})])]
    result = run_pipeline(graph, PassContext(opt_level=1, config={"fold_max_elements": 100}))
    assert [node.op for node in result.graph.op_nodes()] == ["add", "reduce_sum", "mul"]
    assert [node.op for node in run_pipeline(graph, PassContext(opt_level=1)).graph.op_nodes()] == ["mul"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"disabled": ("fold-everything",)}, r"unknown pass name.*'fold-everything'.*known passes: eliminate-dead-code, "),
    ({"disabled": "simplify"}, "a tuple of pass names"),
    ({"opt_level": 7}, "opt_level must be an int from 0 to 3, got 7"),
    ({"opt_level": -1}, "opt_level must be an int"),
    ({"opt_level": 1.5}, "opt_level must be an int"),
])
def test_bad_context_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PassContext(**kwargs)


def test_unknown_pass_in_an_explicit_list_is_refused():
    with pytest.raises(ValueError, match=r"unknown pass name\(s\) \['nope'\]; known passes: eliminate-dead-code, "):
        run_pipeline(small_cnn_graph(), passes=["simplify", "nope"])


def test_a_pass_is_registered_once_with_a_valid_level():
    with pytest.raises(ValueError, match="'simplify' is registered twice"):
        register_pass("simplify", 1, "again")(lambda graph, ctx: graph)
    with pytest.raises(ValueError, match="opt_level must be 0, 1 or 2"):
        register_pass("something-new", 5, "too high")
    info = PASSES["simplify"]
    assert info.replace(opt_level=2).opt_level == 2 and info.opt_level == 1


def test_verify_instrument_names_the_pass_that_broke_the_graph(monkeypatch):
    def breaks_types(graph, ctx):
        graph.op_nodes()[0].type = TensorType((99,), DType.f32)
        return graph

    monkeypatch.setitem(registry.PASSES, "fold-constants", PASSES["fold-constants"].replace(function=breaks_types))
    with pytest.raises(PassVerifyError, match=r"pass 'fold-constants' left an invalid graph: %\w+ = \w+\(\.\.\.\) is "
                                              r"typed f32\[99\]"):
        run_pipeline(small_cnn_graph(), PassContext(instruments=[VerifyInstrument()]))


def test_verify_instrument_checks_the_input_graph_too():
    graph = small_cnn_graph()
    graph.outputs = []
    with pytest.raises(PassVerifyError, match="the input graph is invalid.*no outputs"):
        run_pipeline(graph, PassContext(instruments=[VerifyInstrument()]))


def test_any_object_with_the_two_hooks_is_an_instrument():
    class Recorder:
        def __init__(self):
            self.calls = []

        def run_before_pass(self, name, graph, ctx):
            self.calls.append(("before", name, len(graph)))

        def run_after_pass(self, name, graph, ctx):
            self.calls.append(("after", name, len(graph)))

    recorder = Recorder()
    result = run_pipeline(small_cnn_graph(), PassContext(opt_level=1, instruments=[recorder]))
    assert [(when, name) for when, name, _ in recorder.calls] == [
        (when, name) for name in LEVEL_1 for when in ("before", "after")]
    counts = [(row.nodes_before, row.nodes_after) for row in result.report.rows]
    assert counts == [(recorder.calls[i][2], recorder.calls[i + 1][2]) for i in range(0, len(recorder.calls), 2)]


def test_rewrite_rules_that_never_settle_are_reported():
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((2,), DType.f32))
    graph.outputs = [graph.call("relu", [x])]
    renew = (Pattern("relu", name="relu"), lambda m: rebuilt(m["relu"]))  # always "changes" the graph
    with pytest.raises(RuntimeError, match="did not reach a fixpoint in 5 rounds"):
        rewrite_to_fixpoint(graph, [renew], max_rounds=5)
