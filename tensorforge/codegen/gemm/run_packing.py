"""Run-time packing of the f32 GEMM's operands into the micro-kernel's panels (gemm/gemm.py's loops
pack A per (mc, kc) block and B per (kc, nc) block into scratch; gemm/packing.py packs constants at
compile time into the same layouts), and the register transpose of a square tile they use.
"""

from __future__ import annotations

from llvmlite import ir

from ..llvm.utils import F32, element_pointer, for_range, i64, lane_indices, load_element, store_element
from .micro_kernel import load_lanes, vector_type
from .tiling import FLOAT_BYTES, GemmTiling


def pack_a_rows(builder: ir.IRBuilder, tiling: GemmTiling, source: ir.Value, lda: int, rows: ir.Value,
                depth: ir.Value, destination: ir.Value, transposed: bool = False, tail: int = 0) -> None:
    """destination = A panels of source[rows, depth] (row-major, lda): element (row, k) at
    (row // MR) * depth * MR + k * S + row % MR, S = MR. Rows past `rows` of the last panel are left
    as they are, unless `tail` (static) is not 0: then a last panel of `tail` rows (when `rows` is not
    a multiple of MR) is packed `tail` wide, as micro_kernel(a_layout=(tail, 1)) reads it.

    `transposed`: source holds A^T (element (row, k) at k * lda + row).

    Whole panels of a row-major A are packed W x W blocks at a time (W the vector width: W rows'
    vectors in, transposed in registers, each k's MR elements out; `_pack_panel_blocks`); the
    depth past the last whole block, the rows of a last partial panel and A^T go element by element.
    """
    mr = i64(tiling.rows)
    first_row = i64(0)
    if not transposed:
        panels = builder.udiv(rows, mr, name="pack_a.panels")
        blocks = builder.udiv(depth, i64(tiling.vector_width), name="pack_a.blocks")
        with for_range(builder, panels, "pack_a.panel", unroll=False) as panel:
            _pack_panel_blocks(builder, tiling, element_pointer(builder, source, builder.mul(panel, i64(tiling.rows *
                               lda)), F32), lda, blocks, element_pointer(builder, destination,
                               builder.mul(builder.mul(panel, depth), mr), F32, "pack_a.panel_to"))
        first_row = builder.mul(panels, mr, name="pack_a.partial")
    _pack_a_elements(builder, tiling, source, lda, first_row, rows, depth, destination, transposed, tail,
                     builder.mul(blocks, i64(tiling.vector_width)) if not transposed else i64(0))


