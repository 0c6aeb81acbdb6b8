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

from ....ir import DType, Node
from ...gemm.tiling import FLOAT_BYTES
from ...kernel import Kernel
from ...llvm import scalar
from ...llvm.utils import (
    F32,
    affine_offset,
    alloca_once,
    element_pointer,
    first_lanes,
    for_range,
    i64,
    lane_indices,
    lane_mask,
    load_element,
    masked_load,
    masked_store,
    store_element,
)
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

    One pass over the output rows, split among parts: f32 windows of a column stride up to 2 in
    explicit vectors (`_emit_vector_windows`), others an element at a time (`_emit_element_windows`).
    """
    node, builder, dtype = kernel.node, kernel.builder, kernel.dtype
    is_max = node.op == "max_pool2d"
    n, c = node.shape[:2]
    oh, ow = node.shape[2:]
    kh, sh = node.attrs["kernel"][0], node.attrs["stride"][0]
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
        if in_vectors(node):
            rows = [builder.add(source_row, i64(i * wp)) for i in range(kh)]
            _emit_vector_windows(kernel, source, wp, rows, row, 0, ow, 0)
        else:
            _emit_element_windows(kernel, source, wp, source_row, row, identity)


def _emit_element_windows(kernel: Kernel, source: ir.Value, wp: int, source_row: ir.Value, row: ir.Value,
                          identity: ir.Value) -> None:
    """Output row `row` an element at a time, in an x loop LLVM vectorizes (strided loads for
    stride > 1); its window starts at `source_row` of `source`, whose rows are `wp` elements. The x
    loop stays rolled: fully unrolled (ow is a constant), it left the row loop innermost, which LLVM
    vectorized with gathers and scatters on AVX-512 (a 2x2 pool of [64,32,32,32] took 943 us
    instead of 172)."""
    node, builder, dtype, element = kernel.node, kernel.builder, kernel.dtype, kernel.element
    is_max = node.op == "max_pool2d"
    ow = node.shape[3]
    (kh, kw), sw = node.attrs["kernel"], node.attrs["stride"][1]

    def combine(values: list[ir.Value]) -> ir.Value:
        if is_max:
            return scalar.maximum_of(builder, dtype, values, kernel.target.has_ieee_maximum)
        return scalar.sum_of(builder, dtype, values)

    with for_range(builder, ow, "x", unroll=False) as x:
        start = affine_offset(builder, [(x, sw)], source_row, "start")
        if kh * kw <= UNROLLED_TAPS:
            combined = combine([load_element(builder, source, builder.add(start, i64(i * wp + j)), element, "x")
                                for i in range(kh) for j in range(kw)])
        else:  # a big window (a global pool): loops, the running value in a stack slot
            slot = alloca_once(builder, element, "combined")
            builder.store(identity, slot)
            with for_range(builder, kh, "i") as i, for_range(builder, kw, "j") as j:
                at = affine_offset(builder, [(i, wp), (j, 1)], start)
                builder.store(combine([builder.load(slot), load_element(builder, source, at, element, "x")]), slot)
            combined = builder.load(slot)
        if not is_max:
            combined = builder.fdiv(combined, scalar.constant(dtype, kh * kw), name="average")
        store_element(builder, combined, kernel.output, affine_offset(builder, [(row, ow)], x))


def in_vectors(node: Node) -> bool:
    """Whether a pool's rows are computed in explicit vectors (`_emit_vector_windows`): f32, a column
    stride of 1 or 2, an unrolled window."""
    (kh, kw), sw = node.attrs["kernel"], node.attrs["stride"][1]
    return node.inputs[0].dtype is DType.f32 and sw <= 2 and kh * kw <= UNROLLED_TAPS


def _emit_vector_windows(kernel: Kernel, source: ir.Value, width: int, rows: list[ir.Value], row: ir.Value,
                         x_first: int, x_end: int, pad: int) -> None:
    """Outputs x_first <= x < x_end of output row `row`, W (the target's vector width) at a time. Tap
    (i, j) of output x is source[rows[i] + x*sw - pad + j], inside the row's [0, width) for these x.

    Rows first, then columns. Each vector ("span") of the window rows is loaded at a fixed offset from
    the block's first column and combined over the rows; the taps come from those spans. With
    stride 1, tap j is the span at offset j. With stride 2, the span pair at offsets (j, j + W)
    holds tap j in its even elements and tap j + 1 in its odd ones: one shuffle each. A 3 x 3
    stride-2 window: 12 loads, 3 shuffles, no element loaded twice per row. Blocks whose spans all
    lie inside the row run in a loop with plain loads; the others (at the row's end) are emitted
    one by one, with masked loads that read nothing outside the row and a masked store.
    """
    node, builder, target = kernel.node, kernel.builder, kernel.target
    is_max = node.op == "max_pool2d"
    ow = node.shape[3]
    (kh, kw), sw = node.attrs["kernel"], node.attrs["stride"][1]
    lanes = target.vector_width
    vector = ir.VectorType(F32, lanes)
    offsets = list(range(kw)) if sw == 1 else [j + h * lanes for j in range(0, kw, 2) for h in range(2)]

    def combine(values: list[ir.Value]) -> ir.Value:
        if is_max:
            return scalar.maximum_of(builder, DType.f32, values, target.has_ieee_maximum)
        return scalar.sum_of(builder, DType.f32, values)

    def block(x0: ir.Value, masks: list[ir.Constant | None], valid: int) -> None:
        left = builder.sub(builder.mul(x0, i64(sw)), i64(pad), name="left")
        spans = []
        for offset, mask in zip(offsets, masks):
            loaded = []
            for start in rows:
                pointer = element_pointer(builder, source, builder.add(builder.add(start, left), i64(offset)), F32)
                loaded.append(builder.load(pointer, typ=vector, align=FLOAT_BYTES) if mask is None else
                              masked_load(builder, pointer, mask, ir.Constant(vector, None)))
            spans.append(combine(loaded))
        if sw == 1:
            taps = spans
        else:
            taps = [builder.shuffle_vector(spans[j // 2 * 2], spans[j // 2 * 2 + 1],
                                           lane_indices(range(j % 2, 2 * lanes, 2))) for j in range(kw)]
        value = combine(taps)
        if not is_max:
            value = builder.fdiv(value, ir.Constant(vector, [float(kh * kw)] * lanes), name="average")
        pointer = element_pointer(builder, kernel.output, affine_offset(builder, [(row, ow)], x0), F32)
        if valid == lanes:
            builder.store(value, pointer, align=FLOAT_BYTES)
        else:
            masked_store(builder, value, pointer, first_lanes(lanes, valid))

    def columns_inside(x0: int) -> list[ir.Constant | None]:
        masks = []
        for offset in offsets:
            inside = [0 <= x0 * sw - pad + offset + k < width for k in range(lanes)]
            masks.append(None if all(inside) else lane_mask(lanes, inside.__getitem__))
        return masks

    starts = list(range(x_first, x_end, lanes))
    plain = 0
    while (plain < len(starts) and starts[plain] + lanes <= x_end
           and all(mask is None for mask in columns_inside(starts[plain]))):
        plain += 1
    with for_range(builder, plain, "block", unroll=False) as index:
        block(builder.add(builder.mul(index, i64(lanes)), i64(x_first), name="x0"), [None] * len(offsets), lanes)
    for x0 in starts[plain:]:
        block(i64(x0), columns_inside(x0), min(lanes, x_end - x0))


def _emit_clamped_max_pool(kernel: Kernel) -> None:
    """A padded max_pool2d read in place: tap (i, j) of output (y, x) reads input row clamp(y*sh + i - ph)
    and column clamp(x*sw + j - pw), each into the image. The rows are clamped once per output row;
    the columns only at the edges (static x, straight-line code); the x between them read every tap
    in place, in vectors (`_emit_vector_windows`) or in a loop LLVM vectorizes."""
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
            taps = [load_element(builder, kernel.inputs[0], builder.add(start, column), element, "x")
                    for start in rows for column in columns]
            combined = scalar.maximum_of(builder, dtype, taps, kernel.target.has_ieee_maximum)
            store_element(builder, combined, kernel.output, affine_offset(builder, [(row, ow)], x))

        for x in [*range(inner_first), *range(inner_end, ow)]:
            window(i64(x), [i64(min(max(x * sw + j - pw, 0), w - 1)) for j in range(kw)])
        if in_vectors(node):
            _emit_vector_windows(kernel, kernel.inputs[0], w, rows, row, inner_first, inner_end, pw)
        else:
            with for_range(builder, inner_end - inner_first, "x", unroll=False) as offset:
                x = builder.add(offset, i64(inner_first), name="x")
                left = builder.sub(builder.mul(x, i64(sw)), i64(pw), name="left")
                window(x, [builder.add(left, i64(j)) for j in range(kw)])


register_lowering("max_pool2d", Lowering(emit_pool, NUMERIC, pool_scratch_bytes, parts=pool_parts))
register_lowering("avg_pool2d", Lowering(emit_pool, FLOAT, padded_bytes, parts=pool_parts))
