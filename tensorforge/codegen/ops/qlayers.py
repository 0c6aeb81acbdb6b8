"""The int8 layers on the int8 GEMM (gemm/qgemm.py): qlinear, dynamic_qlinear and qconv2d.

    qlinear          x (i8/u8) packed block by block, the GEMM, its requantizing epilogue
    dynamic_qlinear  x's range, scale and zero point, its codes (ops/quant.py: quantize_value), the GEMM
                     into f32 with the dynamic epilogue: * sx * sw, + bias, + the residual, the activation
    qconv2d          per image: the taps of every output pixel gathered into rows (im2col, padded
                     with x's zero point; a loop over channels, kh x kw taps each), the GEMM by the
                     weight as [C*kh*kw, O] into scratch ([pixels, O]), and a transposing copy into
                     the image's [O, pixels]; threads split each image's pixels (whole row panels)

Each also gives build its hooks: the weight packed once (`pack_*_constant`, always: the kernels
read it only in panels), the scratch and the parts for threads.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from ...ir import DType, Node
from ..errors import CodegenError
from ..gemm.gemm import GemmSplit, for_each_part_block
from ..gemm.micro_kernel import load_lanes, store_lanes
from ..gemm.qgemm import QGemm, block_bytes, emit_block, pack_qweight, qgemm_tiling, round64
from ..gemm.requant import Requant, requant_limits
from ..gemm.run_packing import transpose_square
from ..kernel import Kernel
from ..llvm.utils import (
    F32,
    I8,
    I32,
    call_intrinsic,
    element_pointer,
    for_range,
    i64,
    load_element,
    store_element,
)
from ..lowering import FLOAT, INT8, Lowering, PackedConstant, register_lowering
from ..target import Target
from ..threads import parallel
from .quant import fold_ranges, quantize_value, range_with_zero


def _operands(node: Node) -> tuple[int, int, int]:
    """(M, K, N) of a qlinear: every leading axis of x is a row."""
    x, w = node.inputs[0].type, node.inputs[1].type
    return math.prod(x.shape[:-1]), w.shape[0], w.shape[1]


def pack_qlinear_constant(node: Node, index: int, target: Target) -> PackedConstant | None:
    """The weight (operand 1) in panels with its column sums; other operands as they are."""
    if index != 1 or node.inputs[1].op != "constant" or node.type.size == 0:
        return None
    tiling = qgemm_tiling(target)
    weight = node.inputs[1].value
    return PackedConstant(f"qgemm.{tiling.scheme.name}{tiling.columns}", make=lambda: pack_qweight(weight, tiling))


def qlinear_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """The packed block of x's rows (gemm/qgemm.py: block_bytes)."""
    rows, depth, _ = _operands(node)
    return block_bytes(qgemm_tiling(target), rows, depth)


def qlinear_parts(node: Node, target: Target, threads: int) -> int:
    rows, depth, columns = _operands(node)
    if rows * depth * columns == 0:
        return 1
    weight_bytes = depth * columns
    if 2 * rows * depth * columns < parallel.MIN_PARALLEL_FLOPS and weight_bytes < parallel.MIN_PARALLEL_WEIGHT_BYTES:
        return 1
    tiling = qgemm_tiling(target)
    if rows <= tiling.rows:
        threads *= parallel.stream_parts_per_thread(weight_bytes)
    return GemmSplit.of(tiling, (rows, depth, columns), threads).parts


def _require_packed_weight(kernel: Kernel) -> None:
    """The int8 kernels read their weight only in panels packed at compile time: it must be a constant."""
    node = kernel.node
    if 1 not in kernel.packed:
        raise CodegenError(f"cannot compile %{node.name} = {node.op}(...): its weight %{node.inputs[1].name} must be "
                           f"a constant (it is packed at compile time), not a {node.inputs[1].op}")


def emit_qlinear(kernel: Kernel) -> None:
    """qlinear on the int8 GEMM; its weight must be a constant (packed at compile time)."""
    node, builder = kernel.node, kernel.builder
    rows, depth, columns = _operands(node)
    if node.type.size == 0:
        return
    _require_packed_weight(kernel)
    tiling = qgemm_tiling(kernel.target)
    x_dtype = node.inputs[0].dtype
    dtype, relu = node.dtype, node.attrs["activation"] == "relu"
    requant = Requant(dtype, node.attrs["activation"], node.inputs[3].shape != ())
    x, _, bias, multiplier, x_zero, y_zero = kernel.inputs
    zx = load_element(builder, x_zero, 0, I32, "zx")
    zy = load_element(builder, y_zero, 0, I32, "zy")
    low, high, zero = requant_limits(builder, dtype, relu, zy)
    q = QGemm(x, x_dtype, kernel.inputs[1], bias, multiplier, zx, zero, low, high, kernel.output,
              kernel.scratch)
    shape = (rows, depth, columns)
    for_each_part_block(builder, tiling, shape, kernel.part, kernel.parts,
                        lambda first_row, first_column, row_count, column_count: emit_block(
                            builder, tiling, q, requant, shape, first_row, first_column, row_count, column_count))


