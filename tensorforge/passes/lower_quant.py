"""lower-quant: QDQ patterns (quant/insert_quant.py) become integer `qlinear` and `qconv2d` layers.

    %xd = dequantize(%xq, %sx, %zx)                     %y = qlinear(%xq, %wq, %bias_i32, %m, %zx, %zy)
    %wd = dequantize(%wq, %sw, 0)               ->                {dtype=i8, activation="relu"} : i8[64,10]
    %y = linear(%xd, %wd, %b)                           m = sx * sw / sy      bias_i32 = rint(b / (sx * sw))
    %r = relu(%y)
    %q = quantize(%r, %sy, %zy) {dtype=i8}

A result that is quantized again (the next layer's input, possibly through a relu, a max pool and a
flatten, which commute with quantization) stays int8: the qlinear takes the place of that
quantize, and the next layer's dequantize reads its codes, so a chain of quantized layers runs
int8 between layers. Otherwise the qlinear returns f32
(m = sx * sw) to its f32 users. The integer form rounds once, where the QDQ form rounds the f32
sum: codes differ by at most one.

Fires when x's scale and zero point are constant scalars, the weight's codes are an i8 constant
with a zero point of 0 (symmetric; an asymmetric weight, TinyTorch's scheme, stays in QDQ form and
runs in f32 after fold-constants, as TinyTorch itself does), the bias (if any) is a constant and
there is no fused residual; a conv2d also needs groups 1 and a weight scale per output channel
([O, 1, 1, 1]) or per tensor. Runs before fold-constants, which would fold the weight's dequantize.
"""

from __future__ import annotations

import numpy as np

from .. import ir
from .dead_code import eliminate_dead_code
from .registry import register_pass
from .rewrite import carry_layer, derive, derived_name, single_use

F32 = np.float32
INT32 = np.iinfo(np.int32)


def _constant(node: ir.Node) -> np.ndarray | None:
    return node.value if node.op == "constant" else None


def _scalar_parameters(dequantize: ir.Node) -> tuple[float, int] | None:
    scale, zero = (_constant(n) for n in dequantize.inputs[1:])
    if scale is None or zero is None or scale.size != 1 or zero.size != 1:
        return None
    return float(scale.reshape(())), int(zero.reshape(()))


def _weight_parameters(dequantize: ir.Node, op: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(i8 codes, scale per output channel) of a symmetric per-channel (or per-tensor) weight: a
    linear's [in, out] with scales along out, a conv2d's [O, C, kh, kw] with scales along O."""
    codes, scale, zero = (_constant(n) for n in dequantize.inputs)
    rank = 2 if op == "linear" else 4
    if codes is None or scale is None or zero is None or codes.dtype != np.int8 or codes.ndim != rank or np.any(zero):
        return None
    channels = codes.shape[1] if op == "linear" else codes.shape[0]
    if scale.size == 1:
        return codes, np.full(channels, float(scale.reshape(())), np.float64)
    per_channel = ((channels,), (1, channels)) if op == "linear" else ((channels, 1, 1, 1),)
    if scale.shape in per_channel:
        return codes, scale.reshape(channels).astype(np.float64)
    return None


# Ops that commute with a monotonic quantization, q(op(y)) = op(q(y)): the int8 result may take them.
COMMUTING = ("relu", "max_pool2d", "flatten", "reshape")


def _requantized_user(node: ir.Node) -> tuple[ir.Node, bool, list[ir.Node]] | None:
    """(the quantize of node's result, whether a relu lies between, the other ops between) when node's
    value reaches that quantize through a chain of single-use COMMUTING ops (a relu, a max pool, a
    flatten: the CNN's conv -> relu -> pool -> quantize)."""
    relu, between, current = node.attrs.get("activation") == "relu", [], node
    while True:
        if not single_use(current):
            return None
        (current,) = current.users
        if current.op == "quantize":
            break
        if current.op not in COMMUTING:
            return None
        if current.op == "relu":
            relu = True  # relu commutes with the pools and reshapes too: it becomes the clip at zy
        else:
            between.append(current)
    if _scalar_parameters(current) is None:
        return None
    return current, relu, between


def lower_contraction(graph: ir.Graph, node: ir.Node) -> bool:
    """Rewrite one linear or conv2d in QDQ form into qlinear / qconv2d; False if it does not fit."""
    x, weight, *rest = node.inputs
    if (node.dtype is not ir.DType.f32 or node.attrs.get("residual") or node.attrs.get("groups", 1) != 1
            or x.op != "dequantize" or weight.op != "dequantize"
            or x.inputs[0].dtype not in (ir.DType.i8, ir.DType.u8)):
        return False
    activation, weights = _scalar_parameters(x), _weight_parameters(weight, node.op)
    channels = node.shape[-1] if node.op == "linear" else node.shape[1]
    bias = _constant(rest[0]) if rest else np.zeros(channels, F32)
    if activation is None or weights is None or bias is None:
        return False
    (x_scale, x_zero), (codes, w_scale) = activation, weights
    accumulator_scale = x_scale * w_scale  # of one unit of the int32 accumulator, per column
    bias_codes = np.clip(np.rint(bias.astype(np.float64) / accumulator_scale), INT32.min, INT32.max).astype(np.int32)
    requantized, between = _requantized_user(node), []
    if requantized is not None:
        quantize, relu, between = requantized
        y_scale, y_zero = _scalar_parameters(quantize)
        multiplier, dtype, replaced = accumulator_scale / y_scale, quantize.attrs["dtype"], quantize
    else:
        relu = node.attrs.get("activation") == "relu"
        multiplier, dtype, y_zero, replaced = accumulator_scale, ir.DType.f32, 0, node
    with graph.inserting_before(node), graph.recording_created() as created:
        operands = [x.inputs[0], graph.constant(codes, derived_name(weight, "codes")),
                    graph.constant(bias_codes, derived_name(node, "bias_i32")),
                    graph.constant(multiplier.astype(F32), derived_name(node, "multiplier")),
                    x.inputs[2] if x.inputs[2].shape == () else graph.constant(np.int32(x_zero)),
                    graph.constant(np.int32(y_zero), derived_name(node, "y_zero_point"))]
        attrs = {"dtype": dtype, "activation": "relu" if relu else None}
        if node.op == "conv2d":
            attrs.update({key: node.attrs[key] for key in ("stride", "padding", "dilation")})
        lowered = graph.call("qlinear" if node.op == "linear" else "qconv2d", operands, attrs,
                             name=derived_name(node, "int8"))
        for op in between:  # the pools and reshapes, now on the codes
            lowered = graph.call(op.op, [lowered], dict(op.attrs), name=derived_name(op, "int8"))
    for made in created:  # the int8 weights, bias, multiplier, and the layer before its pools: provenance
        if made is not lowered:
            derive(made, node, *node.inputs, replaced)
    carry_layer(lowered, [node])
    replaced.replace_all_uses_with(lowered)
    return True


@register_pass("lower-quant", opt_level=1,
               description="fold quantize/dequantize around linear/conv2d into int8 qlinear/qconv2d",
               before={"fold-constants": "fold-constants would fold a weight's dequantize back into f32"})
def lower_quant(graph: ir.Graph, ctx=None) -> ir.Graph:
    changed = False
    for node in list(graph.nodes):
        if node.op in ("linear", "conv2d"):
            changed |= lower_contraction(graph, node)
    if changed:  # the f32 linears, relus, quantizes and weight dequantizes nobody reads any more
        eliminate_dead_code(graph)
    return graph
