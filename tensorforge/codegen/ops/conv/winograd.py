"""conv2d with winograd=true: Winograd's F(2x2, 3x3) on the GEMM micro-kernel (gemm/gemm.py).

Each 2 x 2 block ("tile") of the output is computed from the 4 x 4 block of padded input under it
(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):

    U[o, c] = G g[o, c] G^T          the weight, 4 x 4 per (o, c): done once, at compile time
    V[c, t] = B^T d[c, t] B          the input, 4 x 4 per (c, tile): additions only
    M[xi]   = U[xi] @ V[xi]          for each of the 16 positions xi: a GEMM [O, C] @ [C, tiles]
    Y[o, t] = A^T M[o, t] A          the 2 x 2 outputs: additions only; then + bias, relu, the pool

16 multiplications per input channel and tile where the direct convolution takes 36: 2.25x fewer
multiply-adds. An image's tiles are numbered row by row, t = ty * tiles_x + tx, so that the GEMMs'
columns fill whole NR panels whatever the plane's width; that sequence is cut into blocks of whole
panels (V and M of a block stay in the core's L2, BLOCK_BYTES), block 0 of each image holding the
remainder. At batch 1 the block size is the one that shares the image best between two parts (a
28 x 28 output in blocks of three tile rows left one part 3 of 5 blocks, and 48 of 64 columns busy).
The units that parts share out are (image, block):

    image:  the rows of the image that the part's blocks of it read, in scratch with a zero border:
            the conv's padding, and a row and a column more where the output's size is odd (the last
            tile's outputs past the edge are dropped); written once per part and image
    V:      the input transform written straight into the micro-kernel's packed B panels
            (16 x [panels, C, NR]), `lanes` consecutive tiles at a time, one vector each (`lanes`
            divides NR: a vector never crosses a panel). A vector's tiles may continue on the next
            rows of tiles: each row's 4 x 4 blocks are read with the columns shifted to its lanes
            and blended in by mask
    M:      16 x [O, block columns] row-major: the GEMMs' results (A: U packed as panels at compile time)
    output: the output transform, bias and activation, then, for each row of tiles a vector touches,
            either both output rows of its tiles or, with pool="max_2x2", their maximum: a tile is
            exactly one 2 x 2 pooling window
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ....ir import DType, Node
from ....ir.ops_nn import split_contraction
from ...gemm.gemm import BlockStep, minimum
from ...gemm.micro_kernel import Epilogue, splat
from ...gemm.packing import pack_a_panels
from ...gemm.tiling import FLOAT_BYTES, gemm_tiling
from ...kernel import Kernel
from ...llvm import float_math, scalar
from ...llvm.utils import (
    F32,
    I8,
    affine_offset,
    element_pointer,
    for_range,
    i64,
    lane_indices,
    load_element,
    masked_load,
    masked_store,
)
from ...lowering import PackedConstant
from ...memory import align_up
from ...target import Target
from ...threads import parallel
from ...threads.parallel import split_parts
from .geometry import ConvGeometry, bordered_rows, input_image, worth_a_team

# F(2x2, 3x3)'s weight transform (the input's B^T and the output's A^T are written out as additions below)
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
POSITIONS = 16  # 4 x 4: one GEMM each
BLOCK_BYTES = 768 << 10  # V and M of one block of tiles


@dataclass(frozen=True)
class WinogradGeometry:
    """The sizes of one conv2d's Winograd transform on one target."""

    conv: ConvGeometry
    lanes: int  # tiles per vector in the transforms: a power of two up to the vector width
    tiles_y: int  # rows of 2 x 2 output tiles
    tiles_x: int
    block_tiles: int  # tiles of a whole block (the row stride of M) ...
    panels: int  # ... in NR panels
    blocks: int  # per image; block 0 holds first_tiles

    @classmethod
    def of(cls, node: Node, target: Target) -> WinogradGeometry:
        conv, nr, width = ConvGeometry.of(node), gemm_tiling(target).columns, target.vector_width
        tiles_y, tiles_x = -(-conv.out_height // 2), -(-conv.out_width // 2)
        lanes = min(width, 1 << (tiles_x - 1).bit_length())
        tiles = tiles_y * tiles_x
        panel_bytes = POSITIONS * (conv.channels + conv.outputs) * nr * FLOAT_BYTES
        most = max(1, BLOCK_BYTES // panel_bytes)
        if conv.batch == 1:  # the block size that shares an image's tiles best between two parts
            block_panels = min(range(1, most + 1), key=lambda size: (_busiest_part(tiles, size * nr, width), -size))
        else:
            block_panels = min(most, -(-tiles // nr))
        block_tiles = block_panels * nr
        return cls(conv, lanes, tiles_y, tiles_x, block_tiles, block_panels, -(-tiles // block_tiles))

    @property
    def first_tiles(self) -> int:
        """Tiles of block 0 of an image (the remainder: the other blocks are whole)."""
        return self.tiles_y * self.tiles_x - (self.blocks - 1) * self.block_tiles

    @property
    def image_height(self) -> int:
        return 2 * self.tiles_y + 2

    @property
    def image_width(self) -> int:
        """Room for a row's last vector of tiles: tiles_x rounded up to `lanes`."""
        return 2 * -(-self.tiles_x // self.lanes) * self.lanes + 2

    def scratch_layout(self) -> tuple[int, int, int]:
        """Byte offsets in scratch of V and M (the bordered image is at 0), and the total."""
        conv = self.conv
        v_at = align_up(conv.channels * self.image_height * self.image_width * FLOAT_BYTES)
        m_at = align_up(v_at + POSITIONS * conv.channels * self.block_tiles * FLOAT_BYTES)
        return v_at, m_at, m_at + POSITIONS * conv.outputs * self.block_tiles * FLOAT_BYTES


def _busiest_part(tiles: int, block_tiles: int, width: int) -> int:
    """GEMM columns of the busier of two parts sharing `tiles` in blocks of `block_tiles` (the first one
    short), its tail computed in whole vectors of `width`."""
    blocks = -(-tiles // block_tiles)
    first = tiles - (blocks - 1) * block_tiles
    per_part = split_parts(blocks, 2)[1]
    first_part = -(-first // width) * width + (per_part - 1) * block_tiles
    return max(first_part, (blocks - per_part) * block_tiles)


def winograd_parts(node: Node, target: Target, threads: int) -> int:
    """Parts for a team of `threads`: runs of (image, block of tiles) units, cut finer when there
    are several images (a late thread takes fewer)."""
    if not worth_a_team(node):
        return 1
    geometry = WinogradGeometry.of(node, target)
    batch = geometry.conv.batch
    return split_parts(batch * geometry.blocks, threads * (parallel.PARTS_PER_THREAD if batch > 1 else 1))[0]


def winograd_scratch_bytes(node: Node, target: Target) -> int:
    return WinogradGeometry.of(node, target).scratch_layout()[2]


def winograd_weight(weight: np.ndarray) -> np.ndarray:
    """g [O, C, 3, 3] -> U [16, O, C]: G g G^T per (o, c), position xi = 4 i + j (in float64, then f32)."""
    transformed = np.einsum("ai,ocij,bj->aboc", G, weight.astype(np.float64), G)
    return transformed.reshape(POSITIONS, *weight.shape[:2]).astype(np.float32)


def pack_winograd_weight(node: Node, target: Target) -> PackedConstant:
    """U as micro-kernel A panels, [16, ceil(O/MR), C, MR]."""
    rows = gemm_tiling(target).rows
    weight = node.inputs[1].value
    return PackedConstant(f"conv.winograd.a{rows}", make=lambda: pack_a_panels(winograd_weight(weight), rows))


def _input_rows(d: list[list[ir.Value]], builder: ir.IRBuilder) -> list[list[ir.Value]]:
    """B^T d B of a 4 x 4 block of vectors d[i][j] (each a vector of tiles): rows, then columns."""
    def transform(x0, x1, x2, x3):
        return [builder.fsub(x0, x2), builder.fadd(x1, x2), builder.fsub(x2, x1), builder.fsub(x1, x3)]

    rows = list(zip(*[transform(*(d[i][j] for i in range(4))) for j in range(4)]))  # rows[i][j]
    return [transform(*rows[i]) for i in range(4)]


def _output_tile(m: list[list[ir.Value]], builder: ir.IRBuilder) -> list[list[ir.Value]]:
    """A^T m A of a 4 x 4 block of vectors: the 2 x 2 outputs y[i][j]."""
    def transform(x0, x1, x2, x3):
        return [builder.fadd(builder.fadd(x0, x1), x2), builder.fsub(builder.fsub(x1, x2), x3)]

    rows = list(zip(*[transform(*(m[i][j] for i in range(4))) for j in range(4)]))  # rows[i][j], i < 2
    return [transform(*rows[i]) for i in range(2)]


def emit_conv2d_winograd(kernel: Kernel) -> None:
    """The conv2d (f32, 3 x 3, stride 1, one group; bias, relu, pool="max_2x2") by F(2x2, 3x3), its
    weight transformed and packed at compile time (ops/conv/conv.py convolves directly otherwise); a part
    takes consecutive (image, block of tiles) units."""
    node, builder, target = kernel.node, kernel.builder, kernel.target
    geometry = WinogradGeometry.of(node, target)
    conv = geometry.conv
    v_at, m_at, _ = geometry.scratch_layout()
    v, m = (builder.gep(kernel.scratch, [i64(offset)], inbounds=True, source_etype=I8) for offset in (v_at, m_at))
    _, _, bias, residual = split_contraction(list(kernel.inputs), node.attrs["residual"])

    def block_end(block: ir.Value) -> ir.Value:  # the tile after block `block` of an image
        return builder.add(builder.mul(block, i64(geometry.block_tiles)), i64(geometry.first_tiles))

    units = conv.batch * geometry.blocks  # (image, block of tiles): a part takes consecutive units
    first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, units, "unit")
    last = builder.sub(builder.add(first, count), i64(1), name="unit.last")
    with for_range(builder, count, "unit.i", unroll=False) as index:
        unit = builder.add(first, index, name="unit")
        n, block = builder.udiv(unit, i64(geometry.blocks), name="n"), builder.urem(unit, i64(geometry.blocks))
        short = builder.icmp_unsigned("==", block, i64(0), name="short")
        t0 = builder.select(short, i64(0), block_end(builder.sub(block, i64(1))), name="t0")
        with builder.if_then(builder.or_(short, builder.icmp_unsigned("==", index, i64(0)))):
            # the part's first unit of image n copies the rows of the part's blocks of it
            last_block = minimum(builder, builder.sub(last, builder.mul(n, i64(geometry.blocks))), geometry.blocks - 1)
            _copy_rows(kernel, geometry, n, t0, block_end(last_block))
        span = _Span(geometry, builder, short, t0)
        _transform_input(kernel, geometry, v, span)
        _gemms(kernel, geometry, v, m, short)
        _transform_output(kernel, geometry, m, bias, residual, n, span)


class _Span:
    """The tiles [t0, t0 + count) of one block, `lanes` at a time: vector k is block columns
    [k * lanes, k * lanes + lanes), from tile x of tile row ty on; its tiles continue on the next
    rows of tiles (`segments` rows at most), the lanes past the block's count are idle."""

    def __init__(self, geometry: WinogradGeometry, builder: ir.IRBuilder, short: ir.Value, t0: ir.Value):
        self.geometry, self.builder, self.t0 = geometry, builder, t0
        self.count = builder.select(short, i64(geometry.first_tiles), i64(geometry.block_tiles), name="tiles")
        lanes, tiles_x = geometry.lanes, geometry.tiles_x
        self.vectors = builder.udiv(builder.add(self.count, i64(lanes - 1)), i64(lanes), name="vectors")
        self.segments = 1 if tiles_x % lanes == 0 else 1 + -(-(lanes - 1) // tiles_x)  # rows of tiles a vector touches

    def vector(self, k: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value, ir.Value]:
        """(block column, tile row, tile column, valid lanes) of vector k."""
        builder, lanes = self.builder, self.geometry.lanes
        column = builder.mul(k, i64(lanes), name="wt.column")
        tile = builder.add(self.t0, column)
        valid = minimum(builder, builder.sub(self.count, column), lanes, name="wt.valid")
        return (column, builder.udiv(tile, i64(self.geometry.tiles_x), name="wt.ty"),
                builder.urem(tile, i64(self.geometry.tiles_x), name="wt.tx"), valid)

    def segment(self, q: int, x: ir.Value, valid: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
        """(lo, hi, start) of row q of a vector from tile column x: lanes [lo, hi) are tiles of tile row
        ty + q, lane l its tile column l - start."""
        builder, geometry = self.builder, self.geometry
        start = builder.sub(i64(q * geometry.tiles_x), x)  # the row's first lane (negative: before the vector)
        lo = _at_least(builder, start, i64(0))
        hi = minimum(builder, builder.add(start, i64(geometry.tiles_x)), valid)
        return lo, hi, start


def _at_least(builder: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return builder.select(builder.icmp_signed(">", x, y), x, y)


def _all(builder: ir.IRBuilder, lo: ir.Value, hi: ir.Value, lanes: int) -> ir.Value:
    """Whether lanes [lo, hi) are all of a vector's `lanes`."""
    return builder.and_(builder.icmp_signed("==", lo, i64(0)), builder.icmp_signed("==", hi, i64(lanes)))


def _lane_mask(builder: ir.IRBuilder, lanes: int, lo: ir.Value, hi: ir.Value, scale: int = 1) -> ir.Value:
    """The mask of the elements e of a vector of `lanes` with lo <= e // scale < hi."""
    numbers = ir.Constant(ir.VectorType(ir.IntType(64), lanes), [e // scale for e in range(lanes)])
    return builder.and_(builder.icmp_signed(">=", numbers, splat(builder, lo, numbers.type)),
                        builder.icmp_signed("<", numbers, splat(builder, hi, numbers.type)), name="wt.mask")


def _store_span(builder: ir.IRBuilder, value: ir.Value, pointer: ir.Value, whole: ir.Value, mask: ir.Value) -> None:
    """`value` at `pointer`: a whole-vector store when `whole`, else the lanes of `mask` only."""
    with builder.if_else(whole) as (all_lanes, some_lanes):
        with all_lanes:
            builder.store(value, pointer, align=FLOAT_BYTES)
        with some_lanes:
            masked_store(builder, value, pointer, mask)


def _load_span(builder: ir.IRBuilder, pointer: ir.Value, vector: ir.VectorType, whole: ir.Value,
               mask: ir.Value) -> ir.Value:
    """A vector from `pointer`: whole when `whole`, else the lanes of `mask` (the others undefined)."""
    with builder.if_else(whole) as (all_lanes, some_lanes):
        with all_lanes:
            loaded = builder.load(pointer, typ=vector, align=FLOAT_BYTES)
            from_all = builder.block
        with some_lanes:
            masked = masked_load(builder, pointer, mask, ir.Constant(vector, None))
            from_some = builder.block
    value = builder.phi(vector, name="wt.loaded")
    value.add_incoming(loaded, from_all)
    value.add_incoming(masked, from_some)
    return value


def _copy_rows(kernel: Kernel, geometry: WinogradGeometry, n: ir.Value, first_tile: ir.Value,
               end_tile: ir.Value) -> None:
    """The rows of image n's bordered copy in scratch that tiles [first_tile, end_tile) read (a tile
    row ty reads rows 2 ty .. 2 ty + 3), border included."""
    builder, tiles_x = kernel.builder, geometry.tiles_x
    first_row = builder.mul(builder.udiv(first_tile, i64(tiles_x)), i64(2), name="copy.first_row")
    end = builder.add(builder.mul(builder.udiv(builder.sub(end_tile, i64(1)), i64(tiles_x)), i64(2)), i64(4))
    rows = builder.sub(minimum(builder, end, geometry.image_height), first_row, name="copy.rows")
    bordered_rows(kernel, geometry.conv, input_image(kernel, geometry.conv, n), first_row, rows, geometry.image_width,
                  geometry.image_height * geometry.image_width)


def _transform_input(kernel: Kernel, geometry: WinogradGeometry, v: ir.Value, span: _Span) -> None:
    """V = B^T d B for every channel and vector of the block's tiles into the packed B panels of the
    16 GEMMs (a vector never crosses a panel: `lanes` divides NR). A vector's 4 x 4 blocks of input
    come from up to `segments` rows of tiles, each read with the columns shifted to its lanes and
    blended in by mask; lanes past the block's tiles read the last row's (idle columns of V)."""
    builder, channels, lanes = kernel.builder, geometry.conv.channels, geometry.lanes
    nr, width = gemm_tiling(kernel.target).columns, geometry.image_width
    plane = geometry.image_height * width
    wide = ir.VectorType(F32, 2 * lanes)
    even, odd = lane_indices(range(0, 2 * lanes, 2)), lane_indices(range(1, 2 * lanes, 2))
    with for_range(builder, channels, "wi.c", unroll=False) as c, for_range(builder, span.vectors, "wi.v") as k:
        column, ty, x, valid = span.vector(k)
        sources, masks = [], []
        for q in range(span.segments):
            lo, _, start = span.segment(q, x, valid)
            row = builder.add(ty, i64(q))
            inside = builder.icmp_unsigned("<", row, i64(geometry.tiles_y))  # else only idle lanes: any row
            offset = builder.sub(builder.mul(row, i64(2 * width)), builder.mul(start, i64(2)))
            sources.append(builder.select(inside, offset, i64(0), name="wi.from"))
            masks.append(_lane_mask(builder, 2 * lanes, lo, i64(lanes), scale=2) if q else None)
        panel, lane = builder.udiv(column, i64(nr)), builder.urem(column, i64(nr))
        d = []
        for i in range(4):  # input row i of the tiles: columns 2x + j, j < 4, deinterleaved
            pair = [None, None]
            for source, mask in zip(sources, masks):
                at = affine_offset(builder, [(c, plane)], builder.add(source, i64(i * width)))
                left = element_pointer(builder, kernel.scratch, at, F32)
                for half in (0, 1):
                    loaded = builder.load(element_pointer(builder, left, 2 * half, F32), typ=wide,
                                          align=FLOAT_BYTES)
                    pair[half] = loaded if mask is None else builder.select(mask, loaded, pair[half])
            d.append([builder.shuffle_vector(pair[j // 2], pair[j // 2], even if j % 2 == 0 else odd)
                      for j in range(4)])
        transformed = _input_rows(d, builder)
        for xi in range(POSITIONS):  # V[xi], panel, row c, lanes from `lane`
            at = affine_offset(builder, [(panel, channels * nr), (c, nr)], builder.add(
                lane, i64(xi * geometry.panels * channels * nr)))
            builder.store(transformed[xi // 4][xi % 4], element_pointer(builder, v, at, F32), align=FLOAT_BYTES)


def _gemms(kernel: Kernel, geometry: WinogradGeometry, v: ir.Value, m: ir.Value, short: ir.Value) -> None:
    """M[xi] = U[xi] @ V[xi] over the block's tiles (whole NR panels, and block 0's tail panel), in
    depth blocks."""
    builder, tiling = kernel.builder, gemm_tiling(kernel.target)
    channels, outputs, columns = geometry.conv.channels, geometry.conv.outputs, geometry.block_tiles
    mr, nr = tiling.rows, tiling.columns
    depth_count, kc = tiling.depth_blocks(channels)
    row_panels = -(-outputs // mr)
    short_panels, tail = divmod(geometry.first_tiles, nr)
    weight = kernel.inputs[1]
    whole_panels = builder.select(short, i64(short_panels), i64(columns // nr), name="wg.panels")
    with for_range(builder, depth_count, "wg.pc") as block, for_range(builder, POSITIONS, "wg.xi", unroll=False) as xi:
        first = builder.mul(block, i64(kc), name="wg.c0")
        left = builder.sub(i64(channels), first)
        depth = builder.select(builder.icmp_signed("<", left, i64(kc)), left, i64(kc), name="wg.kc")

        def a_panel(t: ir.Value, xi=xi, first=first) -> ir.Value:
            start = affine_offset(builder, [(affine_offset(builder, [(xi, row_panels)], t), channels)], first)
            return element_pointer(builder, weight, builder.mul(start, i64(mr)), F32, "wg.a")

        step = BlockStep(builder, tiling, Epilogue(), depth, builder.icmp_unsigned("!=", block, i64(0)),
                         builder.icmp_unsigned("==", block, i64(depth_count - 1)), i64(outputs), outputs % mr,
                         a_panel)

        def panel(j: ir.Value, width: int, xi=xi, first=first, step=step) -> None:
            start = affine_offset(builder, [(affine_offset(builder, [(xi, geometry.panels)], j), channels)], first)
            b_panel = element_pointer(builder, v, builder.mul(start, i64(nr)), F32, "wg.b")

            def c_tile(t: ir.Value) -> ir.Value:
                row = affine_offset(builder, [(xi, outputs), (t, mr)], 0)
                return element_pointer(builder, m, affine_offset(builder, [(row, columns), (j, nr)], 0), F32)

            step.row_panels(b_panel, width, c_tile, columns)

        with for_range(builder, whole_panels, "wg.j", unroll=False) as j:
            panel(j, nr)
        if tail:
            with builder.if_then(short):
                panel(i64(short_panels), tail)


def _transform_output(kernel: Kernel, geometry: WinogradGeometry, m: ir.Value, bias: ir.Value | None,
                      residual: ir.Value | None, n: ir.Value, span: _Span) -> None:
    """Y = A^T M A for every output channel and vector of the block's tiles, + bias, then, for each row
    of tiles the vector touches, either the tiles' two output rows (+ the residual's, then the
    activation) into the output, or (pool="max_2x2") the maximum of its activated outputs."""
    builder, node, conv, lanes = kernel.builder, kernel.node, geometry.conv, geometry.lanes
    vector = ir.VectorType(F32, lanes)
    activation = node.attrs["activation"]
    (out_height, out_width), (pooled_height, pooled_width) = (conv.out_height, conv.out_width), conv.pooled_shape
    interleave = lane_indices(index for lane in range(lanes) for index in (lane, lanes + lane))

    def maximum(x: ir.Value, y: ir.Value) -> ir.Value:  # np.maximum: NaN wins
        return scalar.maximum(builder, DType.f32, x, y)

    output_image = builder.mul(n, i64(kernel.output_image), name="wo.image")  # the images may lie apart
    with for_range(builder, conv.outputs, "wo.o", unroll=False) as o, for_range(builder, span.vectors, "wo.v") as k:
        column, ty, x, valid = span.vector(k)
        segments = [span.segment(q, x, valid) for q in range(span.segments)]
        values = [[builder.load(element_pointer(builder, m, affine_offset(
            builder, [(affine_offset(builder, [(i64(4 * i + j), conv.outputs)], o), geometry.block_tiles)], column),
            F32), typ=vector, align=FLOAT_BYTES) for j in range(4)] for i in range(4)]
        y = _output_tile(values, builder)
        if bias is not None:
            shift = splat(builder, load_element(builder, bias, o, F32, "wo.bias"), vector)
            y = [[builder.fadd(value, shift) for value in row] for row in y]
        if conv.pooled:
            y = [[float_math.activation(builder, activation, value) for value in row] for row in y]  # NaN stays
            pooled = maximum(maximum(y[0][0], y[0][1]), maximum(y[1][0], y[1][1]))
        for q, (lo, hi, start) in enumerate(segments):
            row = builder.add(ty, i64(q), name="wo.ty")
            if conv.pooled:  # tile (row, l - start) is pooled output (row, l - start)
                hi = minimum(builder, hi, builder.add(start, i64(pooled_width)))
                here = builder.and_(builder.icmp_signed("<", lo, hi),
                                    builder.icmp_unsigned("<", row, i64(pooled_height)))
                with builder.if_then(here):
                    at = builder.sub(affine_offset(builder, [(o, pooled_height * pooled_width),
                                                             (row, pooled_width)], output_image), start)
                    _store_span(builder, pooled, element_pointer(builder, kernel.output, at, F32),
                                _all(builder, lo, hi, lanes), _lane_mask(builder, lanes, lo, hi))
                continue
            lo_out = builder.mul(lo, i64(2))  # elements of the interleaved rows; an odd width drops the last
            hi_out = minimum(builder, builder.mul(hi, i64(2)), builder.add(builder.mul(start, i64(2)),
                                                                           i64(out_width)))
            whole, mask = _all(builder, lo_out, hi_out, 2 * lanes), _lane_mask(builder, 2 * lanes, lo_out, hi_out)
            with builder.if_then(builder.icmp_signed("<", lo_out, hi_out)):
                for dy in range(2):
                    output_row = builder.add(builder.mul(row, i64(2)), i64(dy), name="wo.y")
                    with builder.if_then(builder.icmp_unsigned("<", output_row, i64(out_height))):
                        both = builder.shuffle_vector(y[dy][0], y[dy][1], interleave)
                        at = builder.sub(affine_offset(builder, [(o, out_height * out_width),
                                                                 (output_row, out_width)], 0),
                                         builder.mul(start, i64(2)), name="wo.at")  # within the image
                        if residual is not None:
                            skip = element_pointer(builder, residual, affine_offset(
                                builder, [(n, conv.outputs * out_height * out_width)], at), F32, "wo.residual")
                            both = builder.fadd(both, _load_span(builder, skip, both.type, whole, mask))
                        both = float_math.activation(builder, activation, both)  # NaN stays NaN
                        _store_span(builder, both, element_pointer(builder, kernel.output,
                                                                   builder.add(output_image, at), F32), whole, mask)
