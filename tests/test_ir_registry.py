"""The op registry is the one list of ops: every table a pass or tool reads is a query of it.

These tests fail naming the op and the missing piece when a registration is incomplete, or when
something that should follow from a registration (F.<op>, a Proxy operator, a numpy function on a
traced value, the profiler's FLOPs, the random test graphs) does not.
"""

import numpy as np
import pytest

from tensorforge import ir, testing
from tensorforge.frontend import F, trace
from tensorforge.frontend.functional import METHODS, NUMPY_UFUNCS, REFLECTED
from tensorforge.ir.registry import OPS, register_op
from tensorforge.runtime.profile import kernel_flops

ELEMENTWISE = ir.ops_with("elementwise")
FUNCTIONAL = tuple(name for name, opdef in OPS.items() if opdef.functional)


def _operands(op: str) -> list[np.ndarray]:
    """Operands `op` type-checks with: f32[2,3] values, else bools, else a bool condition and f32 values."""
    x = np.linspace(0.5, 2.0, 6, dtype=np.float32).reshape(2, 3)
    count = OPS[op].min_operands
    for candidate in ([x] * count, [x > 1] * count, [x > 1] + [x] * (count - 1)):
        try:
            ir.infer_type(op, [ir.TensorType.of(a) for a in candidate], {"dtype": ir.DType.i32} if op == "cast" else {})
            return candidate
        except ir.OpError:
            continue
    raise AssertionError(f"no f32/bool operands type-check for op '{op}'")


def _missing(check, ops) -> list[str]:
    return [op for op in ops if not check(OPS[op])]


def test_elementwise_ops_say_their_flops():
    assert not _missing(lambda opdef: opdef.flops is not None, ELEMENTWISE), "elementwise ops without flops"


def test_an_elementwise_op_without_flops_is_refused_at_registration():
    with pytest.raises(ValueError, match="op 'made_up' is elementwise: register it with flops="):
        register_op("made_up", infer=lambda types, attrs: types[0], traits={"elementwise"})(np.negative)
    assert "made_up" not in OPS


def test_fusable_ops_are_elementwise_and_have_plain_attributes():
    for op in ir.ops_with("fusable"):
        assert OPS[op].has("elementwise"), f"op '{op}' is fusable but not elementwise"
        assert OPS[op].min_operands == OPS[op].max_operands, f"fusable op '{op}' must take a fixed operand count"


def test_trait_queries_agree_with_the_registrations():
    assert set(ir.ops_with("elementwise", "unary")) == {op for op in OPS if {"elementwise", "unary"} <= OPS[op].traits}
    assert {"add", "exp", "relu", "gelu", "cast"} <= set(ir.ops_with("fusable"))
    assert "quantize" not in ir.ops_with("fusable")  # elementwise, but a program cannot hold it


@pytest.mark.parametrize("op", FUNCTIONAL)
def test_functional_ops_are_generated_and_match_the_reference(op):
    function = getattr(F, op, None)
    assert function is not None, f"op '{op}' is registered functional=True but F.{op} does not exist"
    operands = _operands(op)
    np.testing.assert_array_equal(function(*operands), ir.evaluate(op, operands, {}))
    graph = trace(lambda *values: function(*values), tuple(operands))
    assert [node.op for node in graph.nodes if node.op not in ("input", "constant")] == [op]


@pytest.mark.parametrize("op", [op for op in FUNCTIONAL if OPS[op].numpy])
def test_numpy_functions_on_traced_values_record_their_op(op):
    for ufunc in OPS[op].numpy:
        assert ufunc in NUMPY_UFUNCS, f"np.{ufunc.__name__} of op '{op}' is not dispatched on traced values"
        graph = trace(lambda *values, ufunc=ufunc: ufunc(*values), tuple(_operands(op)))
        assert [node.op for node in graph.nodes if node.op not in ("input", "constant")] == [op]


@pytest.mark.parametrize("op", [op for op in FUNCTIONAL if OPS[op].methods])
def test_proxy_operators_record_their_op(op):
    for method in OPS[op].methods:
        assert method in METHODS, f"Proxy.{method} of op '{op}' is not installed"
    operands = _operands(op)
    method = OPS[op].methods[0]
    if len(operands) == 2:
        other = operands[1].flat[0].item()  # a Python scalar of the operand's kind: 0.5 op x, True op x
        graph = trace(lambda a: getattr(a, method)(other), operands[0])
        if method in REFLECTED:
            reflected = trace(lambda a: getattr(a, method.replace("__", "__r", 1))(other), operands[0])
            assert [n.inputs[0].op for n in reflected.nodes if n.op == op] == ["constant"]
    else:
        graph = trace(lambda a: getattr(a, method)(), operands[0])
    assert [node.op for node in graph.nodes if node.op not in ("input", "constant")] == [op]


@pytest.mark.parametrize("op", ELEMENTWISE)
def test_profiler_counts_the_registered_flops(op):
    node = _node_of(op)
    assert kernel_flops(node) == node.type.size * OPS[op].element_flops(node.attrs)


def _node_of(op: str) -> ir.Node:
    """A node of the elementwise `op` on f32[2,3] operands (quantize/dequantize with their scales)."""
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((2, 3), ir.DType.f32))
    if op == "quantize":
        return graph.call(op, [x, graph.constant(np.float32(0.1)), graph.constant(np.int32(0))])
    if op == "dequantize":
        q = graph.add_input("q", ir.TensorType((2, 3), ir.DType.i8))
        return graph.call(op, [q, graph.constant(np.float32(0.1)), graph.constant(np.int32(0))])
    if op == "fused_elementwise":
        return graph.call(op, [x], {"program": (("exp", ("in", 0)), ("tanh", ("t", 0)))})
    attrs = {"dtype": ir.DType.i32} if op == "cast" else {}
    return graph.call(op, [graph.constant(array) for array in _operands(op)], attrs)


def test_a_fused_chain_counts_the_sum_of_its_ops():
    node = _node_of("fused_elementwise")
    assert kernel_flops(node) == node.type.size * (OPS["exp"].flops + OPS["tanh"].flops)


@pytest.mark.parametrize("activation, op", [("relu", "relu"), ("relu6", "clip"), ("gelu_tanh", "gelu")])
def test_a_fused_activation_counts_its_op(activation, op):
    """A contraction's fused activation counts the flops of the op it stands for (relu6: clip's)."""
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((2, 3), ir.DType.f32))
    w = graph.constant(np.ones((3, 4), np.float32))
    plain, fused = (graph.call("linear", [x, w], {"activation": a}) for a in (None, activation))
    assert kernel_flops(fused) == kernel_flops(plain) + fused.type.size * OPS[op].element_flops({})


def test_random_graphs_draw_every_total_elementwise_op():
    assert set(testing.unary_ops()) == {op for op in ir.ops_with("elementwise", "unary", "total")
                                         if all(v is not None for v in OPS[op].attrs.values())}
    assert set(testing.binary_ops()) == set(ir.ops_with("elementwise", "binary", "total"))
    assert "div" not in testing.binary_ops() and "log" not in testing.unary_ops()  # not total


def test_weight_operands_are_operand_positions_of_their_op():
    declared = {op: opdef.weights for op, opdef in OPS.items() if opdef.weights}
    assert {"linear", "conv2d", "matmul"} <= set(declared)
    for op, positions in declared.items():
        limit = OPS[op].max_operands if OPS[op].max_operands is not None else max(positions) + 1
        assert all(0 <= p < limit for p in positions), f"op '{op}' declares weight operands {positions}"
