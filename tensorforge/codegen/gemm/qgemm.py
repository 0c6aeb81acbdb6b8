"""The int8 GEMM of qlinear: int8 x int8 -> int32 in a register-blocked micro-kernel, then requantization.

    %y = qlinear(%x, %w, %bias, %m, %zx, %zy) {dtype=i8, activation=relu}   (ir/ops_quant.py)

The weight is packed once at compile time (`pack_qweight`) into panels of NR columns in which
each column's G consecutive k values lie together, followed by its column sums:

    [panels, ceil(K / G), NR, G] int8   then   colsum int32 [panels * NR]

so that one 32-bit lane of a vector holds one column's G values of one k group. A block of rows
of x is packed at run time into scratch the same way ([row panels, K / G, MR, G]). The k loop of
the micro-kernel broadcasts one row's G values (32 bits) and takes, per vector of columns, one
instruction of the target's int8 scheme (`int8_scheme`):

    vnni     x86 AVX512-VNNI / AVX-VNNI  G=4  vpdpbusd: u8 x s8, 4 products into each i32 lane
    pmaddwd  x86 AVX2 / AVX-512BW        G=2  x widened to i16 when packed, w sign-extended on load
    sdot     armv8.2-a + dotprod         G=4  s8 x s8, 4 products into each i32 lane
    widen    every other target          G=1  i32 multiply-add of sign-extended values

A target with AMX's int8 tiles (Sapphire Rapids on) takes them instead (`qgemm_tiling`, gemm/amx.py):
the same weight panels with NR = 32, x read in place a 32-row tile at a time (k padded to 64).

vpdpbusd wants unsigned x and sdot signed: packing shifts x by 128 when its dtype is the other one
(`shift`), and the epilogue takes the shift out with the column sums, together with x's zero
point: sum((x - zx) * w) = sum((x + shift) * w) - (shift + zx) * colsum(w). The epilogue then adds
the bias and requantizes in f32, exactly as the reference (gemm/requant.py).

The loops: blocks of `mc` rows of x are packed (one block's panels stay in L2); for each column
panel (K x NR bytes of weight, in L1) the micro-kernel runs on every row panel of the block. Work
is split among threads by row or column panels (GemmSplit), as the f32 GEMM's. The layers on
this GEMM (qlinear, dynamic_qlinear, qconv2d: their emission and build hooks) are in ops/qlayers.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ...ir import DType
from ..llvm.utils import (
    F32,
    I8,
    I32,
    I64,
    PTR,
    call_intrinsic,
    copy_bytes,
    element_pointer,
    for_range,
    i64,
    load_element,
    store_element,
)
from ..target import Target
from . import amx
from .gemm import minimum, row_panel_calls
from .micro_kernel import accumulate_in_turns, define_kernel, prefetch_lines, splat
from .requant import EPILOGUE_ARGUMENTS, Requant, TileArguments, write_tile

I16 = ir.IntType(16)
A_BLOCK_BYTES = 128 * 1024  # packed rows of x per block: about half of a 512 KiB L2


@dataclass(frozen=True)
class Int8Scheme:
    """How one target multiplies int8: `group` k values per 32-bit lane, packed x elements of
    `a_bits` bits, `lanes` int32 accumulators per vector; `signed_a`: what the instruction wants
    (None: it has a form for either sign, as AMX)."""

    name: str
    group: int
    a_bits: int
    lanes: int
    signed_a: bool | None = True
    depth_step: int = 0  # k is padded to a multiple of it (0: of `group`)

    @property
    def a_type(self) -> ir.IntType:
        return ir.IntType(self.a_bits)

    def shift(self, x_dtype: DType) -> int:
        """What packing adds to x so that it has the signedness the instruction wants (8-bit schemes)."""
        if self.a_bits != 8 or self.signed_a is None:
            return 0
        if self.signed_a:
            return -128 if x_dtype is DType.u8 else 0
        return 128 if x_dtype is DType.i8 else 0


AMX = Int8Scheme("amx", 4, 8, amx.TILE_ROWS, signed_a=None, depth_step=amx.TILE_BYTES)


def has_amx(target: Target) -> bool:
    """Whether `target` has AMX's int8 tiles (gemm/amx.py); all such CPUs have AVX-512."""
    return (target.arch == "x86_64" and target.has_feature("amx-tile") and target.has_feature("amx-int8")
            and target.vector_width == 16 and target.has_feature("avx512bw"))


