"""The max pool fused into a tiled f32 conv (conv_gemm.py; the fuse-pool pass sets conv2d's `pool`).

For each pooled row p of a part, the convolution's rows its window reads that no earlier pooled row
of the part computed go into a ring of kh rows in scratch (row y at slot y % kh); each new row is
pooled along its columns once, into a second ring of the same slots; the window's rows of those give
pooled row p. The full-size result of the convolution is never written (SqueezeNet's and ResNet's
stems: 64 channels at 111 x 111 and 112 x 112):

    for p (the part's pooled rows):
      rows [max(p*sh - ph, 0, computed), min(p*sh - ph + kh, OH))  ->  ring      (conv_gemm's blocks)
      each of those rows, pooled along columns                       ->  columns   (`_pool_columns`)
      the maximum of the window's rows of columns                    ->  out[.., p, :]  (`_pool_rows`)

The ring follows conv_gemm's scratch (`ring_elements`); a part's rows are computed once even where
windows overlap (stride under the kernel), and each part computes the rows it needs itself.
"""

from __future__ import annotations

from llvmlite import ir

from ....ir import DType
from ...gemm.tiling import FLOAT_BYTES
from ...kernel import Kernel
from ...llvm import scalar
from ...llvm.utils import (
    F32,
    I64,
    affine_offset,
    alloca_once,
    as_i64,
    element_pointer,
    first_lanes,
    for_range,
    i64,
    lane_indices,
    lane_mask,
    load_element,
    masked_store,
)
from .geometry import ConvGeometry, offset_range, part_range


def ring_elements(shape: ConvGeometry, lanes: int) -> int:
    """Scratch of a fused pool: kh rows of the convolution and kh rows pooled along columns, per output
    channel of a group, and two vectors past them (`_pool_columns` reads whole vectors across a row's end)."""
    kh = shape.pool_window[0][0]
    return shape.group_outputs * kh * (shape.out_width + _pooled_columns(shape, lanes)) + 2 * lanes


def pooled_rows(builder: ir.IRBuilder, kernel: Kernel, shape: ConvGeometry, ring: ir.Value, n: ir.Value,
                image: ir.Value, g: ir.Value, blocks) -> None:
    """Every pooled row of this part (of image n, group g): `blocks(n, image, g, rows, c_at, ldc)` (conv_gemm's)
    computes the convolution's rows the window reads and the part has not yet computed into the ring
    (channel stride kh * OW), then they are pooled along columns, then the window's rows."""
    (kh, _), (sh, _), (ph, _) = shape.pool_window
    og, pooled_height, height = shape.group_outputs, shape.pooled_shape[0], shape.out_height
    columns = element_pointer(builder, ring, og * kh * shape.out_width, F32, "pool.columns")
    computed = alloca_once(builder, I64, "pool.computed")  # the part's rows below this one are in the ring
    builder.store(i64(0), computed)
    with (for_range(builder, pooled_height, "p") if shape.batch > 1
          else part_range(builder, kernel, pooled_height, "p")) as p:
        group_row = builder.mul(g, i64(og), name="group_row")
        top = builder.sub(builder.mul(p, i64(sh)), i64(ph), name="pool.top")  # may be negative (padding)
        first = scalar.maximum(builder, DType.i64, scalar.maximum(builder, DType.i64, top, i64(0)),
                               builder.load(computed))
        end = scalar.minimum(builder, DType.i64, builder.add(top, i64(kh)), i64(height))  # grows with p
        count = scalar.maximum(builder, DType.i64, builder.sub(end, first), i64(0))
        builder.store(end, computed)

        def to_ring(y: ir.Value, pixel: ir.Value, row: ir.Value) -> ir.Value:
            at = affine_offset(builder, [(builder.sub(row, group_row), kh * shape.out_width),
                                         (builder.urem(y, i64(kh)), shape.out_width)], pixel)
            return element_pointer(builder, ring, at, F32, "ring_tile")

        blocks(n, image, g, lambda: offset_range(builder, first, count, "y"), to_ring, kh * shape.out_width)
        with offset_range(builder, first, count, "pool.y") as y:
            _pool_columns(builder, kernel, shape, ring, columns, builder.urem(y, i64(kh)))
        _pool_rows(builder, kernel, shape, columns, n, group_row, p, top)


