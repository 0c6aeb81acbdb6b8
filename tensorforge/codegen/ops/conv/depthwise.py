"""f32 depthwise conv2d (groups == input channels == output channels): a direct loop nest per plane.

MobileNet's depthwise layers have one input channel per output channel, so the GEMM formulation
(conv_gemm.py) degenerates into a one-row GEMM per group. Here each (image, channel) plane is
convolved directly with its kh x kw taps held in registers:

    for plane p = (n, c) in this part's planes:
      source = x[n, c], or a copy of it inside a zero border (the padding) in this thread's scratch
      for y < OH:  for x < OW, a vector of x at a time:
        acc = sum over i < kh, j < kw of w[c, 0, i, j] * source[y*sh + i*dh, x*sw + j*dw]
        out[n, c, y, x] = activation(acc (+ bias[c]) (+ residual[n, c, y, x]))

The copy makes every tap's read valid without a branch in the hot loop (it costs one read and write
per input element against kh * kw multiply-adds per output); the border is zeroed once per part and
only the interior is copied per plane. With a column stride s > 1 the copy is also split by phase:
each row holds its columns k, k + s, k + 2s, ... for k < s one after the other, so tap j of a vector
of outputs x..x+V is one contiguous load (phase (j*dw) % s, from x + (j*dw) // s), as with stride 1.

The x loop is written in vectors (`_row_chunks`): whole vectors of the target's width, then the
row's rest in halving widths (56 = 3 x 16 + 8, 7 = 4 + 2 + 1), never a scalar loop over a remainder
(LLVM's vectorized loop left one: MobileNetV2's 14 x 14 and 7 x 7 planes ran scalar). Windows of
more than MAX_REGISTER_TAPS taps (larger than 8 x 8) accumulate in the output row, one row of taps
at a time, instead. Threads: blocks of planes (`depthwise_parts`); the weight is read as stored,
[C, 1, kh, kw].
"""

from __future__ import annotations

from llvmlite import ir

from ....ir import DType, Node
from ...gemm.micro_kernel import splat
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
from .geometry import ConvGeometry

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


def _phases(shape: ConvGeometry) -> int:
    """The phases a copied row is split into: the column stride for windows in registers, else 1 (a
    big window's rows are read as they are, `_accumulate_rows`)."""
    return shape.stride[1] if shape.window <= MAX_REGISTER_TAPS else 1


def _copies(shape: ConvGeometry) -> bool:
    """Whether each plane is copied into scratch: with padding, or split by phase for a column stride."""
    return shape.is_padded or _phases(shape) > 1


