"""fuse-elementwise and the fused_elementwise op: the rewrite as text before and after, the cases where it
must not fire, properties on random graphs and on random elementwise DAGs (outputs unchanged, nothing
recomputed, nothing left to fuse, idempotent), the text form and the verifier, and the fused loop
compiled for the host and for armv8 (qemu-user) against the reference interpreter.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from codegen_harness import compile_and_run
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.codegen.ops.elementwise import ELEMENT
from tensorforge.ir import DType, TensorType
from tensorforge.ir.ops_fused import is_fusable, typed_program
from tensorforge.ir.ops_math import GELU_APPROXIMATIONS
from tensorforge.passes import PassContext, VerifyInstrument, run_pipeline
from tensorforge.passes.rewrite import needed_by_outputs
from tensorforge.testing import random_graphs, shapes

F32, I32 = DType.f32, DType.i32
FUSED = "fused_elementwise"


def run_fuse(graph: ir.Graph) -> ir.Graph:
    return run_pipeline(graph, PassContext(instruments=[VerifyInstrument()]), passes=["fuse-elementwise"]).graph


def outputs_of(graph: ir.Graph, inputs) -> list[np.ndarray]:
    values = ir.run_graph(graph, inputs)
    return [values[node] for node in graph.outputs]


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5, equal_nan=True)
    else:
        np.testing.assert_array_equal(actual, expected)


def parse(text: str) -> ir.Graph:
    return ir.parse(textwrap.dedent(text).strip())


def assert_rewrites(before: str, after: str) -> None:
    graph = parse(before)
    inputs = [np.random.default_rng(0).standard_normal(node.shape).astype(np.float32) for node in graph.inputs]
    result = run_fuse(graph)
    assert str(result) == textwrap.dedent(after).strip()
    for actual, expected in zip(outputs_of(result, inputs), outputs_of(graph, inputs), strict=True):
        np.testing.assert_array_equal(actual, expected)


def assert_unchanged(text: str) -> None:
    assert_rewrites(text, text)


def is_elementwise(node: ir.Node) -> bool:
    return is_fusable(node.op) or node.op == FUSED


def assert_fused_well(before: ir.Graph, after: ir.Graph) -> None:
    """Every fused node has 2+ instructions, each of the node's shape (nothing broadcast up is recomputed),
    no live node has a foldable producer left, and a second run changes nothing."""
    live = needed_by_outputs(after)
    for node in after.op_nodes():
        if node.op == FUSED:
            typed = typed_program([operand.type for operand in node.inputs], node.attrs["program"])
            assert len(typed) >= 2, f"%{node.name} fuses a single op"
            assert all(result.shape == node.shape for _, result in typed), f"%{node.name} recomputes a broadcast value"
        if node not in live or not is_elementwise(node):
            continue
        for producer in node.inputs:
            assert not (is_elementwise(producer) and set(producer.users) == {node} and producer.shape == node.shape
                        and producer not in after.outputs), f"%{producer.name} could still go into %{node.name}"
    assert str(run_fuse(after)) == str(after), "a second run changed the graph"
    assert len(after) <= len(before)


# --- the rewrite ---------------------------------------------------------------------------------

def test_a_chain_with_a_broadcast_operand_becomes_one_node():
    assert_rewrites("""
        graph(%x: f32[4,8], %b: f32[8]) {
          %1 = add(%x, %b) : f32[4,8]
          %2 = gelu(%1) {approximation="exact"} : f32[4,8]
          %3 = mul(%2, %x) : f32[4,8]
          return %3
        }""", """
        graph(%x: f32[4,8], %b: f32[8]) {
          %1 = fused_elementwise(%x, %b) {program=[["add", ["in", 0], ["in", 1]], ["gelu", ["t", 0], "exact"], \
["mul", ["t", 1], ["in", 0]]]} : f32[4,8]
          return %1
        }""")


def test_a_value_read_twice_inside_the_chain_is_computed_once():
    assert_rewrites("""
        graph(%x: f32[5]) {
          %1 = exp(%x) : f32[5]
          %2 = neg(%1) : f32[5]
          %3 = add(%1, %2) : f32[5]
          %4 = mul(%3, %3) : f32[5]
          return %4
        }""", """
        graph(%x: f32[5]) {
          %3 = fused_elementwise(%x) {program=[["exp", ["in", 0]], ["neg", ["t", 0]], ["add", ["t", 0], ["t", 1]], \
["mul", ["t", 2], ["t", 2]]]} : f32[5]
          return %3
        }""")


def test_a_cast_in_the_chain_changes_the_dtype():
    assert_rewrites("""
        graph(%x: f32[3]) {
          %1 = relu(%x) : f32[3]
          %2 = cast(%1) {dtype=i32} : i32[3]
          %3 = neg(%2) : i32[3]
          return %3
        }""", """
        graph(%x: f32[3]) {
          %1 = fused_elementwise(%x) {program=[["relu", ["in", 0]], ["cast", ["t", 0], i32], \
["neg", ["t", 1]]]} : i32[3]
          return %1
        }""")


def test_a_value_with_another_user_is_not_fused_away():
    assert_rewrites("""
        graph(%x: f32[4]) {
          %1 = exp(%x) : f32[4]
          %2 = neg(%1) : f32[4]
          %3 = reduce_sum(%1) {axes=[0], keepdims=true} : f32[1]
          %4 = mul(%2, %3) : f32[4]
          return %4
        }""", """
        graph(%x: f32[4]) {
          %1 = exp(%x) : f32[4]
          %3 = reduce_sum(%1) {axes=[0], keepdims=true} : f32[1]
          %0 = fused_elementwise(%1, %3) {program=[["neg", ["in", 0]], ["mul", ["t", 0], ["in", 1]]]} : f32[4]
          return %0
        }""")


def test_a_graph_output_in_the_middle_of_a_chain_stays_materialized():
    assert_rewrites("""
        graph(%x: f32[4]) {
          %1 = exp(%x) : f32[4]
          %2 = neg(%1) : f32[4]
          %3 = tanh(%2) : f32[4]
          %4 = relu(%3) : f32[4]
          return %4, %2
        }""", """
        graph(%x: f32[4]) {
          %0 = fused_elementwise(%x) {program=[["exp", ["in", 0]], ["neg", ["t", 0]]]} : f32[4]
          %1 = fused_elementwise(%0) {program=[["tanh", ["in", 0]], ["relu", ["t", 0]]]} : f32[4]
          return %1, %0
        }""")


def test_a_producer_broadcast_up_is_not_fused():
    assert_unchanged("""
        graph(%x: f32[4,8], %b: f32[8]) {
          %1 = exp(%b) : f32[8]
          %2 = add(%x, %1) : f32[4,8]
          return %2
        }""")


def test_a_single_op_and_ops_split_by_a_reduction_stay_as_they_are():
    assert_unchanged("""
        graph(%x: f32[4,8]) {
          %1 = relu(%x) : f32[4,8]
          %2 = reduce_max(%1) {axes=[1]} : f32[4]
          %3 = neg(%2) : f32[4]
          return %3
        }""")


def test_a_relu_after_a_linear_still_goes_to_the_gemm_epilogue():
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((2, 3), F32))
    weight = graph.constant(np.ones((3, 4), np.float32), "w")
    hidden = graph.call("relu", [graph.call("linear", [x, weight])])
    graph.outputs = [graph.call("tanh", [graph.call("sigmoid", [hidden])])]
    result = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert [node.op for node in result.op_nodes()] == ["linear", FUSED]
    assert result.op_nodes()[0].attrs["activation"] == "relu"


# --- the op: text form and verifier --------------------------------------------------------------

def test_print_parse_round_trip_and_verify():
    graph = parse("""
        graph(%x: f32[3,1], %y: f32[5]) {
          %1 = fused_elementwise(%x, %y) {program=[["sub", ["in", 0], ["in", 1]], ["gelu", ["t", 0], "sigmoid"], \
["cast", ["t", 1], u8]]} : u8[3,5]
          return %1
        }""")
    ir.verify(graph)
    assert graph.outputs[0].attrs["program"][2] == ("cast", ("t", 1), DType.u8)
    assert str(ir.parse(str(graph), graph.constants())) == str(graph)


@pytest.mark.parametrize("program, message", [
    ((), "non-empty tuple of instructions"),
    ((("softmax", ("in", 0), -1),), "op one of"),
    ((("exp", ("in", 0), "extra"),), "'exp' takes 1 refs"),
    ((("exp", ("t", 0)),), r"ref \('t', 0\) reads none of the 0 results"),
    ((("add", ("in", 0), ("in", 2)),), r"ref \('in', 2\) reads none of the 2 operands"),
    ((("exp", ("in", 0)), ("exp", ("in", 1))), "instruction 0 is never read"),
    ((("exp", ("in", 0)),), "operand 1 is never read"),
    ((("cast", ("in", 0), I32), ("add", ("t", 0), ("in", 1))), "instruction 1 .* needs operands of one dtype"),
    ((("gelu", ("in", 0), "cubic"), ("add", ("t", 0), ("in", 1))), "approximation must be one of"),
])
def test_a_malformed_program_is_refused_with_the_reason(program, message):
    graph = ir.Graph()
    operands = [graph.add_input("x", TensorType((3,), F32)), graph.add_input("y", TensorType((3,), F32))]
    with pytest.raises(ir.OpError, match=message):
        graph.call(FUSED, operands, {"program": program})


def test_the_verifier_names_a_fused_node_whose_program_was_broken():
    graph = parse("""
        graph(%x: f32[3]) {
          %1 = fused_elementwise(%x) {program=[["exp", ["in", 0]], ["neg", ["t", 0]]]} : f32[3]
          return %1
        }""")
    graph.outputs[0].attrs["program"] = (("exp", ("in", 0)), ("neg", ("t", 1)))
    with pytest.raises(ir.VerifyError, match=r"%1 = fused_elementwise\(\.\.\.\).*instruction 1"):
        ir.verify(graph)


def test_every_fusable_op_has_an_element_function():
    assert set(ir.ops_with("fusable")) == set(ELEMENT)


# --- properties on random graphs -------------------------------------------------------------------

@given(case=random_graphs())
def test_random_graphs_keep_their_outputs(case):
    graph, inputs = case
    note(str(graph))
    fused = run_fuse(graph)
    note(f"after fuse-elementwise:\n{fused}")
    for actual, expected in zip(outputs_of(fused, inputs), outputs_of(graph, inputs), strict=True):
        assert_close(actual, expected)
    assert_fused_well(graph, fused)


def _keeps_f32(op: str) -> bool:
    """f32 operands give an f32 result (not a comparison's bool, not where's bool condition)."""
    try:
        return ir.infer_type(op, [TensorType((), F32)] * ir.get_op(op).min_operands, {})[0].dtype is F32
    except ir.OpError:
        return False


FLOAT_OPS = tuple(op for op in ir.ops_with("fusable") if op == "cast" or _keeps_f32(op))
INTEGER_OPS = ("add", "sub", "mul", "neg", "relu", "cast")
WELL_CONDITIONED = ("add", "sub", "mul", "neg", "relu", "tanh", "sigmoid", "gelu", "cast")  # no overflow, no poles


@st.composite
def broadcastable_to(draw, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A trailing part of `shape` with some sides replaced by 1: it broadcasts to `shape`."""
    rank = draw(st.integers(0, len(shape)))
    return tuple(side if draw(st.booleans()) else 1 for side in shape[len(shape) - rank:])


