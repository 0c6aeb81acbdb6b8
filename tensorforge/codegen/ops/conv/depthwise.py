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
only the interior is copied per plane. With a stride the copy is also split by phase (`_Layout`):
sub-plane (r % sh, c % sw) holds the padded plane's rows r and columns c of those phases, so tap
(i, j) of a vector of outputs x..x+V is one contiguous load, and output rows y and y + 1 read rows
one sub-plane row apart, as with stride 1.

How a plane's outputs are computed is in depthwise_outputs.py: on x86 (masked loads and stores are
instructions) rows of two vectors or more read the input in place, and other planes are read from the
copy in whole vectors with masked stores; elsewhere each row in vectors of halving widths. Windows of
more than MAX_REGISTER_TAPS taps (larger than 8 x 8) accumulate in the output row, one row of taps
at a time, instead. Threads: blocks of planes (`depthwise_parts`, by flops or by bytes); the weight
is read as stored, [C, 1, kh, kw].
"""

from __future__ import annotations

from dataclasses import dataclass

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
    for_range,
    i64,
    load_element,
    store_element,
    zero_bytes,
)
from ...target import Target
from ...threads import parallel
from ...threads.parallel import split_parts
from ..matmul import contraction_operands
from .depthwise_outputs import (
    accumulate_rows,
    in_place_outputs,
    masked_outputs,
    multiply_add,
    row_outputs,
    store_outputs,
)
from .geometry import ConvGeometry

PARALLEL_BYTES = 128 << 10  # planes read and written from which a team shares them (depthwise_parts)
MAX_REGISTER_TAPS = 64  # windows up to 8 x 8 are accumulated in registers, the taps unrolled


def is_depthwise(node: Node) -> bool:
    """An f32 conv2d with one input channel per output channel and groups == channels (channel
    multiplier 1), a non-empty result and no fused pool or Winograd: the depthwise kernel's."""
    if node.op != "conv2d" or node.inputs[0].dtype is not DType.f32 or node.type.size == 0:
        return False
    channels, outputs = node.inputs[0].shape[1], node.inputs[1].shape[0]
    return (node.attrs["groups"] == channels == outputs and node.inputs[1].shape[1] == 1
            and node.attrs.get("pool") is None and not node.attrs.get("winograd"))


