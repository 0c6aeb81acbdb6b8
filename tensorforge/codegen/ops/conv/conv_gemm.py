"""f32 conv2d as GEMMs on the shared micro-kernel (gemm/gemm.py), with a packed im2col of one panel at a time.

For each image n and group g, the convolution is the GEMM (o < Og, q = (c, i, j) < Cg * kh * kw)

    out[n, g*Og + o, y, x] = sum over q of w[g*Og + o, q] * x_pad[n, g*Cg + c, y*sh + i*dh, x*sw + j*dw]
                             (+ bias[g*Og + o]: per row of the GEMM, the micro-kernel's row-bias epilogue)

with M = Og output channels, K = Cg * kh * kw taps and the output pixels as columns. The weight is
the A operand, packed into micro-kernel panels at compile time when it is a constant
(`pack_conv_weight`: f32[G, ceil(Og/MR), K, MR]). Columns are taken one output row at a time, in
panels of NR pixels (the last panel of a row has OW % NR). For each depth block (whole input
channels, about kc taps) and block of panels (COLUMN_BLOCK_BYTES), their kc x NR im2col slivers are
gathered into scratch (conv/slivers.py), then every row panel of A runs against each of them in
turn. im2col never exists beyond one block's slivers; a padded input needs one padded image in
scratch. (Deep convolutions whose panels waste many lanes take conv/pixel_rows.py's form instead.)

When the plane fills the column panels better than an output row does (a 7 x 7 output leaves 25 of
32 AVX-512 lanes idle by rows), the columns are the image's pixels in order instead (`flat_columns`):
a panel may then span output rows; the output tile is still contiguous (pixel p of the plane is element p of an output
channel). A 1 x 1 convolution with stride 1 and no padding reads its pixels contiguously either way,
and always takes this form.

Threads (`conv_parts`): several images split by images; one image by its output channels when its
plane has few column panels (`splits_channels`: each part streams its share of the weight once),
else by output rows or column panels.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from llvmlite import ir

from ....ir import DType, Node
from ....ir.ops_nn import split_contraction, unpooled_conv2d_type
from ...gemm.gemm import BlockStep, minimum
from ...gemm.micro_kernel import Epilogue
from ...gemm.packing import pack_a_panels
from ...gemm.run_packing import pack_a_rows
from ...gemm.tiling import FLOAT_BYTES, GemmTiling, gemm_tiling
from ...kernel import Kernel
from ...llvm import scalar
from ...llvm.utils import (
    F32,
    I8,
    affine_offset,
    as_i64,
    copy_bytes,
    element_pointer,
    fill_elements,
    for_range,
    i64,
    lane_indices,
)
from ...lowering import PackedConstant
from ...memory import align_up
from ...target import Target
from ...threads import parallel
from ...threads.parallel import split_parts
from .slivers import gather_flat_sliver, gather_sliver


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
    out_height: int  # of the convolution (before a fused pool)
    out_width: int
    pooled: bool = False  # pool="max_2x2": the node's result is the 2 x 2 max pool of the convolution's

    @classmethod
    def of(cls, node: Node) -> ConvGeometry:
        n, c, h, w = node.inputs[0].shape
        o, cg, kh, kw = node.inputs[1].shape
        attrs = node.attrs
        pooled = attrs.get("pool") is not None
        out_height, out_width = (unpooled_conv2d_type(node) if pooled else node.type).shape[2:]
        return cls(n, c, h, w, o, attrs["groups"], cg, kh, kw, attrs["stride"], attrs["padding"], attrs["dilation"],
                   out_height, out_width, pooled)

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

    @property
    def pooled_shape(self) -> tuple[int, int]:
        """(height, width) of the pooled result: floor halves of the convolution's."""
        return self.out_height // 2, self.out_width // 2


