"""The im2col slivers of the f32 conv GEMM (conv_gemm.py): a depth block's kc x NR panel of output
pixels' input taps, gathered into scratch before the row panels run on it.

In rows (`gather_sliver`), a panel is NR pixels of one output row: with stride 1 a whole vector of a
sliver row is one load, with stride 2 two masked loads and a shuffle of their even elements. In flat
columns (`gather_flat_sliver`), a panel is NR pixels of the plane in order and may span output rows:
read in place for a pointwise convolution; with a column stride of 1 or 2, per output row the
panel touches, masked loads of that row's lanes (`_row_runs`); otherwise a load per lane. Masked
loads read no element outside their mask, so no vector reads past the end of the input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llvmlite import ir

from ...gemm.micro_kernel import splat, vector_type
from ...gemm.tiling import FLOAT_BYTES, GemmTiling
from ...llvm.utils import (
    F32,
    affine_offset,
    as_i64,
    element_pointer,
    first_lanes,
    for_range,
    i64,
    lane_indices,
    load_element,
    masked_load,
    masked_store,
)

if TYPE_CHECKING:
    from .geometry import ConvGeometry


def gather_sliver(builder: ir.IRBuilder, tiling: GemmTiling, shape: ConvGeometry, image: ir.Value,
                   sliver: ir.Value, channels: ir.Value, origin: ir.Value, valid: int) -> None:
    """sliver[q, t] = image[origin + c*plane + i*dh*WP + j*dw + t*sw] for q = (c, i, j), c < channels, t < valid.

    `origin` is the element offset of the block's first channel, input row and column; lanes past
    `valid` are zero. With stride 1 a whole vector of a sliver row is one load.
    """
    (dh, dw), sw = shape.dilation, shape.stride[1]
    width, vector = tiling.vector_width, vector_type(tiling)
    element_masks = [_even_elements(width, max(0, valid - v * width)) for v in range(tiling.vectors)]  # stride 2
    with (for_range(builder, channels, "sliver.c", unroll=False) as c, for_range(builder, shape.kh, "sliver.i") as i,
          for_range(builder, shape.kw, "sliver.j") as j):
        tap = affine_offset(builder, [(c, shape.window), (i, shape.kw)], j, "q")
        source_at = affine_offset(builder, [(c, shape.padded_plane), (i, dh * shape.padded_width), (j, dw)], origin)
        source = element_pointer(builder, image, source_at, F32, "sliver.from")
        target = element_pointer(builder, sliver, builder.mul(as_i64(tap), i64(tiling.columns)), F32, "sliver.to")
        for v in range(tiling.vectors):
            lanes = max(0, min(width, valid - v * width))
            if lanes == width and sw == 1:
                value = builder.load(element_pointer(builder, source, v * width, F32), typ=vector, align=FLOAT_BYTES)
            elif lanes and sw == 2:
                value = _strided_load(builder, element_pointer(builder, source, 2 * v * width, F32), element_masks[v],
                                      vector)
            else:
                value = ir.Constant(vector, None)
                for lane in range(lanes):
                    element = load_element(builder, source, (v * width + lane) * sw, F32)
                    value = builder.insert_element(value, element, i64(lane))
            builder.store(value, element_pointer(builder, target, v * width, F32), align=FLOAT_BYTES)


def gather_flat_sliver(builder: ir.IRBuilder, tiling: GemmTiling, shape: ConvGeometry, image: ir.Value,
                        sliver: ir.Value, channels: ir.Value, origin: ir.Value, pixel: ir.Value, valid: int,
                        row: int | None = None) -> None:
    """sliver[q, t] = image[origin + c*plane + i*dh*WP + j*dw + at(pixel + t)] for q = (c, i, j), c < channels,
    t < valid, where at(p) = (p // OW)*sh*WP + (p % OW)*sw: the input element under output pixel p.

    The sliver's rows hold `row` elements (default NR: a B panel of conv_gemm.py; MR: an A panel of
    pixel_rows.py), a vector's lanes past it are not stored. `origin` is the element offset of the
    block's first channel; lanes past `valid` are zero. A pointwise convolution read in place has
    at(p) = p: a vector is one (masked) load. With a column stride of 1
    or 2, the lanes of one output row y are contiguous or every other element in the input: masked
    loads from y's offset fill them (`_row_runs`, `_strided_load`), a few per vector. Otherwise each
    lane's at() is computed once per panel, before the taps' loop, and the lanes are loaded one by one.
    """
    (dh, dw), (sh, sw) = shape.dilation, shape.stride
    width, vector = tiling.vector_width, vector_type(tiling)
    row = tiling.columns if row is None else row
    vectors = -(-row // width)
    in_place = shape.window == 1 and shape.stride == (1, 1) and not shape.is_padded
    runs = _row_runs(builder, tiling, shape, pixel, valid, vectors) if sw <= MASKED_STRIDE and not in_place else None
    if not in_place and runs is None:
        lanes_at = []
        for lane in range(valid):
            at = builder.add(pixel, i64(lane))
            y, x = builder.udiv(at, i64(shape.out_width)), builder.urem(at, i64(shape.out_width))
            lanes_at.append(affine_offset(builder, [(y, sh * shape.padded_width), (x, sw)], 0))
    with (for_range(builder, channels, "sliver.c", unroll=False) as c, for_range(builder, shape.kh, "sliver.i") as i,
          for_range(builder, shape.kw, "sliver.j") as j):
        tap = affine_offset(builder, [(c, shape.window), (i, shape.kw)], j, "q")
        source_at = as_i64(affine_offset(builder, [(c, shape.padded_plane), (i, dh * shape.padded_width), (j, dw)],
                                         origin))
        target = element_pointer(builder, sliver, builder.mul(as_i64(tap), i64(row)), F32, "sliver.to")
        source = element_pointer(builder, image, builder.add(source_at, pixel) if in_place else source_at, F32,
                                 "sliver.from")
        for v in range(vectors):
            lanes = max(0, min(width, valid - v * width))
            if lanes == width and in_place:
                value = builder.load(element_pointer(builder, source, v * width, F32), typ=vector, align=FLOAT_BYTES)
            elif in_place:
                value = masked_load(builder, element_pointer(builder, source, v * width, F32),
                                    first_lanes(width, lanes), ir.Constant(vector, [0.0] * width))
            elif runs is not None:
                value = ir.Constant(vector, None)
                for offset, run_mask, element_masks in runs[v]:
                    run_from = element_pointer(builder, source, offset, F32)
                    if sw == 1:
                        value = masked_load(builder, run_from, run_mask, value)
                    else:
                        value = builder.select(run_mask, _strided_load(builder, run_from, element_masks, vector),
                                               value)
            else:
                value = ir.Constant(vector, None)
                for lane in range(v * width, v * width + lanes):
                    element = load_element(builder, source, lanes_at[lane], F32)
                    value = builder.insert_element(value, element, i64(lane - v * width))
            to = element_pointer(builder, target, v * width, F32)
            if row - v * width >= width:
                builder.store(value, to, align=FLOAT_BYTES)
            else:
                masked_store(builder, value, to, first_lanes(width, row - v * width))


# Column strides up to this one gather a sliver's lanes by masked vector loads (_strided_load: 2 loads and a shuffle).
MASKED_STRIDE = 2


def _strided_load(builder: ir.IRBuilder, source: ir.Value, element_masks: list[ir.Value],
                  vector: ir.VectorType) -> ir.Value:
    """Lane l = source[2 l] where element_masks (one per vector of the 2W elements from `source`) hold
    element 2 l, else 0: the elements are read by masked loads (no other is read), then the even
    ones kept by a shuffle."""
    width = vector.count
    halves = [masked_load(builder, element_pointer(builder, source, h * width, F32), mask, ir.Constant(vector, None))
              for h, mask in enumerate(element_masks)]
    return builder.shuffle_vector(halves[0], halves[1], lane_indices(range(0, 2 * width, 2)))


def _even_elements(width: int, lanes: int) -> list[ir.Constant]:
    """The masks, per vector of the 2W elements from a strided lane 0, of elements 2 l for l < `lanes`."""
    return [ir.Constant(ir.VectorType(ir.IntType(1), width),
                        [int(k % 2 == 0 and (h * width + k) // 2 < lanes) for k in range(width)]) for h in range(2)]


def _lane_rows(builder: ir.IRBuilder, first: ir.Value, lanes: list[int], out_width: int) -> ir.Value:
    """The output row (first + lane) // OW of each of `lanes`, as a vector of i32."""
    vector = ir.VectorType(ir.IntType(32), len(lanes))
    return builder.udiv(builder.add(splat(builder, builder.trunc(first, ir.IntType(32)), vector),
                                    ir.Constant(vector, lanes)), ir.Constant(vector, [out_width] * len(lanes)))


