"""Emission of sparse_linear (ir/ops_sparse.py): y[m, j] = sum over row j's entries p of values[p] * x[m, columns[p]].

Two loop nests, chosen by the number of rows M of x (its leading axes folded), measured with
benchmarks/bench_sparse.py:

    slices (M <= SLICED_MAX_ROWS)       ops/sparse/slices.py: slices of W output rows, their CSR
                                        entries repacked at compile time (`pack_sparse_constant`)
                                        in the sliced layout, or the windowed one on AVX-512
                                        (Target.permutes_two_vectors)
    batch lanes (more rows)             for each block of B = BATCH_VECTORS * W rows of x:
                                          xt[k, 0:B] = x[block, k]                   transposed into scratch
                                          for j, p in row j:  acc[0:B] += values[p] * xt[columns[p], 0:B]
                                        (a last block of b < B rows: vectors of the power of two >= b
                                        lanes, so that its xt stays small; INDEPENDENT_CHAINS accumulators
                                        in flight, the entries of a row taken in turn)
then, per output: + bias[j] (+ residual), activation, store (sparse_operands.finish_outputs).

Batch lanes read the CSR arrays as they are (also the fallback when pack=False). Work is split
among threads by output rows (or slices) in parts of near-equal entries (the row starts are
constants), and for batch lanes also by blocks of rows of x.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from ....ir import Node
from ...gemm.micro_kernel import splat
from ...gemm.tiling import INDEPENDENT_CHAINS
from ...kernel import Kernel
from ...llvm.utils import (
    F32,
    I32,
    I64,
    call_intrinsic,
    carried_loop,
    element_pointer,
    for_range,
    i64,
    load_element,
    store_element,
)
from ...lowering import FLOAT, Lowering, PackedConstant, register_lowering
from ...target import Target
from ...threads import parallel
from .operands import FLOAT_BYTES, csr_constants, finish_outputs, row_bounds, sparse_shape
from .slices import emit_slices, emit_windowed_slices, sliced_weight, windowed_depth, windowed_weight

SLICED_MAX_ROWS = 1  # rows of x up to which slices beat batch lanes (one vector already serves 2)
BATCH_VECTORS = 4  # vectors of batch lanes in one block (the accumulators of one output)
OUTPUT_CHUNK = 64  # output rows whose batch lanes wait in scratch before they are stored
INDEX_BYTES = 4


def uses_slices(node: Node, packed: frozenset[int] = frozenset({1, 2, 3})) -> bool:
    """Whether the node runs on slices: one row of x, and its CSR arrays packed (not with pack=False)."""
    return sparse_shape(node)[0] <= SLICED_MAX_ROWS and {1, 2, 3} <= packed


def pack_sparse_constant(node: Node, index: int, target: Target) -> PackedConstant | None:
    """For slices, operands 1-3 (values, columns, row_starts) become the sliced values, columns and
    index (or, where slices permute, the windowed values, step records and slice starts); batch lanes
    read the CSR arrays as they are."""
    if index not in (1, 2, 3) or not uses_slices(node):
        return None
    if target.permutes_two_vectors:
        steps = windowed_weight(node, target)
        return PackedConstant(f"window{steps.lanes}x{steps.window}",
                              (steps.values, steps.records, steps.slice_starts)[index - 1])
    weight = sliced_weight(node, target)
    return PackedConstant(f"sell{weight.lanes}", (weight.values, weight.columns, weight.index)[index - 1])


def block_lanes(target: Target) -> int:
    """Rows of x per block of the batch-lanes loop nest."""
    return BATCH_VECTORS * target.vector_width


def sparse_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """Slices' copy of one row of x and a zero; batch lanes' transposed block of x and outputs."""
    depth = sparse_shape(node)[1]
    if uses_slices(node, packed):
        if target.permutes_two_vectors:
            return windowed_depth(depth) * FLOAT_BYTES
        return (depth + 1) * FLOAT_BYTES
    return (depth + OUTPUT_CHUNK) * block_lanes(target) * FLOAT_BYTES


def row_splits(node: Node, target: Target, parts: int) -> int:
    """How many ranges of output rows (or slices) `parts` parts make: parts are (block of rows of x,
    range) pairs, and slices have a single block."""
    blocks = -(-sparse_shape(node)[0] // block_lanes(target))
    return parts // blocks


def sparse_parts(node: Node, target: Target, threads: int) -> int:
    """Parts for a team of `threads`: (block of rows of x, range of output rows) pairs, slices having
    one block; a single block streams the weight, cut into several ranges per thread (a late thread
    takes fewer); 1 when too small to share."""
    rows, _, out, nnz = sparse_shape(node)
    weight_bytes = nnz * (FLOAT_BYTES + INDEX_BYTES)
    if threads <= 1 or rows * out == 0 or (2 * rows * nnz < parallel.MIN_PARALLEL_FLOPS
                                           and weight_bytes < parallel.MIN_PARALLEL_WEIGHT_BYTES):
        return 1
    blocks = -(-rows // block_lanes(target))
    if blocks == 1:  # ranges of slices when rows <= SLICED_MAX_ROWS: fewer slices than rows
        return min(-(-out // target.vector_width), threads * parallel.GEMM_PARTS_PER_THREAD)
    return blocks * min(out, -(-threads // blocks))


def balanced_bounds(row_starts: np.ndarray, splits: int) -> list[int]:
    """splits + 1 boundaries cutting the rows (or slices) that `row_starts` delimit into ranges of
    near-equal entries, none empty while there are as many rows as splits."""
    out = row_starts.size - 1
    targets = np.arange(1, splits) * (int(row_starts[-1]) / splits)
    inner = np.searchsorted(row_starts[1:], targets, side="left") + 1
    bounds = [0, *np.clip(inner, 1, out).tolist(), out]
    for index in range(1, splits):  # strictly increasing where possible: every range has a row
        bounds[index] = min(max(bounds[index], bounds[index - 1] + 1), out - (splits - index))
    return [int(bound) for bound in bounds]


def _row_range(kernel: Kernel, split: ir.Value | None, splits: int,
               row_starts: np.ndarray) -> tuple[ir.Value, ir.Value]:
    """(first row, end) of range `split` of `splits` (balanced_bounds, a table in the module)."""
    out = row_starts.size - 1
    if splits == 1 or split is None:
        return i64(0), i64(out)
    builder = kernel.builder
    bounds = balanced_bounds(row_starts, splits)
    table_type = ir.ArrayType(I64, len(bounds))
    table = ir.GlobalVariable(builder.module, table_type, f"{builder.function.name}.row_bounds")
    table.linkage = "private"
    table.global_constant = True
    table.initializer = ir.Constant(table_type, bounds)
    first = load_element(builder, table, split, I64, "rows.first")
    end = load_element(builder, table, builder.add(split, i64(1)), I64, "rows.end")
    return first, end


def emit_batch_block(kernel: Kernel, first_row: ir.Value, lanes: int, first: ir.Value, end: ir.Value) -> None:
    """Rows [first_row, first_row + lanes) of x (lanes static, at most block_lanes), output rows [first, end).

    The block of x is transposed into scratch (xt[k, lane]); the outputs of OUTPUT_CHUNK rows at a
    time gather in scratch as yt[j, lane] (whole-vector stores), and go to y row by row of x, through the
    epilogue, when the chunk is done: y's rows are `out` floats apart, too far to write lane by lane.
    """
    builder = kernel.builder
    _, depth, out, _ = sparse_shape(kernel.node)
    x, values, columns, row_starts = kernel.inputs[:4]
    width = min(kernel.target.vector_width, 1 << (lanes - 1).bit_length())  # a narrow block: narrow vectors
    vectors = -(-lanes // width)
    stride = vectors * width  # floats per row of xt and yt: a narrow block keeps its xt small, in L1
    vector = ir.VectorType(F32, width)
    transposed = kernel.scratch
    outputs = element_pointer(builder, kernel.scratch, depth * block_lanes(kernel.target), F32, "yt")
    with for_range(builder, lanes, "lane") as lane:
        x_row = element_pointer(builder, x, builder.mul(builder.add(first_row, lane), i64(depth)), F32, "x_row")
        with for_range(builder, depth, "transpose") as k:
            store_element(builder, load_element(builder, x_row, k, F32), transposed,
                          builder.add(builder.mul(k, i64(stride)), lane))
    if lanes < vectors * width:  # lanes never stored, kept defined
        with for_range(builder, depth, "pad") as k:
            for lane in range(lanes, vectors * width):
                store_element(builder, ir.Constant(F32, 0.0), transposed, builder.add(builder.mul(k, i64(stride)),
                                                                                     i64(lane)))
    fma = f"llvm.fmuladd.v{width}f32"

    def entry(p: ir.Value, accumulators: list[ir.Value]) -> list[ir.Value]:
        weight = splat(builder, load_element(builder, values, p, F32, "w"), vector)
        column = builder.sext(load_element(builder, columns, p, I32, "column"), I64)
        x_column = element_pointer(builder, transposed, builder.mul(column, i64(stride)), F32, "xt")
        return [call_intrinsic(builder, fma, vector, [weight, builder.load(
            element_pointer(builder, x_column, v * width, F32), typ=vector, align=FLOAT_BYTES), accumulator])
            for v, accumulator in enumerate(accumulators)]

    sets = max(1, INDEPENDENT_CHAINS // vectors)  # entries taken in turn by as many accumulator sets

    def entry_group(group: ir.Value, accumulators: list[ir.Value], start: ir.Value) -> list[ir.Value]:
        p = builder.add(start, builder.mul(group, i64(sets)))
        return [value for index in range(sets)
                for value in entry(builder.add(p, i64(index)), accumulators[index * vectors:(index + 1) * vectors])]

    chunks = builder.udiv(builder.add(builder.sub(end, first), i64(OUTPUT_CHUNK - 1)), i64(OUTPUT_CHUNK))
    with for_range(builder, chunks, "chunk") as chunk:
        chunk_first = builder.add(first, builder.mul(chunk, i64(OUTPUT_CHUNK)), name="chunk.first")
        remaining = builder.sub(end, chunk_first)
        chunk_rows = builder.select(builder.icmp_signed("<", remaining, i64(OUTPUT_CHUNK)), remaining,
                                    i64(OUTPUT_CHUNK), name="chunk.rows")
        with for_range(builder, chunk_rows, "j") as offset:
            start, stop = row_bounds(builder, row_starts, builder.add(chunk_first, offset, name="row"))
            groups = builder.udiv(builder.sub(stop, start), i64(sets), name="groups")
            zero = [ir.Constant(vector, None)] * (sets * vectors)
            partial = carried_loop(builder, i64(0), groups, zero,
                                   lambda group, accumulators, start=start: entry_group(group, accumulators, start),
                                   "p")
            totals = carried_loop(builder, builder.add(start, builder.mul(groups, i64(sets))), stop,
                                  partial[:vectors], entry, "p.rest")
            for index in range(1, sets):
                totals = [builder.fadd(total, other)
                          for total, other in zip(totals, partial[index * vectors:(index + 1) * vectors])]
            row_outputs = element_pointer(builder, outputs, builder.mul(offset, i64(stride)), F32, "yt.row")
            for v, total in enumerate(totals):
                builder.store(total, element_pointer(builder, row_outputs, v * width, F32), align=FLOAT_BYTES)
        with for_range(builder, lanes, "store") as lane:
            y_row = builder.mul(builder.add(first_row, lane), i64(out), name="y_row")
            with for_range(builder, chunk_rows, "j") as offset:
                row = builder.add(chunk_first, offset, name="row")
                total = load_element(builder, outputs, builder.add(builder.mul(offset, i64(stride)), lane), F32)
                at = builder.add(y_row, row)
                store_element(builder, finish_outputs(kernel, total, row, at), kernel.output, at)


def emit_sparse_linear(kernel: Kernel) -> None:
    """The node's part of y = x @ densify(values, columns, row_starts) (+ bias) (+ residual), activated."""
    node = kernel.node
    row_starts = csr_constants(node)[2]
    if node.type.size == 0:
        return
    if uses_slices(node, kernel.packed):
        if kernel.target.permutes_two_vectors:
            steps = windowed_weight(node, kernel.target)
            first, end = _row_range(kernel, kernel.part, kernel.parts, steps.slice_starts)
            emit_windowed_slices(kernel, steps, first, end)
            return
        weight = sliced_weight(node, kernel.target)
        first, end = _row_range(kernel, kernel.part, kernel.parts, weight.slice_starts)
        emit_slices(kernel, weight, first, end)
        return
    builder = kernel.builder
    rows = sparse_shape(node)[0]
    lanes = block_lanes(kernel.target)
    blocks, tail = divmod(rows, lanes)
    if kernel.parts == 1 or kernel.part is None:
        with for_range(builder, blocks, "block") as block:
            emit_batch_block(kernel, builder.mul(block, i64(lanes)), lanes, i64(0), i64(row_starts.size - 1))
        if tail:
            emit_batch_block(kernel, i64(blocks * lanes), tail, i64(0), i64(row_starts.size - 1))
        return
    splits = row_splits(node, kernel.target, kernel.parts)
    block = builder.udiv(kernel.part, i64(splits), name="block")
    first, end = _row_range(kernel, builder.urem(kernel.part, i64(splits)), splits, row_starts)
    first_row = builder.mul(block, i64(lanes), name="first_row")
    if not tail:
        emit_batch_block(kernel, first_row, lanes, first, end)
        return
    with builder.if_else(builder.icmp_unsigned("==", block, i64(blocks))) as (last, other):
        with last:
            emit_batch_block(kernel, first_row, tail, first, end)
        with other:
            emit_batch_block(kernel, first_row, lanes, first, end)


register_lowering("sparse_linear", Lowering(emit_sparse_linear, FLOAT, sparse_scratch_bytes, pack_sparse_constant,
                                            sparse_parts, reads_values=True))  # its loops follow the weight's sparsity
