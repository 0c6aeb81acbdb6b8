"""quantize / dequantize (ir/ops_quant.py, codegen/ops/quant.py): compiled code equals the numpy
reference bit for bit on host and armv8, over random shapes, per-tensor and per-channel scales and
zero points, saturation, NaN and rounding ties; the round trip error is at most scale / 2."""

from __future__ import annotations

import numpy as np
import pytest
from codegen_harness import compile_and_run, single_op_graph
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.ir import DType, OpError, TensorType

RANGES = {"i8": (-128, 127), "u8": (0, 255)}


@st.composite
def quantization_cases(draw):
    """(x, scale, zero_point, dtype): x with saturating values, ties and a NaN; scale/zero point per
    tensor ([]), per last axis ([C]) or per first axis ([C, 1, ...])."""
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=rank, max_size=rank)))
    dtype = draw(st.sampled_from(["i8", "u8"]))
    low, high = RANGES[dtype]
    per = draw(st.sampled_from(["tensor", "last", "first"]))
    parameter_shape = {"tensor": (), "last": shape[-1:], "first": (shape[0],) + (1,) * (rank - 1)}[per]
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    scale = np.exp(rng.uniform(np.log(1e-3), np.log(10.0), parameter_shape)).astype(np.float32)
    edges = np.array([low, high, (low + high) // 2, 0 if low < 0 else low], np.int32)
    zero_point = np.where(rng.random(parameter_shape) < 0.3, rng.choice(edges, parameter_shape),
                          rng.integers(low, high + 1, parameter_shape)).astype(np.int32)
    codes = rng.integers(low - 40, high + 40, shape)  # some beyond the range: saturation
    ties = rng.random(shape) < 0.3
    x = ((codes - zero_point + np.where(ties, 0.5, rng.uniform(-0.49, 0.49, shape))) * scale).astype(np.float32)
    if x.size > 1 and draw(st.booleans()):
        x.reshape(-1)[0] = np.nan
    return x, scale, zero_point, dtype


def run_both(op: str, operands, attrs, target: str):
    graph, inputs = single_op_graph(op, list(operands), attrs, constants=(1, 2))
    (actual,) = compile_and_run(graph, *inputs, target=target)
    return actual, ir.interpret(graph, *inputs)


def check_exact(case, target: str) -> None:
    x, scale, zero_point, dtype = case
    quantized, expected = run_both("quantize", (x, scale, zero_point), {"dtype": dtype}, target)
    assert quantized.dtype == expected.dtype == DType[dtype].numpy
    np.testing.assert_array_equal(quantized, expected)
    restored, expected = run_both("dequantize", (expected, scale, zero_point), {}, target)
    np.testing.assert_array_equal(restored, expected)


@given(quantization_cases())
def test_compiled_quantization_is_bit_exact_on_the_host(case):
    check_exact(case, "host")


@settings(max_examples=min(8, settings.default.max_examples))
@given(quantization_cases())
def test_compiled_quantization_is_bit_exact_on_armv8(case):
    check_exact(case, "armv8")


@given(quantization_cases())
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(case):
    x, scale, zero_point, dtype = case
    low, high = RANGES[dtype]
    q = ir.evaluate("quantize", [x, scale, zero_point], {"dtype": dtype})
    y = ir.evaluate("dequantize", [q, scale, zero_point], {})
    inside = (x >= (low - zero_point) * scale) & (x <= (high - zero_point) * scale)
    error = np.abs(y - x)
    bound = np.broadcast_to(scale, x.shape) * np.float32(0.5 + 1e-3) + 1e-6
    assert np.all(error[inside] <= bound[inside])
    assert np.all((q == low) | (q == high) | inside | np.isnan(x))  # outside the range: saturated


def test_rounding_is_half_to_even_and_nan_is_the_zero_point():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, np.nan, 1e9, -1e9], np.float32)
    q = ir.evaluate("quantize", [x, np.float32(1.0), np.int32(3)], {"dtype": "i8"})
    np.testing.assert_array_equal(q, np.array([3, 5, 5, 3, 1, 3, 127, -128], np.int8))


