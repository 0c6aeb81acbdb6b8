"""f32 conv2d as the GEMM with output pixels as its rows: out^T[P, O] = im2col^T[P, K] @ w^T[K, O].

conv_gemm.py's GEMM has the output channels as rows (MR per panel) and the pixels in the vectors
(NR per column panel). Planes of 7 x 7, 14 x 14 or 28 x 28 pixels fill panels of 32 pixels poorly
(49, 196 and 28 per row of 64, 224 and 32 lanes), and 64 or 256 channels fill panels of 14 rows
poorly (70 and 266). Here the roles swap: the output channels are the vectors (ResNet's 64 to 2048
fill panels of 32 exactly) and the pixels the rows (196 = 14 panels of 14, 3136 = 224). Each layer
takes the form whose panels waste fewer lanes (`prefers_pixel_rows`).

The weight is packed at compile time as B panels (f32[ceil(O/NR), K, NR]). The im2col of a block of
pixels is gathered, one depth block at a time, into A panels ([kc][MR], conv/slivers.py's flat
gather); the micro-kernel's tiles go to the block's result in scratch, pixel-major (out^T: [pixels,
O padded to NR]). Once the block's depth blocks are done, W x W register transposes copy it into the
NCHW output, adding the bias and the residual and applying the activation on the way:

    for n (the part's images):  [padded copy of image n]
      for block of mc pixels (the part's):
        for depth block (whole input channels, about kc taps):
          gather the block's A panels;  for oc panel (the part's):  for pixel panel:  micro-kernel
        transpose the block into out[n, :, pixels] (+ bias, + residual, activation)

Threads: several images split by images; one image by its panels of MR pixels, or by its panels of
NR output channels when those outnumber the pixel panels (CHANNEL_SPLIT_RATIO: each part then gathers
every pixel but streams only its share of the weight).
"""

from __future__ import annotations

from llvmlite import ir

from ....ir import Node
from ....ir.ops_nn import split_contraction
from ...gemm.gemm import BlockStep, minimum
from ...gemm.micro_kernel import Epilogue, splat, vector_type
from ...gemm.packing import pack_b_panels
from ...gemm.run_packing import pack_b_rows, transpose_square
from ...gemm.tiling import FLOAT_BYTES, L2_BLOCK_BYTES, GemmTiling, gemm_tiling
from ...kernel import Kernel
from ...llvm import float_math
from ...llvm.utils import (
    F32,
    I8,
    affine_offset,
    element_pointer,
    for_range,
    i64,
    load_element,
    masked_load,
    masked_store,
    with_tail,
)
from ...lowering import PackedConstant
from ...memory import align_up
from ...target import Target
from ...threads import parallel
from ...threads.parallel import split_parts
from .conv_gemm import column_panels
from .geometry import ConvGeometry, depth_block, padded_image, part_range, uses_tiled_conv, worth_a_team
from .slivers import gather_flat_sliver

# The pixel form is taken when it saves at least PIXEL_ROWS_MIN_GAIN multiply-adds of padded lanes per
# output element (taps / channel-form use - taps / pixel-form use): it also writes its result to scratch
# and copies it out through register transposes, a cost per output element that only a deep enough
# convolution with enough lanes saved amortizes. Measured in-process, each conv timed both ways in its
# model, the gain in brackets: ResNet-50's 1 x 1 and 3 x 3 convs from 1024 taps (133-823) ran 0.88-0.97x
# the time in the pixel form; MobileNetV2's 1 x 1 convs from 576 taps at 7 x 7 and 14 x 14 (96-219)
# 0.85-0.94x at batch 1 and 0.78-0.93x at batch 8, its 384 -> 64 at 14 x 14 (96) the same time;
# ResNet-18's stride-2 3 x 3 64 -> 128 (67), MobileNetV2's 192 -> 32 at 28 x 28 (65) and 320 -> 1280
# at 7 x 7 (55, batch 1) 1.02-1.2x; shallower ones up to 1.5x.
PIXEL_ROWS_MIN_GAIN = 90.0
# One image's parts take panels of output channels when there are this many times more of them
# than panels of pixels (conv_gemm.CHANNEL_SPLIT_RATIO's rule, the other way round).
CHANNEL_SPLIT_RATIO = 2


