"""QuantReport: what quantization did, per layer, behind cm.quant_report() and gen.quant_report().

    print(tf.quantize(tf.trace(models.digits_mlp(), x), X_cal)[1])      (512 calibration samples)
    int8 quantization: i8 percentile, w per-channel; SQNR budget 30 dB; 512 calibration samples
    layer                        scheme                          SQNR dB  decision
    layers.0                     i8 percentile, w per-channel       36.0  int8
    layers.2                     i8 percentile, w per-channel       42.4  int8
    layers.4                     i8 percentile, w per-channel       42.8  int8
    weights of these layers: 68096 bytes f32 -> 17024 bytes (4.0x smaller)

A layer below the budget says "fp32 (below 30 dB)"; with the tinytorch method, "int8 weights, f32 compute".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import QuantConfig


@dataclass
class QuantReport:
    """One row per layer (linear, conv2d): (layer, scheme, SQNR in dB, decision), and the weight bytes."""

    config: QuantConfig
    rows: list[tuple[str, str, float, str]] = field(default_factory=list)
    weight_bytes: tuple[int, int] = (0, 0)  # (f32, after quantization) of the layers considered
    calibration_samples: int = 0

    @property
    def quantized(self) -> list[str]:
        return [row[0] for row in self.rows if row[3] == "int8"]

    def __str__(self) -> str:
        budget = "none" if self.config.sqnr_budget is None else f"{self.config.sqnr_budget:g} dB"
        before, after = self.weight_bytes
        lines = [f"int8 quantization: {self.config.scheme}; SQNR budget {budget}; "
                 f"{self.calibration_samples} calibration samples",
                 f"{'layer':<28} {'scheme':<30} {'SQNR dB':>8}  decision"]
        lines += [f"{name:<28} {scheme:<30} {'-' if np.isnan(sqnr) else f'{sqnr:.1f}':>8}  {decision}"
                  for name, scheme, sqnr, decision in self.rows]  # '-': not measured (no calibration)
        if before:
            lines.append(f"weights of these layers: {before} bytes f32 -> {after} bytes ({before / max(after, 1):.1f}x "
                         f"smaller)")
        return "\n".join(lines)