@pytest.mark.parametrize("operands, attrs, message", [
    ((TensorType((4,), DType.i32), TensorType((), DType.f32), TensorType((), DType.i32)), {}, "f32 operand"),
    ((TensorType((4,), DType.f32), TensorType((), DType.i32), TensorType((), DType.i32)), {}, "f32 scale"),
    ((TensorType((4,), DType.f32), TensorType((3,), DType.f32), TensorType((), DType.i32)), {}, "broadcast"),
    ((TensorType((4,), DType.f32), TensorType((2, 4), DType.f32), TensorType((), DType.i32)), {}, "widen"),
    ((TensorType((4,), DType.f32), TensorType((), DType.f32), TensorType((), DType.i32)), {"dtype": "i32"}, "i8 or u8"),
])
def test_bad_quantize_operands_are_refused_by_name(operands, attrs, message):
    with pytest.raises(OpError, match=message):
        ir.infer_type("quantize", list(operands), attrs)


@st.composite
def integer_matmuls(draw):
    """(a, b, zero points) for matmul_integer: i8/u8 operands, batch axes on a, prime and tiny sizes."""
    sizes = st.integers(1, 40) | st.sampled_from([1, 2, 3, 7, 13, 31, 67])
    lead = draw(st.sampled_from([(), (2,), (3, 1)]))
    m, k, n = draw(sizes), draw(st.integers(1, 300)), draw(sizes)
    a_dtype, b_dtype = draw(st.sampled_from(["int8", "uint8"])), draw(st.sampled_from(["int8", "uint8"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def values(dtype, shape):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, shape).astype(dtype)

    zero_points = [np.int32(draw(st.sampled_from([0, 1, -128, 127, 255, -7]))) for _ in range(draw(st.integers(0, 2)))]
    return values(a_dtype, (*lead, m, k)), values(b_dtype, (k, n)), zero_points


def check_integer_matmul(case, target: str) -> None:
    a, b, zero_points = case
    graph, inputs = single_op_graph("matmul_integer", [a, b, *zero_points], {}, constants=(1, 2, 3))
    (actual,) = compile_and_run(graph, *inputs, target=target)
    expected = ir.interpret(graph, *inputs)
    independent = (a.astype(np.int64) - (int(zero_points[0]) if zero_points else 0)) @ \
        (b.astype(np.int64) - (int(zero_points[1]) if len(zero_points) > 1 else 0))
    np.testing.assert_array_equal(expected, independent.astype(np.int32))
    assert actual.dtype == np.int32
    np.testing.assert_array_equal(actual, expected)  # integers: exactly


@given(integer_matmuls())
def test_integer_matmul_is_exact_on_the_host(case):
    check_integer_matmul(case, "host")


@settings(max_examples=min(8, settings.default.max_examples))
@given(integer_matmuls())
def test_integer_matmul_is_exact_on_armv8(case):
    check_integer_matmul(case, "armv8")


def test_integer_matmul_refuses_float_operands_and_vector_zero_points():
    with pytest.raises(OpError, match="i8 or u8"):
        ir.infer_type("matmul_integer", [TensorType((2, 3), DType.f32), TensorType((3, 4), DType.i8)], {})
    with pytest.raises(OpError, match="i32 scalar"):
        ir.infer_type("matmul_integer", [TensorType((2, 3), DType.u8), TensorType((3, 4), DType.i8),
                                         TensorType((3,), DType.i32)], {})


def test_integer_matmul_is_exact_in_float64_and_falls_back_to_int64(monkeypatch):
    """The int8 references multiply through float64 BLAS: the same integers as numpy's int64 matmul for
    8-bit operands at the extremes (an int8 weight's -128 too), its columns a block at a time, and int64
    itself where float64 could round (sums above 2^53)."""
    from tensorforge.ir import ops_quant
    from tensorforge.ir.ops_quant import integer_matmul

    rng = np.random.default_rng(3)
    a = rng.choice([-255, 255, 254, -1, 0], (2, 17, 4099)).astype(np.int64)  # (x - zx) of u8 codes
    b = rng.choice([-128, 127, 1], (4099, 33)).astype(np.int8)
    expected = np.matmul(a, b.astype(np.int64))
    np.testing.assert_array_equal(integer_matmul(a, b), expected)
    monkeypatch.setattr(ops_quant, "FLOAT64_BLOCK", 4099 * 5)  # blocks of 5 columns, the last of 3
    np.testing.assert_array_equal(integer_matmul(a, b), expected)
    large = np.array([[2**26 + 1, 2**26 + 1, 1]], np.int64)  # an odd sum above 2^53: float64 would round it
    expected = 2 * (2**26 + 1) ** 2 + 1
    assert float(expected) != expected and integer_matmul(large, large.T)[0, 0] == expected
