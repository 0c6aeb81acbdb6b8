"""insert-quant: quantize/dequantize pairs around the operands of chosen linear and conv2d layers (QDQ form).

    %y = linear(%x, %w, %b) : f32[64,10]

    ->  %xq = quantize(%x, %sx, %zx) {dtype=i8} : i8[64,128]        sx, zx: calibration (activations)
        %xd = dequantize(%xq, %sx, %zx) : f32[64,128]
        %wd = dequantize(%wq, %sw, %zw) : f32[128,10]                wq: the weight in int8, a constant
        %y = linear(%xd, %wd, %b) : f32[64,10]

The QDQ graph means, in f32, exactly what the int8 model computes up to rounding, and the reference
interpreter runs it as it is. lower-quant (passes/lower_quant.py) then folds each pattern into an
integer `qlinear` (or `qconv2d`). Which layers and which parameters is decided by quant/quantize.py
(calibration, the SQNR guard); this pass only rewrites. Layers sharing an input share its pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ir
from ..ir.ops_quant import quantize as quantize_reference
from ..passes.rewrite import derived_name, replace_node
from .calibration import QuantParams


@dataclass(frozen=True)
class LayerQuant:
    """How one linear layer is quantized: its input's and its weight's parameters."""

    activation: QuantParams
    weight: QuantParams


def quantized_weight(weight: np.ndarray, params: QuantParams) -> np.ndarray:
    """The weight's int8 codes (round half to even, saturating), as the quantize op computes them."""
    return quantize_reference(np.asarray(weight, np.float32), params.scale, params.zero_point, dtype=params.dtype)


def insert_quant(graph: ir.Graph, plan: dict[str, LayerQuant]) -> ir.Graph:
    """Rewrite, in place, every linear or conv2d named in `plan` (constant weight) into the QDQ form above."""
    pairs: dict[tuple, ir.Node] = {}
    for node in list(graph.nodes):
        layer = plan.get(node.name)
        if layer is None:
            continue
        if node.op not in ("linear", "conv2d") or node.inputs[1].op != "constant":
            raise ValueError(f"insert-quant: %{node.name} is a {node.op} with a {node.inputs[1].op} weight; "
                             f"only linear and conv2d layers with a constant weight are quantized")
        x, weight, *rest = node.inputs
        params = layer.activation
        key = (x, params.dtype, float(params.scale), int(params.zero_point))
        with graph.inserting_before(node):
            if key not in pairs:
                scale = graph.constant(params.scale, derived_name(x, "scale"))
                zero = graph.constant(params.zero_point, derived_name(x, "zero_point"))
                codes = graph.call("quantize", [x, scale, zero], {"dtype": params.dtype}, name=derived_name(x, "q"))
                pairs[key] = graph.call("dequantize", [codes, scale, zero], name=derived_name(x, "dq"))
            w = layer.weight
            codes = graph.constant(quantized_weight(weight.value, w), derived_name(weight, "int8"))
            restored = graph.call("dequantize", [codes, graph.constant(w.scale, derived_name(weight, "scale")),
                                                 graph.constant(w.zero_point, derived_name(weight, "zero_point"))],
                                  name=derived_name(weight, "dq"))
            replacement = graph.call(node.op, [pairs[key], restored, *rest], dict(node.attrs),
                                     name=derived_name(node, "q"))
        replace_node(node, replacement, [weight])  # the f32 weight too, unless something else reads it
    return graph
