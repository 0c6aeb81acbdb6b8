"""Each pass on small graphs, compared as text before and after, including cases where it must not fire."""

from __future__ import annotations

import numpy as np
import pytest

from tensorforge import ir
from tensorforge.ir import DType, TensorType
from tensorforge.passes import (
    PASSES,
    PassContext,
    PassVerifyError,
    SnapshotInstrument,
    TimingInstrument,
    VerifyInstrument,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    fold_batch_norm,
    fold_constants,
    registry,
    run_pipeline,
    simplify,
)

F32 = DType.f32


def new_graph(*shape: int) -> tuple[ir.Graph, ir.Node]:
    graph = ir.Graph()
    return graph, graph.add_input("x", TensorType(shape, F32))


def body(graph: ir.Graph) -> list[str]:
    """The op lines of the printed graph, without constants' lines."""
    return [line.strip() for line in str(graph).splitlines()[1:-2] if "constant()" not in line]


# --- simplify ------------------------------------------------------------------------------------

def test_simplify_removes_identities():
    graph, x = new_graph(4, 8)
    y = graph.call("mul", [x, graph.constant(np.ones(8, np.float32))])
    y = graph.call("add", [graph.constant(np.float32(0)), y])
    y = graph.call("neg", [graph.call("neg", [y])])
    y = graph.call("relu", [graph.call("relu", [y], name="r1")], name="r2")
    graph.outputs = [graph.call("div", [y, graph.constant(np.float32(1))])]
    eliminate_dead_code(simplify(graph))
    assert body(graph) == ["%r1 = relu(%x) : f32[4,8]"]


def test_simplify_keeps_a_multiplication_that_broadcasts():
    graph, x = new_graph(8)
    graph.outputs = [graph.call("mul", [x, graph.constant(np.ones((3, 8), np.float32))], name="wide")]
    simplify(graph)
    assert body(graph) == ["%wide = mul(%x, %0) : f32[3,8]"]


def test_simplify_keeps_multiplication_by_a_constant_that_is_not_all_ones():
    graph, x = new_graph(2)
    graph.outputs = [graph.call("mul", [x, graph.constant(np.array([1, 2], np.float32))], name="y")]
    simplify(graph)
    assert body(graph) == ["%y = mul(%x, %0) : f32[2]"]


def test_simplify_merges_reshape_and_transpose_chains():
    graph, x = new_graph(2, 3, 4)
    flat = graph.call("reshape", [x], {"shape": (24,)})
    back = graph.call("reshape", [flat], {"shape": (6, 4)}, name="r")
    moved = graph.call("transpose", [graph.call("transpose", [x], {"perm": (1, 0, 2)})], {"perm": (2, 1, 0)},
                       name="t")
    undone = graph.call("transpose", [graph.call("transpose", [x], {"perm": (2, 0, 1)})], {"perm": (1, 2, 0)})
    graph.outputs = [back, moved, undone]
    eliminate_dead_code(simplify(graph))
    assert [line.split(" = ")[1] for line in body(graph)] == [
        "reshape(%x) {shape=[6, 4]} : f32[6,4]", "transpose(%x) {perm=[2, 0, 1]} : f32[4,2,3]"]
    assert graph.outputs[2] is x


# --- fold-constants ------------------------------------------------------------------------------

