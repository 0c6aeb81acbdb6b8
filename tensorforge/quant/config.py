"""QuantConfig: what tf.compile(quantize=...), tf.quantize and tf.compile_generator(quantize=...) do.

    tf.QuantConfig()                                      # = "int8": static, percentile, w per channel
    tf.QuantConfig(method="entropy", per_channel=False)   # calibration by KL divergence, w per tensor
    tf.QuantConfig(dynamic=True)                          # x's range at run time: no calibration set

    %0 = linear(%x, %w, %b) : f32[2,4]
      static  ->  %x_q = quantize(%x, %x_scale, %x_zero_point) {dtype=i8} : i8[2,8]
                  %x_dq = dequantize(%x_q, %x_scale, %x_zero_point) : f32[2,8]
                  %w_dq = dequantize(%w_int8, %w_scale, %w_zero_point) : f32[8,4]
                  %q_0 = linear(%x_dq, %w_dq, %b) : f32[2,4]
      dynamic ->  %layers_0_dynamic = dynamic_qlinear(%x, %w_int8, %w_scale, %b) : f32[2,4]

`method` calibrates the activations (quant/calibration.py; "tinytorch" is TinyTorch's formula, for
the weights too); `sqnr_budget` is the guard's threshold (quant/quantize.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .calibration import METHODS

QUANT_METHODS = (*METHODS, "tinytorch")
DEFAULT_SQNR_BUDGET = 30.0
DEFAULT_CHANNEL_BUDGET = 20.0


@dataclass(frozen=True)
class QuantConfig:
    """What tf.compile(quantize=...) does; `quantize="int8"` means QuantConfig()."""

    method: str = "percentile"  # calibration of activations: minmax, percentile, entropy, tinytorch
    percentile: float = 99.99
    per_channel: bool = True  # weights: one scale per output column, else one per tensor
    activation_dtype: str = "i8"  # i8 or u8
    sqnr_budget: float | None = DEFAULT_SQNR_BUDGET  # dB; layers below stay f32; None quantizes all
    channel_budget: float | None = DEFAULT_CHANNEL_BUDGET  # dB; a layer whose worst output channel is below stays f32
    dynamic: bool = False  # x's scale and zero point computed at run time (no calibration needed)
    verbose: bool = False  # a progress bar over the calibration samples

    def __post_init__(self):
        if self.method not in QUANT_METHODS:
            raise ValueError(f"QuantConfig.method must be one of {QUANT_METHODS}, got {self.method!r}")
        if self.activation_dtype not in ("i8", "u8"):
            raise ValueError(f"QuantConfig.activation_dtype must be 'i8' or 'u8', got {self.activation_dtype!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"QuantConfig.percentile must be in (50, 100], got {self.percentile}")
        for name in ("sqnr_budget", "channel_budget"):
            budget = getattr(self, name)
            if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                       or not math.isfinite(budget)):
                raise ValueError(f"QuantConfig.{name} must be a finite number of dB (or None: no such guard), "
                                 f"got {budget!r}")

    def keeps_fp32(self, sqnr: float, worst_channel: float) -> str | None:
        """The guard's decision for a layer measured at `sqnr` dB (its whole output) and `worst_channel` dB
        (its worst output channel): why it stays f32 ("fp32 (below 30 dB)"), or None to quantize it.
        sqnr_budget=None quantizes every layer."""
        if self.sqnr_budget is None:
            return None
        if sqnr < self.sqnr_budget:
            return f"fp32 (below {self.sqnr_budget:g} dB)"
        if self.channel_budget is not None and worst_channel < self.channel_budget:
            return f"fp32 (a channel below {self.channel_budget:g} dB)"
        return None

    @classmethod
    def of(cls, value) -> QuantConfig:
        if isinstance(value, QuantConfig):
            return value
        if value == "int8":
            return cls()
        raise ValueError(f"quantize must be 'int8' or a tf.QuantConfig, got {value!r}")

    @property
    def scheme(self) -> str:
        if self.dynamic:
            return "dynamic i8, w " + ("per-channel" if self.per_channel else "per-tensor")
        if self.method == "tinytorch":
            return "tinytorch (asym. per-tensor)"
        weights = "per-channel" if self.per_channel else "per-tensor"
        return f"{self.activation_dtype} {self.method}, w {weights}"
