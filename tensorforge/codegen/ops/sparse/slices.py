"""The sparse kernels for one row of x (ops/sparse/linear.py chooses them): slices of W output rows.

    sliced (SELL-C-sigma, sparse_layout.sliced)    for m: copy x[m] to scratch with a 0 after it
                                                     for each slice, each step t:
                                                       acc[0:W] += values[t, 0:W] * x[columns[t, 0:W]]
                                                     (x gathered lane by lane; two accumulators)
    windowed (AVX-512, sparse_layout.windowed)     the same, but a step's lanes read x only within a
                                                     window of PERMUTE_WINDOW columns, so x[columns]
                                                     is one vpermi2ps of the window's two vectors
                                                     (loaded once for WINDOW_STEPS steps); lanes
                                                     without an entry are zeroed

then, per output: + bias[j] (+ residual), activation, store.

The sliced layout puts W rows side by side, so a vector load gives W weights and one FMA serves W
outputs, and a slice's loop runs as long as its longest row; shorter rows are padded with weight 0
at column `in`, the zero after the copy of x. Loading x costs one scalar load per entry (AVX2
gathers and LLVM's masked gather were slower on this project's Zen 3 host); columns are loaded two
per i64 (little-endian: the first in the low half), as loads are what bounds this loop. AVX-512's
windowed slices take about as many steps as a slice's longest row (sparse_layout.WindowedWeight),
each step a permute instead of 16 loads. On Zen 4, in throwaway loops of bound calls of a 1024 x
1024 layer at 90% zeros (one thread), lane-by-lane gathers took 22.5 us, windows at 32-column chunks
17.5 us, unaligned windows 16.3 us, windows aligned to 16 with one step each 13.9 us, and the
chosen WINDOW_ALIGN / WINDOW_STEPS 11.4 us; `benchmarks/bench_bound.py` (workload `sparse`) times
the result against the dense GEMM.
"""

from __future__ import annotations

from llvmlite import ir

from ....ir import Node
from ...gemm.tiling import INDEPENDENT_CHAINS
from ...kernel import Kernel
from ...llvm.utils import (
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
from ...target import Target
from .layout import SlicedWeight, WindowedWeight, sliced, windowed
from .operands import FLOAT_BYTES, copy_row, csr_constants, finish_outputs, row_bounds, sparse_shape

PERMUTE_WINDOW = 32  # columns of x one AVX-512 two-register permute (vpermi2ps) picks from
WINDOW_ALIGN = 8  # windows start at multiples of this
WINDOW_STEPS = 2  # steps that share one window: x's two vectors are loaded once for them


def sliced_weight(node: Node, target: Target) -> SlicedWeight:
    """The node's CSR arrays in slices of one vector of rows (ops/sparse/layout.py), padded at column `in`."""
    return sliced(*csr_constants(node), target.vector_width, node.inputs[0].shape[-1])


def windowed_depth(depth: int) -> int:
    """Floats in the windowed kernel's copy of a row of x: x, then zeros to the end of the last window."""
    return -(-depth // WINDOW_ALIGN) * WINDOW_ALIGN + PERMUTE_WINDOW


def windowed_weight(node: Node, target: Target) -> WindowedWeight:
    """The node's CSR arrays in slices of one vector of rows, stepped through windows of x (ops/sparse/layout.py)."""
    return windowed(*csr_constants(node), target.vector_width, PERMUTE_WINDOW, WINDOW_ALIGN, INDEPENDENT_CHAINS,
                    WINDOW_STEPS)


def emit_slices(kernel: Kernel, weight: SlicedWeight, first: ir.Value, end: ir.Value) -> None:
    """Slices [first, end) for every row of x: per step, `lanes` weights times x at their columns
    (gathered lane by lane), into two vector accumulators taking steps in turn."""
    builder, lanes = kernel.builder, weight.lanes
    rows, depth, out, _ = sparse_shape(kernel.node)
    values, columns, index = kernel.inputs[1:4]
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
        copy_row(kernel, m, depth, depth + 1)
        with for_range(builder, builder.sub(end, first), "slice") as offset:
            slice_ = builder.add(first, offset, name="slice")
            start, stop = row_bounds(builder, index, slice_)
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
                    store_element(builder, finish_outputs(kernel, value, row, at), kernel.output, at)


def emit_windowed_slices(kernel: Kernel, weight: WindowedWeight, first: ir.Value, end: ir.Value) -> None:
    """Slices [first, end) for every row of x on the windowed layout: per step, the two vectors of x
    at the step's window, permuted by the lanes' columns (vpermi2ps; PAD lanes zeroed) and times
    `lanes` weights, into INDEPENDENT_CHAINS accumulators taking steps in turn."""
    builder, lanes, window = kernel.builder, weight.lanes, weight.window
    rows, depth, out, _ = sparse_shape(kernel.node)
    values, records, slice_starts = kernel.inputs[1:4]
    copy = kernel.scratch
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
        copy_row(kernel, m, depth, windowed_depth(depth))
        with for_range(builder, builder.sub(end, first), "slice") as offset:
            slice_ = builder.add(first, offset, name="slice")
            start, stop = row_bounds(builder, slice_starts, slice_)
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
                    builder.store(finish_outputs(kernel, partial[0], first_row, first_at),
                                  element_pointer(builder, kernel.output, first_at, F32), align=FLOAT_BYTES)
                with part:  # the last slice: its rows lane by lane
                    for lane in range(lanes):
                        row = builder.add(first_row, i64(lane), name="row")
                        with builder.if_then(builder.icmp_unsigned("<", row, i64(out))):
                            at = builder.add(first_at, i64(lane))
                            value = builder.extract_element(partial[0], i64(lane))
                            store_element(builder, finish_outputs(kernel, value, row, at), kernel.output, at)