def test_fold_constants_evaluates_weight_only_subgraphs():
    graph, x = new_graph(4, 3)
    w = graph.constant(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    wt = graph.call("transpose", [w], {"perm": (1, 0)}, name="wt")
    graph.outputs = [graph.call("matmul", [x, wt], name="y")]
    eliminate_dead_code(fold_constants(graph))
    assert body(graph) == ["%y = matmul(%x, %wt_folded) : f32[4,2]"]
    np.testing.assert_array_equal(graph.node("wt_folded").value, np.arange(6, dtype=np.float32).reshape(2, 3).T)


def test_fold_constants_leaves_nodes_that_read_inputs():
    graph, x = new_graph(3)
    graph.outputs = [graph.call("add", [x, graph.constant(np.ones(3, np.float32))], name="y")]
    fold_constants(graph)
    assert body(graph) == ["%y = add(%x, %0) : f32[3]"]


def test_fold_constants_does_not_blow_up_a_broadcast():
    graph, x = new_graph(1)
    column, row = np.zeros((2048, 1), np.float32), np.ones(1024, np.float32)
    big = graph.call("add", [graph.constant(column), graph.constant(row)])
    graph.outputs = [graph.call("mul", [x, graph.call("reduce_sum", [big], {"axes": (0,)})])]
    fold_constants(graph, PassContext(config={"fold_max_elements": 1000}))
    assert any(node.op == "add" for node in graph.nodes)


# --- eliminate-common-subexpressions ---------------------------------------------------------------

def test_cse_merges_equal_nodes_commuted_operands_and_equal_constants():
    graph, x = new_graph(3)
    a = graph.call("exp", [x], name="a")
    b = graph.call("exp", [x], name="b")
    c1 = graph.constant(np.ones(3, np.float32), "c1")
    c2 = graph.constant(np.ones(3, np.float32), "c2")
    s1 = graph.call("add", [a, c1], name="s1")
    s2 = graph.call("add", [c2, b], name="s2")
    graph.outputs = [graph.call("mul", [s1, s2], name="y")]
    eliminate_common_subexpressions(graph)
    assert body(graph) == ["%a = exp(%x) : f32[3]", "%s1 = add(%a, %c1) : f32[3]", "%y = mul(%s1, %s1) : f32[3]"]


def test_cse_keeps_nodes_with_different_attributes_or_order():
    graph, x = new_graph(2, 3)
    graph.outputs = [graph.call("reduce_sum", [x], {"axes": (0,)}, name="r0"),
                     graph.call("reduce_sum", [x], {"axes": (1,)}, name="r1"),
                     graph.call("sub", [x, graph.call("neg", [x], name="n")], name="d1"),
                     graph.call("sub", [graph.node("n"), x], name="d2")]
    before = body(graph)
    eliminate_common_subexpressions(graph)
    assert body(graph) == before


# --- fold-batch-norm -----------------------------------------------------------------------------

def conv_bn(conv_users: int = 1, constant_stats: bool = True) -> tuple[ir.Graph, np.ndarray]:
    rng = np.random.default_rng(0)
    graph, x = new_graph(2, 3, 6, 6)
    conv = graph.call("conv2d", [x, graph.constant(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
                                 graph.constant(rng.standard_normal(4).astype(np.float32), "b")], {"padding": 1},
                      name="conv")
    stats = [rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.1, 4), rng.normal(0, 0.1, 4), rng.uniform(0.5, 2, 4)]
    stat_nodes = [graph.constant(s.astype(np.float32), n) for s, n in zip(stats, ["gamma", "beta", "mean", "var"])]
    if not constant_stats:
        stat_nodes[0] = graph.call("exp", [stat_nodes[0]])
    graph.outputs = [graph.call("batch_norm", [conv, *stat_nodes], name="bn")]
    if conv_users == 2:
        graph.outputs.append(conv)
    return graph, rng.standard_normal((2, 3, 6, 6)).astype(np.float32)


def test_fold_batch_norm_into_conv():
    graph, x = conv_bn()
    expected = ir.interpret(graph, x)
    eliminate_dead_code(fold_batch_norm(graph))
    assert [line.split(" = ", 1)[1] for line in body(graph)] == [
        "conv2d(%x, %w_bn, %gamma_bias) {stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1} : f32[2,4,6,6]"]
    np.testing.assert_allclose(ir.interpret(graph, x), expected, rtol=1e-5, atol=1e-5)


def test_fold_batch_norm_into_linear():
    rng = np.random.default_rng(1)
    graph, x = new_graph(5, 3)
    lin = graph.call("linear", [x, graph.constant(rng.standard_normal((3, 4)).astype(np.float32))])
    stats = [rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.1, 4), rng.normal(0, 0.1, 4), rng.uniform(0.5, 2, 4)]
    graph.outputs = [graph.call("batch_norm", [lin] + [graph.constant(s.astype(np.float32)) for s in stats])]
    value = rng.standard_normal((5, 3)).astype(np.float32)
    expected = ir.interpret(graph, value)
    eliminate_dead_code(fold_batch_norm(graph))
    assert [node.op for node in graph.op_nodes()] == ["linear"]
    np.testing.assert_allclose(ir.interpret(graph, value), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [{"conv_users": 2}, {"constant_stats": False}], ids=["conv-used-twice", "stats"])
