"""Converters of ONNX's quantization ops onto the IR's quantize, dequantize and matmul_integer.

    QuantizeLinear(x, s, zp: uint8)       ->  quantize(x, s, zp as i32) {dtype=u8}
    DequantizeLinear(q, s, zp) {axis=0}   ->  dequantize(q, s[C,1,1,1], zp[C,1,1,1])   (per channel)
    MatMulInteger(a, b, za, zb)           ->  matmul_integer(a, b, za, zb)
    DynamicQuantizeLinear(x)              ->  the scale, zero point and codes of x over [min(x, 0), max(x, 0)]

A QDQ model's pairs around MatMul and Conv (DequantizeLinear -> MatMul/Conv -> QuantizeLinear) are
imported as they are; the lower-quant pass turns them into the int8 layers (qlinear, qconv2d).
"""

from __future__ import annotations

import numpy as np

from ... import ir
from .importer import NodeContext, converter
from .inputs import element_dtype


def _parameter(ctx: NodeContext, index: int, x: ir.Node, dtype, what: str, default=None) -> ir.Node:
    """A scale or zero point as the IR op takes it: shaped to broadcast on `axis`, zero points as i32."""
    node = ctx.optional(index)
    if node is None:
        return ctx.builder.constant(np.asarray(default, dtype))
    if ctx.attr("block_size", 0):
        ctx.unsupported("blocked quantization (block_size) is not supported", "block_size")
    if node.type.rank == 1 and node.shape[0] != 1 or node.type.rank > 1:
        axis = ctx.attr("axis", 1) % x.type.rank
        if node.type.rank != 1 or node.shape[0] != x.shape[axis]:
            ctx.unsupported(f"the {what} {node.type} does not match axis {axis} of {x.type}", "axis")
        shape = tuple(node.shape[0] if i == axis else 1 for i in range(x.type.rank))
        node = ctx.call("reshape", [node], {"shape": shape}, last=False)
    elif node.type.rank == 1:
        node = ctx.call("reshape", [node], {"shape": ()}, last=False)
    if node.dtype != ir.DType.from_numpy(np.dtype(dtype)):
        node = ctx.call("cast", [node], {"dtype": ir.DType.from_numpy(np.dtype(dtype))}, last=False)
    return node


def _code_dtype(ctx: NodeContext) -> ir.DType:
    zero_point = ctx.optional(2)
    dtype = ir.DType.u8 if zero_point is None else zero_point.dtype
    if ctx.has("output_dtype") and ctx.attr("output_dtype"):
        dtype = element_dtype(ctx.attr("output_dtype"), "QuantizeLinear's output_dtype")
    if dtype not in (ir.DType.i8, ir.DType.u8):
        ctx.unsupported(f"codes of type {dtype.name} are not supported (int8 and uint8)")
    return dtype


@converter("QuantizeLinear")
def quantize(ctx: NodeContext):
    x = ctx.input(0)
    dtype = _code_dtype(ctx)
    scale = _parameter(ctx, 1, x, np.float32, "scale")
    zero_point = _parameter(ctx, 2, x, np.int32, "zero point", 0)
    return ctx.call("quantize", [x, scale, zero_point], {"dtype": dtype})


@converter("DequantizeLinear")
def dequantize(ctx: NodeContext):
    q = ctx.input(0)
    if q.dtype not in (ir.DType.i8, ir.DType.u8, ir.DType.i32):
        ctx.unsupported(f"codes of type {q.dtype.name} are not supported (int8, uint8, int32)")
    scale = _parameter(ctx, 1, q, np.float32, "scale")
    zero_point = _parameter(ctx, 2, q, np.int32, "zero point", 0)
    return ctx.call("dequantize", [q, scale, zero_point])


@converter("MatMulInteger")
def matmul_integer(ctx: NodeContext):
    a, b = ctx.input(0), ctx.input(1)
    zero_points = []
    for index, name in ((2, "a"), (3, "b")):
        node = ctx.optional(index)
        if node is None:
            zero_points.append(ctx.builder.constant(np.int32(0)))
            continue
        if node.type.size != 1:
            ctx.unsupported(f"a per-row or per-column zero point of {name} ({node.type}) is not supported")
        node = ctx.call("reshape", [node], {"shape": ()}, last=False)
        zero_points.append(ctx.call("cast", [node], {"dtype": ir.DType.i32}, last=False))
    return ctx.call("matmul_integer", [a, b, *zero_points])


@converter("DynamicQuantizeLinear")
def dynamic_quantize(ctx: NodeContext):
    """uint8 codes of x over [min(x, 0), max(x, 0)]: scale = range / 255, zero point = round(-min / scale)."""
    x = ctx.input(0)
    every = {"axes": tuple(range(x.type.rank)), "keepdims": False}
    zero = ctx.builder.constant(np.float32(0))
    high = ctx.call("maximum", [ctx.call("reduce_max", [x], every, last=False), zero], last=False)
    low = ctx.call("neg", [ctx.call("reduce_max", [ctx.call("neg", [x], last=False)], every, last=False)], last=False)
    low = ctx.call("minimum", [low, zero], last=False)
    scale = ctx.call("div", [ctx.call("sub", [high, low], last=False), ctx.builder.constant(np.float32(255))],
                     last=False)
    shifted = ctx.call("div", [ctx.call("neg", [low], last=False), scale], last=False)
    zero_point = ctx.call("cast", [_round(ctx, shifted)], {"dtype": ir.DType.i32}, last=False)  # in [0, 255]
    codes = ctx.call("quantize", [x, scale, zero_point], {"dtype": ir.DType.u8}, last=False)
    return [codes, scale, ctx.call("cast", [zero_point], {"dtype": ir.DType.u8}, last=False)]


def _round(ctx: NodeContext, value: ir.Node) -> ir.Node:
    """Round half to even, as quantize does: quantize by scale 1 into i32 range is not available, so
    dequantize(quantize(v, 1, 0)) through u8 (v is in [0, 255] here)."""
    one = ctx.builder.constant(np.float32(1))
    zero = ctx.builder.constant(np.int32(0))
    clipped = ctx.call("clip", [value], {"min": 0, "max": 255}, last=False)
    codes = ctx.call("quantize", [clipped, one, zero], {"dtype": ir.DType.u8}, last=False)
    return ctx.call("dequantize", [codes, one, zero], last=False)
