"""Hypothesis strategies for tensorforge graphs, for our tests and for users' own.

    from tensorforge.testing import random_graphs

    @given(random_graphs())
    def test_my_pass(case):
        graph, inputs = case          # e.g.  graph(%x: f32[2,3], %y: f32[3]) {
        ...                           #         %0 = constant() : f32[3]
                                      #         %1 = mul(%x, %0) : f32[2,3] ...

`shapes()` draws small shapes, `arrays_for(type)` arrays of an ir.TensorType, `random_graphs()` a
well-typed graph with its inputs: elementwise ops with broadcast weights, matmul/linear,
reductions, softmax, transposes, reshapes, flatten, slices, concat, conv2d + batch norm and
linear + batch norm with constant statistics, an integer branch, plus the patterns the passes look
for (constant-only subgraphs, repeated subexpressions, x*1, x+0, -(-x), relu(relu(x)),
reshape/transpose chains, dead nodes). Values stay moderate (scaled weights, squashing ops), so f32
tolerances (rtol 1e-4, atol 1e-5) test the compiler, not the conditioning of the expression.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from . import ir
from .ir import DType, TensorType

KINDS = ["unary", "binary", "reduce", "softmax", "transpose", "reshape", "flatten", "slice", "concat", "matmul",
         "linear", "conv", "linear_bn", "fold", "cse", "identity", "chain"]


def _defaults_suffice(op: str) -> bool:
    """Every attribute of `op` has a usable default (a node needs nothing drawn for it)."""
    return all(value is not None and value is not ir.registry.REQUIRED for value in ir.get_op(op).attrs.values())


def unary_ops() -> list[str]:
    """The elementwise unary ops random graphs draw: registered "total", attributes all defaulted."""
    return [op for op in ir.ops_with("elementwise", "unary", "total") if _defaults_suffice(op)]


def binary_ops() -> list[str]:
    """The elementwise binary ops random graphs draw: registered "total"."""
    return [op for op in ir.ops_with("elementwise", "binary", "total") if _defaults_suffice(op)]


def shapes(min_rank: int = 1, max_rank: int = 3, max_side: int = 7) -> st.SearchStrategy[tuple[int, ...]]:
    """Shapes of rank `min_rank` to `max_rank`, each side from 1 to `max_side`."""
    return st.lists(st.integers(1, max_side), min_size=min_rank, max_size=max_rank).map(tuple)


def arrays_for(type_: TensorType) -> st.SearchStrategy[np.ndarray]:
    """Arrays of `type_`: standard normal floats from a drawn seed; integers in [-100, 100); random bools."""
    def make(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if type_.dtype.is_float:
            return rng.standard_normal(type_.shape).astype(type_.dtype.numpy)
        if type_.dtype is DType.bool:
            return rng.random(type_.shape) < 0.5
        low = max(-100, np.iinfo(type_.dtype.numpy).min)
        return rng.integers(low, 100, type_.shape).astype(type_.dtype.numpy)

    return st.integers(0, 2**32 - 1).map(make)


def _weight(graph: ir.Graph, shape: tuple[int, ...], seed: int) -> ir.Node:
    """A constant of normal values scaled by 1/sqrt(first side), like a fan-in initialization."""
    rng = np.random.default_rng(seed)
    scale = np.float32(1 / math.sqrt(shape[0] if shape else 1))
    return graph.constant((rng.standard_normal(shape) * scale).astype(np.float32))


def _statistics(graph: ir.Graph, channels: int, seed: int) -> list[ir.Node]:
    """gamma, beta, mean, var of an inference batch norm, as constants."""
    rng = np.random.default_rng(seed)
    stats = [rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.1, channels), rng.normal(0, 0.1, channels),
             rng.uniform(0.5, 2, channels)]
    return [graph.constant(s.astype(np.float32)) for s in stats]


def _ones_like_last_axis(graph: ir.Graph, x: ir.Node, fill: float) -> ir.Node:
    return graph.constant(np.full(x.shape[-1:], fill, x.dtype.numpy))


def _grow(draw, graph: ir.Graph, values: list[ir.Node]) -> ir.Node | None:
    """One new f32 node that fits the last value's shape (None when the drawn kind does not fit)."""
    x = values[-1]
    rank = len(x.shape)
    kind = draw(st.sampled_from(KINDS))
    seed = draw(st.integers(0, 999))
    if kind == "unary":
        return graph.call(draw(st.sampled_from(unary_ops())), [x])
    if kind == "binary":
        partner = draw(st.sampled_from([v for v in values if v.shape == x.shape] + [None]))
        if partner is None:  # a weight broadcast along the leading axes
            partner = _weight(graph, x.shape[draw(st.integers(0, rank)):], seed)
        operands = draw(st.permutations([x, partner]))
        return graph.call(draw(st.sampled_from(binary_ops())), operands)
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
    if kind == "flatten" and rank:
        return graph.call("flatten", [x], {"start_axis": draw(st.integers(0, rank - 1))})
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
        linear = graph.call("linear", [x, _weight(graph, (x.shape[-1], out), seed), _weight(graph, (out,), seed + 1)])
        return graph.call("relu", [linear]) if draw(st.booleans()) else linear  # fuse-activation fuses the relu
    if kind == "conv":
        norm = _conv_batch_norm(draw, graph, x, seed)
        return graph.call("relu", [norm]) if draw(st.booleans()) else norm
    if kind == "linear_bn" and rank == 2:  # fold-batch-norm scales the linear's columns
        out = draw(st.integers(1, 5))
        linear = graph.call("linear", [x, _weight(graph, (x.shape[1], out), seed)])
        return graph.call("batch_norm", [linear, *_statistics(graph, out, seed + 1)])
    if kind == "fold" and rank:  # a weight-only subgraph: fold-constants turns it into one constant
        w = _weight(graph, x.shape[-1:], seed)
        scaled = graph.call("tanh", [graph.call("add", [w, graph.call("transpose", [w], {"perm": (0,)})])])
        return graph.call("mul", [x, scaled])
    if kind == "cse":  # the same expressions twice: eliminate-common-subexpressions merges them
        w = _weight(graph, x.shape[-1:] if rank else (), seed)
        first = graph.call("add", [graph.call("sigmoid", [x]), w])
        second = graph.call("add", [_weight(graph, w.shape, seed), graph.call("sigmoid", [x])])
        return graph.call("mul", [first, second])
    if kind == "identity":  # simplify removes these
        return _identities(draw, graph, x)
    if kind == "chain" and rank >= 2:  # simplify merges these
        first, second = (tuple(draw(st.permutations(range(rank)))) for _ in range(2))
        moved = graph.call("transpose", [graph.call("transpose", [x], {"perm": first})], {"perm": second})
        return graph.call("reshape", [graph.call("reshape", [moved], {"shape": (-1,)})], {"shape": moved.shape})
    return None


