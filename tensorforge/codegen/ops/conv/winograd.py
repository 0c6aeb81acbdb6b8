"""conv2d with winograd=true: Winograd's F(2x2, 3x3) on the GEMM micro-kernel (gemm/gemm.py).

Each 2 x 2 block ("tile") of the output is computed from the 4 x 4 block of padded input under it
(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):

    U[o, c] = G g[o, c] G^T          the weight, 4 x 4 per (o, c): done once, at compile time
    V[c, t] = B^T d[c, t] B          the input, 4 x 4 per (c, tile): additions only
    M[xi]   = U[xi] @ V[xi]          for each of the 16 positions xi: a GEMM [O, C] @ [C, tiles]
    Y[o, t] = A^T M[o, t] A          the 2 x 2 outputs: additions only; then + bias, relu, the pool

16 multiplications per input channel and tile where the direct convolution takes 36: 2.25x fewer
multiply-adds. Per image and block of tile rows (V and M stay in the core's L2, BLOCK_BYTES; one
image has at least two blocks), the units that parts share out:

    image:  the image in scratch with a zero border: the conv's padding, and a row and a column
            more where the output's size is odd (the last tile's outputs past the edge are dropped)
    V:      the input transform written straight into the micro-kernel's packed B panels
            (16 x [panels, C, NR]); the transforms run `lanes` tiles at a time, one vector each
    M:      16 x [O, columns] row-major: the GEMMs' results (A: U packed as panels at compile time)
    output: the output transform, bias and activation, then either both rows of each tile or,
            with pool="max_2x2", their maximum: a tile is exactly one 2 x 2 pooling window

Tile x of a row of tiles is GEMM column `row * row_tiles + x`, with row_tiles a multiple of
`lanes`, which divides NR: a vector of tiles never straddles two B panels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ....ir import DType, Node
from ....ir.ops_nn import split_contraction
from ...gemm.gemm import BlockStep
from ...gemm.micro_kernel import Epilogue, load_lanes, splat, store_lanes
from ...gemm.packing import pack_a_panels
from ...gemm.tiling import FLOAT_BYTES, gemm_tiling
from ...kernel import Kernel
from ...llvm import float_math, scalar
from ...llvm.utils import (
    F32,
    I8,
    affine_offset,
    element_pointer,
    fill_elements,
    for_range,
    i64,
    lane_indices,
    load_element,
    store_element,
)
from ...lowering import PackedConstant
from ...memory import align_up
from ...target import Target
from ...threads import parallel
from ...threads.parallel import split_parts
from .geometry import ConvGeometry, worth_a_team

# F(2x2, 3x3)'s weight transform (the input's B^T and the output's A^T are written out as additions below)
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
POSITIONS = 16  # 4 x 4: one GEMM each
BLOCK_BYTES = 768 << 10  # V and M of one block of tile rows


@dataclass(frozen=True)
class WinogradGeometry:
    """The sizes of one conv2d's Winograd transform on one target."""

    conv: ConvGeometry
    lanes: int  # tiles per vector in the transforms: a power of two up to the vector width
    tiles_y: int  # rows of 2 x 2 output tiles
    tiles_x: int
    row_tiles: int  # GEMM columns per row of tiles: tiles_x rounded up to `lanes`
    block_rows: int  # rows of tiles per block
    columns: int  # GEMM columns of a block, a multiple of NR (the row stride of M)

    @classmethod
    def of(cls, node: Node, target: Target) -> WinogradGeometry:
        conv, nr = ConvGeometry.of(node), gemm_tiling(target).columns
        tiles_y, tiles_x = -(-conv.out_height // 2), -(-conv.out_width // 2)
        lanes = min(target.vector_width, 1 << (tiles_x - 1).bit_length())
        row_tiles = -(-tiles_x // lanes) * lanes
        row_bytes = POSITIONS * (conv.channels + conv.outputs) * row_tiles * FLOAT_BYTES
        block_rows = max(1, min(tiles_y, BLOCK_BYTES // row_bytes))
        if conv.batch == 1:  # at least two blocks: a part each, for two threads
            block_rows = min(block_rows, -(-tiles_y // 2))
        return cls(conv, lanes, tiles_y, tiles_x, row_tiles, block_rows, -(-block_rows * row_tiles // nr) * nr)

    @property
    def image_height(self) -> int:
        return 2 * self.tiles_y + 2

    @property
    def image_width(self) -> int:
        return 2 * self.row_tiles + 2

    @property
    def blocks(self) -> int:
        return -(-self.tiles_y // self.block_rows)

    def scratch_layout(self) -> tuple[int, int, int]:
        """Byte offsets in scratch of V and M (the bordered image is at 0), and the total."""
        conv = self.conv
        v_at = align_up(conv.channels * self.image_height * self.image_width * FLOAT_BYTES)
        m_at = align_up(v_at + POSITIONS * conv.channels * self.columns * FLOAT_BYTES)
        return v_at, m_at, m_at + POSITIONS * conv.outputs * self.columns * FLOAT_BYTES


def winograd_parts(node: Node, target: Target, threads: int) -> int:
    """Parts for a team of `threads`: runs of (image, block of tile rows) units, cut finer when there
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
    takes consecutive (image, block of tile rows) units."""
    node, builder, target = kernel.node, kernel.builder, kernel.target
    geometry = WinogradGeometry.of(node, target)
    conv, channels = geometry.conv, geometry.conv.channels
    height, width = geometry.image_height, geometry.image_width
    v_at, m_at, _ = geometry.scratch_layout()
    image = kernel.scratch
    v, m = (builder.gep(kernel.scratch, [i64(offset)], inbounds=True, source_etype=I8) for offset in (v_at, m_at))
    _, _, bias, residual = split_contraction(list(kernel.inputs), node.attrs["residual"])
    fill_elements(builder, image, channels * height * width, ir.Constant(F32, 0.0), "border")

    units = conv.batch * geometry.blocks  # (image, block of tile rows): a part takes consecutive units
    first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, units, "unit")
    with for_range(builder, count, "unit.i", unroll=False) as index:
        unit = builder.add(first, index, name="unit")
        n, block = builder.udiv(unit, i64(geometry.blocks), name="n"), builder.urem(unit, i64(geometry.blocks))
        starts = builder.or_(builder.icmp_unsigned("==", block, i64(0)), builder.icmp_unsigned("==", index, i64(0)))
        with builder.if_then(starts):  # the part's first unit of image n copies it
            _copy_image(kernel, geometry, n)
        first_row = builder.mul(block, i64(geometry.block_rows), name="ty0")
        left = builder.sub(i64(geometry.tiles_y), first_row)
        rows = builder.select(builder.icmp_signed("<", left, i64(geometry.block_rows)), left,
                              i64(geometry.block_rows), name="tile_rows")
        _transform_input(kernel, geometry, v, first_row, rows)
        _gemms(kernel, geometry, v, m, builder.mul(rows, i64(geometry.row_tiles), name="tiles"))
        _transform_output(kernel, geometry, m, bias, residual, n, first_row, rows)


def _copy_image(kernel: Kernel, geometry: WinogradGeometry, n: ir.Value) -> None:
    """Image n into the bordered image in scratch (its border stays zero)."""
    builder, conv = kernel.builder, geometry.conv
    (ph, pw), plane = conv.padding, geometry.image_height * geometry.image_width
    with for_range(builder, conv.channels * conv.height, "copy", unroll=False) as row:
        channel, y = builder.udiv(row, i64(conv.height)), builder.urem(row, i64(conv.height))
        target = affine_offset(builder, [(channel, plane), (y, geometry.image_width)], ph * geometry.image_width + pw)
        source = affine_offset(builder, [(n, conv.channels * conv.height), (row, 1)], 0)
        destination = element_pointer(builder, kernel.scratch, target, F32, "copy.to")
        origin = element_pointer(builder, kernel.inputs[0], builder.mul(source, i64(conv.width)), F32, "copy.from")
        with for_range(builder, conv.width, "copy.x") as x:
            store_element(builder, load_element(builder, origin, x, F32), destination, x)


def _transform_input(kernel: Kernel, geometry: WinogradGeometry, v: ir.Value, first_row: ir.Value,
                     rows: ir.Value) -> None:
    """V = B^T d B for every channel and tile of the block's `rows` rows of tiles from `first_row`,
    `lanes` tiles at a time, into the packed B panels of the 16 GEMMs."""
    builder, channels, lanes = kernel.builder, geometry.conv.channels, geometry.lanes
    nr, width = gemm_tiling(kernel.target).columns, geometry.image_width
    panels = geometry.columns // nr
    wide = ir.VectorType(F32, 2 * lanes)
    even, odd = lane_indices(range(0, 2 * lanes, 2)), lane_indices(range(1, 2 * lanes, 2))
    with for_range(builder, channels, "wi.c", unroll=False) as c, for_range(builder, rows, "wi.r") as r:
        row = affine_offset(builder, [(c, geometry.image_height * width),
                                      (builder.add(first_row, r), 2 * width)], 0)
        for x0 in range(0, geometry.row_tiles, lanes):
            d = []
            for i in range(4):  # input row i of the tiles: columns 2x + j, j < 4, deinterleaved
                left = element_pointer(builder, kernel.scratch, builder.add(row, i64(i * width + 2 * x0)), F32)
                pair = [builder.load(element_pointer(builder, left, 2 * half, F32), typ=wide, align=FLOAT_BYTES)
                        for half in (0, 1)]
                d.append([builder.shuffle_vector(pair[j // 2], pair[j // 2], even if j % 2 == 0 else odd)
                          for j in range(4)])
            transformed = _input_rows(d, builder)
            column = builder.add(builder.mul(r, i64(geometry.row_tiles)), i64(x0), name="wi.t")
            panel, lane = builder.udiv(column, i64(nr)), builder.urem(column, i64(nr))
            for xi in range(POSITIONS):  # V[xi], panel, row c, lanes from `lane`: `lanes` columns
                at = affine_offset(builder, [(builder.add(panel, i64(xi * panels)), channels)], c)
                target = element_pointer(builder, v, builder.add(builder.mul(at, i64(nr)), lane), F32)
                builder.store(transformed[xi // 4][xi % 4], target, align=FLOAT_BYTES)


def _gemms(kernel: Kernel, geometry: WinogradGeometry, v: ir.Value, m: ir.Value, tiles: ir.Value) -> None:
    """M[xi] = U[xi] @ V[xi] over the block's `tiles` columns (whole NR panels), in depth blocks."""
    builder, tiling = kernel.builder, gemm_tiling(kernel.target)
    channels, outputs, columns = geometry.conv.channels, geometry.conv.outputs, geometry.columns
    mr, nr = tiling.rows, tiling.columns
    depth_count, kc = tiling.depth_blocks(channels)
    row_panels, panels = -(-outputs // mr), columns // nr
    weight = kernel.inputs[1]
    used_panels = builder.udiv(builder.add(tiles, i64(nr - 1)), i64(nr), name="wg.panels")
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
        with for_range(builder, used_panels, "wg.j", unroll=False) as j:
            start = affine_offset(builder, [(affine_offset(builder, [(xi, panels)], j), channels)], first)
            b_panel = element_pointer(builder, v, builder.mul(start, i64(nr)), F32, "wg.b")

            def c_tile(t: ir.Value, xi=xi, j=j) -> ir.Value:
                row = affine_offset(builder, [(xi, outputs), (t, mr)], 0)
                return element_pointer(builder, m, affine_offset(builder, [(row, columns), (j, nr)], 0), F32)

            step.row_panels(b_panel, nr, c_tile, columns)


def _transform_output(kernel: Kernel, geometry: WinogradGeometry, m: ir.Value, bias: ir.Value | None,
                      residual: ir.Value | None, n: ir.Value, first_row: ir.Value, rows: ir.Value) -> None:
    """Y = A^T M A for every output channel and tile of the block, + bias, then either the tile's two
    output rows (+ the residual's, then the activation) into the output, or (pool="max_2x2") the
    maximum of its activated outputs."""
    builder, node, conv, lanes = kernel.builder, kernel.node, geometry.conv, geometry.lanes
    vector = ir.VectorType(F32, lanes)
    activation = node.attrs["activation"]
    (out_height, out_width), (pooled_height, pooled_width) = (conv.out_height, conv.out_width), conv.pooled_shape

    def maximum(x: ir.Value, y: ir.Value) -> ir.Value:  # np.maximum: NaN wins
        return scalar.maximum(builder, DType.f32, x, y)

    with for_range(builder, conv.outputs, "wo.o", unroll=False) as o, for_range(builder, rows, "wo.r") as r:
        ty = builder.add(first_row, r, name="wo.ty")
        shift = splat(builder, load_element(builder, bias, o, F32, "wo.bias"), vector) if bias is not None else None
        channel = affine_offset(builder, [(n, conv.outputs)], o)
        for x0 in range(0, geometry.tiles_x, lanes):
            column = builder.add(builder.mul(r, i64(geometry.row_tiles)), i64(x0), name="wo.t")
            values = [[builder.load(element_pointer(builder, m, affine_offset(
                builder, [(affine_offset(builder, [(i64(4 * i + j), conv.outputs)], o), geometry.columns)], column),
                F32), typ=vector, align=FLOAT_BYTES) for j in range(4)] for i in range(4)]
            y = _output_tile(values, builder)
            if shift is not None:
                y = [[builder.fadd(value, shift) for value in row] for row in y]
            if conv.pooled:
                y = [[float_math.activation(builder, activation, value) for value in row] for row in y]  # NaN stays
                valid = min(lanes, pooled_width - x0)
                if valid <= 0:
                    continue
                with builder.if_then(builder.icmp_unsigned("<", ty, i64(pooled_height))):
                    pooled = maximum(maximum(y[0][0], y[0][1]), maximum(y[1][0], y[1][1]))
                    at = affine_offset(builder, [(channel, pooled_height * pooled_width), (ty, pooled_width)], x0)
                    store_lanes(builder, pooled, element_pointer(builder, kernel.output, at, F32), valid)
                continue
            interleave = lane_indices(index for lane in range(lanes) for index in (lane, lanes + lane))
            valid = min(2 * lanes, out_width - 2 * x0)
            for dy in range(2):
                output_row = builder.add(builder.mul(ty, i64(2)), i64(dy), name="wo.y")
                with builder.if_then(builder.icmp_unsigned("<", output_row, i64(out_height))):
                    both = builder.shuffle_vector(y[dy][0], y[dy][1], interleave)
                    at = affine_offset(builder, [(channel, out_height * out_width), (output_row, out_width)], 2 * x0)
                    if residual is not None:
                        skip = element_pointer(builder, residual, at, F32, "wo.residual")
                        both = builder.fadd(both, load_lanes(builder, skip, valid, both.type))
                    both = float_math.activation(builder, activation, both)  # NaN stays NaN
                    store_lanes(builder, both, element_pointer(builder, kernel.output, at, F32), valid)