@dataclass(frozen=True)
class _Layout:
    """Where the taps read a plane: the input in place, or its copy in this thread's scratch.

    A copy is split by phase: padded row r and column c of the plane go to sub-plane
    (r % sh, c % sw) at row r // sh and column c // sw, every sub-plane `rows` x `length`, so tap
    (i, j) of output (y, x) lies at sub-plane ((i*dh) % sh, (j*dw) % sw), row y + (i*dh) // sh,
    column x + (j*dw) // sw: the outputs of one row of a sub-plane read contiguous elements, whatever
    the stride. Output (y, x) reads from y * length + x on, past the row's end into the next rows,
    and the last vector up to a vector past the copy (scratch has room for it).

    `masked` (x86): whole vectors with masked stores, read in place (`in_place_outputs`) or from
    the copy (`masked_outputs`); else each output row in vectors of its own (`row_outputs`).
    """

    copies: bool
    row_phases: int
    column_phases: int
    rows: int  # of one sub-plane
    length: int  # elements of one sub-plane row: the step from output row y to y + 1
    masked: bool

    @classmethod
    def of(cls, shape: ConvGeometry, target: Target) -> _Layout:
        if shape.window > MAX_REGISTER_TAPS:  # `accumulate_rows` reads the padded rows as they are
            return cls(shape.is_padded, 1, 1, shape.height + 2 * shape.padding[0], shape.padded_width, False)
        sh, sw = shape.stride
        x86 = target.arch == "x86_64" and target.vector_width >= 8  # masked loads and stores (AVX and up)
        # in place: rows of two vectors or more have some vectors no mask is needed for. Rows of one
        # to two vectors (both masked) ran as fast as copied at column stride 1 and faster at 2, whose
        # copy splits the columns by phase (MobileNetV2's 144 planes of 56 x 56 to 28 x 28: 0.88x the
        # time, in-process kernel profiles of the model)
        wide = x86 and sw <= 2 and shape.out_width > (2 * target.vector_width - 1 if sw == 1 else target.vector_width)
        if wide or (sh, sw) == (1, 1) and not shape.is_padded:
            return cls(False, 1, 1, shape.height, shape.width, x86)  # in place (`in_place_outputs` on x86)
        rows, length = -(-(shape.height + 2 * shape.padding[0]) // sh), -(-shape.padded_width // sw)
        return cls(True, sh, sw, rows, length, x86)

    @property
    def elements(self) -> int:
        """Elements of the copy: every sub-plane."""
        return self.row_phases * self.column_phases * self.rows * self.length

    def group(self, shape: ConvGeometry, lanes: int) -> int:
        """Output rows one vector of `lanes` holds (`masked_outputs`): as many as start within it and
        end by its last lane; 0 for rows longer than a vector."""
        return (lanes - shape.out_width) // self.length + 1 if shape.out_width <= lanes else 0

    def tap(self, shape: ConvGeometry, i: int, j: int) -> int:
        """The offset of tap (i, j) from output (0, 0)'s reads."""
        (dh, dw), sh, sw = shape.dilation, self.row_phases, self.column_phases
        if not self.copies:
            return i * dh * self.length + j * dw
        sub_plane = (i * dh) % sh * sw + (j * dw) % sw
        return (sub_plane * self.rows + (i * dh) // sh) * self.length + (j * dw) // sw


def depthwise_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """One copied plane (per thread) and a vector past it (`masked_outputs`' last vector reads into
    it), or nothing when the taps read the input in place."""
    layout = _Layout.of(ConvGeometry.of(node), target)
    return (layout.elements + target.vector_width) * FLOAT_BYTES if layout.copies else 0


def depthwise_parts(node: Node, target: Target, threads: int) -> int:
    """Blocks of (image, channel) planes, cut finer than one per thread (a busy core takes fewer),
    when the multiply-adds reach MIN_PARALLEL_FLOPS or the planes read and written PARALLEL_BYTES:
    a few taps per element, the kernel's time follows its bytes (MobileNetV2's 960 planes of 7 x 7:
    0.85 MFLOP, 40 us alone on one thread, 25 us split in an in-process A/B)."""
    shape = ConvGeometry.of(node)
    work = 2 * shape.batch * shape.channels * shape.out_height * shape.out_width * shape.window
    if threads <= 1 or (work < parallel.MIN_PARALLEL_FLOPS and node.inputs[0].type.nbytes + node.type.nbytes
                        < PARALLEL_BYTES):
        return 1
    return split_parts(shape.batch * shape.channels, threads * parallel.PARTS_PER_THREAD)[0]


def emit_conv2d_depthwise(kernel: Kernel) -> None:
    """The depthwise conv2d of the module docstring, for this part's planes."""
    node, builder = kernel.node, kernel.builder
    shape = ConvGeometry.of(node)
    layout = _Layout.of(shape, kernel.target)
    oh, ow = shape.out_height, shape.out_width
    bias, residual = contraction_operands(kernel)
    activation = node.attrs.get("activation")
    if layout.copies:  # the border stays zero: each plane writes only the interior
        zero_bytes(builder, kernel.scratch, (layout.elements + kernel.target.vector_width) * FLOAT_BYTES)
    first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, shape.batch * shape.channels, "plane")
    with for_range(builder, count, "plane.i", unroll=False) as index:
        plane = builder.add(first, index, name="plane")
        channel = builder.urem(plane, i64(shape.channels), name="channel")
        source = element_pointer(builder, kernel.inputs[0], builder.mul(plane, i64(shape.height * shape.width)), F32,
                                 "plane.x")
        if layout.copies:
            _copy_plane(builder, shape, layout, source, kernel.scratch)
            source = kernel.scratch
        taps = element_pointer(builder, kernel.inputs[1], builder.mul(channel, i64(shape.window)), F32, "taps")
        shift = load_element(builder, bias, channel, F32, "bias") if bias is not None else None
        out_plane = builder.mul(plane, i64(oh * ow), name="out_plane")

        def epilogue(total: ir.Value, skip: ir.Value | None) -> ir.Value:
            """total (a float or a vector) + bias, + the residual's `skip`, then the activation."""
            vector = total.type
            if shift is not None:
                total = builder.fadd(total, splat(builder, shift, vector) if vector != F32 else shift, name="biased")
            if skip is not None:
                total = builder.fadd(total, skip, name="residual")
            return float_math.activation(builder, activation, total)

        def store(total: ir.Value, places) -> None:
            store_outputs(kernel, epilogue, residual, total, places)

        if shape.window > MAX_REGISTER_TAPS:
            accumulate_rows(kernel, shape, source, taps, out_plane, store)
        else:
            _taps_in_registers(kernel, shape, layout, source, taps, store, out_plane)


def _taps_in_registers(kernel: Kernel, shape: ConvGeometry, layout: _Layout, source: ir.Value, taps: ir.Value,
                       store, out_plane: ir.Value) -> None:
    """One plane's outputs with its kh x kw weights in registers, in the form `layout` takes
    (depthwise_outputs.py): in place, whole vectors with masks, or rows of vectors."""
    builder = kernel.builder
    weights = [load_element(builder, taps, t, F32, f"w{t}") for t in range(shape.window)]
    if layout.masked and not layout.copies:
        in_place_outputs(kernel, shape, weights, source, store, out_plane)
        return
    offsets = [layout.tap(shape, i, j) for i in range(shape.kh) for j in range(shape.kw)]

    def window(start: ir.Value, lanes: int) -> ir.Value:
        """sum over the taps of w * the `lanes` elements at source[start + tap offset]."""
        total = None
        for weight, offset in zip(weights, offsets):
            read = builder.load(element_pointer(builder, source, builder.add(start, i64(offset)), F32),
                                typ=ir.VectorType(F32, lanes), align=FLOAT_BYTES)
            total = multiply_add(builder, total, weight, read)
        return total

    if layout.masked:
        masked_outputs(kernel, shape, layout.length, layout.group(shape, kernel.target.vector_width), window, store,
                       out_plane)
    else:
        row_outputs(kernel, shape, layout.length, window, store, out_plane)


def _copy_plane(builder: ir.IRBuilder, shape: ConvGeometry, layout: _Layout, source: ir.Value,
                scratch: ir.Value) -> None:
    """The plane's interior into scratch as `_Layout` says: input row y (padded row r = y + ph) to
    row r // sh of the row-phase r % sh sub-planes; in each, padded column c (input column c - pw) at
    column c // sw of sub-plane c % sw: a row copy, or per column phase k the input columns
    t*sw + k - pw that lie in the image (static bounds)."""
    (ph, pw), sh, sw, length = shape.padding, layout.row_phases, layout.column_phases, layout.length
    with for_range(builder, shape.height, "copy.y", unroll=False) as y:
        row_from = element_pointer(builder, source, builder.mul(y, i64(shape.width)), F32, "copy.from")
        padded_row = builder.add(y, i64(ph))
        phase, sub_row = (builder.urem(padded_row, i64(sh)), builder.udiv(padded_row, i64(sh))) if sh > 1 else \
            (i64(0), padded_row)

        def row_to(k: int) -> ir.Value:
            """The start of this row in column-phase k's sub-plane."""
            sub_plane = builder.add(builder.mul(phase, i64(sw)), i64(k))
            return element_pointer(builder, scratch, builder.mul(builder.add(builder.mul(sub_plane, i64(layout.rows)),
                                                                              sub_row), i64(length)), F32, "copy.to")

        if sw == 1:
            copy_bytes(builder, element_pointer(builder, row_to(0), pw, F32), row_from, shape.width * FLOAT_BYTES,
                       may_overlap=False)
        else:  # a strided read and a contiguous write per phase (LLVM vectorizes it: wide loads, shuffles)
            for k in range(sw):
                first = max(0, -(-(pw - k) // sw))  # t with 0 <= t*s + k - pw < width
                last = (shape.width - 1 + pw - k) // sw
                if last < first:
                    continue
                to = row_to(k)
                with for_range(builder, last - first + 1, f"copy.t{k}") as offset:
                    t = builder.add(offset, i64(first))
                    value = load_element(builder, row_from, affine_offset(builder, [(t, sw)], k - pw), F32)
                    store_element(builder, value, to, t)


