"""QuantReport: what quantization did, per layer, behind cm.quant_report() and gen.quant_report().

    print(tf.quantize(tf.trace(models.digits_mlp(), x), X_cal)[1])      (512 calibration samples)
    int8 quantization: i8 percentile, w per-channel; SQNR budget 30 dB (20 dB per channel); 512 calibration samples
    layer                        scheme                          SQNR dB  worst ch.  decision
    layers.0                     i8 percentile, w per-channel       36.0       31.9  int8
    ...
    weights of these layers: 68096 bytes f32 -> 17024 bytes (4.0x smaller)

A layer below the budget says "fp32 (below 30 dB)", one whose worst output channel is below the channel
budget "fp32 (a channel below 20 dB)"; with the tinytorch method, "int8 weights, f32 compute".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import QuantConfig


@dataclass
class QuantReport:
    """One row per layer (linear, conv2d): (layer, scheme, SQNR in dB, decision, SQNR in dB of its worst
    output channel), and the weight bytes."""

    config: QuantConfig
    rows: list[tuple[str, str, float, str, float]] = field(default_factory=list)
    weight_bytes: tuple[int, int] = (0, 0)  # (f32, after quantization) of the layers considered
    calibration_samples: int = 0

    @property
    def quantized(self) -> list[str]:
        return [row[0] for row in self.rows if row[3] == "int8"]

    def __str__(self) -> str:
        config = self.config
        budget = "none" if config.sqnr_budget is None else f"{config.sqnr_budget:g} dB" + (
            "" if config.channel_budget is None else f" ({config.channel_budget:g} dB per channel)")
        before, after = self.weight_bytes
        lines = [f"int8 quantization: {self.config.scheme}; SQNR budget {budget}; "
                 f"{self.calibration_samples} calibration samples",
                 f"{'layer':<28} {'scheme':<30} {'SQNR dB':>8}  {'worst ch.':>9}  decision"]
        lines += [f"{name:<28} {scheme:<30} {_db(sqnr):>8}  {_db(worst):>9}  {decision}"
                  for name, scheme, sqnr, decision, worst in self.rows]
        if before:
            lines.append(f"weights of these layers: {before} bytes f32 -> {after} bytes ({before / max(after, 1):.1f}x "
                         f"smaller)")
        return "\n".join(lines)


def _db(value: float) -> str:
    """A figure in dB for the table; '-' when not measured (no calibration)."""
    return "-" if np.isnan(value) else f"{value:.1f}"