register_lowering("qlinear", Lowering(emit_qlinear, INT8, qlinear_scratch_bytes, pack_qlinear_constant, qlinear_parts,
                                      always_pack=True))


# --- dynamic quantization ---------------------------------------------------------------------

def dynamic_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """The packed block of x, then x's codes [M, K]."""
    rows, depth, columns = _operands(node)
    return qlinear_scratch_bytes(node, target) + round64(rows * depth)


def emit_dynamic_qlinear(kernel: Kernel) -> None:
    """dynamic_qlinear: x's range, scale and zero point (ops_quant.dynamic_parameters), x's codes, then
    the int8 GEMM whose epilogue (Requant.dynamic) scales by sx * sw, adds the bias and the residual
    (fuse-residual) and applies the activation (relu, a gelu) in registers."""
    node, builder = kernel.node, kernel.builder
    rows, depth, columns = _operands(node)
    if node.type.size == 0:
        return
    _require_packed_weight(kernel)
    tiling = qgemm_tiling(kernel.target)
    x, weight, weight_scale, bias, *extra = kernel.inputs
    skip = extra[:1] if node.attrs["residual"] else []
    codes = element_pointer(builder, kernel.scratch, qlinear_scratch_bytes(node, kernel.target), I8, "codes")
    zero = ir.Constant(F32, 0.0)

    if node.attrs["ranged"]:  # value_range's partial ranges, its last operand
        low, high = fold_ranges(builder, kernel.inputs[-1], node.inputs[-1].shape[1])
    else:
        low, high = range_with_zero(builder, x, rows * depth, kernel.target.vector_width)
    scale = builder.fdiv(builder.fsub(high, low), ir.Constant(F32, 255.0), name="sx")
    scale = builder.select(builder.fcmp_ordered(">", scale, zero), scale, ir.Constant(F32, 1.0), name="sx")
    shifted = call_intrinsic(builder, "llvm.rint.f32", F32, [builder.fsub(ir.Constant(F32, -128.0),
                                                                        builder.fdiv(low, scale))])
    shifted = builder.select(builder.fcmp_ordered("<", shifted, ir.Constant(F32, -128.0)), ir.Constant(F32, -128.0),
                             shifted)
    x_zero = builder.select(builder.fcmp_ordered(">", shifted, ir.Constant(F32, 127.0)), ir.Constant(F32, 127.0),
                            shifted, name="zx")
    q = QGemm(codes, DType.i8, weight, bias, weight_scale, builder.fptosi(x_zero, I32), zero, zero, zero, kernel.output,
              kernel.scratch, x_scale=scale, residual=skip[0] if skip else None)
    requant = Requant(DType.f32, node.attrs["activation"], True, dynamic=True, residual=bool(skip))

    def block(first_row: ir.Value, first_column: ir.Value, row_count: int, column_count: int) -> None:
        """A part's rows x columns: the codes of its rows (in its own scratch), then its share of the GEMM."""
        with for_range(builder, row_count * depth, "codes") as i:
            index = builder.add(builder.mul(first_row, i64(depth)), i)
            store_element(builder, quantize_value(builder, load_element(builder, x, index, F32), scale, x_zero,
                                                  DType.i8), codes, index)
        emit_block(builder, tiling, q, requant, (rows, depth, columns), first_row, first_column, row_count,
                   column_count)

    for_each_part_block(builder, tiling, (rows, depth, columns), kernel.part, kernel.parts, block)


register_lowering("dynamic_qlinear", Lowering(emit_dynamic_qlinear, FLOAT, dynamic_scratch_bytes, pack_qlinear_constant,
                                              qlinear_parts, always_pack=True))  # split like qlinear


# --- the int8 convolution ---------------------------------------------------------------------
#
# Per image: the taps of every output pixel are gathered into rows (im2col, padded with x's zero
# point) in scratch, the int8 GEMM multiplies them by the weight as [C*kh*kw, O] into scratch
# ([pixels, O]), and a transposing copy writes the image's [O, pixels] result. Images are split
# among threads.

def _conv_shape(node: Node) -> tuple[int, int, int, int]:
    """(images, pixels per image, depth C*kh*kw, output channels) of a qconv2d."""
    n, out, oh, ow = node.shape
    _, c, kh, kw = node.inputs[1].shape
    return n, oh * ow, c * kh * kw, out


