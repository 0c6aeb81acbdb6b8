"""Emission of sparse_linear (ir/ops_sparse.py): y[m, j] = sum over row j's entries p of values[p] * x[m, columns[p]].

Two loop nests, chosen by the number of rows M of x (its leading axes folded), measured with
benchmarks/bench_sparse.py:

    slices (M <= SLICED_MAX_ROWS)       for m: copy x[m] to scratch with a 0 after it
                                          for each slice of W output rows (sparse_layout.py):
                                            for each step t:  acc[0:W] += values[t, 0:W] * x[columns[t, 0:W]]
                                          (x gathered lane by lane; two accumulators take steps in turn)
      on AVX-512 (`permutes`)             the same on the windowed layout: a step's lanes read x
                                          only within a window of 32 columns, so x[columns] is one
                                          vpermi2ps of the window's two vectors (loaded once for
                                          WINDOW_STEPS steps); lanes without an entry are zeroed
    batch lanes (more rows)             for each block of B = BATCH_VECTORS * W rows of x:
                                          xt[k, 0:B] = x[block, k]                   transposed into scratch
                                          for j, p in row j:  acc[0:B] += values[p] * xt[columns[p], 0:B]
                                        (a last block of b < B rows: vectors of the power of two >= b
                                        lanes, so that its xt stays small; INDEPENDENT_CHAINS accumulators
                                        in flight, the entries of a row taken in turn)
then, per output: + bias[j] (+ residual), activation, store.

Slices read the weight in the sliced layout packed at compile time (`pack_sparse_constant`): W rows
side by side, so a vector load gives W weights and one FMA serves W outputs, and a slice's loop
runs as long as its longest row; shorter rows are padded with weight 0 at column `in`, the zero
after the copy of x. Loading x costs one scalar load per entry on every target (AVX2 gathers and
LLVM's masked gather were slower on this project's Zen 3 host); columns are loaded two per i64
(little-endian: the first in the low half), as loads are what bounds this loop. AVX-512's windowed
slices take about as many steps as a slice's longest row (sparse_layout.WindowedWeight), each step
a permute instead of 16 loads: on Zen 4 a bound call of a 1024 x 1024 layer at 90% zeros takes
11.4 us on one thread (7.0 us on two) where lane-by-lane gathers took 22.5 us (15.9 us). WINDOW_ALIGN
and WINDOW_STEPS were chosen there: windows at 32-column chunks took 17.5 us, windows aligned to 16
with one step each 13.9 us, unaligned windows 16.3 us. Batch lanes read
the CSR arrays as they are (also the fallback when pack=False). Work is split among threads by
output rows (or slices) in parts of near-equal entries (the row starts are constants), and for
batch lanes also by blocks of rows of x.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from ..ir import Node
from ..ir.ops_sparse import check_csr, split_sparse_operands
from . import parallel
from .emit_micro_kernel import splat
from .errors import CodegenError
from .kernel import Kernel
from .llvm_utils import (
    F32,
    I8,
    I32,
    I64,
    byte_pointer,
    call_intrinsic,
    carried_loop,
    element_pointer,
    for_range,
    i64,
    load_element,
    store_element,
)
from .packing import PackedConstant
from .sparse_layout import SlicedWeight, WindowedWeight, sliced, windowed
from .target import Target
from .tiling import INDEPENDENT_CHAINS

PERMUTE_WINDOW = 32  # columns of x one AVX-512 two-register permute (vpermi2ps) picks from
WINDOW_ALIGN = 8  # windows start at multiples of this
WINDOW_STEPS = 2  # steps that share one window: x's two vectors are loaded once for them
SLICED_MAX_ROWS = 1  # rows of x up to which slices beat batch lanes (one vector already serves 2)
BATCH_VECTORS = 4  # vectors of batch lanes in one block (the accumulators of one output)
OUTPUT_CHUNK = 64  # output rows whose batch lanes wait in scratch before they are stored
FLOAT_BYTES = 4
INDEX_BYTES = 4


def sparse_shape(node: Node) -> tuple[int, int, int, int]:
    """(rows M, in, out, stored entries) of a sparse_linear node."""
    x, values, _, row_starts = node.inputs[:4]
    return math.prod(x.shape[:-1]), x.shape[-1], row_starts.shape[0] - 1, values.shape[0]


def uses_slices(node: Node, packed: frozenset[int] = frozenset({1, 2, 3})) -> bool:
    """Whether the node runs on slices: one row of x, and its CSR arrays packed (not with pack=False)."""
    return sparse_shape(node)[0] <= SLICED_MAX_ROWS and {1, 2, 3} <= packed


def csr_constants(node: Node) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The constant (values, columns, row_starts) of a node, checked; CodegenError if they are not constants."""
    arrays = node.inputs[1:4]
    if any(array.op != "constant" for array in arrays):
        raise CodegenError(f"cannot compile %{node.name} = sparse_linear(...): values, columns and row_starts must "
                           f"be constants (a weight's CSR arrays), got {', '.join(a.op for a in arrays)}")
    values, columns, row_starts = (array.value for array in arrays)
    check_csr(values, columns, row_starts, node.inputs[0].shape[-1])
    return values, columns, row_starts


