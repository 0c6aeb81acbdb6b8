"""Emission of the pools: max_pool2d and avg_pool2d, NCHW, one pass over the output.

    %1 = max_pool2d(%0) {kernel=[2,2], stride=[2,2], padding=[0,0]} : f32[1,8,4,4]    with %0 : f32[1,8,8,8]
      for row in 0..32 (n, c, y): for x in 0..4:  out[row, x] = max of the 2x2 taps at (2y, 2x)

A padded pool reads the input copied into its scratch first (conv.py's padded_input): lowest value
around each plane for max_pool2d, zeros for avg_pool2d (which then count in the average).
"""

from __future__ import annotations

from llvmlite import ir

from ....ir import Node
from ...kernel import Kernel
from ...llvm import scalar
from ...llvm.utils import affine_offset, alloca_once, for_range, i64, load_element, store_element
from ...lowering import FLOAT, NUMERIC, Lowering, register_lowering
from ...target import Target
from ...threads import parallel
from ...threads.parallel import split_parts
from .conv import padded_bytes, padded_input

UNROLLED_TAPS = 16  # pool windows up to 4x4 are unrolled into straight-line code


def pool_parts(node: Node, target: Target, threads: int) -> int:
    """Parts of a pool for a team of `threads`: blocks of output rows; one part when it pads (the padded
    copy is shared) or when the work is small."""
    if node.attrs["padding"] != (0, 0) or node.type.size == 0:
        return 1
    kh, kw = node.attrs["kernel"]
    if node.type.size * kh * kw < parallel.MIN_PARALLEL_FLOPS // 4:  # a compare or add per tap, memory-bound
        return 1
    n, c, oh, _ = node.shape
    return split_parts(n * c * oh, threads * parallel.PARTS_PER_THREAD)[0]


def emit_pool(kernel: Kernel) -> None:
    """max_pool2d (padding is the lowest value) and avg_pool2d (padding counts as zeros).

    One pass over the output: for each output row, for each x, the kh x kw taps (unrolled) combined
    in a register; LLVM vectorizes along x (strided loads for stride > 1). The x loop stays rolled:
    fully unrolled (ow is a constant), it left the row loop innermost, which LLVM vectorized with
    gathers and scatters on AVX-512 (a 2x2 pool of [64,32,32,32] took 943 us instead of 172).
    """
    node, builder, dtype, element = kernel.node, kernel.builder, kernel.dtype, kernel.element
    is_max = node.op == "max_pool2d"
    n, c = node.shape[:2]
    oh, ow = node.shape[2:]
    (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    if node.type.size == 0:
        return
    identity = scalar.lowest(dtype) if is_max else scalar.constant(dtype, 0)
    source, hp, wp = padded_input(kernel, identity)
    first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, n * c * oh, "row")
    with for_range(builder, count, "row", unroll=False) as index:
        row = builder.add(first, index, name="row")
        plane, y = builder.udiv(row, i64(oh), name="plane"), builder.urem(row, i64(oh), name="y")
        source_row = affine_offset(builder, [(plane, hp * wp), (y, sh * wp)], name="source_row")
        with for_range(builder, ow, "x", unroll=False) as x:  # see the docstring
            start = affine_offset(builder, [(x, sw)], source_row, "start")

            def combine(combined: ir.Value | None, value: ir.Value) -> ir.Value:
                if combined is None:
                    return value
                if is_max:
                    return scalar.maximum(builder, dtype, combined, value, "max")
                return scalar.add(builder, dtype, combined, value, "sum")

            if kh * kw <= UNROLLED_TAPS:
                combined = None
                for i in range(kh):
                    for j in range(kw):
                        combined = combine(combined, load_element(builder, source, builder.add(start, i64(i * wp + j)),
                                                                  element, "x"))
            else:  # a big window (a global pool): loops, the running value in a stack slot
                slot = alloca_once(builder, element, "combined")
                builder.store(identity, slot)
                with for_range(builder, kh, "i") as i, for_range(builder, kw, "j") as j:
                    at = affine_offset(builder, [(i, wp), (j, 1)], start)
                    builder.store(combine(builder.load(slot), load_element(builder, source, at, element, "x")), slot)
                combined = builder.load(slot)
            if not is_max:
                combined = builder.fdiv(combined, scalar.constant(dtype, kh * kw), name="average")
            store_element(builder, combined, kernel.output, affine_offset(builder, [(row, ow)], x))


register_lowering("max_pool2d", Lowering(emit_pool, NUMERIC, padded_bytes, parts=pool_parts))
register_lowering("avg_pool2d", Lowering(emit_pool, FLOAT, padded_bytes, parts=pool_parts))