@functools.cache
def int8_scheme(target: Target) -> Int8Scheme:
    """The best int8 scheme in vector registers `target` has (module docstring)."""
    width = target.vector_width
    if target.arch == "aarch64":
        return Int8Scheme("sdot", 4, 8, 4) if target.has_feature("dotprod") else Int8Scheme("widen", 1, 16, 4)
    if target.has_feature("avx512vnni") and width == 16 and target.has_feature("avx512bw"):
        return Int8Scheme("vnni", 4, 8, 16, signed_a=False)
    if target.has_feature("avxvnni") or (target.has_feature("avx512vnni") and target.has_feature("avx512vl")):
        return Int8Scheme("vnni", 4, 8, 8, signed_a=False)
    if width == 16 and target.has_feature("avx512bw"):
        return Int8Scheme("pmaddwd", 2, 16, 16)
    if target.has_feature("avx2"):
        return Int8Scheme("pmaddwd", 2, 16, 8)
    return Int8Scheme("widen", 1, 16, 4)


@dataclass(frozen=True)
class QTiling:
    """The micro-tile of the int8 GEMM: MR `rows` x NR `columns` (`vectors` vectors of int32 lanes)."""

    scheme: Int8Scheme
    rows: int
    vectors: int

    @property
    def columns(self) -> int:
        return self.vectors * self.scheme.lanes


# With AMX, a part of fewer rows than this (a decode step's one) takes VNNI on the same weight
# panels (NR = 32, k in groups of 4, padded to 64): a tile's multiply costs the same for 1 row as
# for 16. Chains of 768 -> 3072 dynamic_qlinear, 2 threads (in-process A/B): 1 row 1.22x and 4
# rows 1.18x slower on tiles, 16 rows even.
AMX_MIN_ROWS = 16
AMX_VECTORS = Int8Scheme("vnni", 4, 8, 16, signed_a=False, depth_step=amx.TILE_BYTES)