def sliced_weight(node: Node, target: Target) -> SlicedWeight:
    """The node's CSR arrays in slices of one vector of rows (sparse_layout.py), padded at column `in`."""
    return sliced(*csr_constants(node), target.vector_width, node.inputs[0].shape[-1])


def permutes(target: Target) -> bool:
    """Whether slices fetch x with a register permute (windowed layout): AVX-512's vpermi2ps."""
    return target.permutes_two_vectors


def windowed_depth(depth: int) -> int:
    """Floats in the windowed kernel's copy of a row of x: x, then zeros to the end of the last window."""
    return -(-depth // WINDOW_ALIGN) * WINDOW_ALIGN + PERMUTE_WINDOW


def windowed_weight(node: Node, target: Target) -> WindowedWeight:
    """The node's CSR arrays in slices of one vector of rows, stepped through windows of x (sparse_layout.py)."""
    return windowed(*csr_constants(node), target.vector_width, PERMUTE_WINDOW, WINDOW_ALIGN, INDEPENDENT_CHAINS,
                    WINDOW_STEPS)


def pack_sparse_constant(node: Node, index: int, target: Target) -> PackedConstant | None:
    """For slices, operands 1-3 (values, columns, row_starts) become the sliced values, columns and
    index (or, where slices permute, the windowed values, step records and slice starts); batch lanes
    read the CSR arrays as they are."""
    if index not in (1, 2, 3) or not uses_slices(node):
        return None
    if permutes(target):
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
        if permutes(target):
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


def _row_bounds(builder: ir.IRBuilder, row_starts: ir.Value, row: ir.Value) -> tuple[ir.Value, ir.Value]:
    start = builder.sext(load_element(builder, row_starts, row, I32, "start"), I64)
    end = builder.sext(load_element(builder, row_starts, builder.add(row, i64(1)), I32, "end"), I64)
    return start, end


def _finish(kernel: Kernel, total: ir.Value, row: ir.Value, at: ir.Value) -> ir.Value:
    """One output's epilogue: + bias[row], + residual[at], then the activation; or, for a vector
    `total`, that of the outputs from row and at on."""
    builder, node = kernel.builder, kernel.node
    _, _, _, _, bias, residual = split_sparse_operands(list(kernel.inputs), node.attrs["residual"])

    def operand(base: ir.Value, offset: ir.Value, name: str) -> ir.Value:
        return builder.load(element_pointer(builder, base, offset, F32), typ=total.type, align=FLOAT_BYTES,
                            name=name)

    if bias is not None:
        total = builder.fadd(total, operand(bias, row, "bias"))
    if residual is not None:
        total = builder.fadd(total, operand(residual, at, "skip"))
    if node.attrs["activation"] == "relu":  # np.maximum(x, 0): NaN stays NaN
        zero = ir.Constant(total.type, None)
        total = builder.select(builder.fcmp_unordered(">=", total, zero), total, zero, name="relu")
    return total


def emit_slices(kernel: Kernel, weight: SlicedWeight, first: ir.Value, end: ir.Value) -> None:
    """Slices [first, end) for every row of x: per step, `lanes` weights times x at their columns
    (gathered lane by lane), into two vector accumulators taking steps in turn."""
    builder, lanes = kernel.builder, weight.lanes
    rows, depth, out, _ = sparse_shape(kernel.node)
    x, values, columns, index = kernel.inputs[:4]
    copy = kernel.scratch
    vector = ir.VectorType(F32, lanes)
    fma = f"llvm.fmuladd.v{lanes}f32"
    valid_in_last = out - (weight.slices - 1) * lanes

    def step(t: ir.Value, accumulator: ir.Value) -> ir.Value:
        at = builder.mul(t, i64(lanes))
        gathered = ir.Constant(vector, None)
        for pair in range(lanes // 2):  # two columns per load (W is even on every target)
            both = load_element(builder, columns, builder.add(builder.udiv(at, i64(2)), i64(pair)), I64, "columns")
            for half in range(2):
                column = builder.and_(builder.lshr(both, i64(32 * half)), i64(0xFFFFFFFF), name="column")
                lane = 2 * pair + half
                gathered = builder.insert_element(gathered, load_element(builder, copy, column, F32, "x"), i64(lane))
        weights = builder.load(element_pointer(builder, values, at, F32), typ=vector, align=FLOAT_BYTES, name="w")
        return call_intrinsic(builder, fma, vector, [weights, gathered, accumulator])

    def two_steps(pair: ir.Value, accumulators: list[ir.Value], start: ir.Value) -> list[ir.Value]:
        t = builder.add(start, builder.mul(pair, i64(2)))
        return [step(t, accumulators[0]), step(builder.add(t, i64(1)), accumulators[1])]

    with for_range(builder, rows, "m") as m:
        x_row = element_pointer(builder, x, builder.mul(m, i64(depth)), F32, "x_row")
        with for_range(builder, depth, "copy") as k:
            store_element(builder, load_element(builder, x_row, k, F32), copy, k)
        store_element(builder, ir.Constant(F32, 0.0), copy, depth)
        with for_range(builder, builder.sub(end, first), "slice") as offset:
            slice_ = builder.add(first, offset, name="slice")
            start, stop = _row_bounds(builder, index, slice_)
            pairs = builder.udiv(builder.sub(stop, start), i64(2), name="pairs")
            zero = ir.Constant(vector, None)
            both = carried_loop(builder, i64(0), pairs, [zero, zero],
                                lambda pair, accumulators, start=start: two_steps(pair, accumulators, start), "t")
            [total] = carried_loop(builder, builder.add(start, builder.mul(pairs, i64(2))), stop, both[:1],
                                   lambda t, accumulators: [step(t, accumulators[0])], "t.rest")
            total = builder.fadd(total, both[1], name="total")
            valid = builder.select(builder.icmp_unsigned("==", slice_, i64(weight.slices - 1)), i64(valid_in_last),
                                   i64(lanes), name="valid")
            lane_rows = builder.add(builder.mul(slice_, i64(lanes)), i64(weight.slices + 1), name="lane_rows")
            for lane in range(lanes):
                with builder.if_then(builder.icmp_unsigned("<", i64(lane), valid)):
                    row = builder.sext(load_element(builder, index, builder.add(lane_rows, i64(lane)), I32, "row"), I64)
                    at = builder.add(builder.mul(m, i64(out)), row)
                    value = builder.extract_element(total, i64(lane))
                    store_element(builder, _finish(kernel, value, row, at), kernel.output, at)


def emit_windowed_slices(kernel: Kernel, weight: WindowedWeight, first: ir.Value, end: ir.Value) -> None:
    """Slices [first, end) for every row of x on the windowed layout: per step, the two vectors of x
    at the step's window, permuted by the lanes' columns (vpermi2ps; PAD lanes zeroed) and times
    `lanes` weights, into INDEPENDENT_CHAINS accumulators taking steps in turn."""
    builder, lanes, window = kernel.builder, weight.lanes, weight.window
    rows, depth, out, _ = sparse_shape(kernel.node)
    x, values, records, slice_starts = kernel.inputs[:4]
    copy = kernel.scratch
    padded = windowed_depth(depth)
    vector = ir.VectorType(F32, lanes)
    indices = ir.VectorType(I32, lanes)
    bytes_ = ir.VectorType(I8, lanes)
    fma = f"llvm.fmuladd.v{lanes}f32"
    zero = ir.Constant(vector, None)
    in_window = ir.Constant(indices, [window] * lanes)

    def record(t: ir.Value) -> ir.Value:
        return element_pointer(builder, records, builder.mul(t, i64(weight.record_bytes)), I8, "record")

    def window_of(t: ir.Value) -> tuple[ir.Value, ir.Value]:
        offset = builder.sext(builder.load(record(t), typ=I32, align=4, name="window"), I64)
        low = builder.load(element_pointer(builder, copy, offset, F32), typ=vector, align=FLOAT_BYTES, name="x.lo")
        high = builder.load(element_pointer(builder, copy, builder.add(offset, i64(lanes)), F32), typ=vector,
                            align=FLOAT_BYTES, name="x.hi")
        return low, high

    def step(t: ir.Value, x_window: tuple[ir.Value, ir.Value], accumulator: ir.Value) -> ir.Value:
        columns = builder.zext(builder.load(byte_pointer(builder, record(t), 4), typ=bytes_, align=1), indices)
        picked = call_intrinsic(builder, "llvm.x86.avx512.vpermi2var.ps.512", vector,
                                [x_window[0], columns, x_window[1]])
        picked = builder.select(builder.icmp_unsigned("<", columns, in_window), picked, zero, name="x")
        weights = builder.load(element_pointer(builder, values, builder.mul(t, i64(lanes)), F32), typ=vector,
                               align=FLOAT_BYTES, name="w")
        return call_intrinsic(builder, fma, vector, [weights, picked, accumulator])

    def steps_in_turn(group: ir.Value, accumulators: list[ir.Value], start: ir.Value) -> list[ir.Value]:
        t = builder.add(start, builder.mul(group, i64(len(accumulators))))
        results = []
        for index, accumulator in enumerate(accumulators):
            at = builder.add(t, i64(index))
            if index % weight.per_window == 0:  # a window's first step: x's two vectors there
                x_window = window_of(at)
            results.append(step(at, x_window, accumulator))
        return results

    with for_range(builder, rows, "m") as m:
        x_row = element_pointer(builder, x, builder.mul(m, i64(depth)), F32, "x_row")
        with for_range(builder, depth, "copy") as k:
            store_element(builder, load_element(builder, x_row, k, F32), copy, k)
        for k in range(depth, padded):
            store_element(builder, ir.Constant(F32, 0.0), copy, k)
        with for_range(builder, builder.sub(end, first), "slice") as offset:
            slice_ = builder.add(first, offset, name="slice")
            start, stop = _row_bounds(builder, slice_starts, slice_)
            groups = builder.udiv(builder.sub(stop, start), i64(INDEPENDENT_CHAINS), name="groups")
            partial = carried_loop(builder, i64(0), groups, [zero] * INDEPENDENT_CHAINS,
                                   lambda group, accumulators, start=start: steps_in_turn(group, accumulators, start),
                                   "t")
            while len(partial) > 1:
                partial = [builder.fadd(partial[index], partial[index + 1]) for index in range(0, len(partial), 2)]
            first_row = builder.mul(slice_, i64(lanes), name="lane_rows")
            first_at = builder.add(builder.mul(m, i64(out)), first_row, name="lane_at")
            whole = builder.icmp_unsigned("<=", builder.add(first_row, i64(lanes)), i64(out), name="whole")
            with builder.if_else(whole) as (full, part):
                with full:  # all lanes are rows: one vector epilogue and store
                    builder.store(_finish(kernel, partial[0], first_row, first_at),
                                  element_pointer(builder, kernel.output, first_at, F32), align=FLOAT_BYTES)
                with part:  # the last slice: its rows lane by lane
                    for lane in range(lanes):
                        row = builder.add(first_row, i64(lane), name="row")
                        with builder.if_then(builder.icmp_unsigned("<", row, i64(out))):
                            at = builder.add(first_at, i64(lane))
                            value = builder.extract_element(partial[0], i64(lane))
                            store_element(builder, _finish(kernel, value, row, at), kernel.output, at)


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
            start, stop = _row_bounds(builder, row_starts, builder.add(chunk_first, offset, name="row"))
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
                store_element(builder, _finish(kernel, total, row, at), kernel.output, at)


def emit_sparse_linear(kernel: Kernel) -> None:
    """The node's part of y = x @ densify(values, columns, row_starts) (+ bias) (+ residual), activated."""
    node = kernel.node
    row_starts = csr_constants(node)[2]
    if node.type.size == 0:
        return
    if uses_slices(node, kernel.packed):
        if permutes(kernel.target):
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
