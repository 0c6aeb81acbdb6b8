"""Emission of the pools: max_pool2d and avg_pool2d, NCHW, one pass over the output.

    %1 = max_pool2d(%0) {kernel=[2,2], stride=[2,2], padding=[0,0]} : f32[1,8,4,4]    with %0 : f32[1,8,8,8]
      for row in 0..32 (n, c, y): for x in 0..4:  out[row, x] = max of the 2x2 taps at (2y, 2x)

A padded avg_pool2d reads the input copied into its scratch first (conv.py's padded_input), zeros
around each plane, which then count in the average. A padded max_pool2d needs no copy
(`clamps_taps`): a tap in the padding is replaced by the nearest tap inside the image, which is in
the same window, so the maximum is unchanged (ResNet's 3 x 3 stride-2 pool of [1,64,112,112] took
1.26 ms with the padded copy, on one thread).
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


def clamps_taps(node: Node) -> bool:
    """Whether a padded max_pool2d reads its taps in place, clamped into the image: its window is
    unrolled (UNROLLED_TAPS). Every window holds a tap inside the image: the IR keeps the padding at
    most half the kernel."""
    (kh, kw), padding = node.attrs["kernel"], node.attrs["padding"]
    return node.op == "max_pool2d" and padding != (0, 0) and kh * kw <= UNROLLED_TAPS


def pool_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """The padded copy of the input, unless the taps are clamped."""
    return 0 if clamps_taps(node) else padded_bytes(node, target)


def pool_parts(node: Node, target: Target, threads: int) -> int:
    """Parts of a pool for a team of `threads`: blocks of output rows; one part when it pads into a
    copy (the copy is shared) or when the work is small."""
    if (node.attrs["padding"] != (0, 0) and not clamps_taps(node)) or node.type.size == 0:
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
    if clamps_taps(node):
        _emit_clamped_max_pool(kernel)
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


def _emit_clamped_max_pool(kernel: Kernel) -> None:
    """A padded max_pool2d read in place: tap (i, j) of output (y, x) reads input row clamp(y*sh + i - ph)
    and column clamp(x*sw + j - pw), each into the image. The rows are clamped once per output row;
    the columns only at the edges (static x, straight-line code), the x between them read every tap
    in place in a loop LLVM vectorizes."""
    node, builder, dtype, element = kernel.node, kernel.builder, kernel.dtype, kernel.element
    _, _, h, w = node.inputs[0].shape
    n, c, oh, ow = node.shape
    (kh, kw), (sh, sw), (ph, pw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["padding"]
    inner_first = min(ow, -(-pw // sw))  # x from here to inner_end reads columns 0 <= x*sw + j - pw < w
    inner_end = max(inner_first, min(ow, (w - kw + pw) // sw + 1))
    first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, n * c * oh, "row")
    with for_range(builder, count, "row", unroll=False) as index:
        row = builder.add(first, index, name="row")
        plane, y = builder.udiv(row, i64(oh), name="plane"), builder.urem(row, i64(oh), name="y")
        rows = []
        for i in range(kh):
            at = builder.sub(builder.add(builder.mul(y, i64(sh)), i64(i)), i64(ph))
            at = builder.select(builder.icmp_signed("<", at, i64(0)), i64(0), at)
            at = builder.select(builder.icmp_signed(">", at, i64(h - 1)), i64(h - 1), at)
            rows.append(affine_offset(builder, [(plane, h * w), (at, w)], name=f"row{i}"))

        def window(x: ir.Value, columns: list) -> None:
            combined = None
            for start in rows:
                for column in columns:
                    value = load_element(builder, kernel.inputs[0], builder.add(start, column), element, "x")
                    combined = value if combined is None else scalar.maximum(builder, dtype, combined, value, "max")
            store_element(builder, combined, kernel.output, affine_offset(builder, [(row, ow)], x))

        for x in [*range(inner_first), *range(inner_end, ow)]:
            window(i64(x), [i64(min(max(x * sw + j - pw, 0), w - 1)) for j in range(kw)])
        with for_range(builder, inner_end - inner_first, "x", unroll=False) as offset:
            x = builder.add(offset, i64(inner_first), name="x")
            left = builder.sub(builder.mul(x, i64(sw)), i64(pw), name="left")
            window(x, [builder.add(left, i64(j)) for j in range(kw)])


register_lowering("max_pool2d", Lowering(emit_pool, NUMERIC, pool_scratch_bytes, parts=pool_parts))
register_lowering("avg_pool2d", Lowering(emit_pool, FLOAT, padded_bytes, parts=pool_parts))
