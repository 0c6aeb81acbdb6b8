"""How the depthwise kernel (depthwise.py) computes one plane's outputs, in vectors of the target's width.

    row_outputs       each output row in vectors of its own: whole vectors, then the rest in halving
                      widths (`row_chunks`: 56 = 3 x 16 + 8, 7 = 4 + 2 + 1), never a scalar loop over
                      a remainder; any target
    masked_outputs    x86, from the plane's copy: every vector whole. A row of up to V outputs shares
                      its vector with the next rows (7 x 7 planes: rows in pairs, 4 vectors a plane,
                      against 7 rows of 4 + 2 + 1 lanes); a longer row ends in one masked vector
    in_place_outputs  x86, rows of two vectors or more at column stride 1 or 2: the taps read the
                      input plane itself, the padding's zeros by masked loads
    accumulate_rows   windows larger than MAX_REGISTER_TAPS: a row of taps at a time into the output

Each takes `store(total, places)`: the epilogue of `total` (a float or a vector), stored at each
(element offset, mask or None) place (`store_outputs`).
"""

from __future__ import annotations

from llvmlite import ir

from ...gemm.micro_kernel import splat
from ...gemm.tiling import FLOAT_BYTES
from ...kernel import Kernel
from ...llvm.utils import (
    F32,
    affine_offset,
    element_pointer,
    fill_elements,
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
from .geometry import ConvGeometry

CONTRACT = ("contract",)  # a multiply and its add may become one fma


def multiply_add(builder: ir.IRBuilder, total: ir.Value | None, weight: ir.Value, taps: ir.Value) -> ir.Value:
    """total + weight * taps (a splat of the weight for a vector of taps); total None: the product."""
    weight = splat(builder, weight, taps.type) if isinstance(taps.type, ir.VectorType) else weight
    product = builder.fmul(weight, taps, name="product", flags=CONTRACT)
    return product if total is None else builder.fadd(total, product, name="acc", flags=CONTRACT)


def unbounded_pointer(builder: ir.IRBuilder, base: ir.Value, offset: ir.Value) -> ir.Value:
    """base + offset floats, without `inbounds`: a masked access's base may lie before its buffer (its
    lanes there are masked off)."""
    return builder.gep(base, [offset], source_etype=F32)


def store_outputs(kernel: Kernel, epilogue, residual: ir.Value | None, total: ir.Value,
                  places: list[tuple[ir.Value, ir.Constant | None]]) -> None:
    """epilogue(total, the residual's values) stored at every place (an element offset of the output
    and the residual, and the mask of its lanes, or None: all of `total`). The places' masks do not
    overlap; the residual is read with the same masks."""
    builder = kernel.builder
    skip = None
    if residual is not None:
        for at, mask in places:
            if mask is None:
                skip = builder.load(element_pointer(builder, residual, at, F32), typ=total.type, align=FLOAT_BYTES)
            else:
                skip = masked_load(builder, unbounded_pointer(builder, residual, at), mask,
                                   ir.Constant(total.type, None) if skip is None else skip)
    result = epilogue(total, skip)
    for at, mask in places:
        if mask is None:
            builder.store(result, element_pointer(builder, kernel.output, at, F32), align=FLOAT_BYTES)
        else:
            masked_store(builder, result, unbounded_pointer(builder, kernel.output, at), mask)


def row_chunks(width: int, lanes: int) -> list[tuple[int, int]]:
    """(first x, vector width) covering [0, width): whole vectors of `lanes`, then the rest in halving widths."""
    chunks = [(x, lanes) for x in range(0, width - width % lanes, lanes)]
    x, size = width - width % lanes, lanes // 2
    while x < width:
        while size > width - x:
            size //= 2
        chunks.append((x, size))
        x += size
    return chunks


def row_outputs(kernel: Kernel, shape: ConvGeometry, length: int, window, store, out_plane: ir.Value) -> None:
    """Each output row in vectors of its own (`row_chunks`); `window(start, lanes)` sums the taps of the
    outputs whose reads start at `start`, rows `length` apart."""
    builder, lanes = kernel.builder, kernel.target.vector_width
    ow = shape.out_width
    with for_range(builder, shape.out_height, "y", unroll=False) as y:
        def chunk(x: ir.Value, width: int, y=y) -> None:
            start = affine_offset(builder, [(y, length)], x)
            store(window(start, width), [(affine_offset(builder, [(y, ow)], builder.add(out_plane, x)), None)])

        chunks = row_chunks(ow, lanes)
        whole = [first for first, width in chunks if width == lanes]
        if whole:
            with for_range(builder, len(whole), "xv", unroll=False) as v:
                chunk(builder.mul(v, i64(lanes)), lanes)
        for first, width in chunks[len(whole):]:
            chunk(i64(first), width)


def masked_outputs(kernel: Kernel, shape: ConvGeometry, length: int, group: int, window, store,
                   out_plane: ir.Value) -> None:
    """Every vector whole, its lanes past the outputs masked off at the store (and at the residual's
    load). With `group` (rows of at most V outputs): lanes k * length + x hold output (y + k, x) for
    k < group, stored at out[(y + k) * OW - k * length + lane]. Without: a row takes whole vectors,
    then one for the rest. Reads run past a row's end into the next rows (and past the copy's end:
    scratch has a vector more)."""
    builder, lanes = kernel.builder, kernel.target.vector_width
    oh, ow = shape.out_height, shape.out_width

    def emit(start: ir.Value, out_at: ir.Value, rows: int, width: int) -> None:
        """One vector from flat position `start`: `rows` rows of `width` outputs, the first at out[out_at]."""
        store(window(start, lanes), [(builder.add(out_at, i64(k * (ow - length))),
                                      lane_mask(lanes, lambda lane, k=k: k * length <= lane < k * length + width))
                                     for k in range(rows)])

    if group:
        def rows_from(y: ir.Value, rows: int) -> None:
            emit(builder.mul(y, i64(length)), affine_offset(builder, [(y, ow)], out_plane), rows, ow)

        with for_range(builder, oh // group, "group", unroll=False) as g:
            rows_from(builder.mul(g, i64(group)), group)
        if oh % group:
            rows_from(i64(oh - oh % group), oh % group)
        return
    with for_range(builder, oh, "y", unroll=False) as y:
        out_row = affine_offset(builder, [(y, ow)], out_plane)
        whole = ow // lanes
        with for_range(builder, whole, "xv", unroll=False) as v:
            x = builder.mul(v, i64(lanes))
            emit(affine_offset(builder, [(y, length)], x), builder.add(out_row, x), 1, lanes)
        if ow % lanes:
            x = i64(whole * lanes)
            emit(affine_offset(builder, [(y, length)], x), builder.add(out_row, x), 1, ow % lanes)


def in_place_outputs(kernel: Kernel, shape: ConvGeometry, weights: list[ir.Value], source: ir.Value, store,
                     out_plane: ir.Value) -> None:
    """Rows of two vectors or more, column stride 1 or 2, on x86: the taps read the input plane in
    place. The rows whose window leaves the plane (the first and last ph / sh or so) are emitted each
    with only its taps inside; in every row, a vector whose tap reaches past a side of the plane reads
    it with masked loads (the padding's zeros), and a row's last partial vector is stored masked. At
    column stride 2 a tap's vector is the even lanes of two vectors read from its first column. Without
    the copy, a plane is read once: MobileNetV2's 32 planes of 112 x 112 ran 1.5x faster so, its 96
    planes of 112 x 112 at stride 2 1.4x (in-process kernel profiles, 2026-12-07)."""
    builder, lanes = kernel.builder, kernel.target.vector_width
    height, width, (ph, pw), (dh, dw), (sh, sw) = shape.height, shape.width, shape.padding, shape.dilation, shape.stride
    oh, ow = shape.out_height, shape.out_width
    zero = ir.Constant(ir.VectorType(F32, lanes), None)
    evens = lane_indices(range(0, 2 * lanes, 2))

    def read(at: ir.Value, first_column: int | None, needed: int) -> ir.Value | None:
        """A vector from source[at] whose first `needed` lanes matter; with first_column (that lane's column
        in its row, static) lanes outside the row read as zeros by a masked load (None: none inside)."""
        pointer = unbounded_pointer(builder, source, at)
        valid = [first_column is None or lane < needed and 0 <= first_column + lane < width for lane in range(lanes)]
        if not any(valid):
            return None
        if all(valid):
            return builder.load(pointer, typ=zero.type, align=FLOAT_BYTES)
        return masked_load(builder, pointer, lane_mask(lanes, valid.__getitem__), zero)

    def chunk(y: ir.Value, rows: list[int], x0: ir.Value, static_x0: int | None, count: int) -> None:
        """Outputs (y, x0 .. x0 + count) from tap rows `rows`; static_x0 is x0 when masks may be needed."""
        total = None
        for i in rows:
            row_at = affine_offset(builder, [(y, sh * width)], (i * dh - ph) * width)
            for j in range(shape.kw):
                shift = j * dw - pw
                at = builder.add(builder.add(row_at, builder.mul(x0, i64(sw)) if sw > 1 else x0), i64(shift))
                first = None if static_x0 is None else static_x0 * sw + shift
                if sw == 1:
                    taps = read(at, first, count)
                else:  # the even lanes of 2 V columns from the tap's first
                    low = read(at, first, 2 * count)
                    high = read(builder.add(at, i64(lanes)), None if first is None else first + lanes,
                                2 * count - lanes)
                    taps = None if low is None and high is None else \
                        builder.shuffle_vector(low or zero, high or zero, evens)
                if taps is not None:
                    total = multiply_add(builder, total, weights[i * shape.kw + j], taps)
        out_at = builder.add(affine_offset(builder, [(y, ow)], out_plane), x0)
        store(zero if total is None else total,
              [(out_at, None if count == lanes else first_lanes(lanes, count))])

    chunks = [(x0, min(lanes, ow - x0)) for x0 in range(0, ow, lanes)]
    # the vectors whose every read lies in the row (a run in the middle: the left edge's condition grows
    # with x0, the right edge's shrinks) are a loop of plain loads; the others are emitted with their masks
    clean = [x0 for x0, count in chunks if count == lanes and x0 * sw - pw >= 0
             and x0 * sw + sw * lanes - 1 + (shape.kw - 1) * dw - pw < width]

    def row(y: ir.Value, rows: list[int]) -> None:
        for x0, count in chunks:
            if x0 not in clean:
                chunk(y, rows, i64(x0), x0, count)
            elif x0 == clean[0]:
                with for_range(builder, len(clean), "x.clean", unroll=False) as v:
                    chunk(y, rows, builder.add(i64(x0), builder.mul(v, i64(lanes))), None, lanes)

    def tap_rows(y: int) -> list[int]:
        return [i for i in range(shape.kh) if 0 <= y * sh + i * dh - ph < height]

    inner_first = min(oh, -(-ph // sh))  # rows from which every tap row lies in the plane ...
    inner_last = min(oh - 1, (height - 1 + ph - (shape.kh - 1) * dh) // sh)  # ... to this one
    for y in range(inner_first):
        row(i64(y), tap_rows(y))
    if inner_first <= inner_last:
        with for_range(builder, inner_last - inner_first + 1, "y.inner", unroll=False) as index:
            row(builder.add(index, i64(inner_first)), list(range(shape.kh)))
    for y in range(max(inner_first, inner_last + 1), oh):
        row(i64(y), tap_rows(y))


def accumulate_rows(kernel: Kernel, shape: ConvGeometry, source: ir.Value, taps: ir.Value, out_plane: ir.Value,
                    store) -> None:
    """A big window: per output row, each row of taps i adds its kw taps (unrolled) into the output
    row in memory (zeros first), then the epilogue over the row."""
    builder = kernel.builder
    (sh, sw), (dh, dw) = shape.stride, shape.dilation
    oh, ow = shape.out_height, shape.out_width
    row_step = shape.padded_width  # the width, without padding
    with for_range(builder, oh, "y", unroll=False) as y:
        out_row = affine_offset(builder, [(y, ow)], out_plane, "out_row")
        fill_elements(builder, element_pointer(builder, kernel.output, out_row, F32), ow, ir.Constant(F32, 0.0),
                      "zero")
        with for_range(builder, shape.kh, "i", unroll=False) as i:
            weights = [load_element(builder, taps, affine_offset(builder, [(i, shape.kw)], j), F32, f"w{j}")
                       for j in range(shape.kw)]
            with for_range(builder, ow, "x", unroll=False) as x:
                start = affine_offset(builder, [(y, sh * row_step), (i, dh * row_step), (x, sw)])
                at = builder.add(out_row, x, name="at")
                total = load_element(builder, kernel.output, at, F32, "acc")
                for j in range(shape.kw):
                    total = multiply_add(builder, total, weights[j],
                                         load_element(builder, source, builder.add(start, i64(j * dw)), F32, "x"))
                store_element(builder, total, kernel.output, at)
        with for_range(builder, ow, "finish", unroll=False) as x:
            at = builder.add(out_row, x, name="at")
            store(load_element(builder, kernel.output, at, F32, "acc"), [(at, None)])