def test_fold_batch_norm_does_not_fire(case):
    graph, _ = conv_bn(**case)
    before = body(graph)
    fold_batch_norm(graph)
    assert body(graph) == before


# --- eliminate-dead-code -------------------------------------------------------------------------

def test_dead_code_erases_unused_nodes_and_constants_but_not_inputs():
    graph, x = new_graph(3)
    unused_input = graph.add_input("unused", TensorType((2,), F32))
    graph.call("exp", [graph.call("add", [x, graph.constant(np.ones(3, np.float32), "c")])])
    graph.outputs = [graph.call("relu", [x], name="y")]
    eliminate_dead_code(graph)
    assert [node.name for node in graph.nodes] == ["x", "unused", "y"]
    assert graph.inputs == [x, unused_input]


# --- the manager --------------------------------------------------------------------------------

def test_report_snapshots_and_timing():
    graph, _ = conv_bn()
    timing, snapshots = TimingInstrument(), SnapshotInstrument()
    result = run_pipeline(graph, PassContext(opt_level=2, instruments=[VerifyInstrument(), timing, snapshots]))
    names = [row.name for row in result.report.rows]
    assert names == ["simplify", "fold-constants", "fold-batch-norm", "eliminate-common-subexpressions",
                     "eliminate-dead-code"]
    assert [name for name, _ in result.snapshots] == ["input", *names]
    assert set(timing.seconds) == set(names)
    fold = result.report.rows[2]
    assert fold.changed and fold.nodes_before == 9 and fold.nodes_after == 10
    assert not result.report.rows[0].changed
    text = str(result.report)
    assert "fold-batch-norm" in text and "total" in text
    assert "<table" in result.report.to_html()


def test_opt_levels_and_disabled_passes():
    graph, _ = conv_bn()
    assert run_pipeline(graph, PassContext(opt_level=0)).report.rows == []
    level1 = [row.name for row in run_pipeline(graph, PassContext(opt_level=1)).report.rows]
    assert level1 == ["simplify", "fold-constants", "eliminate-dead-code"]
    result = run_pipeline(graph, PassContext(disabled=("fold-batch-norm",)))
    assert "fold-batch-norm" not in [row.name for row in result.report.rows]
    assert any(node.op == "batch_norm" for node in result.graph.nodes)
    assert "disabled: fold-batch-norm" in str(result.report)


def test_bad_context_is_refused():
    with pytest.raises(ValueError, match="unknown pass name.*'fold-everything'.*known passes: simplify"):
        PassContext(disabled=("fold-everything",))
    with pytest.raises(ValueError, match="opt_level must be an int from 0 to 3"):
        PassContext(opt_level=7)


def test_verify_instrument_names_the_pass_that_broke_the_graph(monkeypatch):
    def breaks_types(graph, ctx):
        node = graph.op_nodes()[0]
        node.type = TensorType((99,), F32)
        return graph

    monkeypatch.setitem(registry.PASSES, "simplify", PASSES["simplify"].replace(function=breaks_types))
    graph, _ = conv_bn()
    with pytest.raises(PassVerifyError, match="pass 'simplify' left an invalid graph"):
        run_pipeline(graph, PassContext(instruments=[VerifyInstrument()]))
