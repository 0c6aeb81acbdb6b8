"""f32 conv2d as GEMMs on the shared micro-kernel (emit_gemm.py), with a packed im2col of one panel at a time.

For each image n and group g, the convolution is the GEMM (o < Og, q = (c, i, j) < Cg * kh * kw)

    out[n, g*Og + o, y, x] = sum over q of w[g*Og + o, q] * x_pad[n, g*Cg + c, y*sh + i*dh, x*sw + j*dw]
                             (+ bias[g*Og + o]: per row of the GEMM, the micro-kernel's row-bias epilogue)

with M = Og output channels, K = Cg * kh * kw taps and the output pixels as columns. The weight is
the A operand, packed into micro-kernel panels at compile time when it is a constant
(`pack_conv_weight`: f32[G, ceil(Og/MR), K, MR]). Columns are taken one output row at a time, in
panels of NR pixels (the last panel of a row has OW % NR). For each depth block (whole input
channels, about kc taps) and panel, the kc x NR im2col sliver is gathered into scratch (whole
vector copies when the stride is 1), then every row panel of A runs against it. im2col never
exists beyond that one L1-sized sliver; a padded input needs one padded image in scratch.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from llvmlite import ir

from ..ir import DType, Node
from ..ir.ops_nn import split_contraction
from . import parallel
from .emit_gemm import BlockStep, pack_a_rows
from .emit_micro_kernel import Epilogue, vector_type
from .kernel import Kernel
from .llvm_utils import (
    F32,
    I8,
    affine_offset,
    as_i64,
    copy_bytes,
    element_pointer,
    fill_elements,
    for_range,
    i64,
    load_element,
)
from .memory import align_up
from .packing import PackedConstant, pack_a_panels
from .parallel import split_parts
from .target import Target
from .tiling import FLOAT_BYTES, GemmTiling, gemm_tiling


@dataclass(frozen=True)
class ConvGeometry:
    """The static sizes of one conv2d node, as the GEMM sees them."""

    batch: int
    channels: int
    height: int
    width: int
    outputs: int
    groups: int
    group_channels: int  # Cg
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out_height: int
    out_width: int

    @classmethod
    def of(cls, node: Node) -> ConvGeometry:
        n, c, h, w = node.inputs[0].shape
        o, cg, kh, kw = node.inputs[1].shape
        attrs = node.attrs
        return cls(n, c, h, w, o, attrs["groups"], cg, kh, kw, attrs["stride"], attrs["padding"], attrs["dilation"],
                   *node.shape[2:])

    @property
    def group_outputs(self) -> int:
        """Og: the GEMM's rows."""
        return self.outputs // self.groups

    @property
    def window(self) -> int:
        """kh * kw: the taps of one input channel (depth blocks hold whole channels)."""
        return self.kh * self.kw

    @property
    def taps(self) -> int:
        """K = Cg * kh * kw: the GEMM's depth."""
        return self.group_channels * self.window

    @property
    def is_padded(self) -> bool:
        return self.padding != (0, 0)

    @property
    def padded_width(self) -> int:
        return self.width + 2 * self.padding[1]

    @property
    def padded_plane(self) -> int:
        return (self.height + 2 * self.padding[0]) * self.padded_width


def uses_tiled_conv(node: Node) -> bool:
    """f32 convolutions with a non-empty output go through the GEMM; integers keep the exact loop nest."""
    return node.inputs[0].dtype is DType.f32 and node.type.size > 0


def _weight_prepacked(node: Node) -> bool:
    return uses_tiled_conv(node) and node.inputs[1].op == "constant"