def _pooled_columns(shape: ConvGeometry, lanes: int) -> int:
    """The row length of `_pool_columns`' results: the pooled width in whole vectors."""
    return -(-shape.pooled_shape[1] // lanes) * lanes


def _maximum(builder: ir.IRBuilder, kernel: Kernel, values: list[ir.Value]) -> ir.Value:
    """np.maximum of the values (NaN stays)."""
    return scalar.maximum_of(builder, DType.f32, values, kernel.target.has_ieee_maximum)


def _pool_columns(builder: ir.IRBuilder, kernel: Kernel, shape: ConvGeometry, ring: ir.Value, columns: ir.Value,
                  slot: ir.Value) -> None:
    """Every output channel's convolution row in ring slot `slot`, pooled along its columns into the same
    slot of `columns`: columns[o, slot, j] = the maximum of row[j * sw - pw .. + kw] within the row, a
    vector of j at a time, read in place (at stride 1 one load per tap, at 2 the even lanes of two). The
    lanes of a tap past either end of the row (the pool's padding) take -inf: static masks."""
    (kh, kw), (_, sw), (_, pw) = shape.pool_window
    width, lanes = shape.out_width, kernel.target.vector_width
    pooled, row_length = shape.pooled_shape[1], _pooled_columns(shape, lanes)
    vector = ir.VectorType(F32, lanes)
    lowest = ir.Constant(vector, [float("-inf")] * lanes)
    evens = lane_indices(range(0, 2 * lanes, 2))
    with for_range(builder, shape.group_outputs, "pool.o", unroll=False) as o:
        slot_row = builder.add(builder.mul(o, i64(kh)), slot)
        row = element_pointer(builder, ring, builder.mul(slot_row, i64(width)), F32, "pool.row")
        into = element_pointer(builder, columns, builder.mul(slot_row, i64(row_length)), F32, "pool.into")
        for j0 in range(0, pooled, lanes):
            taps = []
            for k in range(kw):
                x0 = j0 * sw - pw + k  # the column of lane 0 (those past the row are masked off)
                inside = [0 <= x0 + lane * sw < width for lane in range(lanes)]
                if not any(inside):
                    continue
                source = element_pointer(builder, row, x0, F32)  # (x0 < 0: scratch before the ring)
                if sw == 1:
                    value = builder.load(source, typ=vector, align=FLOAT_BYTES)
                elif sw == 2:
                    low, high = (builder.load(element_pointer(builder, source, half * lanes, F32), typ=vector,
                                              align=FLOAT_BYTES) for half in (0, 1))
                    value = builder.shuffle_vector(low, high, evens)
                else:
                    value = lowest
                    for lane in (lane for lane in range(lanes) if inside[lane]):
                        value = builder.insert_element(value, load_element(builder, source, lane * sw, F32), i64(lane))
                if not all(inside):
                    value = builder.select(lane_mask(lanes, inside.__getitem__), value, lowest)
                taps.append(value)
            builder.store(_maximum(builder, kernel, taps), element_pointer(builder, into, j0, F32), align=FLOAT_BYTES)


def _pool_rows(builder: ir.IRBuilder, kernel: Kernel, shape: ConvGeometry, columns: ir.Value, n: ir.Value,
               group_row: ir.Value, p: ir.Value, top: ir.Value) -> None:
    """Pooled row p of the group's output channels: the maximum of the window's rows of `columns` (rows
    past the convolution's edges clamped to its first or last: the same maximum), a vector at a time."""
    kh = shape.pool_window[0][0]
    pooled_height, pooled_width = shape.pooled_shape
    lanes = kernel.target.vector_width
    row_length = _pooled_columns(shape, lanes)
    vector = ir.VectorType(F32, lanes)
    last = i64(shape.out_height - 1)
    slots = [builder.urem(scalar.minimum(builder, DType.i64, scalar.maximum(builder, DType.i64,
                                                                           builder.add(top, i64(i)), i64(0)), last),
                          i64(kh)) for i in range(kh)]
    with for_range(builder, shape.group_outputs, "pool.o", unroll=False) as o:
        rows = element_pointer(builder, columns, builder.mul(o, i64(kh * row_length)), F32, "pool.rows")
        channel = builder.add(group_row, o, name="pool.channel")
        target = affine_offset(builder, [(n, kernel.output_image), (channel, pooled_height * pooled_width),
                                         (p, pooled_width)], 0)
        for j0 in range(0, pooled_width, lanes):
            loads = [builder.load(element_pointer(builder, rows, affine_offset(builder, [(slot, row_length)], j0), F32),
                                  typ=vector, align=FLOAT_BYTES) for slot in slots]
            value, count = _maximum(builder, kernel, loads), min(lanes, pooled_width - j0)
            out_at = element_pointer(builder, kernel.output, builder.add(as_i64(target), i64(j0)), F32)
            if count == lanes:
                builder.store(value, out_at, align=FLOAT_BYTES)
            else:
                masked_store(builder, value, out_at, first_lanes(lanes, count))