def flat_columns(shape: ConvGeometry, tiling: GemmTiling) -> bool:
    """Whether the GEMM's columns are the plane's pixels in order rather than one output row at a time.

    Always for a pointwise convolution read in place (1 x 1, stride 1, no padding: pixel p is element p
    of an input plane); otherwise whenever the whole plane fills the column panels better than one
    row does. Besides the lanes, a block of the plane's panels writes each output channel in one run
    of its pixels, several rows long: SqueezeNet's convs at 111 x 111 and 55 x 55 (rows filling
    7/8 of their panels) ran 1.05-1.08x faster so than by rows (in-process A/B, batch 1 and 8),
    though the lanes gained little. A fused pool keeps rows (it pools pairs of them)."""
    if shape.pooled:
        return False
    if shape.window == 1 and shape.stride == (1, 1) and not shape.is_padded:
        return True
    nr = tiling.columns
    row_fill = shape.out_width / (-(-shape.out_width // nr) * nr)
    plane = shape.out_height * shape.out_width
    return plane / (-(-plane // nr) * nr) > row_fill


def uses_tiled_conv(node: Node) -> bool:
    """f32 convolutions with a non-empty output go through the GEMM; integers keep the exact loop nest."""
    return node.inputs[0].dtype is DType.f32 and node.type.size > 0


def _weight_prepacked(node: Node) -> bool:
    return uses_tiled_conv(node) and node.inputs[1].op == "constant"


def _scratch_layout(shape: ConvGeometry, tiling: GemmTiling, weight_packed: bool) -> tuple[int, int, int, int]:
    """Byte offsets in scratch of the im2col sliver, the packed weight block and (with a fused pool)
    the two rows of the convolution's result that one pooled row reads (the padded image is at 0),
    and the total."""
    kc = tiling.depth_blocks(shape.taps, shape.window)[1]
    image = shape.channels * shape.padded_plane if shape.is_padded else 0
    sliver_at = align_up(image * FLOAT_BYTES)
    slivers = _block_panels(tiling, kc)
    if not flat_columns(shape, tiling):  # a block is (part of) one output row's panels
        slivers = min(slivers, -(-shape.out_width // tiling.columns))
    weight_at = align_up(sliver_at + slivers * kc * tiling.columns * FLOAT_BYTES)
    rows = -(-shape.group_outputs // tiling.rows) * tiling.rows
    pair_at = align_up(weight_at + (0 if weight_packed else rows * kc * FLOAT_BYTES))
    pair_bytes = shape.group_outputs * 2 * shape.out_width * FLOAT_BYTES if shape.pooled else 0
    return sliver_at, weight_at, pair_at, pair_at + pair_bytes


def tiled_conv_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """One padded image, one im2col sliver, and a block of packed weight unless it is a constant."""
    return _scratch_layout(ConvGeometry.of(node), gemm_tiling(target), 1 in packed)[3]


def pack_conv_weight(node: Node, index: int, target: Target) -> PackedConstant | None:
    """A constant conv2d weight [O, Cg, kh, kw] as A panels per group, [G, ceil(Og/MR), Cg*kh*kw, MR]."""
    if index != 1 or not _weight_prepacked(node):
        return None
    shape, rows = ConvGeometry.of(node), gemm_tiling(target).rows
    grouped = node.inputs[1].value.reshape(shape.groups, shape.group_outputs, shape.taps)
    return PackedConstant(f"conv.a{rows}.g{shape.groups}", make=lambda: pack_a_panels(grouped, rows))


def worth_a_team(node: Node) -> bool:
    """Whether a tiled conv2d's work (its direct multiply-adds) is big enough to split among threads."""
    if not uses_tiled_conv(node):
        return False
    shape = ConvGeometry.of(node)
    return 2 * shape.batch * shape.outputs * shape.taps * shape.out_height * shape.out_width \
        >= parallel.MIN_PARALLEL_FLOPS


def column_panels(shape: ConvGeometry, tiling: GemmTiling) -> int:
    """The column panels (NR output pixels each) of one image and group."""
    if flat_columns(shape, tiling):
        return -(-shape.out_height * shape.out_width // tiling.columns)
    return shape.out_height * -(-shape.out_width // tiling.columns)


def splits_channels(shape: ConvGeometry, tiling: GemmTiling) -> bool:
    """Whether the parts of a one-image convolution take blocks of output channels (row panels of the
    GEMM, every pixel each) rather than blocks of its pixels.

    A small plane has few column panels (a 7 x 7 one: two), and a part of them would stream the whole
    weight for a few columns: split by channels, each part streams its share of the weight once, from
    L2 for every column panel. Every part then gathers every sliver: worth it while the part's row
    panels outnumber the column panels it would gather (CHANNEL_SPLIT_RATIO). A fused pool keeps rows."""
    if shape.batch > 1 or shape.groups > 1 or shape.pooled:
        return False
    return -(-shape.group_outputs // tiling.rows) >= CHANNEL_SPLIT_RATIO * column_panels(shape, tiling)


# splits_channels: the GEMM's row panels per column panel from which its parts split the output channels.
CHANNEL_SPLIT_RATIO = 2


def conv_parts(node: Node, target: Target, threads: int) -> int:
    """Parts of a tiled conv2d for a team of `threads`: blocks of images, of output channels, or of
    output rows (or column panels) of one image."""
    if not worth_a_team(node):
        return 1
    shape = ConvGeometry.of(node)
    if shape.batch > 1:  # whole images: cut finer, a late thread takes fewer
        return split_parts(shape.batch, threads * parallel.PARTS_PER_THREAD)[0]
    if splits_channels(shape, gemm_tiling(target)):
        return split_parts(-(-shape.group_outputs // gemm_tiling(target).rows), threads)[0]
    if flat_columns(shape, gemm_tiling(target)):  # column panels of one image
        return split_parts(-(-shape.out_height * shape.out_width // gemm_tiling(target).columns), threads)[0]
    rows = shape.pooled_shape[0] if shape.pooled else shape.out_height
    return split_parts(rows, threads)[0]  # (pooled) rows of one image: every part pads its own copy


def part_range(builder: ir.IRBuilder, kernel: Kernel, units: int, name: str):
    """for_range over this part's share of `units` (all of them unless the kernel is split); yields the unit."""
    return _offset_range(builder, *parallel.part_bounds(builder, kernel.part, kernel.parts, units, name), name)


@contextmanager
def _offset_range(builder: ir.IRBuilder, first: ir.Value, count, name: str):
    with for_range(builder, count, f"{name}.i") as index:
        yield builder.add(first, index, name=name)


def padded_image(kernel: Kernel, shape: ConvGeometry, n: ir.Value) -> ir.Value:
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
    """conv2d (f32) with stride, padding, dilation, groups, an optional bias, the fused activation
    and the fused 2 x 2 max pool, through the GEMM micro-kernel.

    Without a pool: per image, group and depth block, every output row y (blocks of its column
    panels of NR pixels, then every row panel of output channels over the block) goes straight to
    the output; with flat columns (flat_columns), blocks of the plane's panels in order instead. With a pool:
    per image, group and pooled row p, the depth blocks run over the convolution's rows 2p and
    2p + 1 into a two-row buffer in scratch (channel stride 2 * OW), and `_pool_pair` writes row p.
    """
    node, builder, tiling = kernel.node, kernel.builder, gemm_tiling(kernel.target)
    shape = ConvGeometry.of(node)
    depth_count, kc = tiling.depth_blocks(shape.taps, shape.window)
    og, mr, nr = shape.group_outputs, tiling.rows, tiling.columns
    weight_packed = 1 in kernel.packed
    sliver_at, weight_at, pair_at, _ = _scratch_layout(shape, tiling, weight_packed)
    sliver, weight_block, pair = (builder.gep(kernel.scratch, [i64(offset)], inbounds=True, source_etype=I8)
                                  for offset in (sliver_at, weight_at, pair_at))
    _, _, bias, residual = split_contraction(list(kernel.inputs), node.attrs["residual"])
    epilogue = Epilogue(bias="row" if bias is not None else None, activation=node.attrs.get("activation"),
                        residual=residual is not None)
    if shape.is_padded:
        fill_elements(builder, kernel.scratch, shape.channels * shape.padded_plane, ir.Constant(F32, 0.0), "pad")
    out_plane = shape.out_height * shape.out_width
    flat = flat_columns(shape, tiling)
    by_images = shape.batch > 1
    by_channels = kernel.parts > 1 and splits_channels(shape, tiling)
    # The part's output channels of each group: from row0, part_rows of them (all without a channel split).
    first_panel, row0, part_rows = i64(0), i64(0), i64(og)
    if by_channels:
        first_panel, panel_count = parallel.part_bounds(builder, kernel.part, kernel.parts, -(-og // mr), "t")
        row0 = builder.mul(first_panel, i64(mr), name="row0")
        part_rows = minimum(builder, builder.sub(i64(og), row0), builder.mul(panel_count, i64(mr)), "part_rows")

    def blocks(n: ir.Value, image: ir.Value, g: ir.Value, output_rows, c_at, ldc: int) -> None:
        """Every depth block of group g over the output rows `output_rows()` yields; c_at(y, pixel,
        row) is the element offset from kernel.output or the pair buffer of the output channel
        `row` (an i64 within the image) at row y, column `pixel`, with channel stride ldc."""
        with for_range(builder, depth_count, "pc") as block:
            first_channel = builder.mul(block, i64(kc // shape.window), name="c0")
            block_taps = builder.mul(builder.sub(i64(shape.group_channels), first_channel), i64(shape.window))
            depth = builder.select(builder.icmp_signed("<", block_taps, i64(kc)), block_taps, i64(kc), name="kc")
            first_tap = builder.mul(first_channel, i64(shape.window), name="first_tap")
            group_row = builder.add(builder.mul(g, i64(og)), row0, name="group_row")  # the part's first row
            if not weight_packed:
                origin = affine_offset(builder, [(group_row, shape.taps)], first_tap)
                pack_a_rows(builder, tiling, element_pointer(builder, kernel.inputs[1], origin, F32), shape.taps,
                            part_rows, depth, weight_block)

            def a_panel(t: ir.Value, g=g, first_tap=first_tap, depth=depth) -> ir.Value:
                if not weight_packed:
                    return element_pointer(builder, weight_block, builder.mul(builder.mul(t, depth), i64(mr)), F32)
                panel = affine_offset(builder, [(g, -(-og // mr))], builder.add(first_panel, t))
                start = affine_offset(builder, [(panel, shape.taps)], first_tap)
                return element_pointer(builder, kernel.inputs[1], builder.mul(start, i64(mr)), F32, "a_panel")

            step = BlockStep(builder, tiling, epilogue, depth, builder.icmp_unsigned("!=", block, i64(0)),
                             builder.icmp_unsigned("==", block, i64(depth_count - 1)), part_rows, og % mr, a_panel,
                             prefetch="a" if weight_packed else None, prefetch_ahead=shape.taps * mr)
            channel = affine_offset(builder, [(g, shape.group_channels)], first_channel)

            def gather(y: ir.Value, x0: ir.Value, valid: int, into: ir.Value, channel=channel, step=step) -> None:
                """The sliver of output pixels (y, x0..x0+valid) into `into` (flat columns: y is 0 and x0 the
                panel's first pixel of the plane)."""
                channels = builder.udiv(step.depth, i64(shape.window))
                if flat:
                    origin = affine_offset(builder, [(channel, shape.padded_plane)], 0)
                    gather_flat_sliver(builder, tiling, shape, image, into, channels, as_i64(origin), x0, valid)
                else:
                    origin = affine_offset(builder, [(channel, shape.padded_plane),
                                                     (y, shape.stride[0] * shape.padded_width),
                                                     (x0, shape.stride[1])])
                    gather_sliver(builder, tiling, shape, image, into, channels, as_i64(origin), valid)

            def c_tile(t: ir.Value, y: ir.Value, x0: ir.Value, group_row=group_row) -> ir.Value:
                return c_at(y, x0, affine_offset(builder, [(t, mr)], group_row))

            def residual_tile(t: ir.Value, y: ir.Value, x0: ir.Value, group_row=group_row) -> ir.Value | None:
                if residual is None:
                    return None
                row = affine_offset(builder, [(n, shape.outputs), (t, mr)], group_row)
                at = affine_offset(builder, [(row, out_plane), (y, shape.out_width)], x0)
                return element_pointer(builder, residual, at, F32, "residual_tile")

            def bias_at(t: ir.Value, group_row=group_row) -> ir.Value | None:
                if bias is None:
                    return None
                return element_pointer(builder, bias, affine_offset(builder, [(t, mr)], group_row), F32)

            if flat:
                def run_block(first: ir.Value, count: ir.Value, step=step, gather=gather, c_tile=c_tile,
                              residual_tile=residual_tile, bias_at=bias_at) -> None:
                    _flat_block(builder, shape, tiling, sliver, kc, first, count, step, gather, c_tile,
                                residual_tile, bias_at, ldc)

                _flat_blocks(builder, kernel, shape, tiling, kc, by_images or by_channels, run_block)
                return
            row = [(x0, min(nr, shape.out_width - x0)) for x0 in range(0, shape.out_width, nr)]
            per_block = _block_panels(tiling, kc)
            with output_rows() as y:
                for start in range(0, len(row), per_block):
                    _row_block(builder, tiling, sliver, kc, y, row[start:start + per_block], step, gather, c_tile,
                               residual_tile, bias_at, ldc)

    with (part_range(builder, kernel, shape.batch, "n") if by_images else for_range(builder, 1, "n")) as n:
        image = padded_image(kernel, shape, n)
        with for_range(builder, shape.groups, "g") as g:
            if not shape.pooled:
                def to_output(y: ir.Value, pixel: ir.Value, row: ir.Value, n=n) -> ir.Value:
                    at = affine_offset(builder, [(affine_offset(builder, [(n, shape.outputs)], row), out_plane),
                                                 (y, shape.out_width)], pixel)
                    return element_pointer(builder, kernel.output, at, F32, "c_tile")

                rows = ((lambda: for_range(builder, shape.out_height, "y")) if by_images or by_channels
                        else (lambda: part_range(builder, kernel, shape.out_height, "y")))
                blocks(n, image, g, rows, to_output, out_plane)
            else:
                _pooled_rows(builder, kernel, shape, pair, n, image, g, blocks)


# Column panels run in blocks: the slivers of a block are gathered side by side, then every row panel
# of output channels runs over all of them in turn, so that a channel's output is written (and its
# residual read) in runs of a block's pixels, not of one panel's 128 bytes at a time (ResNet-50's
# 1 x 1 convs at 56 x 56 ran 1.2-1.45x faster, whole CNNs at batch 8 1.05-1.07x, in-process A/B).
# A block's slivers fill up to this much of scratch (64 KiB to 512 KiB timed the same).
COLUMN_BLOCK_BYTES = 128 << 10


def _block_panels(tiling: GemmTiling, kc: int) -> int:
    """Column panels per block: slivers of kc x NR floats within COLUMN_BLOCK_BYTES."""
    return max(1, COLUMN_BLOCK_BYTES // (kc * tiling.columns * FLOAT_BYTES))


def _flat_blocks(builder: ir.IRBuilder, kernel: Kernel, shape: ConvGeometry, tiling: GemmTiling, kc: int,
                 whole_plane: bool, run_block) -> None:
    """run_block(first panel, panel count) for the plane's panels of NR pixels (this part's, unless
    `whole_plane`) in blocks of _block_panels."""
    panels = -(-shape.out_height * shape.out_width // tiling.columns)
    first, count = (i64(0), i64(panels)) if whole_plane else parallel.part_bounds(builder, kernel.part, kernel.parts,
                                                                                  panels, "xp")
    per_block = _block_panels(tiling, kc)
    blocks = builder.udiv(builder.add(count, i64(per_block - 1)), i64(per_block), name="xb.count")
    with for_range(builder, blocks, "xb", unroll=False) as block:
        start = builder.add(first, builder.mul(block, i64(per_block)), name="xb.first")
        run_block(start, minimum(builder, builder.sub(builder.add(first, count), start), per_block, "xb.panels"))


def _flat_block(builder: ir.IRBuilder, shape: ConvGeometry, tiling: GemmTiling, sliver: ir.Value, kc: int,
                first: ir.Value, count: ir.Value, step: BlockStep, gather, c_tile, residual_tile, bias_at,
                ldc: int) -> None:
    """Gather the slivers of panels first..first+count (the plane's last one holds its remaining
    pixels) side by side, then for every row panel, the micro-kernel over each of them in turn (the
    row panel's first call takes its prefetch)."""
    nr = tiling.columns
    plane = shape.out_height * shape.out_width
    last, tail = -(-plane // nr) - 1, plane % nr

    def each_panel(visit) -> None:
        """visit(u, panel, pixel, valid) for u < count, with a static `valid` (a branch for the tail)."""
        with for_range(builder, count, "xb.u", unroll=False) as u:
            panel = builder.add(first, u, name="xb.panel")
            pixel = builder.mul(panel, i64(nr), name="xb.pixel")
            if not tail:
                visit(u, panel, pixel, nr)
                return
            with builder.if_else(builder.icmp_unsigned("==", panel, i64(last))) as (partial, whole):
                with partial:
                    visit(u, panel, pixel, tail)
                with whole:
                    visit(u, panel, pixel, nr)

    def sliver_of(u: ir.Value) -> ir.Value:
        return element_pointer(builder, sliver, builder.mul(u, i64(kc * nr)), F32, "xb.sliver")

    each_panel(lambda u, panel, pixel, valid: gather(i64(0), pixel, valid, sliver_of(u)))

    def row_panel(rows: int, t: ir.Value, prefetch: str | None) -> None:
        def visit(u, panel, pixel, valid) -> None:
            def call(fetch: str | None) -> None:
                step.call(rows, t, sliver_of(u), valid, c_tile(t, i64(0), pixel), ldc, bias_at(t),
                          residual_tile(t, i64(0), pixel), fetch)

            if prefetch is None:
                call(None)
                return
            with builder.if_else(builder.icmp_unsigned("==", u, i64(0))) as (first_call, other):
                with first_call:
                    call(prefetch)
                with other:
                    call(None)

        each_panel(visit)

    step.each_row_panel(row_panel)


def _row_block(builder: ir.IRBuilder, tiling: GemmTiling, sliver: ir.Value, kc: int, y: ir.Value,
               panels: list[tuple[int, int]], step: BlockStep, gather, c_tile, residual_tile, bias_at,
               ldc: int) -> None:
    """_flat_block for output row y's column panels `panels` ((first column, valid columns) each, static)."""
    slivers = [element_pointer(builder, sliver, u * kc * tiling.columns, F32, "xb.sliver") for u in range(len(panels))]
    for into, (x0, valid) in zip(slivers, panels):
        gather(y, i64(x0), valid, into)

    def row_panel(rows: int, t: ir.Value, prefetch: str | None) -> None:
        for u, (into, (x0, valid)) in enumerate(zip(slivers, panels)):
            step.call(rows, t, into, valid, c_tile(t, y, i64(x0)), ldc, bias_at(t), residual_tile(t, y, i64(x0)),
                      prefetch if u == 0 else None)

    step.each_row_panel(row_panel)


def _pooled_rows(builder: ir.IRBuilder, kernel: Kernel, shape: ConvGeometry, pair: ir.Value, n: ir.Value,
                 image: ir.Value, g: ir.Value, blocks) -> None:
    """For each pooled row p (this part's, for one image): the convolution's rows 2p and 2p + 1 of
    group g into the pair buffer (`blocks`), then their pool into the output (`_pool_pair`)."""
    og, pooled_height = shape.group_outputs, shape.pooled_shape[0]
    with (for_range(builder, pooled_height, "p") if shape.batch > 1
          else part_range(builder, kernel, pooled_height, "p")) as p:
        group_row = builder.mul(g, i64(og), name="group_row")

        def to_pair(y: ir.Value, pixel: ir.Value, row: ir.Value) -> ir.Value:
            at = affine_offset(builder, [(builder.sub(row, group_row), 2 * shape.out_width),
                                         (builder.sub(y, builder.mul(p, i64(2))), shape.out_width)], pixel)
            return element_pointer(builder, pair, at, F32, "pair_tile")

        @contextmanager
        def two_rows():
            with for_range(builder, 2, "dy") as dy:
                yield builder.add(builder.mul(p, i64(2)), dy, name="y")

        blocks(n, image, g, two_rows, to_pair, 2 * shape.out_width)
        _pool_pair(builder, kernel, shape, pair, n, group_row, p)


def _pool_pair(builder: ir.IRBuilder, kernel: Kernel, shape: ConvGeometry, pair: ir.Value, n: ir.Value,
               group_row: ir.Value, p: ir.Value) -> None:
    """Pooled row p of the group's output channels: out[n, group_row + o, p, j] = the max of pair[o, 0:2,
    2j:2j+2], whole rows of up to 2W floats a vector at a time (np.maximum's NaN: llvm.maximum)."""
    pooled_height, pooled_width = shape.pooled_shape
    chunk = 2 * kernel.target.vector_width

    with for_range(builder, shape.group_outputs, "pool.o", unroll=False) as o:
        rows = element_pointer(builder, pair, builder.mul(o, i64(2 * shape.out_width)), F32, "pool.rows")
        channel = affine_offset(builder, [(n, shape.outputs)], builder.add(group_row, o))
        target = affine_offset(builder, [(channel, pooled_height * pooled_width), (p, pooled_width)], 0)
        for start in range(0, 2 * pooled_width, chunk):
            width = min(chunk, 2 * pooled_width - start)
            vector = ir.VectorType(F32, width)
            top, bottom = (builder.load(element_pointer(builder, rows, dy * shape.out_width + start, F32), typ=vector,
                                        align=FLOAT_BYTES) for dy in (0, 1))
            both = scalar.maximum(builder, DType.f32, top, bottom)
            even, odd = (builder.shuffle_vector(both, both, lane_indices(range(first, width, 2))) for first in (0, 1))
            pooled = scalar.maximum(builder, DType.f32, even, odd)
            builder.store(pooled, element_pointer(builder, kernel.output, builder.add(as_i64(target), i64(start // 2)),
                                                  F32), align=FLOAT_BYTES)
