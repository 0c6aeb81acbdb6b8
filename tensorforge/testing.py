"""Hypothesis strategies for tensorforge graphs, for our tests and for users' own.

    from tensorforge.testing import random_graphs
    @given(random_graphs())
    def test_my_pass(case):
        graph, inputs = case
        ...

`shapes()` draws small shapes, `arrays_for(type)` arrays of an ir.TensorType, `random_graphs()` a
well-typed f32 graph with its inputs: elementwise ops with broadcast weights, matmul/linear,
reductions, softmax, transposes, reshapes, slices, concat, conv2d + batch norm, plus the patterns
the passes look for (constant-only subgraphs, repeated subexpressions, x*1, reshape/transpose
chains, dead nodes). Values stay moderate (scaled weights, squashing ops), so fp32 tolerances
test the compiler, not the conditioning of the expression.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from . import ir
from .ir import DType, TensorType

UNARY = ["relu", "neg", "tanh", "sigmoid", "gelu"]


def shapes(min_rank: int = 1, max_rank: int = 3, max_side: int = 7) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(1, max_side), min_size=min_rank, max_size=max_rank).map(tuple)


def arrays_for(type_: TensorType) -> st.SearchStrategy[np.ndarray]:
    """Arrays of `type_`: standard normal floats from a drawn seed; integers over a small range."""
    def make(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if type_.dtype is DType.f32:
            return rng.standard_normal(type_.shape).astype(np.float32)
        if type_.dtype is DType.bool:
            return rng.random(type_.shape) < 0.5
        return rng.integers(-100, 100, type_.shape).astype(type_.dtype.numpy)

    return st.integers(0, 2**32 - 1).map(make)


def _weight(graph: ir.Graph, shape: tuple[int, ...], seed: int) -> ir.Node:
    rng = np.random.default_rng(seed)
    scale = np.float32(1 / math.sqrt(shape[0] if shape else 1))
    return graph.constant((rng.standard_normal(shape) * scale).astype(np.float32))


def _grow(draw, graph: ir.Graph, values: list[ir.Node]) -> ir.Node | None:
    """One new node that fits the last value's shape (None when the drawn kind does not fit)."""
    x = values[-1]
    rank = len(x.shape)
    kind = draw(st.sampled_from(["unary", "binary", "reduce", "softmax", "transpose", "reshape", "slice", "concat",
                                 "matmul", "linear", "conv", "fold", "cse", "identity", "chain"]))
    seed = draw(st.integers(0, 999))
    if kind == "unary":
        return graph.call(draw(st.sampled_from(UNARY)), [x])
    if kind == "binary":
        partner = draw(st.sampled_from([v for v in values if v.shape == x.shape] + [None]))
        if partner is None:  # a weight broadcast along the leading axes
            partner = _weight(graph, x.shape[draw(st.integers(0, rank)):], seed)
        return graph.call(draw(st.sampled_from(["add", "sub", "mul"])), [x, partner])
    if kind == "reduce" and rank:
        axes = draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True))
        op = draw(st.sampled_from(["reduce_sum", "reduce_mean", "reduce_max"]))
        return graph.call(op, [x], {"axes": axes, "keepdims": draw(st.booleans())})
    if kind == "softmax" and rank:
        return graph.call("softmax", [x], {"axis": draw(st.integers(0, rank - 1))})
    if kind == "transpose" and rank:
        return graph.call("transpose", [x], {"perm": tuple(draw(st.permutations(range(rank))))})
    if kind == "reshape":
        return graph.call("reshape", [x], {"shape": (-1,)})
    if kind == "slice" and rank:
        axis = draw(st.integers(0, rank - 1))
        starts, steps = [0] * rank, [1] * rank
        starts[axis] = draw(st.integers(0, x.shape[axis] - 1))
        steps[axis] = draw(st.integers(1, 3))
        return graph.call("slice", [x], {"starts": starts, "stops": list(x.shape), "steps": steps})
    if kind == "concat" and rank:
        return graph.call("concat", [x, x], {"axis": draw(st.integers(0, rank - 1))})
    if kind == "matmul" and rank >= 2:
        return graph.call("matmul", [x, _weight(graph, (x.shape[-1], draw(st.integers(1, 7))), seed)])
    if kind == "linear" and rank:
        out = draw(st.integers(1, 7))
        return graph.call("linear", [x, _weight(graph, (x.shape[-1], out), seed), _weight(graph, (out,), seed + 1)])
    if kind == "conv" and rank == 4 and x.shape[1] <= 4:
        return _conv_batch_norm(draw, graph, x, seed)
    if kind == "fold" and rank:  # a weight-only subgraph: fold-constants turns it into one constant
        w = _weight(graph, x.shape[-1:], seed)
        return graph.call("mul", [x, graph.call("tanh", [graph.call("add", [w, w])])])
    if kind == "cse":  # the same expression twice: eliminate-common-subexpressions merges them
        return graph.call("add", [graph.call("sigmoid", [x]), graph.call("sigmoid", [x])])
    if kind == "identity":  # simplify removes these
        ones = graph.constant(np.ones(x.shape[-1:] if rank else (), np.float32))
        return graph.call("add", [graph.call("mul", [x, ones]), graph.constant(np.float32(0))])
    if kind == "chain" and rank >= 2:
        perm = tuple(draw(st.permutations(range(rank))))
        moved = graph.call("transpose", [graph.call("transpose", [x], {"perm": perm})],
                           {"perm": tuple(draw(st.permutations(range(rank))))})
        return graph.call("reshape", [graph.call("reshape", [moved], {"shape": (-1,)})], {"shape": moved.shape})
    return None


def _conv_batch_norm(draw, graph: ir.Graph, x: ir.Node, seed: int) -> ir.Node:
    channels = x.shape[1]
    out = draw(st.integers(1, 4))
    kernel = draw(st.integers(1, min(3, x.shape[2], x.shape[3])))
    weight = _weight(graph, (out, channels, kernel, kernel), seed)
    conv = graph.call("conv2d", [x, weight, _weight(graph, (out,), seed + 1)], {"padding": kernel // 2})
    rng = np.random.default_rng(seed + 2)
    stats = [rng.uniform(0.5, 1.5, out), rng.normal(0, 0.1, out), rng.normal(0, 0.1, out), rng.uniform(0.5, 2, out)]
    return graph.call("batch_norm", [conv] + [graph.constant(s.astype(np.float32)) for s in stats])


@st.composite
def random_graphs(draw, max_ops: int = 6) -> tuple[ir.Graph, tuple[np.ndarray, ...]]:
    """(graph, inputs): 1 to `max_ops` drawn ops over one f32 input of rank 1 to 4; two outputs."""
    graph = ir.Graph()
    shape = draw(shapes(1, 4, 6))
    values = [graph.add_input("x", TensorType(shape, DType.f32))]
    for _ in range(draw(st.integers(1, max_ops))):
        node = _grow(draw, graph, values)
        if node is not None:
            values.append(node)
    if draw(st.booleans()):  # a dead node for eliminate-dead-code
        graph.call("exp", [values[-1]])
    graph.outputs = [values[-1], draw(st.sampled_from(values))]
    x = draw(arrays_for(graph.inputs[0].type))
    return graph, (x,)