def _fill(count: int, panel: int) -> float:
    """The share of a panel-padded extent that is real: count / (ceil(count / panel) * panel)."""
    return count / (-(-count // panel) * panel)


def prefers_pixel_rows(node: Node, target: Target) -> bool:
    """Whether an f32 conv2d takes the pixel form: one group, no fused pool, a constant weight, and
    panels that waste fewer lanes than conv_gemm.py's by PIXEL_ROWS_MIN_GAIN multiply-adds per output."""
    if not uses_tiled_conv(node) or node.attrs.get("winograd") or node.inputs[1].op != "constant":
        return False
    shape = ConvGeometry.of(node)
    if shape.groups != 1 or shape.pooled:
        return False
    return pixel_rows_gain(shape, gemm_tiling(target)) >= PIXEL_ROWS_MIN_GAIN


def pixel_rows_gain(shape: ConvGeometry, tiling: GemmTiling) -> float:
    """Multiply-adds of padded lanes the pixel form saves per output element: taps / (share of the
    channel form's panel slots that are real) - taps / (the pixel form's share)."""
    plane = shape.out_height * shape.out_width
    channel_use = _fill(shape.outputs, tiling.rows) * plane / (column_panels(shape, tiling) * tiling.columns)
    pixel_use = _fill(shape.outputs, tiling.columns) * _fill(plane, tiling.rows)
    return shape.taps * (1 / channel_use - 1 / pixel_use)


def pixel_weight(node: Node, target: Target) -> PackedConstant:
    """The weight [O, C, kh, kw] as B panels of its transpose [C*kh*kw, O]: f32[ceil(O/NR), K, NR]."""
    shape, columns = ConvGeometry.of(node), gemm_tiling(target).columns
    weight = node.inputs[1].value.reshape(shape.outputs, shape.taps)
    return PackedConstant(f"conv.b{columns}", make=lambda: pack_b_panels(weight.T, columns))


def _pixel_block(tiling: GemmTiling, kc: int) -> int:
    """mc: pixels per block, whole panels of MR, so that a block's A panels (mc x kc) stay in L2."""
    return tiling.rows * max(1, round(L2_BLOCK_BYTES / (kc * FLOAT_BYTES) / tiling.rows))


def _padded_outputs(shape, tiling: GemmTiling) -> int:
    return -(-shape.outputs // tiling.columns) * tiling.columns


def _result_stride(shape, tiling: GemmTiling) -> int:
    """The row stride (elements) of a block's result: the output channels padded to whole panels, and
    one vector more, so that its rows (pixels) do not all fall in one set of the L1 cache (at 1024
    channels rows 4 KiB apart did: the tile's 14 rows and the transposes' 16 thrashed it)."""
    return _padded_outputs(shape, tiling) + tiling.vector_width


def _layout(shape, tiling: GemmTiling, weight_packed: bool) -> tuple[int, int, int, int]:
    """Byte offsets in scratch of the A panels, the block's result, the B block (a weight not packed at
    compile time) after the padded image at 0, and the total."""
    kc = tiling.depth_blocks(shape.taps, shape.window)[1]
    mc = _pixel_block(tiling, kc)
    width = tiling.vector_width
    image = shape.channels * shape.padded_plane if shape.is_padded else 0
    a_at = align_up(image * FLOAT_BYTES)
    result_at = align_up(a_at + mc * kc * FLOAT_BYTES)
    result_rows = -(-mc // width) * width  # the transposes read whole W-row groups
    b_at = align_up(result_at + result_rows * _result_stride(shape, tiling) * FLOAT_BYTES)
    b_bytes = 0 if weight_packed else kc * _padded_outputs(shape, tiling) * FLOAT_BYTES
    return a_at, result_at, b_at, b_at + b_bytes


def pixel_rows_scratch_bytes(node: Node, target: Target, packed: frozenset[int]) -> int:
    return _layout(ConvGeometry.of(node), gemm_tiling(target), 1 in packed)[3]


def _splits_channels(shape, tiling: GemmTiling) -> bool:
    pixel_panels = -(-shape.out_height * shape.out_width // tiling.rows)
    channel_panels = -(-shape.outputs // tiling.columns)
    return shape.batch == 1 and channel_panels >= CHANNEL_SPLIT_RATIO * pixel_panels


def pixel_rows_parts(node: Node, target: Target, threads: int) -> int:
    """Parts for a team of `threads`: images, or one image's panels of pixels or of output channels."""
    if not worth_a_team(node):
        return 1
    shape, tiling = ConvGeometry.of(node), gemm_tiling(target)
    if shape.batch > 1:
        return split_parts(shape.batch, threads * parallel.PARTS_PER_THREAD)[0]
    if _splits_channels(shape, tiling):
        return split_parts(-(-shape.outputs // tiling.columns), threads)[0]
    return split_parts(-(-shape.out_height * shape.out_width // tiling.rows), threads)[0]


def emit_conv2d_pixel_rows(kernel: Kernel) -> None:
    """conv2d (f32, one group, no pool) with stride, padding, dilation, bias, residual and activation,
    as out^T = im2col^T @ w^T on the micro-kernel (the module docstring's loops)."""
    node, builder, tiling = kernel.node, kernel.builder, gemm_tiling(kernel.target)
    shape = ConvGeometry.of(node)
    mr, nr = tiling.rows, tiling.columns
    depth_count, kc = tiling.depth_blocks(shape.taps, shape.window)
    mc = _pixel_block(tiling, kc)
    plane = shape.out_height * shape.out_width
    pixel_panels, channel_panels = -(-plane // mr), -(-shape.outputs // nr)
    ldc = _result_stride(shape, tiling)
    weight_packed = 1 in kernel.packed
    a_at, result_at, b_at, _ = _layout(shape, tiling, weight_packed)
    a_block, result, b_block = (builder.gep(kernel.scratch, [i64(offset)], inbounds=True, source_etype=I8)
                                for offset in (a_at, result_at, b_at))
    _, _, bias, residual = split_contraction(list(kernel.inputs), node.attrs["residual"])

    by_images = shape.batch > 1
    by_channels = kernel.parts > 1 and not by_images and _splits_channels(shape, tiling)
    first_channel_panel, part_channel_panels = i64(0), i64(channel_panels)
    first_pixel, part_pixels = i64(0), i64(plane)
    if by_channels:
        first_channel_panel, part_channel_panels = parallel.part_bounds(builder, kernel.part, kernel.parts,
                                                                        channel_panels, "oc")
    elif not by_images:
        first_panel, panel_count = parallel.part_bounds(builder, kernel.part, kernel.parts, pixel_panels, "px")
        first_pixel = builder.mul(first_panel, i64(mr), name="first_pixel")
        part_pixels = minimum(builder, builder.sub(i64(plane), first_pixel), builder.mul(panel_count, i64(mr)),
                              "part_pixels")
    first_output = builder.mul(first_channel_panel, i64(nr), name="first_output")
    part_outputs = minimum(builder, builder.sub(i64(shape.outputs), first_output),
                           builder.mul(part_channel_panels, i64(nr)), "part_outputs")

    with (part_range(builder, kernel, shape.batch, "n") if by_images else for_range(builder, 1, "n")) as n:
        image = padded_image(kernel, shape, n, (first_pixel, part_pixels))
        blocks = builder.udiv(builder.add(part_pixels, i64(mc - 1)), i64(mc), name="pixel_blocks")
        with for_range(builder, blocks, "ic", unroll=False) as block:
            block_first = builder.add(first_pixel, builder.mul(block, i64(mc)), name="block_first")
            block_pixels = minimum(builder, builder.sub(builder.add(first_pixel, part_pixels), block_first), mc,
                                   "block_pixels")
            block_panels = builder.udiv(builder.add(block_pixels, i64(mr - 1)), i64(mr), name="block_panels")
            with for_range(builder, depth_count, "pc") as depth_index:
                first_in, depth, first_tap = depth_block(builder, shape, depth_index, kc)
                channels = builder.udiv(depth, i64(shape.window))
                origin = builder.mul(first_in, i64(shape.padded_plane))

                def a_panel(t: ir.Value, depth=depth) -> ir.Value:
                    return element_pointer(builder, a_block, builder.mul(builder.mul(t, depth), i64(mr)), F32)

                with for_range(builder, block_panels, "gather", unroll=False) as t:
                    pixel = builder.add(block_first, builder.mul(t, i64(mr)), name="panel_pixel")
                    panel = a_panel(t)

                    def gather(valid: int, pixel=pixel, panel=panel, channels=channels, origin=origin) -> None:
                        gather_flat_sliver(builder, tiling, shape, image, panel, channels, origin, pixel, valid, mr)

                    with_tail(builder, pixel, plane - plane % mr, plane % mr, mr, gather)
                if not weight_packed:
                    weight = element_pointer(builder, kernel.inputs[1], first_tap, F32)
                    pack_b_rows(builder, tiling, weight, shape.taps, depth, i64(shape.outputs), shape.outputs % nr,
                                b_block, transposed=True)

                step = BlockStep(builder, tiling, Epilogue(), depth, builder.icmp_unsigned("!=", depth_index, i64(0)),
                                 builder.icmp_unsigned("==", depth_index, i64(depth_count - 1)), block_pixels,
                                 plane % mr, a_panel, prefetch="b" if weight_packed and depth_count > 1 else None,
                                 prefetch_ahead=shape.taps * nr)

                def b_panel(u: ir.Value, first_tap=first_tap, depth=depth) -> ir.Value:
                    if weight_packed:
                        at = builder.mul(builder.add(builder.mul(u, i64(shape.taps)), first_tap), i64(nr))
                        return element_pointer(builder, kernel.inputs[1], at, F32, "b_panel")
                    return element_pointer(builder, b_block, builder.mul(builder.mul(u, depth), i64(nr)), F32)

                def column_panel(u: ir.Value, columns: int, step=step) -> None:
                    def c_tile(t: ir.Value) -> ir.Value:
                        return element_pointer(builder, result, affine_offset(builder, [(t, mr * ldc), (u, nr)]), F32)

                    step.row_panels(b_panel(u), columns, c_tile, ldc)

                with for_range(builder, part_channel_panels, "jr", unroll=False) as j:
                    u = builder.add(first_channel_panel, j, name="oc_panel")
                    with_tail(builder, u, channel_panels - 1, shape.outputs % nr, nr,
                              lambda columns, u=u: column_panel(u, columns))
            _copy_out(kernel, shape, tiling, result, ldc, n, block_first, block_pixels, first_output, part_outputs,
                      bias, residual)


def _copy_out(kernel: Kernel, shape, tiling: GemmTiling, result: ir.Value, ldc: int, n: ir.Value,
              block_first: ir.Value, block_pixels: ir.Value, first_output: ir.Value, outputs: ir.Value,
              bias: ir.Value | None, residual: ir.Value | None) -> None:
    """out[n, o, block_first + r] = activation(result[r, o] + bias[o] + residual[n, o, block_first + r]) for
    r < block_pixels and the part's `outputs` channels from first_output, W x W at a time: W rows of
    result (pixels) transposed in registers into W vectors of one output channel each. A last group
    of fewer than W pixels loads and stores only those lanes; one of fewer than W channels (O % W)
    stores only those channels."""
    builder, width = kernel.builder, tiling.vector_width
    vector = vector_type(tiling)
    zero = ir.Constant(vector, [0.0] * width)
    plane = shape.out_height * shape.out_width
    activation = kernel.node.attrs.get("activation")
    lane_numbers = ir.Constant(ir.VectorType(ir.IntType(64), width), list(range(width)))
    groups = builder.udiv(builder.add(outputs, i64(width - 1)), i64(width), name="copy.groups")
    pixel_groups = builder.udiv(builder.add(block_pixels, i64(width - 1)), i64(width), name="copy.pixel_groups")
    with for_range(builder, groups, "copy.o", unroll=False) as group:
        o0 = builder.add(first_output, builder.mul(group, i64(width)), name="copy.o0")
        channels_here = builder.sub(builder.add(first_output, outputs), o0, name="copy.channels")
        with for_range(builder, pixel_groups, "copy.p", unroll=False) as pixel_group:
            r0 = builder.mul(pixel_group, i64(width), name="copy.r0")
            rows = [builder.load(element_pointer(builder, result, affine_offset(builder, [(r0, ldc)], builder.add(
                o0, i64(r * ldc))), F32), typ=vector, align=FLOAT_BYTES) for r in range(width)]
            channel_vectors = transpose_square(builder, rows)
            valid = builder.sub(block_pixels, r0, name="copy.valid")
            mask = builder.icmp_signed("<", lane_numbers, splat(builder, valid, lane_numbers.type), name="copy.mask")
            first = builder.add(block_first, r0, name="copy.pixel")

            def store(j: int, values: ir.Value, whole: bool, o0=o0, mask=mask, first=first) -> None:
                o = builder.add(o0, i64(j))
                at = affine_offset(builder, [(o, plane)], first)  # within image n
                if bias is not None:
                    values = builder.fadd(values, splat(builder, load_element(builder, bias, o, F32), vector))
                if residual is not None:
                    other = element_pointer(builder, residual, affine_offset(builder, [(n, shape.outputs * plane)], at),
                                            F32)
                    values = builder.fadd(values, builder.load(other, typ=vector, align=FLOAT_BYTES) if whole
                                          else masked_load(builder, other, mask, zero))
                values = float_math.activation(builder, activation, values)
                out = element_pointer(builder, kernel.output, affine_offset(builder, [(n, kernel.output_image)], at),
                                      F32)
                if whole:
                    builder.store(values, out, align=FLOAT_BYTES)
                else:
                    masked_store(builder, values, out, mask)

            with builder.if_else(builder.icmp_signed(">=", valid, i64(width))) as (whole_group, partial_group):
                for whole, block in ((True, whole_group), (False, partial_group)):
                    with block:
                        for j, values in enumerate(channel_vectors):
                            if shape.outputs % width:  # the part's last group may hold fewer channels
                                with builder.if_then(builder.icmp_signed("<", i64(j), channels_here)):
                                    store(j, values, whole)
                            else:
                                store(j, values, whole)
