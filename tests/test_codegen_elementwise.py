"""Property: every fusable elementwise op in the registry, alone and inside a fused program, compiled for
the host and armv8, equals its numpy reference on random shapes, broadcasting, dtypes and values.

The ops come from the registry (`ir.ops_with("elementwise", "fusable")`), their dtypes from the
codegen's element table: a new op is tested here without a line added. Operand dtypes are the
first set that type-checks: all operands of the drawn dtype, else bools, else a bool condition and
values of the dtype (where). f32 within rtol 1e-4 / atol 1e-5 (the polynomials of exp, log, erf...
are a few ulp from numpy's), NaN where the reference has NaN; integers and bools exactly.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from codegen_harness import compile_and_run
from hypothesis import given, note, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.codegen.ops.elementwise import ELEMENT
from tensorforge.ir import DType, TensorType

OPS = [op for op in ir.ops_with("elementwise", "fusable") if op != "cast"]  # cast: test_codegen_ops, every pair
SPECIAL = np.array([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0, 1e-8, 20.0, -20.0, np.inf, -np.inf, np.nan], np.float32)
ARMV8_EXAMPLES = None if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 4  # each is a cross build + qemu


def _dtypes(op: str, dtype: DType, count: int) -> list[DType] | None:
    for candidate in ([dtype] * count, [DType.bool] * count, [DType.bool] + [dtype] * (count - 1)):
        try:
            ir.infer_type(op, [TensorType((2,), d) for d in candidate], {})
            return candidate
        except ir.OpError:
            continue
    return None


def _values(draw, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype is DType.f32:
        values = (rng.standard_normal(shape) * 3).astype(np.float32)
        if draw(st.booleans()) and values.size:  # special values in a few places
            flat = values.reshape(-1)
            flat[rng.integers(0, flat.size, min(4, flat.size))] = rng.choice(SPECIAL, min(4, flat.size))
        return values
    if dtype is DType.bool:
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype.numpy)
    low, high = (info.min, info.max) if draw(st.booleans()) else (-5 if info.min < 0 else 0, 5)
    return rng.integers(low, high, size=shape, dtype=dtype.numpy, endpoint=True)


@st.composite
def cases(draw, op: str):
    """(operands, attrs) of one `op` node: a drawn dtype its codegen compiles, shapes that broadcast."""
    opdef = ir.get_op(op)
    count = opdef.min_operands
    dtype = draw(st.sampled_from(sorted(ELEMENT[op].dtypes, key=lambda d: d.name)))
    dtypes = _dtypes(op, dtype, count)
    if dtypes is None or dtypes[0] not in ELEMENT[op].dtypes:
        dtypes = _dtypes(op, DType.f32, count)
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=0, max_size=3)))
    shapes = [tuple(1 if draw(st.booleans()) and i >= 0 else d for i, d in enumerate(shape)) if k else shape
              for k in range(count)]
    operands = [_values(draw, d, s) for d, s in zip(dtypes, shapes)]
    attrs = {}
    if op == "clip":
        bounds = sorted(draw(st.lists(st.floats(-10, 10, width=32), min_size=2, max_size=2)))
        attrs = {"min": draw(st.sampled_from([bounds[0], None])), "max": draw(st.sampled_from([bounds[1], None]))}
    if op == "pow" and draw(st.booleans()):  # whole exponents, where a negative base has a real power
        operands[1] = np.rint(operands[1]).astype(np.float32)
    return operands, attrs


def _alone_and_fused(op: str, operands: list[np.ndarray], attrs: dict) -> tuple[ir.Graph, list[np.ndarray]]:
    """A graph with two outputs: op(x...) alone, and the same op inside a fused program ending in a cast to f32."""
    graph = ir.Graph()
    inputs = [graph.add_input(f"x{i}", TensorType.of(a)) for i, a in enumerate(operands)]
    alone = graph.call(op, inputs, attrs)
    program = ((op, *[("in", i) for i in range(len(inputs))], *[alone.attrs[k] for k in ir.get_op(op).attrs]),
               ("cast", ("t", 0), DType.f32))
    graph.outputs = [alone, graph.call("fused_elementwise", inputs, {"program": program})]
    return graph, operands


def _check(arch: str, op: str, case) -> None:
    operands, attrs = case
    graph, inputs = _alone_and_fused(op, operands, attrs)
    note(str(graph))
    actual = compile_and_run(graph, *inputs, target=arch)
    expected = ir.interpret(graph, *inputs)
    for got, want in zip(actual, expected):
        assert got.shape == want.shape and got.dtype == want.dtype
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, equal_nan=True)
        else:
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op", OPS)
def test_elementwise_op_on_host(op):
    given(cases(op))(lambda case: _check("host", op, case))()


@pytest.mark.parametrize("op", OPS)
def test_elementwise_op_on_armv8(op):
    test = given(cases(op))(lambda case: _check("armv8", op, case))
    if ARMV8_EXAMPLES is not None:
        test = settings(max_examples=ARMV8_EXAMPLES)(test)
    test()
