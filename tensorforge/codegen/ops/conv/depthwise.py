"""f32 depthwise conv2d (groups == input channels == output channels): a direct loop nest per plane.

MobileNet's depthwise layers have one input channel per output channel, so the GEMM formulation
(conv_gemm.py) degenerates into a one-row GEMM per group. Here each (image, channel) plane is
convolved directly with its kh x kw taps held in registers:

    for plane p = (n, c) in this part's planes:
      source = x[n, c], or a copy of it inside a zero border (the padding) in this thread's scratch
      for y < OH:  for x < OW:                                  (LLVM vectorizes the x loop)
        acc = sum over i < kh, j < kw of w[c, 0, i, j] * source[y*sh + i*dh, x*sw + j*dw]
        out[n, c, y, x] = activation(acc (+ bias[c]) (+ residual[n, c, y, x]))

The padded copy makes every tap's read valid without a branch in the hot loop (it costs one read
and write per input element against kh * kw multiply-adds per output); the border is zeroed once
per part and only the interior is copied per plane. Windows of more than MAX_REGISTER_TAPS taps
(larger than 8 x 8) accumulate in the output row, one row of taps at a time, instead.

With stride 2 the x loop's reads are interleaved (every other float): LLVM vectorizes them with
wide loads and shuffles, never gathers (tests/test_codegen_depthwise.py checks x86-64-v4's IR).
Threads: blocks of planes (`depthwise_parts`); the weight is read as stored, [C, 1, kh, kw].
"""

from __future__ import annotations

from llvmlite import ir

from ....ir import DType, Node
from ...gemm.tiling import FLOAT_BYTES
from ...kernel import Kernel
from ...llvm import float_math
from ...llvm.utils import (
    F32,
    affine_offset,
    copy_bytes,
    element_pointer,
    fill_elements,
    for_range,
    i64,
    load_element,
    store_element,
)
from ...target import Target
from ...threads import parallel
from ...threads.parallel import split_parts
from ..matmul import contraction_operands
from .conv_gemm import ConvGeometry

MAX_REGISTER_TAPS = 64  # windows up to 8 x 8 are accumulated in registers, the taps unrolled
CONTRACT = ("contract",)  # a multiply and its add may become one fma


def is_depthwise(node: Node) -> bool:
    """An f32 conv2d with one input channel per output channel and groups == channels (channel
    multiplier 1), a non-empty result and no fused pool or Winograd: the depthwise kernel's."""
    if node.op != "conv2d" or node.inputs[0].dtype is not DType.f32 or node.type.size == 0:
        return False
    channels, outputs = node.inputs[0].shape[1], node.inputs[1].shape[0]
    return (node.attrs["groups"] == channels == outputs and node.inputs[1].shape[1] == 1
            and node.attrs.get("pool") is None and not node.attrs.get("winograd"))


def depthwise_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """One padded plane (per thread), or nothing without padding."""
    shape = ConvGeometry.of(node)
    return shape.padded_plane * FLOAT_BYTES if shape.is_padded else 0


def depthwise_parts(node: Node, target: Target, threads: int) -> int:
    """Blocks of (image, channel) planes, cut finer than one per thread (a busy core takes fewer),
    when the multiply-adds reach MIN_PARALLEL_FLOPS."""
    shape = ConvGeometry.of(node)
    work = 2 * shape.batch * shape.channels * shape.out_height * shape.out_width * shape.window
    if threads <= 1 or work < parallel.MIN_PARALLEL_FLOPS:
        return 1
    return split_parts(shape.batch * shape.channels, threads * parallel.PARTS_PER_THREAD)[0]


