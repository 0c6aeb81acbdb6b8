"""Calibration (quant/calibration.py): the parameters each method gives, checked against what the
quantize op then does with them, and TinyTorch's formula reproduced."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.ir import DType
from tensorforge.quant.calibration import activation_params, tinytorch_params, weight_params


def quantize(x, params):
    return ir.evaluate("quantize", [np.asarray(x, np.float32), params.scale, params.zero_point],
                       {"dtype": params.dtype})


@given(st.integers(0, 2**16), st.sampled_from([None, 0, 1]))
def test_symmetric_weights_use_plus_minus_127_per_channel(seed, axis):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((6, 5)) * rng.uniform(0.01, 3, (1, 5))).astype(np.float32)
    w[:, 2] = 0.0  # an all-zero channel gets scale 1, not a division by zero
    params = weight_params(w, axis=axis)
    assert np.all(params.zero_point == 0) and np.all(params.scale > 0)
    q = quantize(w, params)
    assert q.min() >= -127
    peaks = np.abs(q).max(axis=None if axis is None else 1 - axis)
    if axis == 1:
        assert np.all((peaks == 127) | (np.abs(w).max(axis=0) == 0))
    elif axis is None:
        assert peaks == 127


@pytest.mark.parametrize("dtype", [DType.i8, DType.u8])
@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_activation_ranges_hold_zero_exactly_and_cover_the_data(method, dtype):
    rng = np.random.default_rng(1)
    samples = np.maximum(rng.standard_normal(50_000), 0).astype(np.float32) * 3  # a ReLU output
    params = activation_params(samples, method, dtype=dtype)
    assert quantize(np.float32(0.0), params) == params.zero_point  # 0.0 is exact
    q = quantize(samples, params)
    low, high = (-128, 127) if dtype is DType.i8 else (0, 255)
    saturated = np.mean(q == high)
    assert saturated <= (1e-3 if method == "percentile" else 0.05)  # only outliers clip (entropy: a tail)
    if method == "minmax":
        assert saturated <= 1 / samples.size + 1e-9 and q.min() >= low


def test_percentile_ignores_an_outlier_that_minmax_follows():
    rng = np.random.default_rng(2)
    samples = rng.standard_normal(100_000).astype(np.float32)
    samples[0] = 1000.0
    wide, narrow = activation_params(samples, "minmax"), activation_params(samples, "percentile")
    assert float(wide.scale) > 50 * float(narrow.scale)


def test_entropy_picks_a_threshold_below_a_long_tail():
    rng = np.random.default_rng(3)
    samples = rng.laplace(0, 1, 200_000).astype(np.float32)
    threshold = float(activation_params(samples, "entropy").scale) * 127
    assert 2.0 < threshold < np.abs(samples).max()


@given(st.integers(0, 2**16))
def test_tinytorch_formula_is_reproduced_exactly(seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(50) * rng.uniform(0.1, 5) + rng.uniform(-3, 3)).astype(np.float32)
    params = tinytorch_params(x)
    low, high = float(x.min()), float(x.max())
    scale = np.float32((high - low) / 255)  # the formula written out again, independently
    assert params.scale == scale
    assert params.zero_point == int(np.clip(round(-128 - low / scale), -128, 127))


def test_tinytorch_constant_tensor_and_bad_methods():
    params = tinytorch_params(np.full(4, 2.5, np.float32))
    assert params.scale == 1.0 and params.zero_point == 0
    with pytest.raises(ValueError, match="calibration method"):
        activation_params(np.ones(3, np.float32), "median")
    with pytest.raises(ValueError, match="i8 or u8"):
        activation_params(np.ones(3, np.float32), dtype=DType.i32)


def test_entropy_ignores_the_exact_zeros_of_a_relu():
    """Half of relu(N(0, 1)) is exactly 0: exact in any grid, they must not pull the clip down (they did: 2.06)."""
    rng = np.random.default_rng(0)
    normal = rng.standard_normal(200_000).astype(np.float32)
    relu = np.maximum(normal, np.float32(0))
    def top(samples):  # the largest value the i8 grid represents: (127 - zero point) * scale
        params = activation_params(samples, "entropy")
        return (127 - int(params.zero_point)) * float(params.scale)

    relu_threshold, normal_threshold = top(relu), top(normal)
    assert 3.0 < relu_threshold < 5.0
    assert abs(relu_threshold - normal_threshold) < 0.1 * normal_threshold  # the same shape above 0


def test_entropy_keeps_the_whole_range_of_a_few_discrete_levels():
    """The digits' pixels take 17 levels in [0, 1]: KL over spikes clipped them at 0.69 and the trained MLP's
    first layer fell back to f32 (13.5 dB). A handful of levels keeps its range; a continuous tail still clips."""
    rng = np.random.default_rng(0)
    pixels = (rng.integers(0, 17, size=50_000) / 16).astype(np.float32)
    params = activation_params(pixels, "entropy")
    assert (127 - int(params.zero_point)) * float(params.scale) == pytest.approx(1.0, rel=1e-6)
    tail = np.concatenate([pixels, rng.standard_normal(50_000).astype(np.float32) ** 3])  # not discrete
    clipped = activation_params(tail, "entropy")
    assert float(clipped.scale) * 127 < 0.5 * float(np.abs(tail).max())


def test_entropy_keeps_the_trained_digits_mlp_int8():
    import sys
    from pathlib import Path

    import tensorforge as tf

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "digits"))
    from data import load_split
    from evaluate import trained

    x_train, _, x_test, _ = load_split("mlp")
    _, report = tf.quantize(tf.trace(trained("mlp"), x_test), x_train, tf.QuantConfig(method="entropy"))
    assert report.quantized == ["layers.0", "layers.2", "layers.4"], str(report)
    assert report.weight_bytes[0] == 4 * report.weight_bytes[1]
