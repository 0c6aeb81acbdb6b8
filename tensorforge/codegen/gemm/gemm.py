"""The f32 GEMM: the cache-blocked loops around the micro-kernel (gemm/micro_kernel.py), and run-time packing.

    c[M, N] = epilogue(a[M, K] @ b[K, N])        epilogue: + bias (per row or per column), then relu

The BLIS loop nest: blocks of nc columns, kc depth and mc rows (gemm/tiling.py). A is packed per
(mc, kc) block into scratch, B per (kc, nc) block, unless the operand was packed into panels at
compile time (a constant, gemm/packing.py); then for each column panel (a kc x NR sliver, in L1) the
micro-kernel runs on every row panel of the block (in L2):

    for jc < N step nc:  for pc < K step kc:  [pack B block]
        for ic < M step mc:  [pack A block]
            for jr < nc step NR:  for ir < mc step MR:  micro_kernel(A panel ir, B panel jr, c tile)

The first depth block stores c, later ones add to it, the last applies the epilogue. The run-time
packing of A and B is in gemm/run_packing.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

from ..llvm.utils import F32, PTR, element_pointer, for_range, i64
from ..threads.parallel import split_parts
from .micro_kernel import Epilogue, micro_kernel
from .run_packing import pack_a_rows, pack_b_rows
from .tiling import FLOAT_BYTES, GemmTiling


@dataclass(frozen=True)
class GemmOperand:
    """An operand as the kernel receives it: row-major (packed at run time) or already in panels."""

    pointer: ir.Value
    prepacked: bool
    transposed: bool = False  # row-major storage of the transpose ([K, M] for A, [N, K] for B)


def minimum(builder: ir.IRBuilder, x: ir.Value, y: ir.Value | int, name: str = "") -> ir.Value:
    y = i64(y) if isinstance(y, int) else y
    return builder.select(builder.icmp_signed("<", x, y), x, y, name=name)


@dataclass
class BlockStep:
    """One (depth block, row block) of a GEMM: what its micro-kernel calls share.

    `a_panel(t)` is the packed A panel of row panel t of the block, `rows` the block's row count
    (the last row panel has `row_tail` rows when that is not 0), `depth` its kc. `narrow_tail`: the
    last panel's A is `row_tail` wide (pack_a_rows(tail=...), or a single row read in place).

    `prefetch` ("a" or "b"; None: neither): that operand is a weight streamed from memory, packed in
    panels whose next one lies `prefetch_ahead` elements on. Its panels are read a depth block at a
    time, a jump every few KiB where the hardware prefetcher stalls, so the micro-kernel fetches the
    next panel's sliver into L2, a k step at a time, while it works on this one. A weight as B (a
    linear's): only the block's first call (its other row panels read the same sliver from cache).
    A weight as A (a convolution's): every call, for the next row panel.
    """

    builder: ir.IRBuilder
    tiling: GemmTiling
    epilogue: Epilogue
    depth: ir.Value
    accumulate: ir.Value
    finish: ir.Value
    rows: ir.Value
    row_tail: int
    a_panel: object  # Callable[[ir.Value], ir.Value]
    narrow_tail: bool = False
    prefetch: str | None = None
    prefetch_ahead: int = 0

    def row_panels(self, b_panel: ir.Value, columns: int, c_tile, ldc: int, bias_at=None, residual_tile=None) -> None:
        """Call the micro-kernel for every row panel of the block against one B panel of `columns` columns.

        `c_tile(t)`, `bias_at(t)` and `residual_tile(t)` give the tile's first element of c, of the
        bias and of the residual (laid out like c).
        """
        self.each_row_panel(lambda rows, t, prefetch: self.call(rows, t, b_panel, columns, c_tile(t), ldc,
                                                                  bias_at and bias_at(t),
                                                                  residual_tile and residual_tile(t), prefetch))

    def each_row_panel(self, visit) -> None:
        """visit(rows, t, prefetch) for every row panel t of the block (`rows` MR, or the tail's), with
        the prefetch variant that panel's first micro-kernel call takes (BlockStep.prefetch)."""
        builder, tiling = self.builder, self.tiling
        full = builder.udiv(self.rows, i64(tiling.rows), name="row_panels")
        tail = builder.icmp_unsigned("!=", builder.urem(self.rows, i64(tiling.rows)), i64(0)) if self.row_tail else None
        every = self.prefetch if self.prefetch == "a" else None
        row_panel_calls(builder, tiling.rows, full, self.row_tail, tail,
                        lambda rows, t, first: visit(rows, t, "b" if first else every), self.prefetch == "b")

    def call(self, rows: int, t: ir.Value, b_panel: ir.Value, columns: int, c_tile: ir.Value, ldc: int,
             bias: ir.Value | None = None, residual: ir.Value | None = None, prefetch: str | None = None) -> None:
        """One micro-kernel call: row panel t (`rows` rows) against `b_panel` (`columns` columns) into the
        tile at `c_tile`; `bias` and `residual` point at the tile's first element of each, if any."""
        tiling, null = self.tiling, ir.Constant(PTR, None)
        layout = (rows, 1) if self.narrow_tail and rows != tiling.rows else None
        kernel = micro_kernel(self.builder.module, tiling, rows, columns, self.epilogue, layout, prefetch)
        self.builder.call(kernel, [self.depth, self.a_panel(t), b_panel, c_tile, i64(ldc), self.accumulate,
                                   self.finish, null if bias is None else bias,
                                   null if residual is None else residual, i64(self.prefetch_ahead)])


def row_panel_calls(builder: ir.IRBuilder, mr: int, full: ir.Value, tail_rows: int, has_tail: ir.Value | None,
                    call: Callable[[int, ir.Value, bool], None], first_fetches: bool) -> None:
    """call(rows, t, first) for the row panels t < full of `mr` rows, then (when has_tail) panel
    `full` of `tail_rows` rows. `first` is True only for the first call when `first_fetches` (the
    first full panel's, else the tail's): the call that fetches a streamed B's next panel (the
    f32 BlockStep.prefetch and the int8 GEMM's)."""
    if not first_fetches:
        with for_range(builder, full, "ir") as t:
            call(mr, t, False)
        if has_tail is not None:
            with builder.if_then(has_tail):
                call(tail_rows, full, False)
        return
    with builder.if_else(builder.icmp_unsigned("!=", full, i64(0))) as (some, none):
        with some:
            call(mr, i64(0), True)
            with for_range(builder, builder.sub(full, i64(1)), "ir") as t:
                call(mr, builder.add(t, i64(1)), False)
            if has_tail is not None:
                with builder.if_then(has_tail):
                    call(tail_rows, full, False)
        with none:
            if has_tail is not None:
                call(tail_rows, i64(0), True)


def _streamed_b(b: GemmOperand, depth_count: int, panel: int) -> dict:
    """BlockStep's prefetch for a B packed at compile time (a weight) read in depth blocks; a B of one
    depth block is read panel after panel in one stream, which the hardware prefetcher follows."""
    return {"prefetch": "b", "prefetch_ahead": panel} if b.prepacked and depth_count > 1 else {}


def gemm_depth_blocks(tiling: GemmTiling, rows: int, depth: int, b_prepacked: bool) -> tuple[int, int]:
    """The depth blocks of a GEMM of `rows` rows (the whole GEMM's, also for a part of it): one block
    for a matrix-vector-like product against a prepacked weight (tiling.depth_blocks)."""
    return tiling.depth_blocks(depth, rows=rows if b_prepacked else None)


def gemm_scratch_bytes(tiling: GemmTiling, shape: tuple[int, int, int], a_prepacked: bool, b_prepacked: bool) -> int:
    """Scratch for emit_gemm: a packed A block (unless prepacked), then a packed B block (unless prepacked)."""
    rows, depth, columns = shape
    kc = gemm_depth_blocks(tiling, rows, depth, b_prepacked)[1]
    b_bytes = 0 if b_prepacked else min(tiling.nc, _round_up(columns, tiling.columns)) * kc * FLOAT_BYTES
    return _a_block_bytes(tiling, rows, kc, a_prepacked) + b_bytes


def _a_block_bytes(tiling: GemmTiling, rows: int, kc: int, a_prepacked: bool) -> int:
    """Scratch for one packed (mc, kc) block of A (none if prepacked), rounded to a cache line: the
    packed B block follows it."""
    return 0 if a_prepacked else _round_up(min(tiling.mc, _round_up(rows, tiling.rows)) * kc * FLOAT_BYTES, 64)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def emit_gemm(builder: ir.IRBuilder, tiling: GemmTiling, a: GemmOperand, b: GemmOperand, c: ir.Value,
              shape: tuple[int, int, int], scratch: ir.Value | None, bias: ir.Value | None = None,
              epilogue: Epilogue | None = None, lda: int | None = None, ldb: int | None = None,
              ldc: int | None = None, residual: ir.Value | None = None, whole_rows: int | None = None) -> None:
    """c[M, N] = epilogue(a[M, K] @ b[K, N]) with M, N, K > 0; c row-major, `bias` as the epilogue says.

    A row-major operand is packed block by block into `scratch` (gemm_scratch_bytes); a prepacked
    one is read in place (gemm/packing.py layouts). `lda`, `ldb` and `ldc` are the row strides of a
    row-major a, b and c as stored (default: the shape's; a block of a wider matrix has its
    matrix's); a transposed operand is stored as its transpose (GemmOperand.transposed). With
    `epilogue.residual`, `residual` is added: a matrix laid out like c (same ldc). `whole_rows`: the
    rows of the whole GEMM when this is a part of it (its depth blocks, hence its scratch, follow those).
    A single row is read in place, not packed: its k steps are already one contiguous run.
    """
    rows, depth, columns = shape
    lda = (rows if a.transposed else depth) if lda is None else lda
    ldb = (depth if b.transposed else columns) if ldb is None else ldb
    ldc = columns if ldc is None else ldc
    epilogue = epilogue or Epilogue()
    mr, nr = tiling.rows, tiling.columns
    depth_count, kc = gemm_depth_blocks(tiling, rows if whole_rows is None else whole_rows, depth, b.prepacked)
    # One row of A (or one column of a transposed A of stride 1) is read in place. (Several rows of
    # a row-major A read in place, not packed, ran 1.7x slower at lda 1024: rows 4 KiB apart share L1 sets.)
    in_place = rows == 1 and not a.prepacked and (not a.transposed or lda == 1)
    a_pack = scratch
    b_pack = None
    if not b.prepacked:
        offset = _a_block_bytes(tiling, rows, kc, a.prepacked)  # the kc in use, not a prepacked B's
        b_pack = builder.gep(scratch, [i64(offset)], inbounds=True, source_etype=ir.IntType(8)) if offset else scratch

    with for_range(builder, -(-columns // tiling.nc), "jc") as column_block:
        jc = builder.mul(column_block, i64(tiling.nc), name="jc")
        nc = minimum(builder, builder.sub(i64(columns), jc), tiling.nc, "nc")
        with for_range(builder, depth_count, "pc") as depth_block:
            pc = builder.mul(depth_block, i64(kc), name="pc")
            kc_here = minimum(builder, builder.sub(i64(depth), pc), kc, "kc")
            if not b.prepacked:
                at = builder.add(builder.mul(jc, i64(ldb)), pc) if b.transposed else builder.add(
                    builder.mul(pc, i64(ldb)), jc)
                pack_b_rows(builder, tiling, element_pointer(builder, b.pointer, at, F32), ldb, kc_here, nc,
                            columns % nr, b_pack, b.transposed)

            def b_panel(u: ir.Value) -> ir.Value:
                if b.prepacked:
                    panel = builder.add(builder.udiv(jc, i64(nr)), u)
                    return element_pointer(builder, b.pointer, builder.mul(builder.add(builder.mul(panel, i64(depth)),
                                                                                       pc), i64(nr)), F32, "b_panel")
                return element_pointer(builder, b_pack, builder.mul(builder.mul(u, kc_here), i64(nr)), F32, "b_panel")

            with for_range(builder, -(-rows // tiling.mc), "ic") as row_block:
                ic = builder.mul(row_block, i64(tiling.mc), name="ic")
                mc = minimum(builder, builder.sub(i64(rows), ic), tiling.mc, "mc")
                if not a.prepacked and not in_place:
                    at = builder.add(builder.mul(pc, i64(lda)), ic) if a.transposed else builder.add(
                        builder.mul(ic, i64(lda)), pc)
                    pack_a_rows(builder, tiling, element_pointer(builder, a.pointer, at, F32), lda, mc, kc_here,
                                a_pack, a.transposed, tail=rows % mr)

                def a_panel(t: ir.Value, ic=ic) -> ir.Value:
                    if in_place:
                        return element_pointer(builder, a.pointer, pc, F32, "a_row")
                    if a.prepacked:
                        panel = builder.add(builder.udiv(ic, i64(mr)), t)
                        return element_pointer(builder, a.pointer, builder.mul(builder.add(
                            builder.mul(panel, i64(depth)), pc), i64(mr)), F32, "a_panel")
                    return element_pointer(builder, a_pack, builder.mul(builder.mul(t, kc_here), i64(mr)), F32,
                                           "a_panel")

                step = BlockStep(builder, tiling, epilogue, kc_here,
                                 builder.icmp_unsigned("!=", depth_block, i64(0)),
                                 builder.icmp_unsigned("==", depth_block, i64(depth_count - 1)),
                                 mc, rows % mr, a_panel, narrow_tail=not a.prepacked,
                                 **_streamed_b(b, depth_count, depth * nr))

                def column_panel(u: ir.Value, count: int, ic=ic, step=step) -> None:
                    first_column = builder.add(jc, builder.mul(u, i64(nr)))

                    def tile_offset(t: ir.Value) -> ir.Value:
                        first_row = builder.add(ic, builder.mul(t, i64(mr)))
                        return builder.add(builder.mul(first_row, i64(ldc)), first_column)

                    def c_tile(t: ir.Value) -> ir.Value:
                        return element_pointer(builder, c, tile_offset(t), F32, "c_tile")

                    def residual_tile(t: ir.Value) -> ir.Value:
                        return element_pointer(builder, residual, tile_offset(t), F32, "residual_tile")

                    def bias_at(t: ir.Value) -> ir.Value:
                        first = first_column if epilogue.bias == "column" else builder.add(ic, builder.mul(t, i64(mr)))
                        return element_pointer(builder, bias, first, F32, "bias_at")

                    step.row_panels(b_panel(u), count, c_tile, ldc, bias_at if epilogue.bias else None,
                                    residual_tile if epilogue.residual else None)

                full = builder.udiv(nc, i64(nr), name="column_panels")
                with for_range(builder, full, "jr") as u:
                    column_panel(u, nr)
                if columns % nr:
                    with builder.if_then(builder.icmp_unsigned("!=", builder.urem(nc, i64(nr)), i64(0))):
                        column_panel(full, columns % nr)


# GemmSplit: a constant b from this size, read by at most this many rows, is split by columns (each
# part streams its share once).
COLUMN_SPLIT_BYTES = 1 << 20
COLUMN_SPLIT_ROWS = 256


@dataclass(frozen=True)
class GemmSplit:
    """How a GEMM's work is cut into parts for threads: along "rows" (of a and c) when there are at
    least two row panels (MR rows) for every thread, or more row panels than column panels, else
    along "columns" (panels of NR columns of b and c); every part but the last has `per_part` units
    of `unit` rows or columns. A constant b of `stream_bytes` >= COLUMN_SPLIT_BYTES read by at most
    COLUMN_SPLIT_ROWS rows is split by columns whenever each thread gets two column panels: split by
    rows, every part would stream all of it from memory for few rows (BERT-base at sequence 128,
    A/B in one process: 1.10x faster by columns; at batch 8, 1024 rows, 0.955x: rows kept there).

    Rows are split one by one, evenly: the micro-kernel's time follows the rows it has, full panel
    or not (f32 784 x 256 with 14 to 42 rows of A: 88-95 GFLOP/s on one Zen 4 core), so 64 rows run
    as 32 and 32 (panels of 14, 14, 4) instead of whole panels 42 and 22. A GEMM whose A is a
    constant (`a_constant`: packed in panels at compile time) keeps whole row panels. By rows, no
    part repacks another's rows of a (a batch-64 linear 784 -> 256 ran 15% faster than by columns on
    AVX2); by columns, each part streams only its share of a weight (matrix-vector products; a
    32-token prefill, whose 32 rows in whole panels of 14 had split 28:4)."""

    axis: str
    parts: int
    per_part: int
    unit: int

    @classmethod
    def of(cls, tiling, shape: tuple[int, int, int], threads: int, a_constant: bool = False,
           stream_bytes: int = 0) -> GemmSplit:
        rows, _, columns = shape
        column_panels, row_panels = -(-columns // tiling.columns), -(-rows // tiling.rows)
        streams = (stream_bytes >= COLUMN_SPLIT_BYTES and rows <= COLUMN_SPLIT_ROWS and column_panels >= 2 * threads
                   and not a_constant)
        if not streams and (row_panels >= 2 * threads or row_panels >= max(column_panels, 2)):
            unit = tiling.rows if a_constant else 1
            return cls("rows", *split_parts(-(-rows // unit), threads), unit)
        return cls("columns", *split_parts(column_panels, threads), tiling.columns)


def for_each_part_block(builder: ir.IRBuilder, tiling, shape: tuple[int, int, int], part: ir.Value | None,
                        parts: int, emit: Callable[[ir.Value, ir.Value, int, int], None],
                        a_constant: bool = False, stream_bytes: int = 0) -> None:
    """emit(first_row, first_column, row_count, column_count) for part `part` of `parts` of a GEMM's
    result (GemmSplit.of(tiling, shape, parts): the split the lowering chose), or for all of it when
    parts is 1. Counts are static: the last part, which may be smaller, gets code of its own.
    `tiling` is the f32 GemmTiling or the int8 one (anything with `rows` and `columns` panels)."""
    rows, _, columns = shape
    if parts == 1 or part is None:
        emit(i64(0), i64(0), rows, columns)
        return
    split = GemmSplit.of(tiling, shape, parts, a_constant, stream_bytes)
    assert split.parts == parts, (split, parts)
    by_columns = split.axis == "columns"
    extent, size = (columns if by_columns else rows), split.per_part * split.unit
    first = builder.mul(part, i64(size), name="part.first")  # first column (row) of the part
    sizes = (size, extent - size * (parts - 1))
    with builder.if_else(builder.icmp_unsigned("==", part, i64(parts - 1), name="part.last")) as (last, other):
        for block, size in ((other, sizes[0]), (last, sizes[1])):
            with block:
                if by_columns:
                    emit(i64(0), first, rows, size)
                else:
                    emit(first, i64(0), size, columns)


def emit_gemm_part(builder: ir.IRBuilder, tiling: GemmTiling, a: GemmOperand, b: GemmOperand, c: ir.Value,
                   shape: tuple[int, int, int], scratch: ir.Value | None, bias: ir.Value | None,
                   epilogue: Epilogue, part: ir.Value | None, parts: int, residual: ir.Value | None = None,
                   a_constant: bool = False, stream_bytes: int = 0) -> None:
    """emit_gemm for part `part` of `parts` (for_each_part_block, GemmSplit.of(..., a_constant,
    stream_bytes)); all of it when parts is 1.

    A part is the GEMM of a block of rows x columns: the operands' pointers move to the block (a
    prepacked operand by whole panels of depth x panel elements), c keeps its row stride.
    """
    if parts == 1 or part is None:
        emit_gemm(builder, tiling, a, b, c, shape, scratch, bias, epilogue, residual=residual)
        return
    rows, depth, columns = shape

    def block(first_row: ir.Value, first_column: ir.Value, row_count: int, column_count: int) -> None:
        a_at = first_row if a.transposed and not a.prepacked else builder.mul(first_row, i64(depth))
        b_at = first_column if not (b.transposed or b.prepacked) else builder.mul(first_column, i64(depth))
        c_at = builder.add(builder.mul(first_row, i64(columns)), first_column)
        a_block = GemmOperand(element_pointer(builder, a.pointer, a_at, F32), a.prepacked, a.transposed)
        b_block = GemmOperand(element_pointer(builder, b.pointer, b_at, F32), b.prepacked, b.transposed)
        bias_block = bias
        if epilogue.bias:
            bias_block = element_pointer(builder, bias, first_column if epilogue.bias == "column" else first_row, F32,
                                         "bias.part")
        residual_block = element_pointer(builder, residual, c_at, F32, "residual.part") if residual else None
        emit_gemm(builder, tiling, a_block, b_block, element_pointer(builder, c, c_at, F32, "c.part"),
                  (row_count, depth, column_count), scratch, bias_block, epilogue,
                  lda=rows if a.transposed else depth, ldb=depth if b.transposed else columns, ldc=columns,
                  residual=residual_block, whole_rows=rows)

    for_each_part_block(builder, tiling, shape, part, parts, block, a_constant, stream_bytes)