@functools.cache
def qgemm_tiling(target: Target) -> QTiling:
    """6 x 16 on AVX2 (12 accumulators, 2 weight vectors, a broadcast: 15 of 16 ymm), 14 x 32 with
    32 zmm, 8 x 12 on NEON (24 of 32 q registers); 32 x 32 tiles with AMX."""
    if has_amx(target):
        return QTiling(AMX, amx.MR, amx.NR // AMX.lanes)
    return _vector_tiling(int8_scheme(target), target.vector_registers)


def tiling_for_rows(tiling: QTiling, rows: int) -> QTiling:
    """The tiling a part of `rows` rows of x takes: AMX's, or below AMX_MIN_ROWS VNNI's on its panels."""
    if tiling.scheme is AMX and rows < AMX_MIN_ROWS:
        return _vector_tiling(AMX_VECTORS, 32)
    return tiling


def _vector_tiling(scheme: Int8Scheme, registers: int) -> QTiling:
    vectors = 3 if registers >= 32 and scheme.lanes <= 4 else 2
    slack = 1 if registers >= 32 else 0
    rows = (registers - vectors - 1 - slack) // vectors
    return QTiling(scheme, rows - rows % 2, vectors)


def padded_depth(depth: int, scheme: Int8Scheme) -> int:
    step = scheme.depth_step or scheme.group
    return -(-depth // step) * step


def pack_qweight(weight: np.ndarray, tiling: QTiling) -> np.ndarray:
    """w i8 [K, N] -> the packed panels and column sums (module docstring) as one int8 array."""
    depth, columns = weight.shape
    group, width = tiling.scheme.group, tiling.columns
    panels = -(-columns // width)
    padded = np.zeros((padded_depth(depth, tiling.scheme), panels * width), np.int8)
    padded[:depth, :columns] = weight
    # [Kp, P*NR] -> [Kp/G, G, P, NR] -> [P, Kp/G, NR, G]
    blocks = padded.reshape(padded.shape[0] // group, group, panels, width).transpose(2, 0, 3, 1)
    sums = padded.sum(axis=0, dtype=np.int32)
    return np.concatenate([np.ascontiguousarray(blocks).reshape(-1), sums.view(np.int8)])


def _row_block(tiling: QTiling, depth: int) -> int:
    """mc: rows of x packed at a time (a multiple of MR, at least one panel)."""
    row_bytes = padded_depth(depth, tiling.scheme) * tiling.scheme.a_bits // 8
    return tiling.rows * max(1, A_BLOCK_BYTES // (row_bytes * tiling.rows))


# --- the micro-kernel -------------------------------------------------------------------------

def multiply_add(builder: ir.IRBuilder, scheme: Int8Scheme, accumulator: ir.Value, a_word: ir.Value,
                  b_bytes: ir.Value) -> ir.Value:
    """accumulator + (one k group of a row, broadcast) . (one k group of `lanes` columns)."""
    lanes = scheme.lanes
    if scheme.name == "widen":  # a is one i16, b one i8 per lane
        a = splat(builder, builder.sext(a_word, I32), accumulator.type)
        return builder.add(accumulator, builder.mul(a, builder.sext(b_bytes, ir.VectorType(I32, lanes))))
    words = splat(builder, a_word, accumulator.type)  # G values of x in each 32-bit lane
    if scheme.name == "pmaddwd":
        pairs = ir.VectorType(I16, 2 * lanes)
        name = "llvm.x86.avx2.pmadd.wd" if lanes == 8 else "llvm.x86.avx512.pmaddw.d.512"
        product = call_intrinsic(builder, name, accumulator.type,
                                 [builder.bitcast(words, pairs), builder.sext(b_bytes, pairs)])
        return builder.add(accumulator, product)
    quads = ir.VectorType(I8, 4 * lanes)
    if scheme.name == "sdot":
        return call_intrinsic(builder, f"llvm.aarch64.neon.sdot.v{lanes}i32.v{4 * lanes}i8", accumulator.type,
                              [accumulator, builder.bitcast(words, quads), b_bytes])
    name = "llvm.x86.avx512.vpdpbusd.256" if lanes == 8 else "llvm.x86.avx512.vpdpbusd.512"
    return call_intrinsic(builder, name, accumulator.type, [accumulator, builder.bitcast(words, quads), b_bytes])


def micro_kernel(module: ir.Module, tiling: QTiling, rows: int, columns: int, requant: Requant,
                 prefetch: bool = False) -> ir.Function:
    """`void(i64 groups, ptr a, ptr b, ptr c, i64 ldc, ptr bias, ptr colsum, ptr m, i32 correction,
    float zy, float low, float high, float sx, ptr residual, i64 ahead)`: one rows x columns tile of
    the result, requantized.

    a and b are panels (module docstring), `groups` their k groups; a tail panel of fewer than MR
    rows is packed only `rows` wide (_pack_rows). bias, colsum and m point at the tile's first
    column (m at the scalar multiplier when it is not per column); `correction` is shift + zx.
    With `requant.dynamic`, bias is f32 and sx is x's scale; `residual` is the residual's tile
    (laid out as c) when requant.residual. With `prefetch`, each k group also fetches into L2 the
    weight's k group `ahead` bytes on (the next panel: emit_block). A tile of few accumulators (a
    matrix-vector product's 1 x NR) keeps up to 4 partial tiles, k groups taken in turn, to hide
    the instruction's latency. Defined once per module and variant.
    """
    scheme = tiling.scheme
    name = (f"tf.qgemm.{scheme.name}.{tiling.rows}x{tiling.columns}.{rows}x{columns}{requant.suffix}"
            f"{'.prefetch' if prefetch else ''}")
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    function = define_kernel(module, name, [("groups", I64), ("a", PTR), ("b", PTR), *EPILOGUE_ARGUMENTS,
                                            ("ahead", I64)], noalias=("a", "b", "c", "residual"))
    (groups, a, b, c, ldc, bias, colsum, multiplier, correction, zero, low, high, x_scale, residual,
     ahead) = function.args
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    lanes, group = scheme.lanes, scheme.group
    counts = [min(lanes, columns - v * lanes) for v in range(-(-columns // lanes))]
    b_vector = ir.VectorType(I8, lanes * group)
    accumulator = ir.VectorType(I32, lanes)

    def step(k: ir.Value, values: list[ir.Value]) -> list[ir.Value]:
        a_k = element_pointer(builder, a, builder.mul(k, i64(rows * group)), scheme.a_type, "a_k")
        b_k = element_pointer(builder, b, builder.mul(k, i64(tiling.columns * group)), I8, "b_k")
        b_vectors = [builder.load(element_pointer(builder, b_k, v * lanes * group, I8), typ=b_vector, align=1)
                     for v in range(len(counts))]
        if prefetch:
            prefetch_lines(builder, b_k, ahead, tiling.columns * group)
        word = I32 if scheme.group * scheme.a_bits == 32 else scheme.a_type
        updated = []
        for r in range(rows):
            a_word = builder.load(element_pointer(builder, a_k, r * group, scheme.a_type), typ=word, align=1)
            for v, b_bytes in enumerate(b_vectors):
                updated.append(multiply_add(builder, scheme, values[r * len(counts) + v], a_word, b_bytes))
        return updated

    values = accumulate_in_turns(builder, groups, [ir.Constant(accumulator, None)] * (rows * len(counts)), step,
                                 builder.add)

    write_tile(builder, requant, lanes, rows, columns,
               TileArguments(c, ldc, bias, colsum, multiplier, correction, zero, low, high, x_scale, residual),
               lambda r, v: values[r * len(counts) + v])
    builder.ret_void()
    return function


# --- the loops --------------------------------------------------------------------------------

def _pack_rows(builder: ir.IRBuilder, tiling: QTiling, x: ir.Value, x_dtype: DType, depth: int, rows: ir.Value,
               destination: ir.Value, tail: int) -> None:
    """destination = panels of x[rows, depth] (row-major), converted for the scheme and k padded with
    zeros; when `rows` is not a multiple of MR, its last panel is packed `tail` (static) rows wide.

    With 8-bit x in groups of 4 (vnni, sdot), a k group is one 32-bit word, copied whole (the shift
    to the other signedness is an xor of every byte's top bit); the loops stay scalar (keep_rolled):
    their stores are strided."""
    scheme, group = tiling.scheme, tiling.scheme.group
    a_type, shift = scheme.a_type, scheme.shift(x_dtype)
    extend = builder.sext if x_dtype is DType.i8 else builder.zext
    words = depth // group if scheme.a_bits == 8 and group == 4 else 0  # k groups copied as words
    mr = i64(tiling.rows)
    tail_panel = builder.udiv(rows, mr, name="pack.full")
    with for_range(builder, rows, "pack.row", vectorize=False) as row:
        panel, within = builder.udiv(row, mr), builder.urem(row, mr)
        width = builder.select(builder.icmp_unsigned("==", panel, tail_panel), i64(tail), mr, name="pack.width")
        start = builder.mul(builder.add(builder.mul(panel, i64(padded_depth(depth, scheme) // group * tiling.rows)),
                                        within), i64(group))
        target = element_pointer(builder, destination, start, a_type, "pack.to")
        source = element_pointer(builder, x, builder.mul(row, i64(depth)), I8, "pack.from")

        def place(k) -> ir.Value:  # where element k of the row goes
            k = i64(k) if isinstance(k, int) else k
            group_start = builder.mul(builder.udiv(k, i64(group)), builder.mul(width, i64(group)))
            return builder.add(group_start, builder.urem(k, i64(group)))

        if words:
            with for_range(builder, words, "pack.word", vectorize=False) as g:
                word = builder.load(element_pointer(builder, source, builder.mul(g, i64(group)), I8), typ=I32,
                                    align=1)
                if shift:
                    word = builder.xor(word, ir.Constant(I32, 0x80808080))
                builder.store(word, element_pointer(builder, target, builder.mul(g, builder.mul(width, i64(group))),
                                                    I8), align=1)
        with for_range(builder, depth - words * group, "pack.k") as rest:
            k = builder.add(rest, i64(words * group))
            value = load_element(builder, source, k, I8)
            if a_type.width == 8:
                value = builder.xor(value, ir.Constant(I8, 0x80)) if shift else value
            else:
                value = extend(value, a_type)
            store_element(builder, value, target, place(k))
        for k in range(depth, padded_depth(depth, scheme)):
            store_element(builder, ir.Constant(a_type, 0), target, place(k))


@dataclass
class QGemm:
    """The pointers and run-time scalars of one qlinear kernel."""

    x: ir.Value
    x_dtype: DType
    weight: ir.Value  # packed panels, then column sums
    bias: ir.Value
    multiplier: ir.Value
    x_zero: ir.Value  # i32; emit_block adds the scheme's shift (the micro-kernels' `correction`)
    zero: ir.Value
    low: ir.Value
    high: ir.Value
    output: ir.Value
    scratch: ir.Value
    x_scale: ir.Value | None = None  # the dynamic epilogue's (Requant.dynamic)
    residual: ir.Value | None = None  # laid out as the output (Requant.residual)


def _pad_rows(builder: ir.IRBuilder, x: ir.Value, depth: int, padded: int, rows: ir.Value,
              destination: ir.Value) -> None:
    """destination[r, :depth] = x[r] for the `rows` rows of x, rows `padded` bytes apart: the rows of
    AMX tiles of A (64 bytes of k per tile row) when depth is not a multiple of 64. The bytes past
    depth are left as they are: the weight's rows there are zeros (pack_qweight), so they add
    nothing; the copy is there so that the tiles never read past x's last row."""
    with for_range(builder, rows, "pad.row", unroll=False) as row:
        target = element_pointer(builder, destination, builder.mul(row, i64(padded)), I8, "pad.to")
        copy_bytes(builder, target, element_pointer(builder, x, builder.mul(row, i64(depth)), I8), depth, False)


def emit_block(builder: ir.IRBuilder, tiling: QTiling, q: QGemm, requant: Requant, shape: tuple[int, int, int],
                first_row: ir.Value, first_column: ir.Value, row_count: int, column_count: int) -> None:
    """Rows [first_row, + row_count) x columns [first_column, + column_count) of the result
    (counts static, first panels aligned)."""
    rows, depth, columns = shape
    tiling = tiling_for_rows(tiling, row_count)
    scheme = tiling.scheme
    correction = builder.add(q.x_zero, ir.Constant(I32, scheme.shift(q.x_dtype)), name="correction")
    padded = padded_depth(depth, scheme)
    groups = padded // scheme.group
    panel_bytes = groups * scheme.group * tiling.columns
    colsum_start = -(-columns // tiling.columns) * panel_bytes
    out_element = F32 if requant.dtype is DType.f32 else I8
    mc = _row_block(tiling, depth)
    mr, nr = tiling.rows, tiling.columns
    tiles = scheme is AMX
    with for_range(builder, -(-row_count // mc), "ic") as block:
        ic = builder.add(first_row, builder.mul(block, i64(mc)), name="ic")
        block_rows = minimum(builder, builder.sub(builder.add(first_row, i64(row_count)), ic), mc, "mc")
        block_x = element_pointer(builder, q.x, builder.mul(ic, i64(depth)), I8)
        if not tiles:
            _pack_rows(builder, tiling, block_x, q.x_dtype, depth, block_rows, q.scratch, row_count % mr)
        elif padded != depth:
            _pad_rows(builder, block_x, depth, padded, block_rows, q.scratch)
        tile_rows = block_x if tiles and padded == depth else q.scratch  # AMX: x's rows, or their padded copy

        def column_panel(u: ir.Value, width: int) -> None:
            column = builder.add(first_column, builder.mul(u, i64(nr)), name="column")
            panel = builder.udiv(column, i64(nr))
            b_panel = element_pointer(builder, q.weight, builder.mul(panel, i64(panel_bytes)), I8, "b_panel")
            colsum = element_pointer(builder, element_pointer(builder, q.weight, i64(colsum_start), I8), column, I32)
            bias = element_pointer(builder, q.bias, column, F32 if requant.dynamic else I32)
            multiplier = element_pointer(builder, q.multiplier, column, F32) if requant.per_column else q.multiplier

            def call(height: int, t: ir.Value, fetch: bool) -> None:
                row = builder.add(ic, builder.mul(t, i64(mr)))
                at = builder.add(builder.mul(row, i64(columns)), column)
                c_tile = element_pointer(builder, q.output, at, out_element, "c_tile")
                residual = (element_pointer(builder, q.residual, at, F32, "r_tile") if requant.residual
                            else ir.Constant(PTR, None))
                epilogue = [c_tile, i64(columns), bias, colsum, multiplier, correction, q.zero, q.low, q.high,
                            q.x_scale or ir.Constant(F32, 1.0), residual]
                if tiles:
                    kernel = amx.micro_kernel(builder.module, height, width, requant, q.x_dtype is DType.i8)
                    a_tile = element_pointer(builder, tile_rows, builder.mul(t, i64(mr * padded)), I8, "a_tile")
                    builder.call(kernel, [i64(padded // amx.TILE_BYTES), a_tile, i64(padded), b_panel, *epilogue])
                    return
                kernel = micro_kernel(builder.module, tiling, height, width, requant, fetch)
                a_panel = element_pointer(builder, q.scratch, builder.mul(t, i64(groups * scheme.group * mr)),
                                          scheme.a_type, "a_panel")
                builder.call(kernel, [i64(groups), a_panel, b_panel, *epilogue, i64(panel_bytes)])

            # only the last block has a tail panel, of row_count % mr rows. With more than one row
            # panel in the GEMM, the first call fetches the weight's next panel into L2: the panels
            # follow each other, but the hardware prefetcher starts over at every 4 KiB page, and
            # the micro-kernel waited on it (BERT-base int8). A matrix-vector product's stream of
            # panels is left to the hardware, as the f32 GEMM's (_streamed_b); so are AMX's tiles.
            full = builder.udiv(block_rows, i64(mr), name="row_panels")
            tail = builder.icmp_unsigned("!=", builder.urem(block_rows, i64(mr)), i64(0)) if row_count % mr else None
            row_panel_calls(builder, mr, full, row_count % mr, tail, call, first_fetches=rows > mr and not tiles)

        with for_range(builder, column_count // nr, "jr") as u:
            column_panel(u, nr)
        if column_count % nr:
            column_panel(i64(column_count // nr), column_count % nr)


def round64(nbytes: int) -> int:
    return -(-nbytes // 64) * 64


def block_bytes(tiling: QTiling, rows: int, depth: int) -> int:
    """Scratch for a block of x's rows: packed, or for AMX padded (none when its rows need no padding),
    or packed for VNNI when a part may have fewer than AMX_MIN_ROWS rows (tiling_for_rows)."""
    if tiling.scheme is AMX:
        vector = block_bytes(tiling_for_rows(tiling, 1), min(rows, AMX_MIN_ROWS - 1), depth)
        return vector if padded_depth(depth, AMX) == depth else max(vector, _block_bytes(tiling, rows, depth))
    return _block_bytes(tiling, rows, depth)


def _block_bytes(tiling: QTiling, rows: int, depth: int) -> int:
    block = min(_row_block(tiling, depth), -(-rows // tiling.rows) * tiling.rows)
    return round64(block * padded_depth(depth, tiling.scheme) * tiling.scheme.a_bits // 8)
