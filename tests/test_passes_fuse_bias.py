"""fuse-bias (a constant added to a bias-less linear becomes its bias) and fuse-activation's written-out
exact gelu (x * 0.5 * (1 + erf(x / sqrt 2)) of a linear becomes its "gelu_exact" epilogue): where they
fire, where they must not, and that the compiled graphs match the reference interpreter."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge import ir
from tensorforge.ir import DType, TensorType
from tensorforge.passes import PassContext, run_pipeline

RNG = np.random.default_rng(0)


def _constant(graph: ir.Graph, shape, scale: float = 1.0) -> ir.Node:
    return graph.constant((RNG.standard_normal(shape) * scale).astype(np.float32))


def _optimized(graph: ir.Graph) -> list[ir.Node]:
    return run_pipeline(graph, PassContext(opt_level=2)).graph.op_nodes()


def _linear_graph(bias_shape, bias_first: bool, users: int = 1) -> ir.Graph:
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((2, 5, 8), DType.f32))
    linear = graph.call("linear", [x, _constant(graph, (8, 6))])
    bias = _constant(graph, bias_shape)
    added = graph.call("add", [bias, linear] if bias_first else [linear, bias])
    graph.outputs = [added] + [graph.call("exp", [linear])] * (users - 1)
    return graph


@pytest.mark.parametrize("bias_shape", [(6,), (1, 1, 6), (1, 6)])
@pytest.mark.parametrize("bias_first", [True, False])
def test_a_constant_per_column_becomes_the_linear_bias(bias_shape, bias_first):
    graph = _linear_graph(bias_shape, bias_first)
    (linear,) = _optimized(graph)
    assert linear.op == "linear" and len(linear.inputs) == 3 and linear.inputs[2].shape == (6,)
    x = RNG.standard_normal((2, 5, 8)).astype(np.float32)
    tfg.check(graph, x)


@pytest.mark.parametrize("case", ["per row", "two users", "broadcast up"])
def test_the_bias_stays_an_add(case):
    """A constant that is not one value per column, a linear something else reads, or an addend that
    broadcasts the result to a bigger shape."""
    if case == "broadcast up":
        graph = _linear_graph((3, 1, 1, 6), bias_first=True)
    else:
        graph = _linear_graph((5, 6) if case == "per row" else (6,), bias_first=False,
                              users=2 if case == "two users" else 1)
    nodes = _optimized(graph)
    assert all(len(node.inputs) == 2 for node in nodes if node.op == "linear")


def _gelu_graph(form: str, scale_op: str = "div", linear_input: bool = True, extra_user: bool = False,
                factor: float | None = None, formula_user: bool = False) -> ir.Graph:
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((3, 8), DType.f32))
    hidden = graph.call("linear", [x, _constant(graph, (8, 16), 0.5), _constant(graph, (16,))]) if linear_input \
        else graph.call("tanh", [x])
    factor = factor or (math.sqrt(2.0) if scale_op == "div" else math.sqrt(0.5))
    scaled = graph.call(scale_op, [hidden, graph.constant(np.float32(factor))])
    one_plus = graph.call("add", [graph.constant(np.float32(1.0)), graph.call("erf", [scaled])])
    half = graph.constant(np.float32(0.5))
    if form == "torch":  # (x * (1 + erf)) * 0.5, as PyTorch's ONNX exporter writes it
        result = graph.call("mul", [graph.call("mul", [hidden, one_plus]), half])
    elif form == "half first":  # (0.5 * x) * (1 + erf)
        result = graph.call("mul", [graph.call("mul", [half, hidden]), one_plus])
    else:  # 0.5 * ((1 + erf) * x)
        result = graph.call("mul", [half, graph.call("mul", [one_plus, hidden])])
    extra = ([graph.call("exp", [hidden])] if extra_user else []) + ([one_plus] if formula_user else [])
    graph.outputs = [result, *extra]
    return graph


@pytest.mark.parametrize("form", ["torch", "half first", "grouped right"])
@pytest.mark.parametrize("scale_op", ["div", "mul"])
def test_a_written_out_gelu_becomes_the_epilogue(form, scale_op):
    graph = _gelu_graph(form, scale_op)
    nodes = _optimized(graph)
    assert [(node.op, node.attrs["activation"]) for node in nodes] == [("linear", "gelu_exact")]
    x = RNG.standard_normal((3, 8)).astype(np.float32) * 2
    tfg.check(graph, x)


def _has_exact_gelu(nodes) -> bool:
    return any((node.op == "gelu" and node.attrs["approximation"] == "exact")
               or (node.op == "fused_elementwise" and "'gelu'" in str(node.attrs["program"])) for node in nodes)


def _has_erf(nodes) -> bool:
    return any(node.op == "erf" or (node.op == "fused_elementwise" and "'erf'" in str(node.attrs["program"]))
               for node in nodes)


@pytest.mark.parametrize("change", ["not a linear", "read elsewhere"])
def test_a_written_out_gelu_of_anything_becomes_a_gelu_op(change):
    """Not after a linear (a tanh), or after a linear that something else reads: one gelu op, no epilogue."""
    graph = _gelu_graph("torch", linear_input=change != "not a linear", extra_user=change == "read elsewhere")
    nodes = _optimized(graph)
    assert not any(node.op == "linear" and node.attrs["activation"] for node in nodes)
    assert _has_exact_gelu(nodes) and not _has_erf(nodes)
    x = RNG.standard_normal((3, 8)).astype(np.float32) * 2
    tfg.check(graph, x)


@pytest.mark.parametrize("change", ["wrong scale", "formula read elsewhere"])
def test_a_formula_that_is_not_that_gelu_stays(change):
    graph = _gelu_graph("torch", factor=1.5 if change == "wrong scale" else None,
                        formula_user=change == "formula read elsewhere")
    nodes = _optimized(graph)
    assert not any(node.op == "linear" and node.attrs["activation"] for node in nodes)
    assert _has_erf(nodes) and not _has_exact_gelu(nodes)
