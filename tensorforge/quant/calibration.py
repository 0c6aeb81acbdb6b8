"""Calibration: scales and zero points for the quantize / dequantize ops (ir/ops_quant.py).

    weight_params(w, axis=1)                          # symmetric int8 per output channel (zero point 0)
    activation_params(samples, "percentile")          # from calibration activations: min-max,
    activation_params(samples, "entropy")             #   percentile (99.99 by default), entropy (KL)
    tinytorch_params(x)                               # TinyTorch's quantize_int8 formula, exactly

Every function returns QuantParams(scale f32, zero_point i32, dtype) shaped to broadcast against
the tensor (per channel: the channel axis kept, the others 1). Activation ranges always include 0,
so that 0.0 (padding, ReLU's output) is exactly representable; a range of width 0 gets scale 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import DType

METHODS = ("minmax", "percentile", "entropy")
LIMITS = {DType.i8: (-128, 127), DType.u8: (0, 255)}


@dataclass(frozen=True)
class QuantParams:
    """The parameters of one quantized tensor: q = clip(round(x / scale) + zero_point)."""

    scale: np.ndarray  # float32, broadcastable to the tensor
    zero_point: np.ndarray  # int32, the same shape
    dtype: DType


def _params(scale: np.ndarray, zero_point: np.ndarray, dtype: DType) -> QuantParams:
    scale = np.asarray(scale, np.float32)
    scale = np.where((scale > 0) & np.isfinite(scale), scale, np.float32(1.0)).astype(np.float32)
    return QuantParams(scale, np.asarray(zero_point, np.int32), dtype)


def weight_params(weight: np.ndarray, axis: int | None = None, dtype: DType = DType.i8) -> QuantParams:
    """Symmetric parameters: scale = max |w| / 127 per channel along `axis` (per tensor if None), zero
    point 0, so that -127..127 is used and the integer GEMM needs no zero-point correction for w."""
    if dtype is not DType.i8:
        raise ValueError(f"weights are quantized to i8 (symmetric), not {dtype.name}")
    weight = np.asarray(weight, np.float32)
    if axis is None:
        peak = np.abs(weight).max(initial=0.0)
    else:
        axis = axis % weight.ndim
        others = tuple(a for a in range(weight.ndim) if a != axis)
        peak = np.abs(weight).max(axis=others, keepdims=True, initial=0.0)
    return _params(peak / np.float32(127), np.zeros(np.shape(peak), np.int32), dtype)


def _affine(low: float, high: float, dtype: DType) -> QuantParams:
    """Asymmetric parameters mapping [low, high] (widened to include 0) onto the dtype's range."""
    qmin, qmax = LIMITS[dtype]
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high - low <= 0:
        return _params(np.float32(1.0), np.int32(0), dtype)  # all zeros: 0 is in every range
    scale = np.float32((high - low) / (qmax - qmin))
    zero_point = int(np.clip(np.round(qmin - low / scale), qmin, qmax))
    return _params(scale, np.int32(zero_point), dtype)


def _entropy_threshold(values: np.ndarray, bins: int = 2048, levels: int = 128) -> float:
    """The |x| clipping threshold whose quantized distribution (levels bins) is closest to the
    original in KL divergence (TensorRT's calibration), over the nonzero values: exact zeros (half a
    ReLU's outputs, the blank pixels of an image) are exact in any int8 grid, and counted in the first
    bin they pulled the threshold far too low (relu(N(0, 1)): 2.06 with them, 4.1 without).

    Values of a few discrete levels (the digits' pixels: 16 nonzero levels) keep their whole range:
    each level is a spike in the histogram, and the divergence then rewards thresholds that line
    the spikes up with the quantized bins' edges, not ones that keep them (the digits' clipped at
    0.69 of 1.0, and their first layer fell back to f32 at 12.5 dB). With no more distinct
    magnitudes than the grid has levels, clipping buys no resolution worth the values it cuts."""
    magnitudes = np.abs(values[np.isfinite(values)])
    magnitudes = magnitudes[magnitudes > 0]
    peak = float(magnitudes.max(initial=0.0))
    if peak == 0.0:
        return 0.0
    if np.unique(magnitudes).size <= levels:
        return peak
    histogram, edges = np.histogram(magnitudes, bins=bins, range=(0.0, peak))
    histogram = histogram.astype(np.float64)
    best, best_divergence = peak, np.inf
    for stop in range(levels, bins + 1, max(1, (bins - levels) // 256)):
        reference = histogram[:stop].copy()
        reference[stop - 1] += histogram[stop:].sum()  # the clipped tail lands in the last bin
        if reference.sum() == 0:
            continue
        groups = np.array_split(np.arange(stop), levels)
        candidate = np.zeros(stop)
        for group in groups:  # each quantization level spreads its mass over its nonzero bins
            mass, nonzero = histogram[group].sum(), histogram[group] > 0
            if nonzero.any():
                candidate[group[nonzero]] = mass / nonzero.sum()
        p, q = reference / reference.sum(), candidate / max(candidate.sum(), 1e-30)
        support = p > 0
        divergence = float(np.sum(p[support] * np.log(p[support] / np.maximum(q[support], 1e-30))))
        if divergence < best_divergence:
            best, best_divergence = float(edges[stop]), divergence
    return best


def activation_params(samples: np.ndarray, method: str = "percentile", percentile: float = 99.99,
                      dtype: DType = DType.i8) -> QuantParams:
    """Per-tensor parameters from calibration values of one activation (any shape, all samples).

    minmax: the observed range; percentile: the range between the (100 - p)th and pth percentiles
    (outliers clip); entropy: a symmetric range at the KL-optimal threshold (zero point 0 for i8,
    or the range [0, threshold] for u8).
    """
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
    if dtype not in LIMITS:
        raise ValueError(f"activations are quantized to i8 or u8, not {dtype.name}")
    values = np.asarray(samples, np.float32).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return _affine(0.0, 0.0, dtype)
    if method == "minmax":
        return _affine(values.min(), values.max(), dtype)
    if method == "percentile":
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        low, high = np.percentile(values, [100.0 - percentile, percentile])
        return _affine(low, high, dtype)
    threshold = _entropy_threshold(values)
    if dtype is DType.u8 or values.min() >= 0:
        return _affine(0.0, threshold, dtype)
    return _params(np.float32(threshold / 127), np.int32(0), dtype)


def tinytorch_params(x: np.ndarray) -> QuantParams:
    """TinyTorch's `quantize_int8` parameters, exactly: per tensor, asymmetric min-max,
    scale = (max - min) / 255, zero_point = round(-128 - min / scale) clipped to [-128, 127];
    a constant tensor gets scale 1, zero point 0 (its formula's own special case)."""
    x = np.asarray(x, np.float32)
    low, high = float(x.min()), float(x.max())
    if high == low:
        return QuantParams(np.float32(1.0), np.int32(0), DType.i8)
    scale = np.float32((high - low) / 255.0)
    zero_point = np.int32(np.clip(np.round(-128.0 - low / scale), -128, 127))
    return QuantParams(scale, zero_point, DType.i8)