def pack_qconv_constant(node: Node, index: int, target: Target) -> PackedConstant | None:
    if index != 1 or node.inputs[1].op != "constant" or node.type.size == 0:
        return None
    tiling = qgemm_tiling(target)
    weight = node.inputs[1].value
    return PackedConstant(f"qconv.{tiling.scheme.name}{tiling.columns}",  # as [C*kh*kw, O]
                          make=lambda: pack_qweight(np.ascontiguousarray(weight.reshape(weight.shape[0], -1).T),
                                                    tiling))


def qconv_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """The packed block, the image's taps [pixels, depth] and its result [pixels, O]."""
    _, pixels, depth, out = _conv_shape(node)
    tiling = qgemm_tiling(target)
    return block_bytes(tiling, pixels, depth) + round64(pixels * depth) + round64(pixels * out * node.dtype.itemsize)


def _pixel_split(pixels: int, rows: int, threads: int) -> tuple[int, int, int]:
    """(parts, pixels per part, pixels of the last part): an image's pixels (the GEMM's rows) in
    whole panels of `rows`, as evenly as `threads` parts allow."""
    panels = -(-pixels // rows)
    per_part = -(-panels // max(1, min(threads, panels))) * rows
    parts = -(-pixels // per_part)
    return parts, per_part, pixels - per_part * (parts - 1)


def qconv_parts(node: Node, target: Target, threads: int) -> int:
    """Each image's pixels split among the threads (a batch of one image uses them all)."""
    images, pixels, depth, out = _conv_shape(node)
    if 2 * images * pixels * depth * out < parallel.MIN_PARALLEL_FLOPS:
        return 1
    return _pixel_split(pixels, qgemm_tiling(target).rows, threads)[0]


def emit_qconv2d(kernel: Kernel) -> None:
    node, builder = kernel.node, kernel.builder
    images, pixels, depth, out = _conv_shape(node)
    if node.type.size == 0:
        return
    _require_packed_weight(kernel)
    tiling = qgemm_tiling(kernel.target)
    x_dtype, dtype = node.inputs[0].dtype, node.dtype
    _, channels, height, width = node.inputs[0].shape
    _, _, kh, kw = node.inputs[1].shape
    _, _, oh, ow = node.shape
    (sh, sw), (ph, pw), (dh, dw) = node.attrs["stride"], node.attrs["padding"], node.attrs["dilation"]
    x, weight, bias, multiplier, x_zero, y_zero = kernel.inputs
    block = block_bytes(tiling, pixels, depth)
    taps = element_pointer(builder, kernel.scratch, block, I8, "taps")
    result = element_pointer(builder, taps, round64(pixels * depth), I8, "result")
    out_element = F32 if dtype is DType.f32 else I8
    relu = node.attrs["activation"] == "relu"
    zx = load_element(builder, x_zero, 0, I32, "zx")
    zy = load_element(builder, y_zero, 0, I32, "zy")
    low, high, zero = requant_limits(builder, dtype, relu, zy)
    q = QGemm(taps, x_dtype, weight, bias, multiplier, zx,
              zero, low, high, result, kernel.scratch)
    requant = Requant(dtype, node.attrs["activation"], node.inputs[3].shape != ())
    padding_code = builder.trunc(zx, I8, name="pad")
    # this part's pixels of every image: [first, first + count), whole panels of the GEMM's rows
    parts, per_part, last = _pixel_split(pixels, tiling.rows, kernel.parts if kernel.part is not None else 1)
    if parts == 1:
        first, is_last, count = i64(0), None, i64(pixels)
    else:
        first = builder.mul(kernel.part, i64(per_part), name="pixel.first")
        is_last = builder.icmp_unsigned("==", kernel.part, i64(parts - 1), name="part.last")
        count = builder.select(is_last, i64(last), i64(per_part), name="pixel.count")
    with for_range(builder, images, "image") as image:
        source = element_pointer(builder, x, builder.mul(image, i64(channels * height * width)), I8, "image.x")
        with for_range(builder, count, "pixel") as local:
            pixel = builder.add(first, local, name="p")
            oy, ox = builder.udiv(pixel, i64(ow), name="oy"), builder.urem(pixel, i64(ow), name="ox")
            row = element_pointer(builder, taps, builder.mul(pixel, i64(depth)), I8, "taps.row")
            _gather_taps(builder, source, row, oy, ox, node.inputs[0].shape, (kh, kw), (sh, sw), (ph, pw), (dh, dw),
                         padding_code)
        if parts == 1:
            emit_block(builder, tiling, q, requant, (pixels, depth, out), first, i64(0), pixels, out)
        else:
            with builder.if_else(is_last) as (in_last, in_other):
                for branch, rows in ((in_last, last), (in_other, per_part)):
                    with branch:
                        emit_block(builder, tiling, q, requant, (pixels, depth, out), first, i64(0), rows, out)
        target = element_pointer(builder, kernel.output, builder.mul(image, i64(out * pixels)), out_element, "image.y")
        _transpose_out(builder, result, target, first, count, pixels, out, out_element,
                       kernel.target.vector_width if out_element == F32 else 16)


def _transpose_out(builder: ir.IRBuilder, result: ir.Value, target: ir.Value, first: ir.Value, count: ir.Value,
                   pixels: int, out: int, element: ir.Type, width: int) -> None:
    """target[o, p] = result[p, o] for pixels p in [first, first + count): tiles of `width` pixels x
    `width` channels transposed in registers (a row of the tile in, a column out, whole vectors), the
    channels past the last whole tile and the pixels past the last whole block one element at a time."""
    vector = ir.VectorType(element, width)

    def scalar(start: ir.Value, size: ir.Value, channels: int, first_channel: int = 0) -> None:
        with for_range(builder, channels, "channel") as o, for_range(builder, size, "pixel", vectorize=False) as t:
            o = builder.add(o, i64(first_channel))
            p = builder.add(start, t)
            value = load_element(builder, result, builder.add(builder.mul(p, i64(out)), o), element)
            store_element(builder, value, target, builder.add(builder.mul(o, i64(pixels)), p))

    blocks = builder.udiv(count, i64(width), name="pixel.blocks")
    whole = out - out % width
    with for_range(builder, blocks, "pixels") as block:
        start = builder.add(first, builder.mul(block, i64(width)), name="block.first")
        rows = element_pointer(builder, result, builder.mul(start, i64(out)), element, "block.rows")
        columns = element_pointer(builder, target, start, element, "block.columns")
        if whole:
            with for_range(builder, whole // width, "tiles", unroll=False) as tile:
                channel = builder.mul(tile, i64(width))
                tile_rows = [load_lanes(builder, element_pointer(builder, rows, builder.add(channel, i64(r * out)),
                                                                 element), width, vector) for r in range(width)]
                for k, column in enumerate(transpose_square(builder, tile_rows)):
                    at = builder.mul(builder.add(channel, i64(k)), i64(pixels))
                    store_lanes(builder, column, element_pointer(builder, columns, at, element), width)
        if out % width:
            scalar(start, i64(width), out % width, whole)
    done = builder.mul(blocks, i64(width))
    scalar(builder.add(first, done), builder.sub(count, done), out)


def _gather_taps(builder: ir.IRBuilder, source: ir.Value, row: ir.Value, oy: ir.Value, ox: ir.Value,
                 shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                 dilation: tuple[int, int], padding_code: ir.Value) -> None:
    """row[(c * kh + i) * kw + j] = the image's x[c, oy * sh + i * dh - ph, ox * sw + j * dw - pw], or the
    padding code outside it: a loop over the channels, kh x kw taps each, their offsets hoisted out of it."""
    _, channels, height, width = shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    rows = [builder.add(builder.mul(oy, i64(sh)), i64(i * dh - ph)) for i in range(kh)]
    columns = [builder.add(builder.mul(ox, i64(sw)), i64(j * dw - pw)) for j in range(kw)]
    inside = [[builder.and_(builder.icmp_unsigned("<", iy, i64(height)),
                            builder.icmp_unsigned("<", ix, i64(width))) for ix in columns] for iy in rows]
    # every tap's offset in a channel plane, 0 (never read outside the image) for one in the padding
    offsets = [[builder.select(inside[i][j], builder.add(builder.mul(iy, i64(width)), ix), i64(0))
                for j, ix in enumerate(columns)] for i, iy in enumerate(rows)]
    with for_range(builder, channels, "c", unroll=False) as c:
        plane = element_pointer(builder, source, builder.mul(c, i64(height * width)), I8, "plane")
        taps_of_c = element_pointer(builder, row, builder.mul(c, i64(kh * kw)), I8, "taps.c")
        for i in range(kh):
            for j in range(kw):
                value = builder.select(inside[i][j], load_element(builder, plane, offsets[i][j], I8), padding_code)
                store_element(builder, value, taps_of_c, i * kw + j)


register_lowering("qconv2d", Lowering(emit_qconv2d, INT8, qconv_scratch_bytes, pack_qconv_constant, qconv_parts,
                                      always_pack=True))