def _pick(draw, values: list[ir.Node]) -> ir.Node:
    """The newest value half the time (long chains), else any (shared values, DAGs)."""
    return values[-1] if draw(st.booleans()) else draw(st.sampled_from(values))


def _grow_elementwise(draw, graph: ir.Graph, floats: list[ir.Node], ints: list[ir.Node], ops: tuple[str, ...]) -> None:
    op = draw(st.sampled_from(ops))
    if op == "cast":
        to_float = bool(ints) and draw(st.booleans())
        value = graph.call("cast", [_pick(draw, ints if to_float else floats)], {"dtype": F32 if to_float else I32})
        (floats if to_float else ints).append(value)
        return
    values = ints if ints and op in INTEGER_OPS and draw(st.booleans()) else floats
    operands = [_pick(draw, values) for _ in range(ir.get_op(op).min_operands)]
    attrs = {"approximation": draw(st.sampled_from(GELU_APPROXIMATIONS))} if op == "gelu" else {}
    values.append(graph.call(op, operands, attrs))


@st.composite
def elementwise_dags(draw, ops: tuple[str, ...] = FLOAT_OPS,
                     max_ops: int = 8) -> tuple[ir.Graph, tuple[np.ndarray, ...]]:
    """(graph, inputs): an f32 input of a drawn shape, maybe more f32 inputs and a constant broadcastable to it, then
    2 to `max_ops` elementwise ops on earlier values (f32 and, after a cast, i32); outputs: the last value of
    each dtype and maybe one from the middle of a chain; some values end up dead."""
    graph = ir.Graph()
    out = draw(shapes(0, 3, 5))
    floats = [graph.add_input("x0", TensorType(out, F32))]
    for i in range(1, draw(st.integers(1, 3))):
        floats.append(graph.add_input(f"x{i}", TensorType(draw(broadcastable_to(out)), F32)))
    if draw(st.booleans()):
        floats.append(graph.constant(np.full(draw(broadcastable_to(out)), 0.5, np.float32), "half"))
    ints: list[ir.Node] = []
    for _ in range(draw(st.integers(2, max_ops))):
        _grow_elementwise(draw, graph, floats, ints, ops)
    graph.outputs = [floats[-1], *ints[-1:]]
    if draw(st.booleans()):
        graph.outputs.append(draw(st.sampled_from(floats + ints)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    inputs = tuple(rng.uniform(-2, 2, node.shape).astype(np.float32) for node in graph.inputs)
    return graph, inputs


@given(case=elementwise_dags())
def test_random_elementwise_dags_keep_their_outputs_exactly(case):
    """The fused op runs the unfused ops' own references, so every value is the same, bit for bit."""
    graph, inputs = case
    note(str(graph))
    fused = run_fuse(graph)
    note(f"after fuse-elementwise:\n{fused}")
    for actual, expected in zip(outputs_of(fused, inputs), outputs_of(graph, inputs), strict=True):
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
    assert_fused_well(graph, fused)
    assert str(ir.parse(str(fused), fused.constants())) == str(fused)


# --- compiled -------------------------------------------------------------------------------------

@pytest.fixture(params=["host", "armv8"])
def arch(request) -> str:
    """Every compiled case runs twice: JIT on the host, and the AArch64 build under qemu-user."""
    return request.param


def chain(x_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> ir.Graph:
    """tanh(gelu(x + b) * x) - sigmoid(x) with b broadcast, plus an integer branch: relu(-cast(8 x))."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType(x_shape, F32))
    b = graph.add_input("b", TensorType(b_shape, F32))
    value = graph.call("mul", [graph.call("gelu", [graph.call("add", [x, b])]), x])
    value = graph.call("sub", [graph.call("tanh", [value]), graph.call("sigmoid", [x])])
    scaled = graph.call("cast", [graph.call("mul", [x, graph.constant(np.float32(8))])], {"dtype": I32})
    graph.outputs = [value, graph.call("relu", [graph.call("neg", [scaled])])]
    return graph


CHAINS = [((1,), (1,)), ((7,), ()), ((13, 17), (17,)), ((13, 17), (13, 1)), ((0,), (1,)), ((2, 0, 3), (3,))]


@pytest.mark.parametrize("x_shape, b_shape", CHAINS, ids=str)
def test_fused_chains_compile_to_the_interpreters_values(x_shape, b_shape, arch):
    graph = chain(x_shape, b_shape)
    fused = run_fuse(graph)
    assert [node.op for node in fused.op_nodes()] == [FUSED, FUSED]
    rng = np.random.default_rng(0)
    inputs = [(rng.standard_normal(node.shape) * 2).astype(np.float32) for node in graph.inputs]
    for actual, expected in zip(compile_and_run(fused, *inputs, target=arch), outputs_of(graph, inputs), strict=True):
        assert_close(actual, expected)


def test_fused_code_computes_what_the_unfused_code_does_bit_for_bit():
    """The same element functions, in registers instead of through memory: no rounding changes."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((13, 17), F32))
    value = graph.call("div", [graph.call("exp", [x]), graph.call("add", [graph.call("sqrt", [x]), x])])
    value = graph.call("gelu", [graph.call("log", [graph.call("relu", [value])])], {"approximation": "tanh"})
    graph.outputs = [value]
    fused = run_fuse(graph)
    assert [node.op for node in fused.op_nodes()] == [FUSED]
    x_value = (np.random.default_rng(1).standard_normal((13, 17)) * 3).astype(np.float32)
    np.testing.assert_array_equal(compile_and_run(fused, x_value)[0], compile_and_run(graph, x_value)[0])


def _compile_dag_against_interpreter(case, target: str) -> None:
    graph, inputs = case
    fused = run_fuse(graph)
    note(str(fused))
    for actual, expected in zip(compile_and_run(fused, *inputs, target=target), outputs_of(graph, inputs),
                                strict=True):
        assert_close(actual, expected)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(case=elementwise_dags(WELL_CONDITIONED, max_ops=6))
def test_random_fused_dags_compile_to_the_interpreters_values(case):
    _compile_dag_against_interpreter(case, "host")


@settings(max_examples=min(10, settings.default.max_examples), suppress_health_check=[HealthCheck.too_slow])
@given(case=elementwise_dags(WELL_CONDITIONED, max_ops=6))
def test_random_fused_dags_compile_to_the_interpreters_values_on_armv8(case):
    """The same for the AArch64 build under qemu-user: fewer examples, each costs a link and a run."""
    _compile_dag_against_interpreter(case, "armv8")
