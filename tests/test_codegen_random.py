"""Property: random compositions of ops compile for the host and match the reference interpreter.

The local strategy grows a graph from one f32 input by drawing ops that fit the current value's
shape. Values stay of moderate size (squashing ops, scaled weights) so that the f32 tolerance
compares the code, not the conditioning of the expression.
"""

from __future__ import annotations

import math

import numpy as np
from codegen_harness import compile_and_run
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.ir import DType, TensorType
from tensorforge.testing import binary_ops, unary_ops


def _weight(graph: ir.Graph, shape: tuple[int, ...], seed: int) -> ir.Node:
    rng = np.random.default_rng(seed)
    scale = np.float32(1 / math.sqrt(shape[0] if shape else 1))
    return graph.constant((rng.standard_normal(shape) * scale).astype(np.float32))


@st.composite
def random_graphs(draw) -> ir.Graph:
    """A graph of 1 to 6 ops over one f32 input of rank 1 to 3; outputs: the last value and one earlier."""
    graph = ir.Graph()
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=3)))
    values = [graph.add_input("x", TensorType(shape, DType.f32))]
    for _ in range(draw(st.integers(1, 6))):
        x = values[-1]
        rank = x.type.rank
        kind = draw(st.sampled_from(["unary", "binary", "reduce", "softmax", "transpose", "reshape", "slice",
                                     "concat", "matmul", "linear"]))
        if kind == "unary":
            values.append(graph.call(draw(st.sampled_from(unary_ops())), [x]))
        elif kind == "binary":
            partner = draw(st.sampled_from([v for v in values if v.shape == x.shape] + [None]))
            if partner is None:  # a weight broadcast along the leading axes
                partner = _weight(graph, x.shape[draw(st.integers(0, rank)):], draw(st.integers(0, 99)))
            values.append(graph.call(draw(st.sampled_from(binary_ops())), [x, partner]))
        elif kind == "reduce":
            axes = draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True)) if rank else None
            op = draw(st.sampled_from(["reduce_sum", "reduce_mean", "reduce_max"]))
            values.append(graph.call(op, [x], {"axes": axes, "keepdims": draw(st.booleans())}))
        elif kind == "softmax" and rank:
            values.append(graph.call("softmax", [x], {"axis": draw(st.integers(0, rank - 1))}))
        elif kind == "transpose" and rank:
            values.append(graph.call("transpose", [x], {"perm": tuple(draw(st.permutations(range(rank))))}))
        elif kind == "reshape":
            values.append(graph.call("reshape", [x], {"shape": (-1,)}))
        elif kind == "slice" and rank:
            axis = draw(st.integers(0, rank - 1))
            starts, steps = [0] * rank, [1] * rank
            starts[axis] = draw(st.integers(0, x.shape[axis] - 1))
            steps[axis] = draw(st.integers(1, 3))
            values.append(graph.call("slice", [x], {"starts": starts, "stops": list(x.shape), "steps": steps}))
        elif kind == "concat" and rank:
            values.append(graph.call("concat", [x, x], {"axis": draw(st.integers(0, rank - 1))}))
        elif kind == "matmul" and rank >= 2:
            w = _weight(graph, (x.shape[-1], draw(st.integers(1, 7))), draw(st.integers(0, 99)))
            values.append(graph.call("matmul", [x, w]))
        elif kind == "linear" and rank:
            out = draw(st.integers(1, 7))
            seed = draw(st.integers(0, 99))
            values.append(graph.call("linear", [x, _weight(graph, (x.shape[-1], out), seed),
                                                _weight(graph, (out,), seed + 1)]))
    graph.outputs = [values[-1], draw(st.sampled_from(values))]
    return graph


def _check_against_interpreter(graph: ir.Graph, seed: int, target: str, **options) -> None:
    note(str(graph))
    x = np.random.default_rng(seed).standard_normal(graph.inputs[0].shape).astype(np.float32)
    outputs = compile_and_run(graph, x, target=target, **options)
    for actual, expected in zip(outputs, ir.interpret(graph, x), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(graph=random_graphs(), seed=st.integers(0, 2**16))
def test_random_compositions_match_the_interpreter(graph, seed):
    _check_against_interpreter(graph, seed, "host")


@settings(max_examples=min(10, settings.default.max_examples), suppress_health_check=[HealthCheck.too_slow])
@given(graph=random_graphs(), seed=st.integers(0, 2**16))
def test_random_compositions_match_the_interpreter_on_armv8(graph, seed):
    """The same property for the AArch64 build under qemu-user: fewer examples, each costs a link and a run."""
    _check_against_interpreter(graph, seed, "armv8")


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(graph=random_graphs(), seed=st.integers(0, 2**16), threads=st.sampled_from([1, 3]),
       pack=st.booleans(), share_memory=st.booleans())
def test_random_compositions_with_the_ablation_options(graph, seed, threads, pack, share_memory):
    """Threads (every kernel split, however small), weights not packed, no memory sharing: same results."""
    _check_against_interpreter(graph, seed, "host", threads=threads, pack=pack, share_memory=share_memory)