def _identities(draw, graph: ir.Graph, x: ir.Node) -> ir.Node:
    """x*1, 1*x, x+0, x-0, x/1, -(-x), relu(relu(x)) or a cast to x's own dtype: each is x (or relu(x))."""
    pattern = draw(st.sampled_from(["mul", "rmul", "add", "sub", "div", "neg", "relu", "cast"]))
    if pattern in ("mul", "rmul", "div"):
        one = _ones_like_last_axis(graph, x, 1) if x.shape else graph.constant(np.float32(1))
        return graph.call("div" if pattern == "div" else "mul", [one, x] if pattern == "rmul" else [x, one])
    if pattern in ("add", "sub"):
        return graph.call(pattern, [x, graph.constant(np.float32(0))])
    if pattern in ("neg", "relu"):
        return graph.call(pattern, [graph.call(pattern, [x])])
    return graph.call("cast", [x], {"dtype": x.dtype})


def _conv_batch_norm(draw, graph: ir.Graph, x: ir.Node, seed: int) -> ir.Node:
    """conv2d (bias or not) -> batch_norm with constant statistics; x is first reshaped to [N,C,H,W]."""
    if len(x.shape) != 4 or x.shape[1] > 4:
        rows = x.shape[0] if len(x.shape) >= 2 else 1
        x = graph.call("reshape", [x], {"shape": (1, 1, rows, math.prod(x.shape) // rows)})
    channels = x.shape[1]
    out = draw(st.integers(1, 4))
    kernel = draw(st.integers(1, min(3, x.shape[2], x.shape[3])))
    operands = [x, _weight(graph, (out, channels, kernel, kernel), seed)]
    if draw(st.booleans()):
        operands.append(_weight(graph, (out,), seed + 1))
    conv = graph.call("conv2d", operands, {"padding": kernel // 2})
    return graph.call("batch_norm", [conv, *_statistics(graph, out, seed + 2)])


def _integer_branch(draw, graph: ir.Graph, x: ir.Node) -> ir.Node:
    """An i32 computation from a graph input (exact in every pass): cast, int weights, identities, a reduction."""
    value = graph.call("cast", [graph.call("mul", [x, graph.constant(np.float32(8))])], {"dtype": DType.i32})
    seed = draw(st.integers(0, 999))
    for op in draw(st.lists(st.sampled_from(["add", "mul", "neg", "relu", "identity", "reduce"]), max_size=4)):
        if op in ("add", "mul"):
            weight = np.random.default_rng(seed).integers(-3, 4, value.shape[-1:]).astype(np.int32)
            value = graph.call(op, [value, graph.call("neg", [graph.constant(weight)])])
        elif op == "identity":
            value = graph.call("mul", [value, _ones_like_last_axis(graph, value, 1)]) if value.shape else value
        elif op == "reduce" and value.shape:
            value = graph.call("reduce_sum", [value], {"axes": (len(value.shape) - 1,)})
        elif op in ("neg", "relu"):
            value = graph.call(op, [value])
    return value


@st.composite
def random_graphs(draw, max_ops: int = 6) -> tuple[ir.Graph, tuple[np.ndarray, ...]]:
    """(graph, inputs): 1 to `max_ops` drawn ops over an f32 input of rank 1 to 4 (and sometimes a
    second input of the same shape); outputs: the last value, an earlier one, maybe an i32 value."""
    graph = ir.Graph()
    shape = draw(shapes(1, 4, 6))
    values = [graph.add_input("x", TensorType(shape, DType.f32))]
    if draw(st.booleans()):
        values.insert(0, graph.add_input("y", TensorType(shape, DType.f32)))
    for _ in range(draw(st.integers(1, max_ops))):
        node = _grow(draw, graph, values)
        if node is not None:
            values.append(node)
    if draw(st.booleans()):  # a dead node for eliminate-dead-code
        graph.call("exp", [draw(st.sampled_from(values))])
    graph.outputs = [values[-1], draw(st.sampled_from(values))]
    if draw(st.booleans()):
        graph.outputs.append(_integer_branch(draw, graph, graph.inputs[0]))
    inputs = tuple(draw(arrays_for(node.type)) for node in graph.inputs)
    return graph, inputs
