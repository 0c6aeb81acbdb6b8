"""The op references against independent formulas, and type inference errors that name the problem."""

import math

import numpy as np
import pytest

from tensorforge import ir
from tensorforge.ir import DType, OpError, TensorType, evaluate

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_every_op_has_reference_and_type_inference():
    assert {"add", "matmul", "conv2d", "batch_norm", "cast", "slice", "gelu"} <= set(ir.OPS)
    for opdef in ir.OPS.values():
        assert callable(opdef.reference) and callable(opdef.infer)


def test_sigmoid_is_stable_and_correct():
    x = np.array([-1000, -20, -1, 0, 1, 20, 1000], dtype=np.float32)
    got = evaluate("sigmoid", [x], {})
    expected = np.array([1 / (1 + math.exp(-v)) if v > -700 else 0.0 for v in x.astype(float)])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-30)
    assert got.dtype == np.float32


@pytest.mark.parametrize("approximation", ["tanh", "sigmoid", "exact"])
def test_gelu_variants_are_close_to_exact_formula(approximation):
    x = np.linspace(-5, 5, 101, dtype=np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(float)])
    tolerance = {"tanh": 1e-3, "sigmoid": 3e-2, "exact": 1e-6}[approximation]
    np.testing.assert_allclose(evaluate("gelu", [x], {"approximation": approximation}), exact, atol=tolerance)


def test_cast_saturates_and_maps_nan_to_zero():
    x = np.array([np.nan, -1e10, -3.7, 3.7, 1e10, np.inf], dtype=np.float32)
    assert evaluate("cast", [x], {"dtype": "i8"}).tolist() == [0, -128, -3, 3, 127, 127]
    assert evaluate("cast", [np.array([300, -1], np.int32)], {"dtype": DType.u8}).tolist() == [44, 255]


def test_cast_saturates_at_the_top_of_wide_int_ranges():
    """float32(2**31 - 1) rounds to 2**31: the clip must not wrap to the minimum."""
    x = np.array([2.0**31, 2.0**40, -2.0**40, 2.0**63, np.inf], dtype=np.float32)
    assert evaluate("cast", [x], {"dtype": "i32"}).tolist() == [2**31 - 1, 2**31 - 1, -2**31, 2**31 - 1, 2**31 - 1]
    assert evaluate("cast", [x], {"dtype": "i64"}).tolist()[3:] == [2**63 - 1, 2**63 - 1]


def test_zero_dimensional_values_keep_their_shape():
    scalar = np.array(2.5, np.float32)
    assert evaluate("transpose", [scalar], {"perm": ()}).shape == ()
    assert ir.interpret(_identity_graph(), scalar).shape == ()


def _identity_graph():
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((), DType.f32))
    graph.outputs = [graph.call("relu", [x])]
    return graph


def test_conv2d_matches_direct_loops():
    x, w, b = rand(2, 4, 7, 6), rand(6, 2, 3, 2), rand(6)
    attrs = {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 2}
    got = evaluate("conv2d", [x, w, b], attrs)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0))).astype(np.float64)
    out = np.zeros(got.shape)
    for n, o, i, j in np.ndindex(*got.shape):
        g = o // 3
        for c in range(2):
            for p in range(3):
                for q in range(2):
                    out[n, o, i, j] += xp[n, g * 2 + c, i * 2 + p, j + q * 2] * w[o, c, p, q]
        out[n, o, i, j] += b[o]
    np.testing.assert_allclose(got, out, rtol=1e-5, atol=1e-5)


def test_pools_match_direct_loops():
    x = rand(1, 2, 5, 5)
    got_max = evaluate("max_pool2d", [x], {"kernel": 3, "stride": 2, "padding": 1})
    got_avg = evaluate("avg_pool2d", [x], {"kernel": 3, "stride": 2, "padding": 1})
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    for n, c, i, j in np.ndindex(*got_max.shape):
        window = xp[n, c, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
        assert got_max[n, c, i, j] == np.nanmax(window)
        assert got_avg[n, c, i, j] == pytest.approx(np.nansum(window) / 9, rel=1e-5)


def test_batch_norm_and_softmax():
    x, g, b, m, v = rand(2, 3, 4), rand(3), rand(3), rand(3), np.abs(rand(3)) + 0.5
    got = evaluate("batch_norm", [x, g, b, m, v], {"eps": 1e-3})
    expected = (x - m[None, :, None]) / np.sqrt(v[None, :, None] + 1e-3) * g[None, :, None] + b[None, :, None]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    s = evaluate("softmax", [x], {"axis": 1})
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=1e-6)
    assert s.dtype == np.float32


@pytest.mark.parametrize("op, types, attrs, message", [
    ("add", [((2, 3), "f32"), ((4, 3), "f32")], {}, "do not broadcast"),
    ("add", [((2,), "f32"), ((2,), "i32")], {}, "one dtype"),
    ("matmul", [((2, 3), "f32"), ((4, 5), "f32")], {}, "inner dimensions"),
    ("reshape", [((2, 3), "f32")], {"shape": (4, 2)}, "cannot reshape"),
    ("transpose", [((2, 3), "f32")], {"perm": (0, 0)}, "not a permutation"),
    ("conv2d", [((1, 3, 8, 8), "f32"), ((4, 2, 3, 3), "f32")], {}, "do not fit"),
    ("reduce_sum", [((2, 3), "f32")], {"axes": 5}, "out of range"),
    ("relu", [((2,), "f32")], {"alpha": 1}, "no attribute"),
    ("log", [((2,), "i32")], {}, "float"),
    ("linear", [((2, 3), "f32")], {}, "operands"),
])
def test_type_errors_name_the_problem(op, types, attrs, message):
    with pytest.raises(OpError, match=message):
        ir.infer_type(op, [TensorType(s, DType[d]) for s, d in types], attrs)


def test_graph_errors_name_the_value():
    g = ir.Graph()
    x = g.add_input("x", TensorType((2, 3), DType.f32))
    y = g.call("relu", [x])
    g.outputs = [y]
    with pytest.raises(ValueError, match="still used by %"):
        g.erase(x)
    with pytest.raises(TypeError, match="cannot replace"):
        y.replace_all_uses_with(g.constant(np.zeros(3, np.float32)))


def test_erf_matches_math_erf():
    x = np.concatenate([np.linspace(-6, 6, 241), [0.0, -0.0, 1e-8, -1e-8, np.inf, -np.inf]]).astype(np.float32)
    expected = np.array([math.erf(v) for v in x.astype(float)])
    np.testing.assert_allclose(evaluate("erf", [x], {}), expected, rtol=1e-6, atol=1e-30)


def test_clip_keeps_nan_and_saturates_integer_bounds():
    x = np.array([np.nan, -3.0, 0.5, 9.0], np.float32)
    np.testing.assert_array_equal(evaluate("clip", [x], {"min": 0.0, "max": 6.0}), [np.nan, 0.0, 0.5, 6.0])
    assert evaluate("clip", [np.array([0, 7, 200], np.uint8)], {"min": 0.5, "max": 6.5}).tolist() == [1, 6, 6]
    assert evaluate("clip", [np.array([0, 7, 200], np.uint8)], {"max": -1.0}).tolist() == [0, 0, 0]