def emit_conv2d_depthwise(kernel: Kernel) -> None:
    """The depthwise conv2d of the module docstring, for this part's planes."""
    node, builder = kernel.node, kernel.builder
    shape = ConvGeometry.of(node)
    (sh, sw), (dh, dw), (ph, pw) = shape.stride, shape.dilation, shape.padding
    oh, ow, wp = shape.out_height, shape.out_width, shape.padded_width
    bias, residual = contraction_operands(kernel)
    activation = node.attrs.get("activation")
    if shape.is_padded:  # the border stays zero: each plane writes only the interior
        fill_elements(builder, kernel.scratch, shape.padded_plane, ir.Constant(F32, 0.0), "border")
    first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, shape.batch * shape.channels, "plane")
    with for_range(builder, count, "plane.i", unroll=False) as index:
        plane = builder.add(first, index, name="plane")
        channel = builder.urem(plane, i64(shape.channels), name="channel")
        source = element_pointer(builder, kernel.inputs[0], builder.mul(plane, i64(shape.height * shape.width)), F32,
                                 "plane.x")
        if shape.is_padded:
            with for_range(builder, shape.height, "interior", unroll=False) as y:
                copy_bytes(builder, element_pointer(builder, kernel.scratch, affine_offset(builder, [(y, wp)],
                                                                                           ph * wp + pw), F32),
                           element_pointer(builder, source, builder.mul(y, i64(shape.width)), F32),
                           shape.width * FLOAT_BYTES, may_overlap=False)
            source = kernel.scratch
        taps = element_pointer(builder, kernel.inputs[1], builder.mul(channel, i64(shape.window)), F32, "taps")
        shift = load_element(builder, bias, channel, F32, "bias") if bias is not None else None
        out_plane = builder.mul(plane, i64(oh * ow), name="out_plane")

        def finish(total: ir.Value, at: ir.Value) -> None:
            """+ bias, + residual, the activation, then out[at] (at: an element offset in the output)."""
            if shift is not None:
                total = builder.fadd(total, shift, name="biased")
            if residual is not None:
                total = builder.fadd(total, load_element(builder, residual, at, F32, "skip"), name="residual")
            store_element(builder, float_math.activation(builder, activation, total), kernel.output, at)

        if shape.window <= MAX_REGISTER_TAPS:
            weights = [load_element(builder, taps, t, F32, f"w{t}") for t in range(shape.window)]
            with for_range(builder, oh, "y", unroll=False) as y, for_range(builder, ow, "x", unroll=False) as x:
                start = affine_offset(builder, [(y, sh * wp), (x, sw)])  # wp is the width without padding
                total = None
                for i in range(shape.kh):
                    for j in range(shape.kw):
                        read = load_element(builder, source, builder.add(start, i64(i * dh * wp + j * dw)), F32, "x")
                        product = builder.fmul(weights[i * shape.kw + j], read, name="product", flags=CONTRACT)
                        total = product if total is None else builder.fadd(total, product, name="acc", flags=CONTRACT)
                finish(total, affine_offset(builder, [(y, ow), (x, 1)], out_plane, "at"))
        else:
            _accumulate_rows(kernel, shape, source, taps, out_plane, finish)


def _accumulate_rows(kernel: Kernel, shape: ConvGeometry, source: ir.Value, taps: ir.Value, out_plane: ir.Value,
                     finish) -> None:
    """A big window: per output row, each row of taps i adds its kw taps (unrolled) into the output
    row in memory (zeros first), then the epilogue over the row."""
    builder = kernel.builder
    (sh, sw), (dh, dw) = shape.stride, shape.dilation
    oh, ow = shape.out_height, shape.out_width
    row_step = shape.padded_width  # the width, without padding
    with for_range(builder, oh, "y", unroll=False) as y:
        out_row = affine_offset(builder, [(y, ow)], out_plane, "out_row")
        fill_elements(builder, element_pointer(builder, kernel.output, out_row, F32), ow, ir.Constant(F32, 0.0),
                      "zero")
        with for_range(builder, shape.kh, "i", unroll=False) as i:
            weights = [load_element(builder, taps, affine_offset(builder, [(i, shape.kw)], j), F32, f"w{j}")
                       for j in range(shape.kw)]
            with for_range(builder, ow, "x", unroll=False) as x:
                start = affine_offset(builder, [(y, sh * row_step), (i, dh * row_step), (x, sw)])
                at = builder.add(out_row, x, name="at")
                total = load_element(builder, kernel.output, at, F32, "acc")
                for j in range(shape.kw):
                    read = load_element(builder, source, builder.add(start, i64(j * dw)), F32, "x")
                    total = builder.fadd(total, builder.fmul(weights[j], read, flags=CONTRACT), name="acc",
                                         flags=CONTRACT)
                store_element(builder, total, kernel.output, at)
        with for_range(builder, ow, "finish", unroll=False) as x:
            at = builder.add(out_row, x, name="at")
            finish(load_element(builder, kernel.output, at, F32, "acc"), at)
