"""f32 depthwise conv2d (groups == input channels == output channels): a direct loop nest per plane.

MobileNet's depthwise layers have one input channel per output channel, so the GEMM formulation
(conv_gemm.py) degenerates into a one-row GEMM per group. Here each (image, channel) plane is
convolved directly with its kh x kw taps held in registers:

    for plane p = (n, c) in this part's planes:
      source = x[n, c], or a copy of it inside a zero border (the padding) in this thread's scratch
      for y < OH:  for x < OW, a vector of x at a time:
        acc = sum over i < kh, j < kw of w[c, 0, i, j] * source[y*sh + i*dh, x*sw + j*dw]
        out[n, c, y, x] = activation(acc (+ bias[c]) (+ residual[n, c, y, x]))

The copy makes every tap's read valid without a branch in the hot loop (it costs one read and write
per input element against kh * kw multiply-adds per output); the border is zeroed once per part and
only the interior is copied per plane. With a stride the copy is also split by phase (`_Layout`):
sub-plane (r % sh, c % sw) holds the padded plane's rows r and columns c of those phases, so tap
(i, j) of a vector of outputs x..x+V is one contiguous load, and output rows y and y + 1 read rows
one sub-plane row apart, as with stride 1.

On x86 (masked stores are instructions) every vector is whole (`_masked_outputs`): a row of up to V
outputs shares its vector with the next rows (7 x 7 planes: rows in pairs, 4 vectors a plane,
against 7 rows of 4 + 2 + 1 lanes), a longer row ends in one masked vector, and the stores (and a
residual's loads) are masked. Elsewhere the x loop takes whole vectors, then the row's rest in
halving widths (`_row_chunks`: 56 = 3 x 16 + 8, 7 = 4 + 2 + 1), never a scalar loop over a
remainder. Windows of more than MAX_REGISTER_TAPS taps (larger than 8 x 8) accumulate in the output
row, one row of taps at a time, instead. Threads: blocks of planes (`depthwise_parts`); the weight
is read as stored, [C, 1, kh, kw].
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from ....ir import DType, Node
from ...gemm.micro_kernel import splat
from ...gemm.tiling import FLOAT_BYTES
from ...kernel import Kernel
from ...llvm import float_math
from ...llvm.utils import (
    F32,
    I1,
    affine_offset,
    copy_bytes,
    element_pointer,
    fill_elements,
    for_range,
    i64,
    lane_indices,
    load_element,
    masked_load,
    masked_store,
    store_element,
    zero_bytes,
)
from ...target import Target
from ...threads import parallel
from ...threads.parallel import split_parts
from ..matmul import contraction_operands
from .geometry import ConvGeometry

PARALLEL_BYTES = 128 << 10  # planes read and written from which a team shares them (depthwise_parts)
MAX_REGISTER_TAPS = 64  # windows up to 8 x 8 are accumulated in registers, the taps unrolled
CONTRACT = ("contract",)  # a multiply and its add may become one fma


def is_depthwise(node: Node) -> bool:
    """An f32 conv2d with one input channel per output channel and groups == channels (channel
    multiplier 1), a non-empty result and no fused pool or Winograd: the depthwise kernel's."""
    if node.op != "conv2d" or node.inputs[0].dtype is not DType.f32 or node.type.size == 0:
        return False
    channels, outputs = node.inputs[0].shape[1], node.inputs[1].shape[0]
    return (node.attrs["groups"] == channels == outputs and node.inputs[1].shape[1] == 1
            and node.attrs.get("pool") is None and not node.attrs.get("winograd"))