def _phase_length(shape: ConvGeometry) -> int:
    """Elements of one phase of a copied row (the padded row's columns k, k + s, ...): ceil(WP / s)."""
    return -(-shape.padded_width // _phases(shape))


def _row_stride(shape: ConvGeometry) -> int:
    """Elements from one row of the plane the taps read to the next."""
    return _phases(shape) * _phase_length(shape) if _copies(shape) else shape.width


def depthwise_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """One copied plane (per thread), or nothing when the taps read the input in place."""
    shape = ConvGeometry.of(node)
    rows = shape.height + 2 * shape.padding[0]
    return rows * _row_stride(shape) * FLOAT_BYTES if _copies(shape) else 0


def _row_chunks(width: int, lanes: int) -> list[tuple[int, int]]:
    """(first x, vector width) covering [0, width): whole vectors of `lanes`, then the rest in halving widths."""
    chunks = [(x, lanes) for x in range(0, width - width % lanes, lanes)]
    x, size = width - width % lanes, lanes // 2
    while x < width:
        while size > width - x:
            size //= 2
        chunks.append((x, size))
        x += size
    return chunks


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
    (sh, sw), (dh, dw), ph = shape.stride, shape.dilation, shape.padding[0]
    oh, ow = shape.out_height, shape.out_width
    bias, residual = contraction_operands(kernel)
    activation = node.attrs.get("activation")
    in_registers = shape.window <= MAX_REGISTER_TAPS
    if shape.is_padded:  # the border stays zero: each plane writes only the interior
        fill_elements(builder, kernel.scratch, (shape.height + 2 * ph) * _row_stride(shape), ir.Constant(F32, 0.0),
                      "border")
    first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, shape.batch * shape.channels, "plane")
    with for_range(builder, count, "plane.i", unroll=False) as index:
        plane = builder.add(first, index, name="plane")
        channel = builder.urem(plane, i64(shape.channels), name="channel")
        source = element_pointer(builder, kernel.inputs[0], builder.mul(plane, i64(shape.height * shape.width)), F32,
                                 "plane.x")
        if _copies(shape):
            _copy_plane(builder, shape, source, kernel.scratch)
            source = kernel.scratch
        taps = element_pointer(builder, kernel.inputs[1], builder.mul(channel, i64(shape.window)), F32, "taps")
        shift = load_element(builder, bias, channel, F32, "bias") if bias is not None else None
        out_plane = builder.mul(plane, i64(oh * ow), name="out_plane")

        def finish(total: ir.Value, at: ir.Value) -> None:
            """+ bias, + residual, the activation, then total (a float or a vector) at out[at] (an element offset)."""
            vector = total.type
            if shift is not None:
                total = builder.fadd(total, splat(builder, shift, vector) if vector != F32 else shift, name="biased")
            if residual is not None:
                skip = builder.load(element_pointer(builder, residual, at, F32), typ=vector, align=FLOAT_BYTES)
                total = builder.fadd(total, skip, name="residual")
            builder.store(float_math.activation(builder, activation, total),
                          element_pointer(builder, kernel.output, at, F32), align=FLOAT_BYTES)

        if in_registers:
            weights = [load_element(builder, taps, t, F32, f"w{t}") for t in range(shape.window)]
            row_stride, phase = _row_stride(shape), _phase_length(shape)
            with for_range(builder, oh, "y", unroll=False) as y:
                def chunk(x: ir.Value, lanes: int, y=y) -> None:
                    vector = ir.VectorType(F32, lanes)
                    start = affine_offset(builder, [(y, sh * row_stride)], x)
                    total = None
                    for i in range(shape.kh):
                        for j in range(shape.kw):
                            column = (j * dw) % sw * phase + (j * dw) // sw
                            at = builder.add(start, i64(i * dh * row_stride + column))
                            read = builder.load(element_pointer(builder, source, at, F32), typ=vector,
                                                align=FLOAT_BYTES)
                            product = builder.fmul(splat(builder, weights[i * shape.kw + j], vector), read,
                                                   name="product", flags=CONTRACT)
                            total = product if total is None else builder.fadd(total, product, name="acc",
                                                                               flags=CONTRACT)
                    finish(total, affine_offset(builder, [(y, ow)], builder.add(out_plane, x)))

                chunks = _row_chunks(ow, kernel.target.vector_width)
                whole = [first for first, lanes in chunks if lanes == kernel.target.vector_width]
                if whole:
                    with for_range(builder, len(whole), "xv", unroll=False) as v:
                        chunk(builder.mul(v, i64(kernel.target.vector_width)), kernel.target.vector_width)
                for first, lanes in chunks[len(whole):]:
                    chunk(i64(first), lanes)
        else:
            _accumulate_rows(kernel, shape, source, taps, out_plane, finish)


def _copy_plane(builder: ir.IRBuilder, shape: ConvGeometry, source: ir.Value, scratch: ir.Value) -> None:
    """The plane's interior into scratch, rows _row_stride apart, each row split by phase: padded column
    c (input column c - pw) at (c % s) * L + c // s, L = _phase_length. Phase k takes the input columns
    t*s + k - pw that lie in the image (static bounds), a strided read and a contiguous write."""
    (ph, pw), s, length = shape.padding, _phases(shape), _phase_length(shape)
    row_stride = _row_stride(shape)
    with for_range(builder, shape.height, "copy.y", unroll=False) as y:
        row_from = element_pointer(builder, source, builder.mul(y, i64(shape.width)), F32, "copy.from")
        row_to = element_pointer(builder, scratch, affine_offset(builder, [(y, row_stride)], ph * row_stride), F32,
                                 "copy.to")
        for k in range(s):
            first = max(0, -(-(pw - k) // s))  # t with 0 <= t*s + k - pw < width
            last = (shape.width - 1 + pw - k) // s
            if last < first:
                continue
            if s == 1:
                copy_bytes(builder, element_pointer(builder, row_to, first, F32),
                           element_pointer(builder, row_from, first - pw, F32), (last - first + 1) * FLOAT_BYTES,
                           may_overlap=False)
                continue
            with for_range(builder, last - first + 1, f"copy.t{k}") as offset:
                t = builder.add(offset, i64(first))
                value = load_element(builder, row_from, affine_offset(builder, [(t, s)], k - pw), F32)
                store_element(builder, value, row_to, builder.add(t, i64(k * length)))


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