def _scratch_layout(shape: ConvGeometry, tiling: GemmTiling, weight_packed: bool) -> tuple[int, int, int]:
    """Byte offsets in scratch of the im2col sliver and the packed weight block (the padded image is
    at 0), and the total."""
    kc = tiling.depth_blocks(shape.taps, shape.window)[1]
    image = shape.channels * shape.padded_plane if shape.is_padded else 0
    sliver_at = align_up(image * FLOAT_BYTES)
    weight_at = align_up(sliver_at + kc * tiling.columns * FLOAT_BYTES)
    rows = -(-shape.group_outputs // tiling.rows) * tiling.rows
    return sliver_at, weight_at, weight_at + (0 if weight_packed else rows * kc * FLOAT_BYTES)


def tiled_conv_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """One padded image, one im2col sliver, and a block of packed weight unless it is a constant."""
    return _scratch_layout(ConvGeometry.of(node), gemm_tiling(target), 1 in packed)[2]


def pack_conv_weight(node: Node, index: int, target: Target) -> PackedConstant | None:
    """A constant conv2d weight [O, Cg, kh, kw] as A panels per group, [G, ceil(Og/MR), Cg*kh*kw, MR]."""
    if index != 1 or not _weight_prepacked(node):
        return None
    shape, rows = ConvGeometry.of(node), gemm_tiling(target).rows
    grouped = node.inputs[1].value.reshape(shape.groups, shape.group_outputs, shape.taps)
    return PackedConstant(f"conv.a{rows}", pack_a_panels(grouped, rows))


def conv_parts(node: Node, target: Target, threads: int) -> int:
    """Parts of a tiled conv2d for a team of `threads`: blocks of images, or of output rows for one image."""
    if not uses_tiled_conv(node):
        return 1
    shape = ConvGeometry.of(node)
    flops = 2 * shape.batch * shape.outputs * shape.taps * shape.out_height * shape.out_width
    if flops < parallel.MIN_PARALLEL_FLOPS:
        return 1
    if shape.batch > 1:  # whole images: cut finer, a late thread takes fewer
        return split_parts(shape.batch, threads * parallel.PARTS_PER_THREAD)[0]
    return split_parts(shape.out_height, threads)[0]  # rows of one image: every part pads its own copy


def _part_range(builder: ir.IRBuilder, kernel: Kernel, units: int, name: str):
    """for_range over this part's share of `units` (all of them unless the kernel is split); yields the unit."""
    return _offset_range(builder, *parallel.part_bounds(builder, kernel.part, kernel.parts, units, name), name)


@contextmanager
def _offset_range(builder: ir.IRBuilder, first: ir.Value, count, name: str):
    with for_range(builder, count, f"{name}.i") as index:
        yield builder.add(first, index, name=name)


def _gather_sliver(builder: ir.IRBuilder, tiling: GemmTiling, shape: ConvGeometry, image: ir.Value,
                   sliver: ir.Value, channels: ir.Value, origin: ir.Value, valid: int) -> None:
    """sliver[q, t] = image[origin + c*plane + i*dh*WP + j*dw + t*sw] for q = (c, i, j), c < channels, t < valid.

    `origin` is the element offset of the block's first channel, input row and column; lanes past
    `valid` are zero. With stride 1 a whole vector of a sliver row is one load.
    """
    (dh, dw), sw = shape.dilation, shape.stride[1]
    width, vector = tiling.vector_width, vector_type(tiling)
    with (for_range(builder, channels, "sliver.c", unroll=False) as c, for_range(builder, shape.kh, "sliver.i") as i,
          for_range(builder, shape.kw, "sliver.j") as j):
        tap = affine_offset(builder, [(c, shape.window), (i, shape.kw)], j, "q")
        source_at = affine_offset(builder, [(c, shape.padded_plane), (i, dh * shape.padded_width), (j, dw)], origin)
        source = element_pointer(builder, image, source_at, F32, "sliver.from")
        target = element_pointer(builder, sliver, builder.mul(as_i64(tap), i64(tiling.columns)), F32, "sliver.to")
        for v in range(tiling.vectors):
            lanes = max(0, min(width, valid - v * width))
            if lanes == width and sw == 1:
                value = builder.load(element_pointer(builder, source, v * width, F32), typ=vector, align=FLOAT_BYTES)
            else:
                value = ir.Constant(vector, None)
                for lane in range(lanes):
                    element = load_element(builder, source, (v * width + lane) * sw, F32)
                    value = builder.insert_element(value, element, i64(lane))
            builder.store(value, element_pointer(builder, target, v * width, F32), align=FLOAT_BYTES)


def _image(kernel: Kernel, shape: ConvGeometry, n: ir.Value) -> ir.Value:
    """Image n of the input, copied into the zero-bordered scratch image when there is padding."""
    builder = kernel.builder
    source = element_pointer(builder, kernel.inputs[0], builder.mul(n, i64(shape.channels * shape.height *
                                                                            shape.width)), F32, "image")
    if not shape.is_padded:
        return source
    (ph, pw), wp = shape.padding, shape.padded_width
    with for_range(builder, shape.channels * shape.height, "interior", unroll=False) as row:
        channel, y = builder.udiv(row, i64(shape.height)), builder.urem(row, i64(shape.height))
        target = affine_offset(builder, [(channel, shape.padded_plane), (y, wp)], ph * wp + pw)
        copy_bytes(builder, element_pointer(builder, kernel.scratch, target, F32),
                   element_pointer(builder, source, builder.mul(row, i64(shape.width)), F32),
                   shape.width * FLOAT_BYTES, may_overlap=False)
    return kernel.scratch


def emit_conv2d_tiled(kernel: Kernel) -> None:
    """conv2d (f32) with stride, padding, dilation, groups, an optional bias and the fused activation,
    through the GEMM micro-kernel."""
    node, builder, tiling = kernel.node, kernel.builder, gemm_tiling(kernel.target)
    shape = ConvGeometry.of(node)
    depth_count, kc = tiling.depth_blocks(shape.taps, shape.window)
    og, mr, nr = shape.group_outputs, tiling.rows, tiling.columns
    weight_packed = 1 in kernel.packed
    sliver_at, weight_at, _ = _scratch_layout(shape, tiling, weight_packed)
    sliver, weight_block = (builder.gep(kernel.scratch, [i64(offset)], inbounds=True, source_etype=I8)
                            for offset in (sliver_at, weight_at))
    _, _, bias, residual = split_contraction(list(kernel.inputs), node.attrs["residual"])
    epilogue = Epilogue(bias="row" if bias is not None else None, activation=node.attrs.get("activation"),
                        residual=residual is not None)
    if shape.is_padded:
        fill_elements(builder, kernel.scratch, shape.channels * shape.padded_plane, ir.Constant(F32, 0.0), "pad")

    by_images = shape.batch > 1
    with (_part_range(builder, kernel, shape.batch, "n") if by_images else for_range(builder, 1, "n")) as n:
        image = _image(kernel, shape, n)
        with for_range(builder, shape.groups, "g") as g, for_range(builder, depth_count, "pc") as block:
            first_channel = builder.mul(block, i64(kc // shape.window), name="c0")
            block_taps = builder.mul(builder.sub(i64(shape.group_channels), first_channel), i64(shape.window))
            depth = builder.select(builder.icmp_signed("<", block_taps, i64(kc)), block_taps, i64(kc), name="kc")
            first_tap = builder.mul(first_channel, i64(shape.window), name="first_tap")
            group_row = builder.mul(g, i64(og), name="group_row")
            if not weight_packed:
                origin = affine_offset(builder, [(group_row, shape.taps)], first_tap)
                pack_a_rows(builder, tiling, element_pointer(builder, kernel.inputs[1], origin, F32), shape.taps,
                            i64(og), depth, weight_block)

            def a_panel(t: ir.Value, g=g, first_tap=first_tap, depth=depth) -> ir.Value:
                if not weight_packed:
                    return element_pointer(builder, weight_block, builder.mul(builder.mul(t, depth), i64(mr)), F32)
                panel = affine_offset(builder, [(g, -(-og // mr))], t)
                start = affine_offset(builder, [(panel, shape.taps)], first_tap)
                return element_pointer(builder, kernel.inputs[1], builder.mul(start, i64(mr)), F32, "a_panel")

            step = BlockStep(builder, tiling, epilogue, depth, builder.icmp_unsigned("!=", block, i64(0)),
                             builder.icmp_unsigned("==", block, i64(depth_count - 1)), i64(og), og % mr, a_panel)
            channel = affine_offset(builder, [(g, shape.group_channels)], first_channel)
            with (for_range(builder, shape.out_height, "y") if by_images
                  else _part_range(builder, kernel, shape.out_height, "y")) as y:

                def column_panel(x0: ir.Value, valid: int, n=n, y=y, channel=channel, group_row=group_row,
                                 step=step) -> None:
                    """Gather the sliver of output pixels (y, x0..x0+valid) and run every row panel on it."""
                    origin = affine_offset(builder, [(channel, shape.padded_plane),
                                                     (y, shape.stride[0] * shape.padded_width),
                                                     (x0, shape.stride[1])])
                    channels = builder.udiv(step.depth, i64(shape.window))
                    _gather_sliver(builder, tiling, shape, image, sliver, channels, as_i64(origin), valid)
                    out_plane = shape.out_height * shape.out_width
                    pixel = affine_offset(builder, [(y, shape.out_width)], x0)
                    first_row = affine_offset(builder, [(n, shape.outputs)], group_row)

                    def tile_offset(t: ir.Value):
                        row = affine_offset(builder, [(t, mr)], first_row)
                        return affine_offset(builder, [(row, out_plane)], pixel)

                    def c_tile(t: ir.Value) -> ir.Value:
                        return element_pointer(builder, kernel.output, tile_offset(t), F32, "c_tile")

                    def residual_tile(t: ir.Value) -> ir.Value:
                        return element_pointer(builder, residual, tile_offset(t), F32, "residual_tile")

                    def bias_at(t: ir.Value) -> ir.Value:
                        return element_pointer(builder, bias, affine_offset(builder, [(t, mr)], group_row), F32)

                    step.row_panels(sliver, valid, c_tile, out_plane, bias_at if bias is not None else None,
                                    residual_tile if residual is not None else None)

                with for_range(builder, shape.out_width // nr, "xp") as panel:
                    column_panel(builder.mul(panel, i64(nr)), nr)
                if shape.out_width % nr:
                    column_panel(i64(shape.out_width - shape.out_width % nr), shape.out_width % nr)