@dataclass(frozen=True)
class _Layout:
    """Where the taps read a plane: the input in place, or its copy in this thread's scratch.

    A copy is split by phase: padded row r and column c of the plane go to sub-plane
    (r % sh, c % sw) at row r // sh and column c // sw, every sub-plane `rows` x `length`, so tap
    (i, j) of output (y, x) lies at sub-plane ((i*dh) % sh, (j*dw) % sw), row y + (i*dh) // sh,
    column x + (j*dw) // sw: the outputs of one row of a sub-plane read contiguous elements, whatever
    the stride. Output (y, x) reads from y * length + x on, past the row's end into the next rows,
    and the last vector up to a vector past the copy (scratch has room for it).

    `masked` (x86): whole vectors with masked stores, read in place (`_in_place_outputs`) or from
    the copy (`_masked_outputs`); else each output row in vectors of its own (`_row_outputs`).
    """

    copies: bool
    row_phases: int
    column_phases: int
    rows: int  # of one sub-plane
    length: int  # elements of one sub-plane row: the step from output row y to y + 1
    masked: bool

    @classmethod
    def of(cls, shape: ConvGeometry, target: Target) -> _Layout:
        if shape.window > MAX_REGISTER_TAPS:  # `_accumulate_rows` reads the padded rows as they are
            return cls(shape.is_padded, 1, 1, shape.height + 2 * shape.padding[0], shape.padded_width, False)
        sh, sw = shape.stride
        x86 = target.arch == "x86_64" and target.vector_width >= 8  # masked loads and stores (AVX and up)
        # in place: rows of two vectors or more have some vectors no mask is needed for; 28 wide on
        # AVX-512 (16 + 12, both masked) ran as fast as copied
        wide = x86 and sw <= 2 and shape.out_width >= 2 * target.vector_width
        if wide or (sh, sw) == (1, 1) and not shape.is_padded:
            return cls(False, 1, 1, shape.height, shape.width, x86)  # in place (`_in_place_outputs` on x86)
        rows, length = -(-(shape.height + 2 * shape.padding[0]) // sh), -(-shape.padded_width // sw)
        return cls(True, sh, sw, rows, length, x86)

    @property
    def elements(self) -> int:
        """Elements of the copy: every sub-plane."""
        return self.row_phases * self.column_phases * self.rows * self.length

    def group(self, shape: ConvGeometry, lanes: int) -> int:
        """Output rows one vector of `lanes` holds (`_masked_outputs`): as many as start within it and
        end by its last lane; 0 for rows longer than a vector."""
        return (lanes - shape.out_width) // self.length + 1 if shape.out_width <= lanes else 0

    def tap(self, shape: ConvGeometry, i: int, j: int) -> int:
        """The offset of tap (i, j) from output (0, 0)'s reads."""
        (dh, dw), sh, sw = shape.dilation, self.row_phases, self.column_phases
        if not self.copies:
            return i * dh * self.length + j * dw
        sub_plane = (i * dh) % sh * sw + (j * dw) % sw
        return (sub_plane * self.rows + (i * dh) // sh) * self.length + (j * dw) // sw


def depthwise_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """One copied plane (per thread) and a vector past it (`_masked_outputs`' last vector reads into
    it), or nothing when the taps read the input in place."""
    layout = _Layout.of(ConvGeometry.of(node), target)
    return (layout.elements + target.vector_width) * FLOAT_BYTES if layout.copies else 0


def _row_chunks(width: int, lanes: int) -> list[tuple[int, int]]:
    """(first x, vector width) covering [0, width): whole vectors of `lanes`, then the rest in halving widths."""
    chunks = [(x, lanes) for x in range(0, width - width % lanes, lanes)]
    x, size = width - width % lanes, lanes // 2
    while x < width:
        while size > width - x:
            size //= 2
        chunks.append((x, size))
        x += size
    return chunks


def depthwise_parts(node: Node, target: Target, threads: int) -> int:
    """Blocks of (image, channel) planes, cut finer than one per thread (a busy core takes fewer),
    when the multiply-adds reach MIN_PARALLEL_FLOPS or the planes read and written PARALLEL_BYTES:
    a few taps per element, the kernel's time follows its bytes (MobileNetV2's 960 planes of 7 x 7:
    0.85 MFLOP, 40 us alone on one thread, 25 us split in an in-process A/B)."""
    shape = ConvGeometry.of(node)
    work = 2 * shape.batch * shape.channels * shape.out_height * shape.out_width * shape.window
    if threads <= 1 or (work < parallel.MIN_PARALLEL_FLOPS and node.inputs[0].type.nbytes + node.type.nbytes
                        < PARALLEL_BYTES):
        return 1
    return split_parts(shape.batch * shape.channels, threads * parallel.PARTS_PER_THREAD)[0]


def emit_conv2d_depthwise(kernel: Kernel) -> None:
    """The depthwise conv2d of the module docstring, for this part's planes."""
    node, builder = kernel.node, kernel.builder
    shape = ConvGeometry.of(node)
    layout = _Layout.of(shape, kernel.target)
    oh, ow = shape.out_height, shape.out_width
    bias, residual = contraction_operands(kernel)
    activation = node.attrs.get("activation")
    if layout.copies:  # the border stays zero: each plane writes only the interior
        zero_bytes(builder, kernel.scratch, (layout.elements + kernel.target.vector_width) * FLOAT_BYTES)
    first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, shape.batch * shape.channels, "plane")
    with for_range(builder, count, "plane.i", unroll=False) as index:
        plane = builder.add(first, index, name="plane")
        channel = builder.urem(plane, i64(shape.channels), name="channel")
        source = element_pointer(builder, kernel.inputs[0], builder.mul(plane, i64(shape.height * shape.width)), F32,
                                 "plane.x")
        if layout.copies:
            _copy_plane(builder, shape, layout, source, kernel.scratch)
            source = kernel.scratch
        taps = element_pointer(builder, kernel.inputs[1], builder.mul(channel, i64(shape.window)), F32, "taps")
        shift = load_element(builder, bias, channel, F32, "bias") if bias is not None else None
        out_plane = builder.mul(plane, i64(oh * ow), name="out_plane")

        def epilogue(total: ir.Value, skip: ir.Value | None) -> ir.Value:
            """total (a float or a vector) + bias, + the residual's `skip`, then the activation."""
            vector = total.type
            if shift is not None:
                total = builder.fadd(total, splat(builder, shift, vector) if vector != F32 else shift, name="biased")
            if skip is not None:
                total = builder.fadd(total, skip, name="residual")
            return float_math.activation(builder, activation, total)

        def finish(total: ir.Value, at: ir.Value) -> None:
            """The epilogue, then total at out[at] (an element offset)."""
            skip = None
            if residual is not None:
                skip = builder.load(element_pointer(builder, residual, at, F32), typ=total.type, align=FLOAT_BYTES)
            builder.store(epilogue(total, skip), element_pointer(builder, kernel.output, at, F32), align=FLOAT_BYTES)

        if shape.window > MAX_REGISTER_TAPS:
            _accumulate_rows(kernel, shape, source, taps, out_plane, finish)
        else:
            weights = [load_element(builder, taps, t, F32, f"w{t}") for t in range(shape.window)]
            offsets = [layout.tap(shape, i, j) for i in range(shape.kh) for j in range(shape.kw)]

            def window(start: ir.Value, lanes: int) -> ir.Value:
                """sum over the taps of w * the `lanes` elements at source[start + tap offset]."""
                vector, total = ir.VectorType(F32, lanes), None
                for weight, offset in zip(weights, offsets):
                    read = builder.load(element_pointer(builder, source, builder.add(start, i64(offset)), F32),
                                        typ=vector, align=FLOAT_BYTES)
                    product = builder.fmul(splat(builder, weight, vector), read, name="product", flags=CONTRACT)
                    total = product if total is None else builder.fadd(total, product, name="acc", flags=CONTRACT)
                return total

            if layout.masked and not layout.copies:
                _in_place_outputs(kernel, shape, weights, source, epilogue, out_plane, residual)
            elif layout.masked:
                _masked_outputs(kernel, shape, layout, window, epilogue, out_plane, residual)
            else:
                _row_outputs(kernel, shape, layout, window, finish, out_plane)


def _row_outputs(kernel: Kernel, shape: ConvGeometry, layout: _Layout, window, finish, out_plane: ir.Value) -> None:
    """Each output row in vectors of its own: whole vectors, then the rest in halving widths."""
    builder, lanes = kernel.builder, kernel.target.vector_width
    ow = shape.out_width
    with for_range(builder, shape.out_height, "y", unroll=False) as y:
        def chunk(x: ir.Value, width: int, y=y) -> None:
            start = affine_offset(builder, [(y, layout.length)], x)
            finish(window(start, width), affine_offset(builder, [(y, ow)], builder.add(out_plane, x)))

        chunks = _row_chunks(ow, lanes)
        whole = [first for first, width in chunks if width == lanes]
        if whole:
            with for_range(builder, len(whole), "xv", unroll=False) as v:
                chunk(builder.mul(v, i64(lanes)), lanes)
        for first, width in chunks[len(whole):]:
            chunk(i64(first), width)


def _masked_outputs(kernel: Kernel, shape: ConvGeometry, layout: _Layout, window, epilogue,
                    out_plane: ir.Value, residual: ir.Value | None) -> None:
    """`_Layout.masked`: every vector is whole, its lanes past the outputs masked off at the store (and at
    the residual's load). A row of at most V outputs shares its vector with the next rows: lanes
    k * length + x hold output (y + k, x) for k < group (`_Layout.group`), stored at
    out[(y + k) * OW - k * length + lane]. A longer row takes whole vectors, then one for the rest."""
    builder, lanes = kernel.builder, kernel.target.vector_width
    oh, ow, length = shape.out_height, shape.out_width, layout.length
    group = layout.group(shape, lanes)

    def emit(start: ir.Value, out_at: ir.Value, rows: int, width: int) -> None:
        """One vector from flat position `start`: `rows` rows of `width` outputs, the first at out[out_at]."""
        total = window(start, lanes)
        places = [(builder.add(out_at, i64(k * (ow - length))),
                   ir.Constant(ir.VectorType(I1, lanes), [k * length <= lane < k * length + width
                                                           for lane in range(lanes)]))
                  for k in range(rows)]
        skip = None
        if residual is not None:
            skip = ir.Constant(total.type, None)
            for at, mask in places:
                skip = masked_load(builder, _unbounded_pointer(builder, residual, at), mask, skip)
        result = epilogue(total, skip)
        for at, mask in places:
            masked_store(builder, result, _unbounded_pointer(builder, kernel.output, at), mask)

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


def _in_place_outputs(kernel: Kernel, shape: ConvGeometry, weights: list[ir.Value], source: ir.Value, epilogue,
                      out_plane: ir.Value, residual: ir.Value | None) -> None:
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
    vector = ir.VectorType(F32, lanes)
    zero = ir.Constant(vector, None)
    evens = lane_indices(range(0, 2 * lanes, 2))

    def mask_of(valid: list[bool]) -> ir.Constant:
        return ir.Constant(ir.VectorType(I1, lanes), valid)

    def read(at: ir.Value, first_column: int | None, needed: int) -> ir.Value | None:
        """A vector from source[at] whose first `needed` lanes matter; with first_column (that lane's column
        in its row, static) lanes outside the row read as zeros by a masked load (None: none inside)."""
        pointer = _unbounded_pointer(builder, source, at)
        if first_column is None:
            return builder.load(pointer, typ=vector, align=FLOAT_BYTES)
        valid = [lane < needed and 0 <= first_column + lane < width for lane in range(lanes)]
        if not any(valid):
            return None
        return builder.load(pointer, typ=vector, align=FLOAT_BYTES) if all(valid) else \
            masked_load(builder, pointer, mask_of(valid), zero)

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
                    if low is None and high is None:
                        continue
                    taps = builder.shuffle_vector(low or zero, high or zero, evens)
                if taps is None:
                    continue
                product = builder.fmul(splat(builder, weights[i * shape.kw + j], vector), taps, name="product",
                                       flags=CONTRACT)
                total = product if total is None else builder.fadd(total, product, name="acc", flags=CONTRACT)
        total = zero if total is None else total
        out_at = builder.add(affine_offset(builder, [(y, ow)], out_plane), x0)
        whole = count == lanes
        mask = mask_of([lane < count for lane in range(lanes)])
        skip = None
        if residual is not None:
            pointer = element_pointer(builder, residual, out_at, F32)
            skip = (builder.load(pointer, typ=vector, align=FLOAT_BYTES) if whole
                    else masked_load(builder, pointer, mask, zero))
        result = epilogue(total, skip)
        pointer = element_pointer(builder, kernel.output, out_at, F32)
        if whole:
            builder.store(result, pointer, align=FLOAT_BYTES)
        else:
            masked_store(builder, result, pointer, mask)

    chunks = [(x0, min(lanes, ow - x0)) for x0 in range(0, ow, lanes)]
    # chunks whose every read lies in the row run in a loop; the others are emitted with their masks
    clean = [x0 for x0, count in chunks if count == lanes and x0 * sw - pw >= 0
             and x0 * sw + sw * lanes - 1 + (shape.kw - 1) * dw - pw < width]

    def row(y: ir.Value, rows: list[int]) -> None:
        done = set()
        for x0, count in chunks:
            if x0 in done:
                continue
            if x0 in clean:
                run = [c for c in clean if c >= x0]
                run = run[:next((k for k in range(1, len(run)) if run[k] != run[k - 1] + lanes), len(run))]
                done.update(run)
                with for_range(builder, len(run), "x.clean", unroll=False) as v:
                    chunk(y, rows, builder.add(i64(x0), builder.mul(v, i64(lanes))), None, lanes)
            else:
                chunk(y, rows, i64(x0), x0, count)

    def tap_rows(y: int) -> list[int]:
        return [i for i in range(shape.kh) if 0 <= y * sh + i * dh - ph < height]

    inner_first = min(oh, -(-ph // sh))  # rows from which every tap row lies in the plane ...
    inner_last = min(oh - 1, (height - 1 + ph - (shape.kh - 1) * dh) // sh)  # ... to this one
    edges = [y for y in range(oh) if not inner_first <= y <= inner_last]
    for y in (y for y in edges if y < inner_first):
        row(i64(y), tap_rows(y))
    if inner_first <= inner_last:
        with for_range(builder, inner_last - inner_first + 1, "y.inner", unroll=False) as index:
            row(builder.add(index, i64(inner_first)), list(range(shape.kh)))
    for y in (y for y in edges if y > inner_last):
        row(i64(y), tap_rows(y))


def _unbounded_pointer(builder: ir.IRBuilder, base: ir.Value, offset: ir.Value) -> ir.Value:
    """base + offset floats, without `inbounds`: a masked access's base may lie before its buffer (its
    lanes there are masked off)."""
    return builder.gep(base, [offset], source_etype=F32)


def _copy_plane(builder: ir.IRBuilder, shape: ConvGeometry, layout: _Layout, source: ir.Value,
                scratch: ir.Value) -> None:
    """The plane's interior into scratch as `_Layout` says: input row y (padded row r = y + ph) to
    row r // sh of the row-phase r % sh sub-planes; in each, padded column c (input column c - pw) at
    column c // sw of sub-plane c % sw: a row copy, or per column phase k the input columns
    t*sw + k - pw that lie in the image (static bounds)."""
    (ph, pw), sh, sw, length = shape.padding, layout.row_phases, layout.column_phases, layout.length
    with for_range(builder, shape.height, "copy.y", unroll=False) as y:
        row_from = element_pointer(builder, source, builder.mul(y, i64(shape.width)), F32, "copy.from")
        padded_row = builder.add(y, i64(ph))
        phase, sub_row = (builder.urem(padded_row, i64(sh)), builder.udiv(padded_row, i64(sh))) if sh > 1 else \
            (i64(0), padded_row)

        def row_to(k: int) -> ir.Value:
            """The start of this row in column-phase k's sub-plane."""
            sub_plane = builder.add(builder.mul(phase, i64(sw)), i64(k))
            return element_pointer(builder, scratch, builder.mul(builder.add(builder.mul(sub_plane, i64(layout.rows)),
                                                                              sub_row), i64(length)), F32, "copy.to")

        if sw == 1:
            copy_bytes(builder, element_pointer(builder, row_to(0), pw, F32), row_from, shape.width * FLOAT_BYTES,
                       may_overlap=False)
        else:  # a strided read and a contiguous write per phase (LLVM vectorizes it: wide loads, shuffles)
            for k in range(sw):
                first = max(0, -(-(pw - k) // sw))  # t with 0 <= t*s + k - pw < width
                last = (shape.width - 1 + pw - k) // sw
                if last < first:
                    continue
                to = row_to(k)
                with for_range(builder, last - first + 1, f"copy.t{k}") as offset:
                    t = builder.add(offset, i64(first))
                    value = load_element(builder, row_from, affine_offset(builder, [(t, sw)], k - pw), F32)
                    store_element(builder, value, to, t)


def _accumulate_rows(kernel: Kernel, shape: ConvGeometry, source: ir.Value, taps: ir.Value, out_plane: ir.Value,
                     finish) -> None:
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
                    read = load_element(builder, source, builder.add(start, i64(j * dw)), F32, "x")
                    total = builder.fadd(total, builder.fmul(weights[j], read, flags=CONTRACT), name="acc",
                                         flags=CONTRACT)
                store_element(builder, total, kernel.output, at)
        with for_range(builder, ow, "finish", unroll=False) as x:
            at = builder.add(out_row, x, name="at")
            finish(load_element(builder, kernel.output, at, F32, "acc"), at)