def transpose_square(builder: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """The W vectors of W lanes (W a power of two) transposed: lane j of result i is lane i of rows[j].

    One stage per bit b of the index swaps bit b of the row with bit b of the lane: rows i and
    i + 2^b (bit b of i clear) exchange the lanes j with bit b set of the one for the lanes j - 2^b
    of the other: 2W shuffles per stage, W log2 W in all."""
    width = len(rows)
    rows = list(rows)
    bit = 1
    while bit < width:
        for i in range(width):
            if i & bit:
                continue
            low = [j if not j & bit else width + (j ^ bit) for j in range(width)]
            high = [j ^ bit if not j & bit else width + j for j in range(width)]
            rows[i], rows[i | bit] = (builder.shuffle_vector(rows[i], rows[i | bit], lane_indices(m))
                                      for m in (low, high))
        bit *= 2
    return rows


def _pack_panel_blocks(builder: ir.IRBuilder, tiling: GemmTiling, source: ir.Value, lda: int, blocks: ir.Value,
                       destination: ir.Value) -> None:
    """The first blocks * W columns of one whole panel of MR rows (source row-major, lda) into its
    [k][MR] layout: per block of W columns and group of up to W rows, W row vectors transposed into
    W vectors of one k each, whose first rows-in-group lanes are stored."""
    width, mr = tiling.vector_width, tiling.rows
    vector = vector_type(tiling)
    zero = ir.Constant(vector, None)
    with for_range(builder, blocks, "pack_a.block", unroll=False) as block:
        k0 = builder.mul(block, i64(width), name="pack_a.k0")
        for group in range(0, mr, width):
            count = min(width, mr - group)
            loaded = [builder.load(element_pointer(builder, source, builder.add(k0, i64((group + r) * lda)), F32),
                                   typ=vector, align=FLOAT_BYTES) for r in range(count)]
            columns = transpose_square(builder, loaded + [zero] * (width - count))
            for j, column in enumerate(columns):
                if count < width:
                    column = builder.shuffle_vector(column, column, lane_indices(range(count)))
                at = builder.add(builder.mul(builder.add(k0, i64(j)), i64(mr)), i64(group))
                builder.store(column, element_pointer(builder, destination, at, F32), align=FLOAT_BYTES)


def _pack_a_elements(builder: ir.IRBuilder, tiling: GemmTiling, source: ir.Value, lda: int, first_row: ir.Value,
                     rows: ir.Value, depth: ir.Value, destination: ir.Value, transposed: bool, tail: int,
                     first_k: ir.Value) -> None:
    """pack_a_rows element by element: rows [first_row, rows) at depths [0, depth); rows before
    first_row (whole panels, packed by blocks) only at depths [first_k, depth)."""
    mr = i64(tiling.rows)
    tail_panel = builder.udiv(rows, mr, name="pack_a.full") if tail else None
    with for_range(builder, rows, "pack_a.row") as row:
        panel = builder.udiv(row, mr)
        stride = mr if not tail else builder.select(builder.icmp_unsigned("==", panel, tail_panel), i64(tail), mr,
                                                     name="pack_a.stride")
        start = builder.add(builder.mul(builder.mul(panel, depth), mr), builder.urem(row, mr))
        target = element_pointer(builder, destination, start, F32, "pack_a.to")
        origin = element_pointer(builder, source, row if transposed else builder.mul(row, i64(lda)), F32,
                                 "pack_a.from")
        start_k = builder.select(builder.icmp_unsigned("<", row, first_row), first_k, i64(0), name="pack_a.first_k")
        with for_range(builder, builder.sub(depth, start_k), "pack_a.k") as offset:
            k = builder.add(start_k, offset)
            value = load_element(builder, origin, builder.mul(k, i64(lda)) if transposed else k, F32)
            store_element(builder, value, target, builder.mul(k, stride))


def pack_b_rows(builder: ir.IRBuilder, tiling: GemmTiling, source: ir.Value, ldb: int, depth: ir.Value,
                columns: ir.Value, tail: int, destination: ir.Value, transposed: bool = False) -> None:
    """destination = B panels of source[depth, columns] (row-major, ldb): element (k, j) at
    ((j // NR) * depth + k) * NR + j % NR. A last panel of `tail` (static) columns is zero-padded.

    `transposed`: source holds B^T (element (k, j) at j * ldb + k), gathered lane by lane."""
    width, vector = tiling.vector_width, vector_type(tiling)
    full = builder.udiv(columns, i64(tiling.columns), name="pack_b.panels")

    def copy_panel(panel: ir.Value, valid: int) -> None:
        with for_range(builder, depth, "pack_b.k") as k:
            first_column = builder.mul(panel, i64(tiling.columns))
            start = builder.mul(builder.add(builder.mul(panel, depth), k), i64(tiling.columns))
            target = element_pointer(builder, destination, start, F32)
            if transposed:
                origin = element_pointer(builder, source, builder.add(builder.mul(first_column, i64(ldb)), k), F32)
            else:
                origin = element_pointer(builder, source, builder.add(builder.mul(k, i64(ldb)), first_column), F32)
            for v in range(tiling.vectors):
                lanes = max(0, min(width, valid - v * width))
                if transposed:
                    value = ir.Constant(vector, [0.0] * width)
                    for lane in range(lanes):
                        element = load_element(builder, origin, (v * width + lane) * ldb, F32)
                        value = builder.insert_element(value, element, i64(lane))
                else:
                    value = load_lanes(builder, element_pointer(builder, origin, v * width, F32), lanes, vector)
                builder.store(value, element_pointer(builder, target, v * width, F32), align=FLOAT_BYTES)

    with for_range(builder, full, "pack_b.panel") as panel:
        copy_panel(panel, tiling.columns)
    if tail:
        with builder.if_then(builder.icmp_unsigned("!=", builder.urem(columns, i64(tiling.columns)), i64(0))):
            copy_panel(full, tail)