def _row_runs(builder: ir.IRBuilder, tiling: GemmTiling, shape: ConvGeometry, pixel: ir.Value,
              valid: int, vectors: int) -> list[list[tuple[ir.Value, ir.Value, list[ir.Value]]]]:
    """For each vector of a flat panel from `pixel` (column stride s <= MASKED_STRIDE): per output row
    its lanes touch, (element offset, lane mask, element masks). Lane l of the vector is pixel
    p = pixel + v*W + l, in row y = p // OW; from y's offset y*(sh*WP - s*OW) + s*(pixel + v*W),
    element s*l is the input under p (y*sh*WP + s*(p - y*OW)), for the lanes of row y: the lane mask.
    With s = 2 the element masks (one per vector of 2W elements) hold those elements. Lanes past
    `valid` are in no mask (zero)."""
    width, out_width, stride = tiling.vector_width, shape.out_width, shape.stride[1]
    runs = []
    for v in range(vectors):
        lanes = max(0, min(width, valid - v * width))
        first = builder.add(pixel, i64(v * width), name="run.first")
        first_row = builder.udiv(first, i64(out_width), name="run.row")
        lane_rows = _lane_rows(builder, first, list(range(width)), out_width)
        element_rows = [_lane_rows(builder, first, [(h * width + k) // 2 for k in range(width)], out_width)
                        for h in range(2)] if stride == 2 else []
        in_panel = first_lanes(width, lanes)
        needed = _even_elements(width, lanes)
        vector_runs = []
        for r in range((out_width + lanes - 2) // out_width + 1 if lanes else 0):  # rows a run of `lanes` spans
            y = builder.add(first_row, i64(r))
            row = splat(builder, builder.trunc(y, ir.IntType(32)), lane_rows.type)
            mask = builder.and_(builder.icmp_unsigned("==", lane_rows, row), in_panel, name="run.mask")
            element_masks = [builder.and_(builder.icmp_unsigned("==", rows, row), needed[h], name="run.elements")
                             for h, rows in enumerate(element_rows)]
            offset = affine_offset(builder, [(y, shape.stride[0] * shape.padded_width - stride * out_width),
                                             (first, stride)], 0)
            vector_runs.append((offset, mask, element_masks))
        runs.append(vector_runs)
    return runs
