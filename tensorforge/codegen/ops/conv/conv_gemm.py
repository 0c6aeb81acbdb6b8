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

from llvmlite import ir

from ....ir import Node
from ....ir.ops_nn import split_contraction
from ...gemm.gemm import BlockStep, minimum
from ...gemm.micro_kernel import Epilogue
from ...gemm.packing import pack_a_panels
from ...gemm.run_packing import pack_a_rows
from ...gemm.tiling import FLOAT_BYTES, GemmTiling, gemm_tiling
from ...kernel import Kernel
from ...llvm.utils import (
    F32,
    I8,
    affine_offset,
    as_i64,
    element_pointer,
    for_range,
    i64,
    with_tail,
)
from ...lowering import PackedConstant
from ...memory import align_up
from ...target import Target
from ...threads import parallel
from ...threads.parallel import split_parts
from .fused_pool import pooled_rows, ring_elements
from .geometry import (
    ConvGeometry,
    depth_block,
    offset_range,
    padded_image,
    part_range,
    uses_tiled_conv,
    worth_a_team,
)
from .slivers import gather_flat_sliver, gather_sliver


def flat_columns(shape: ConvGeometry, tiling: GemmTiling) -> bool:
    """Whether the GEMM's columns are the plane's pixels in order rather than one output row at a time.

    Always for a pointwise convolution read in place (1 x 1, stride 1, no padding: pixel p is element p
    of an input plane); otherwise whenever the whole plane fills the column panels better than one
    row does. Besides the lanes, a block of the plane's panels writes each output channel in one run
    of its pixels, several rows long: SqueezeNet's convs at 111 x 111 and 55 x 55 (rows filling
    7/8 of their panels) ran 1.05-1.08x faster so than by rows (in-process A/B, batch 1 and 8),
    though the lanes gained little. A fused pool keeps rows (it pools runs of them)."""
    if shape.pooled:
        return False
    if shape.window == 1 and shape.stride == (1, 1) and not shape.is_padded:
        return True
    nr = tiling.columns
    row_fill = shape.out_width / (-(-shape.out_width // nr) * nr)
    plane = shape.out_height * shape.out_width
    return plane / (-(-plane // nr) * nr) > row_fill


def _weight_prepacked(node: Node) -> bool:
    return uses_tiled_conv(node) and node.inputs[1].op == "constant"


def _scratch_layout(shape: ConvGeometry, tiling: GemmTiling, weight_packed: bool) -> tuple[int, int, int, int]:
    """Byte offsets in scratch of the im2col sliver, the packed weight block and (with a fused pool)
    the ring of the convolution's rows that a pooled row reads (the padded image is at 0), and the
    total."""
    kc = tiling.depth_blocks(shape.taps, shape.window)[1]
    image = shape.channels * shape.padded_plane if shape.is_padded else 0
    sliver_at = align_up(image * FLOAT_BYTES)
    slivers = _block_panels(tiling, kc)
    if not flat_columns(shape, tiling):  # a block is (part of) one output row's panels
        slivers = min(slivers, -(-shape.out_width // tiling.columns))
    weight_at = align_up(sliver_at + slivers * kc * tiling.columns * FLOAT_BYTES)
    rows = -(-shape.group_outputs // tiling.rows) * tiling.rows
    ring_at = align_up(weight_at + (0 if weight_packed else rows * kc * FLOAT_BYTES))
    ring_bytes = ring_elements(shape, tiling.vector_width) * FLOAT_BYTES if shape.pooled else 0
    return sliver_at, weight_at, ring_at, ring_at + ring_bytes


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


def emit_conv2d_tiled(kernel: Kernel) -> None:
    """conv2d (f32) with stride, padding, dilation, groups, an optional bias, the fused activation
    and the fused max pool, through the GEMM micro-kernel.

    Without a pool: per image, group and depth block, every output row y (blocks of its column
    panels of NR pixels, then every row panel of output channels over the block) goes straight to
    the output; with flat columns (flat_columns), blocks of the plane's panels in order instead. With a pool:
    per image, group and pooled row p, the depth blocks run over the convolution's rows its window
    reads that are not computed yet into a ring of kh rows in scratch (channel stride kh * OW), and
    `fused_pool.pooled_rows` writes row p from them.
    """
    node, builder, tiling = kernel.node, kernel.builder, gemm_tiling(kernel.target)
    shape = ConvGeometry.of(node)
    depth_count, kc = tiling.depth_blocks(shape.taps, shape.window)
    og, mr, nr = shape.group_outputs, tiling.rows, tiling.columns
    weight_packed = 1 in kernel.packed
    sliver_at, weight_at, ring_at, _ = _scratch_layout(shape, tiling, weight_packed)
    sliver, weight_block, ring = (builder.gep(kernel.scratch, [i64(offset)], inbounds=True, source_etype=I8)
                                  for offset in (sliver_at, weight_at, ring_at))
    _, _, bias, residual = split_contraction(list(kernel.inputs), node.attrs["residual"])
    epilogue = Epilogue(bias="row" if bias is not None else None, activation=node.attrs.get("activation"),
                        residual=residual is not None)
    out_plane = shape.out_height * shape.out_width
    flat = flat_columns(shape, tiling)
    by_images = shape.batch > 1
    by_channels = kernel.parts > 1 and splits_channels(shape, tiling)
    # The part's output channels of each group: from row0, part_rows of them (all without a channel split).
    first_panel, row0, part_rows = i64(0), i64(0), i64(og)
    if by_channels:
        first_panel, panel_count = parallel.even_bounds(builder, kernel.part, kernel.parts, -(-og // mr), og, mr, "t")
        row0 = builder.mul(first_panel, i64(mr), name="row0")
        part_rows = minimum(builder, builder.sub(i64(og), row0), builder.mul(panel_count, i64(mr)), "part_rows")

    def blocks(n: ir.Value, image: ir.Value, g: ir.Value, output_rows, c_at, ldc: int) -> None:
        """Every depth block of group g over the output rows `output_rows()` yields; c_at(y, pixel,
        row) is the element offset from kernel.output or the ring (a fused pool) of the output channel
        `row` (an i64 within the image) at row y, column `pixel`, with channel stride ldc."""
        with for_range(builder, depth_count, "pc") as block:
            first_channel, depth, first_tap = depth_block(builder, shape, block, kc)
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

            def run_block(each_panel, step=step, gather=gather, c_tile=c_tile, residual_tile=residual_tile,
                          bias_at=bias_at) -> None:
                _run_block(builder, step, ldc, each_panel, gather, c_tile, residual_tile, bias_at,
                           -(-og // mr) <= INTERLEAVED_ROW_PANELS)

            if flat:
                _flat_blocks(builder, shape, tiling, sliver, kc, share, run_block)
                return
            row = [(x0, min(nr, shape.out_width - x0)) for x0 in range(0, shape.out_width, nr)]
            per_block = _block_panels(tiling, kc)
            with output_rows() as y:
                for start in range(0, len(row), per_block):
                    run_block(_row_panels(builder, tiling, sliver, kc, y, row[start:start + per_block]))

    # The part's share of one image's (unpooled) output, all of it when the parts split images or channels:
    # (first, count) of the plane's panels (flat columns) or of its output rows. The padded copy of the
    # image holds the input rows that share reads.
    share_units = -(-out_plane // nr) if flat else shape.out_height
    share = ((i64(0), i64(share_units)) if by_images or by_channels
             else parallel.even_bounds(builder, kernel.part, kernel.parts, share_units, out_plane, nr, "share") if flat
             else parallel.part_bounds(builder, kernel.part, kernel.parts, share_units, "share"))
    pixels = None
    if not shape.pooled:
        first, count = share
        unit = nr if flat else shape.out_width
        pixels = (builder.mul(first, i64(unit)), minimum(builder, builder.mul(count, i64(unit)),
                                                         builder.sub(i64(out_plane), builder.mul(first, i64(unit)))))
    with (part_range(builder, kernel, shape.batch, "n") if by_images else for_range(builder, 1, "n")) as n:
        image = padded_image(kernel, shape, n, pixels)
        with for_range(builder, shape.groups, "g") as g:
            if not shape.pooled:
                def to_output(y: ir.Value, pixel: ir.Value, row: ir.Value, n=n) -> ir.Value:
                    at = affine_offset(builder, [(n, kernel.output_image), (row, out_plane), (y, shape.out_width)],
                                       pixel)
                    return element_pointer(builder, kernel.output, at, F32, "c_tile")

                blocks(n, image, g, lambda: offset_range(builder, *share, "y"), to_output, out_plane)
            else:
                pooled_rows(builder, kernel, shape, ring, n, image, g, blocks)


# Column panels run in blocks: the slivers of a block are gathered side by side, then every row panel
# of output channels runs over all of them in turn, so that a channel's output is written (and its
# residual read) in runs of a block's pixels, not of one panel's 128 bytes at a time (ResNet-50's
# 1 x 1 convs at 56 x 56 ran 1.2-1.45x faster, whole CNNs at batch 8 1.05-1.07x, in-process A/B).
# A block's slivers fill up to this much of scratch (64 KiB to 512 KiB timed the same).
COLUMN_BLOCK_BYTES = 128 << 10
# A GEMM of at most this many row panels runs each panel's sliver as soon as it is gathered, so the
# next gather can overlap the micro-kernel calls (no A panel is reused across many slivers anyway).
INTERLEAVED_ROW_PANELS = 2


def _block_panels(tiling: GemmTiling, kc: int) -> int:
    """Column panels per block: slivers of kc x NR floats within COLUMN_BLOCK_BYTES."""
    return max(1, COLUMN_BLOCK_BYTES // (kc * tiling.columns * FLOAT_BYTES))


def _flat_blocks(builder: ir.IRBuilder, shape: ConvGeometry, tiling: GemmTiling, sliver: ir.Value, kc: int,
                 share: tuple[ir.Value, ir.Value], run_block) -> None:
    """run_block(each_panel) for the plane's panels of NR pixels `share` (first, count) in
    blocks of _block_panels; each_panel(visit) calls visit(u, sliver, y, first pixel, valid pixels)
    for the block's panels, their slivers side by side from `sliver` (y is 0, `valid` NR but for the
    plane's last panel)."""
    nr = tiling.columns
    plane = shape.out_height * shape.out_width
    panels = -(-plane // nr)
    first, count = share
    per_block = _block_panels(tiling, kc)
    blocks = builder.udiv(builder.add(count, i64(per_block - 1)), i64(per_block), name="xb.count")
    with for_range(builder, blocks, "xb", unroll=False) as block:
        start = builder.add(first, builder.mul(block, i64(per_block)), name="xb.first")
        block_panels = minimum(builder, builder.sub(builder.add(first, count), start), per_block, "xb.panels")

        def each_panel(visit, start=start, block_panels=block_panels) -> None:
            with for_range(builder, block_panels, "xb.u", unroll=False) as u:
                panel = builder.add(start, u, name="xb.panel")
                pixel = builder.mul(panel, i64(nr), name="xb.pixel")
                into = element_pointer(builder, sliver, builder.mul(u, i64(kc * nr)), F32, "xb.sliver")
                with_tail(builder, panel, panels - 1, plane % nr, nr,
                          lambda valid, u=u, into=into, pixel=pixel: visit(u, into, i64(0), pixel, valid))

        run_block(each_panel)


def _row_panels(builder: ir.IRBuilder, tiling: GemmTiling, sliver: ir.Value, kc: int, y: ir.Value,
                panels: list[tuple[int, int]]):
    """each_panel (as _flat_blocks gives it) for output row y's column panels `panels` ((first column,
    valid columns) each, static), their slivers side by side from `sliver`."""
    def each_panel(visit) -> None:
        for u, (x0, valid) in enumerate(panels):
            visit(u, element_pointer(builder, sliver, u * kc * tiling.columns, F32, "xb.sliver"), y, i64(x0), valid)

    return each_panel


def _run_block(builder: ir.IRBuilder, step: BlockStep, ldc: int, each_panel, gather, c_tile, residual_tile,
               bias_at, interleaved: bool) -> None:
    """One block of column panels: each panel's sliver gathered (`gather(y, x0, valid, into)`), then for
    every row panel the micro-kernel over each of them in turn; the row panel's first call (the block's
    panel u = 0, static or not) takes its prefetch. `interleaved` (few row panels): each panel's sliver
    is gathered, then every row panel runs over it, before the next panel's (no prefetch)."""
    def call(rows: int, t: ir.Value, into: ir.Value, y: ir.Value, x0: ir.Value, valid: int,
             fetch: str | None) -> None:
        step.call(rows, t, into, valid, c_tile(t, y, x0), ldc, bias_at(t), residual_tile(t, y, x0), fetch)

    if interleaved:
        def gather_and_run(u, into: ir.Value, y: ir.Value, x0: ir.Value, valid: int) -> None:
            gather(y, x0, valid, into)
            step.each_row_panel(lambda rows, t, _: call(rows, t, into, y, x0, valid, None))

        each_panel(gather_and_run)
        return
    each_panel(lambda u, into, y, x0, valid: gather(y, x0, valid, into))

    def row_panel(rows: int, t: ir.Value, prefetch: str | None) -> None:
        def visit(u, into: ir.Value, y: ir.Value, x0: ir.Value, valid: int) -> None:
            if prefetch is None or isinstance(u, int):
                call(rows, t, into, y, x0, valid, prefetch if u == 0 else None)
                return
            with builder.if_else(builder.icmp_unsigned("==", u, i64(0))) as (first_call, other):
                with first_call:
                    call(rows, t, into, y, x0, valid, prefetch)
                with other:
                    call(rows, t, into, y, x0, valid, None)

        each_panel(visit)

    step.each_row_panel(row_panel)
