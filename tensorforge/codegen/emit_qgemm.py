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

vpdpbusd wants unsigned x and sdot signed: packing shifts x by 128 when its dtype is the other one
(`shift`), and the epilogue takes the shift out with the column sums, together with x's zero
point: sum((x - zx) * w) = sum((x + shift) * w) - (shift + zx) * colsum(w). The epilogue then adds
the bias and requantizes in f32, exactly as the reference: rint(f32(acc) * m) + zy, clipped (to
[max(qmin, zy), qmax] with a fused relu), or f32(acc) * m for an f32 result.

The loops: blocks of `mc` rows of x are packed (one block's panels stay in L2); for each column
panel (K x NR bytes of weight, in L1) the micro-kernel runs on every row panel of the block. Work
is split among threads by row or column panels (GemmSplit), as the f32 GEMM's.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ..ir import DType, Node
from . import parallel
from .emit_gemm import GemmSplit, minimum
from .emit_micro_kernel import load_lanes, splat, store_lanes
from .errors import CodegenError
from .kernel import Kernel
from .llvm_utils import (
    F32,
    I8,
    I32,
    I64,
    PTR,
    VOID,
    call_intrinsic,
    carried_loop,
    element_pointer,
    for_range,
    i64,
    load_element,
    store_element,
)
from .packing import PackedConstant
from .target import Target

I16 = ir.IntType(16)
A_BLOCK_BYTES = 128 * 1024  # packed rows of x per block: about half of a 512 KiB L2


@dataclass(frozen=True)
class Int8Scheme:
    """How one target multiplies int8: `group` k values per 32-bit lane, packed x elements of
    `a_bits` bits, `lanes` int32 accumulators per vector; `signed_a`: what the instruction wants."""

    name: str
    group: int
    a_bits: int
    lanes: int
    signed_a: bool = True

    @property
    def a_type(self) -> ir.IntType:
        return ir.IntType(self.a_bits)

    def shift(self, x_dtype: DType) -> int:
        """What packing adds to x so that it has the signedness the instruction wants (8-bit schemes)."""
        if self.a_bits != 8:
            return 0
        if self.signed_a:
            return -128 if x_dtype is DType.u8 else 0
        return 128 if x_dtype is DType.i8 else 0


@functools.cache
def int8_scheme(target: Target) -> Int8Scheme:
    """The best int8 scheme `target` has (module docstring)."""
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


@functools.cache
def qgemm_tiling(target: Target) -> QTiling:
    """6 x 16 on AVX2 (12 accumulators, 2 weight vectors, a broadcast: 15 of 16 ymm), 14 x 32 with
    32 zmm, 8 x 12 on NEON (24 of 32 q registers)."""
    scheme = int8_scheme(target)
    registers = target.vector_registers
    vectors = 3 if registers >= 32 and scheme.lanes <= 4 else 2
    slack = 1 if registers >= 32 else 0
    rows = (registers - vectors - 1 - slack) // vectors
    return QTiling(scheme, rows - rows % 2, vectors)


def padded_depth(depth: int, scheme: Int8Scheme) -> int:
    return -(-depth // scheme.group) * scheme.group


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


def _operands(node: Node) -> tuple[int, int, int]:
    """(M, K, N) of a qlinear: every leading axis of x is a row."""
    x, w = node.inputs[0].type, node.inputs[1].type
    return math.prod(x.shape[:-1]), w.shape[0], w.shape[1]


def pack_qlinear_constant(node: Node, index: int, target: Target) -> PackedConstant | None:
    """The weight (operand 1) in panels with its column sums; other operands as they are."""
    if index != 1 or node.inputs[1].op != "constant" or node.type.size == 0:
        return None
    tiling = qgemm_tiling(target)
    return PackedConstant(f"qgemm.{tiling.scheme.name}{tiling.columns}", pack_qweight(node.inputs[1].value, tiling))


def _row_block(tiling: QTiling, depth: int) -> int:
    """mc: rows of x packed at a time (a multiple of MR, at least one panel)."""
    row_bytes = padded_depth(depth, tiling.scheme) * tiling.scheme.a_bits // 8
    return tiling.rows * max(1, A_BLOCK_BYTES // (row_bytes * tiling.rows))


def qlinear_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    rows, depth, _ = _operands(node)
    tiling = qgemm_tiling(target)
    block = min(_row_block(tiling, depth), -(-rows // tiling.rows) * tiling.rows)
    return -(-block * padded_depth(depth, tiling.scheme) * tiling.scheme.a_bits // 8 // 64) * 64


def qlinear_parts(node: Node, target: Target, threads: int) -> int:
    rows, depth, columns = _operands(node)
    if rows * depth * columns == 0:
        return 1
    weight_bytes = depth * columns
    if 2 * rows * depth * columns < parallel.MIN_PARALLEL_FLOPS and weight_bytes < parallel.MIN_PARALLEL_WEIGHT_BYTES:
        return 1
    tiling = qgemm_tiling(target)
    if rows <= tiling.rows:
        threads *= parallel.GEMM_PARTS_PER_THREAD
    return GemmSplit.of(tiling, (rows, depth, columns), threads).parts


# --- the micro-kernel -------------------------------------------------------------------------

@dataclass(frozen=True)
class Requant:
    """The epilogue of one qlinear: result dtype, relu, and whether the multiplier is per column."""

    dtype: DType
    relu: bool
    per_column: bool

    @property
    def suffix(self) -> str:
        return f".{self.dtype.name}{'.relu' if self.relu else ''}{'.mcol' if self.per_column else ''}"


def _multiply_add(builder: ir.IRBuilder, scheme: Int8Scheme, accumulator: ir.Value, a_word: ir.Value,
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


def micro_kernel(module: ir.Module, tiling: QTiling, rows: int, columns: int, requant: Requant) -> ir.Function:
    """`void(i64 groups, ptr a, ptr b, ptr c, i64 ldc, ptr bias, ptr colsum, ptr m, i32 correction,
    float zy, float low, float high)`: one rows x columns tile of the result, requantized.

    a and b are panels (module docstring), `groups` their k groups; bias, colsum and m point at the
    tile's first column (m at the scalar multiplier when it is not per column); `correction` is
    shift + zx. Defined once per module and variant.
    """
    scheme = tiling.scheme
    name = f"tf.qgemm.{scheme.name}.{tiling.rows}x{tiling.columns}.{rows}x{columns}{requant.suffix}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    function = ir.Function(module, ir.FunctionType(VOID, [I64, PTR, PTR, PTR, I64, PTR, PTR, PTR, I32, F32, F32, F32]),
                           name)
    function.linkage = "internal"
    for attribute in ("nounwind", "norecurse", "noinline"):
        function.attributes.add(attribute)
    groups, a, b, c, ldc, bias, colsum, multiplier, correction, zero, low, high = function.args
    for argument, label in zip(function.args, ("groups", "a", "b", "c", "ldc", "bias", "colsum", "m", "correction",
                                               "zy", "low", "high")):
        argument.name = label
    for pointer in (a, b, c):
        pointer.add_attribute("noalias")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    lanes, group = scheme.lanes, scheme.group
    counts = [min(lanes, columns - v * lanes) for v in range(-(-columns // lanes))]
    b_vector = ir.VectorType(I8, lanes * group)
    accumulator = ir.VectorType(I32, lanes)

    def step(k: ir.Value, values: list[ir.Value]) -> list[ir.Value]:
        a_k = element_pointer(builder, a, builder.mul(k, i64(tiling.rows * group)), scheme.a_type, "a_k")
        b_k = element_pointer(builder, b, builder.mul(k, i64(tiling.columns * group)), I8, "b_k")
        b_vectors = [builder.load(element_pointer(builder, b_k, v * lanes * group, I8), typ=b_vector, align=1)
                     for v in range(len(counts))]
        word = I32 if scheme.group * scheme.a_bits == 32 else scheme.a_type
        updated = []
        for r in range(rows):
            a_word = builder.load(element_pointer(builder, a_k, r * group, scheme.a_type), typ=word, align=1)
            for v, b_bytes in enumerate(b_vectors):
                updated.append(_multiply_add(builder, scheme, values[r * len(counts) + v], a_word, b_bytes))
        return updated

    values = carried_loop(builder, i64(0), groups, [ir.Constant(accumulator, None)] * (rows * len(counts)), step, "k")

    # the epilogue: acc + bias - correction * colsum, per column; then requantize
    vector = ir.VectorType(F32, lanes)
    offsets = []
    for v, count in enumerate(counts):
        column_bias = load_lanes(builder, element_pointer(builder, bias, v * lanes, I32), count, accumulator)
        sums = load_lanes(builder, element_pointer(builder, colsum, v * lanes, I32), count, accumulator)
        offsets.append(builder.sub(column_bias, builder.mul(splat(builder, correction, accumulator), sums)))
    if requant.per_column:
        scales = [load_lanes(builder, element_pointer(builder, multiplier, v * lanes, F32), count, vector)
                  for v, count in enumerate(counts)]
    else:
        scales = [splat(builder, builder.load(multiplier, typ=F32), vector)] * len(counts)
    out_element = F32 if requant.dtype is DType.f32 else I8
    zero_v, low_v, high_v = (splat(builder, value, vector) for value in (zero, low, high))
    for r in range(rows):
        row = element_pointer(builder, c, builder.mul(ldc, i64(r)), out_element, f"c{r}")
        for v, count in enumerate(counts):
            total = builder.add(values[r * len(counts) + v], offsets[v])
            scaled = builder.fmul(builder.sitofp(total, vector), scales[v])
            if requant.dtype is DType.f32:
                if requant.relu:
                    scaled = builder.select(builder.fcmp_ordered(">", scaled, ir.Constant(vector, None)), scaled,
                                            ir.Constant(vector, None))
                result = scaled
            else:
                code = builder.fadd(call_intrinsic(builder, f"llvm.rint.v{lanes}f32", vector, [scaled]), zero_v)
                code = builder.select(builder.fcmp_ordered("<", code, low_v), low_v, code)
                code = builder.select(builder.fcmp_ordered(">", code, high_v), high_v, code)
                result = builder.trunc(builder.fptosi(code, accumulator), ir.VectorType(I8, lanes))
            store_lanes(builder, result, element_pointer(builder, row, v * lanes, out_element), count)
    builder.ret_void()
    return function


# --- the loops --------------------------------------------------------------------------------

def _pack_rows(builder: ir.IRBuilder, tiling: QTiling, x: ir.Value, x_dtype: DType, depth: int, rows: ir.Value,
               destination: ir.Value) -> None:
    """destination = panels of x[rows, depth] (row-major), converted for the scheme and k padded with zeros."""
    scheme, group = tiling.scheme, tiling.scheme.group
    a_type, shift = scheme.a_type, scheme.shift(x_dtype)
    extend = builder.sext if x_dtype is DType.i8 else builder.zext
    with for_range(builder, rows, "pack.row") as row:
        panel, within = builder.udiv(row, i64(tiling.rows)), builder.urem(row, i64(tiling.rows))
        start = builder.mul(builder.add(builder.mul(panel, i64(padded_depth(depth, scheme) // group * tiling.rows)),
                                        within), i64(group))
        target = element_pointer(builder, destination, start, a_type, "pack.to")
        source = element_pointer(builder, x, builder.mul(row, i64(depth)), I8, "pack.from")

        def place(k) -> ir.Value:  # where element k of the row goes
            k = i64(k) if isinstance(k, int) else k
            group_start = builder.mul(builder.udiv(k, i64(group)), i64(tiling.rows * group))
            return builder.add(group_start, builder.urem(k, i64(group)))

        with for_range(builder, depth, "pack.k") as k:
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
    correction: ir.Value
    zero: ir.Value
    low: ir.Value
    high: ir.Value
    output: ir.Value
    scratch: ir.Value


def _emit_block(builder: ir.IRBuilder, tiling: QTiling, q: QGemm, requant: Requant, shape: tuple[int, int, int],
                first_row: ir.Value, first_column: ir.Value, row_count: int, column_count: int) -> None:
    """Rows [first_row, + row_count) x columns [first_column, + column_count) of the result
    (counts static, first panels aligned)."""
    rows, depth, columns = shape
    scheme = tiling.scheme
    groups = padded_depth(depth, scheme) // scheme.group
    panel_bytes = groups * scheme.group * tiling.columns
    colsum_start = -(-columns // tiling.columns) * panel_bytes
    out_element = F32 if requant.dtype is DType.f32 else I8
    mc = _row_block(tiling, depth)
    mr, nr = tiling.rows, tiling.columns
    with for_range(builder, -(-row_count // mc), "ic") as block:
        ic = builder.add(first_row, builder.mul(block, i64(mc)), name="ic")
        block_rows = minimum(builder, builder.sub(builder.add(first_row, i64(row_count)), ic), mc, "mc")
        _pack_rows(builder, tiling, element_pointer(builder, q.x, builder.mul(ic, i64(depth)), I8), q.x_dtype, depth,
                   block_rows, q.scratch)

        def column_panel(u: ir.Value, width: int) -> None:
            column = builder.add(first_column, builder.mul(u, i64(nr)), name="column")
            panel = builder.udiv(column, i64(nr))
            b_panel = element_pointer(builder, q.weight, builder.mul(panel, i64(panel_bytes)), I8, "b_panel")
            colsum = element_pointer(builder, element_pointer(builder, q.weight, i64(colsum_start), I8), column, I32)
            bias = element_pointer(builder, q.bias, column, I32)
            multiplier = element_pointer(builder, q.multiplier, column, F32) if requant.per_column else q.multiplier

            def call(height: int, t: ir.Value) -> None:
                kernel = micro_kernel(builder.module, tiling, height, width, requant)
                a_panel = element_pointer(builder, q.scratch, builder.mul(t, i64(groups * scheme.group * mr)),
                                          scheme.a_type, "a_panel")
                row = builder.add(ic, builder.mul(t, i64(mr)))
                c_tile = element_pointer(builder, q.output, builder.add(builder.mul(row, i64(columns)), column),
                                         out_element, "c_tile")
                builder.call(kernel, [i64(groups), a_panel, b_panel, c_tile, i64(columns), bias, colsum, multiplier,
                                      q.correction, q.zero, q.low, q.high])

            full = builder.udiv(block_rows, i64(mr), name="row_panels")
            with for_range(builder, full, "ir") as t:
                call(mr, t)
            if row_count % mr:  # only the last block has a tail panel, of row_count % mr rows
                with builder.if_then(builder.icmp_unsigned("!=", builder.urem(block_rows, i64(mr)), i64(0))):
                    call(row_count % mr, full)

        with for_range(builder, column_count // nr, "jr") as u:
            column_panel(u, nr)
        if column_count % nr:
            column_panel(i64(column_count // nr), column_count % nr)


def _require_packed_weight(kernel: Kernel) -> None:
    """The int8 kernels read their weight only in panels packed at compile time: it must be a constant."""
    node = kernel.node
    if 1 not in kernel.packed:
        raise CodegenError(f"cannot compile %{node.name} = {node.op}(...): its weight %{node.inputs[1].name} must be "
                           f"a constant (it is packed at compile time), not a {node.inputs[1].op}")


def emit_qlinear(kernel: Kernel) -> None:
    """qlinear on the int8 GEMM; its weight must be a constant (packed at compile time)."""
    node, builder = kernel.node, kernel.builder
    rows, depth, columns = _operands(node)
    if node.type.size == 0:
        return
    _require_packed_weight(kernel)
    tiling = qgemm_tiling(kernel.target)
    x_dtype = node.inputs[0].dtype
    dtype, relu = node.dtype, node.attrs["activation"] == "relu"
    requant = Requant(dtype, relu, node.inputs[3].shape != ())
    x, _, bias, multiplier, x_zero, y_zero = kernel.inputs
    zx = load_element(builder, x_zero, 0, I32, "zx")
    zy = load_element(builder, y_zero, 0, I32, "zy")
    correction = builder.add(zx, ir.Constant(I32, tiling.scheme.shift(x_dtype)), name="correction")
    low, high, zero = _limits(builder, dtype, relu, zy)
    q = QGemm(x, x_dtype, kernel.inputs[1], bias, multiplier, correction, zero, low, high, kernel.output,
              kernel.scratch)
    shape = (rows, depth, columns)
    if kernel.parts == 1 or kernel.part is None:
        _emit_block(builder, tiling, q, requant, shape, i64(0), i64(0), rows, columns)
        return
    split = GemmSplit.of(tiling, shape, kernel.parts)
    panel = tiling.columns if split.axis == "columns" else tiling.rows
    extent = columns if split.axis == "columns" else rows
    first = builder.mul(kernel.part, i64(split.per_part * panel), name="part.first")
    sizes = (split.per_part * panel, extent - split.per_part * panel * (kernel.parts - 1))
    with builder.if_else(builder.icmp_unsigned("==", kernel.part, i64(kernel.parts - 1))) as (last, other):
        for block, size in ((other, sizes[0]), (last, sizes[1])):
            with block:
                if split.axis == "columns":
                    _emit_block(builder, tiling, q, requant, shape, i64(0), first, rows, size)
                else:
                    _emit_block(builder, tiling, q, requant, shape, first, i64(0), size, columns)


# --- dynamic quantization ---------------------------------------------------------------------

def _round64(nbytes: int) -> int:
    return -(-nbytes // 64) * 64


def dynamic_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """The packed block of x, then x's codes [M, K], the multipliers [N] and a zero int32 bias [N]."""
    rows, depth, columns = _operands(node)
    return qlinear_scratch_bytes(node, target) + _round64(rows * depth) + 2 * _round64(4 * columns)


def emit_dynamic_qlinear(kernel: Kernel) -> None:
    """dynamic_qlinear: x's range, scale and zero point (ops_quant.dynamic_parameters), x's codes, then
    the int8 GEMM with multipliers sx * sw and no bias, then + bias and relu over the f32 result."""
    node, builder = kernel.node, kernel.builder
    rows, depth, columns = _operands(node)
    if node.type.size == 0:
        return
    _require_packed_weight(kernel)
    tiling = qgemm_tiling(kernel.target)
    x, weight, weight_scale, bias = kernel.inputs
    block = qlinear_scratch_bytes(node, kernel.target)
    codes = element_pointer(builder, kernel.scratch, block, I8, "codes")
    multipliers = element_pointer(builder, kernel.scratch, block + _round64(rows * depth), I8, "multipliers")
    zero_bias = element_pointer(builder, multipliers, _round64(4 * columns), I8, "zero_bias")
    zero = ir.Constant(F32, 0.0)

    def extreme(low: ir.Value, high: ir.Value, index: ir.Value):
        value = load_element(builder, x, index, F32)
        low = builder.select(builder.fcmp_ordered("<", value, low), value, low)
        return [low, builder.select(builder.fcmp_ordered(">", value, high), value, high)]

    low, high = carried_loop(builder, i64(0), i64(rows * depth), [zero, zero],
                             lambda i, values: extreme(*values, i), "range")
    scale = builder.fdiv(builder.fsub(high, low), ir.Constant(F32, 255.0), name="sx")
    scale = builder.select(builder.fcmp_ordered(">", scale, zero), scale, ir.Constant(F32, 1.0), name="sx")
    shifted = call_intrinsic(builder, "llvm.rint.f32", F32, [builder.fsub(ir.Constant(F32, -128.0),
                                                                        builder.fdiv(low, scale))])
    shifted = builder.select(builder.fcmp_ordered("<", shifted, ir.Constant(F32, -128.0)), ir.Constant(F32, -128.0),
                             shifted)
    x_zero = builder.select(builder.fcmp_ordered(">", shifted, ir.Constant(F32, 127.0)), ir.Constant(F32, 127.0),
                            shifted, name="zx")
    with for_range(builder, rows * depth, "codes") as index:  # ops_quant.quantize, as emit_quantize does it
        value = builder.fadd(call_intrinsic(builder, "llvm.rint.f32", F32,
                                            [builder.fdiv(load_element(builder, x, index, F32), scale)]), x_zero)
        value = builder.select(builder.fcmp_ordered("<", value, ir.Constant(F32, -128.0)), ir.Constant(F32, -128.0),
                               value)
        value = builder.select(builder.fcmp_ordered(">", value, ir.Constant(F32, 127.0)), ir.Constant(F32, 127.0),
                               value)
        value = builder.select(builder.fcmp_unordered("uno", value, value), x_zero, value)
        store_element(builder, builder.trunc(builder.fptosi(value, I32), I8), codes, index)
    with for_range(builder, columns, "multipliers") as n:
        store_element(builder, builder.fmul(scale, load_element(builder, weight_scale, n, F32)), multipliers, n)
        store_element(builder, ir.Constant(I32, 0), zero_bias, n)
    correction = builder.add(builder.fptosi(x_zero, I32), ir.Constant(I32, tiling.scheme.shift(DType.i8)))
    q = QGemm(codes, DType.i8, weight, zero_bias, multipliers, correction, zero, zero, zero, kernel.output,
              kernel.scratch)
    _emit_block(builder, tiling, q, Requant(DType.f32, False, True), (rows, depth, columns), i64(0), i64(0), rows,
                columns)
    relu = node.attrs["activation"] == "relu"
    with for_range(builder, rows, "bias.row") as row:
        line = element_pointer(builder, kernel.output, builder.mul(row, i64(columns)), F32)
        with for_range(builder, columns, "bias.column") as n:
            value = builder.fadd(load_element(builder, line, n, F32), load_element(builder, bias, n, F32))
            if relu:  # np.maximum(y, 0)
                value = builder.select(builder.fcmp_unordered(">=", value, zero), value, zero)
            store_element(builder, value, line, n)


# --- the int8 convolution ---------------------------------------------------------------------
#
# Per image: the taps of every output pixel are gathered into rows (im2col, padded with x's zero
# point) in scratch, the int8 GEMM multiplies them by the weight as [C*kh*kw, O] into scratch
# ([pixels, O]), and a transposing copy writes the image's [O, pixels] result. Images are split
# among threads.

def _conv_shape(node: Node) -> tuple[int, int, int, int]:
    """(images, pixels per image, depth C*kh*kw, output channels) of a qconv2d."""
    n, out, oh, ow = node.shape
    _, c, kh, kw = node.inputs[1].shape
    return n, oh * ow, c * kh * kw, out


def _conv_gemm_operands(node: Node) -> tuple[int, int, int]:
    _, pixels, depth, out = _conv_shape(node)
    return pixels, depth, out


def pack_qconv_constant(node: Node, index: int, target: Target) -> PackedConstant | None:
    if index != 1 or node.inputs[1].op != "constant" or node.type.size == 0:
        return None
    tiling = qgemm_tiling(target)
    weight = node.inputs[1].value
    matrix = np.ascontiguousarray(weight.reshape(weight.shape[0], -1).T)  # [C*kh*kw, O]
    return PackedConstant(f"qconv.{tiling.scheme.name}{tiling.columns}", pack_qweight(matrix, tiling))


def _block_bytes(tiling: QTiling, rows: int, depth: int) -> int:
    block = min(_row_block(tiling, depth), -(-rows // tiling.rows) * tiling.rows)
    return _round64(block * padded_depth(depth, tiling.scheme) * tiling.scheme.a_bits // 8)


def qconv_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """The packed block, the image's taps [pixels, depth] and its result [pixels, O]."""
    _, pixels, depth, out = _conv_shape(node)
    tiling = qgemm_tiling(target)
    return _block_bytes(tiling, pixels, depth) + _round64(pixels * depth) + _round64(pixels * out * node.dtype.itemsize)


def qconv_parts(node: Node, target: Target, threads: int) -> int:
    images, pixels, depth, out = _conv_shape(node)
    if 2 * images * pixels * depth * out < parallel.MIN_PARALLEL_FLOPS:
        return 1
    return parallel.split_parts(images, threads)[0]


def emit_qconv2d(kernel: Kernel) -> None:
    node, builder = kernel.node, kernel.builder
    images, pixels, depth, out = _conv_shape(node)
    if node.type.size == 0:
        return
    _require_packed_weight(kernel)
    tiling = qgemm_tiling(kernel.target)
    x_dtype, dtype = node.inputs[0].dtype, node.dtype
    _, channels, height, width = node.inputs[0].shape
    _, _, kh, kw = node.inputs[1].shape
    _, _, oh, ow = node.shape
    (sh, sw), (ph, pw), (dh, dw) = node.attrs["stride"], node.attrs["padding"], node.attrs["dilation"]
    x, weight, bias, multiplier, x_zero, y_zero = kernel.inputs
    block = _block_bytes(tiling, pixels, depth)
    taps = element_pointer(builder, kernel.scratch, block, I8, "taps")
    result = element_pointer(builder, taps, _round64(pixels * depth), I8, "result")
    out_element = F32 if dtype is DType.f32 else I8
    relu = node.attrs["activation"] == "relu"
    zx = load_element(builder, x_zero, 0, I32, "zx")
    zy = load_element(builder, y_zero, 0, I32, "zy")
    low, high, zero = _limits(builder, dtype, relu, zy)
    q = QGemm(taps, x_dtype, weight, bias, multiplier, builder.add(zx, ir.Constant(I32, tiling.scheme.shift(x_dtype))),
              zero, low, high, result, kernel.scratch)
    requant = Requant(dtype, relu, node.inputs[3].shape != ())
    padding_code = builder.trunc(zx, I8, name="pad")
    first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, images, "image")
    with for_range(builder, count, "image") as local:
        image = builder.add(first, local, name="n")
        source = element_pointer(builder, x, builder.mul(image, i64(channels * height * width)), I8, "image.x")
        with for_range(builder, oh, "oy") as oy, for_range(builder, ow, "ox") as ox:
            row = element_pointer(builder, taps, builder.mul(builder.add(builder.mul(oy, i64(ow)), ox), i64(depth)),
                                  I8, "taps.row")
            for c in range(channels):  # static taps: C * kh * kw of them per pixel
                for i in range(kh):
                    iy = builder.add(builder.mul(oy, i64(sh)), i64(i * dh - ph))
                    inside_y = builder.icmp_unsigned("<", iy, i64(height))
                    for j in range(kw):
                        ix = builder.add(builder.mul(ox, i64(sw)), i64(j * dw - pw))
                        inside = builder.and_(inside_y, builder.icmp_unsigned("<", ix, i64(width)))
                        at = builder.add(builder.mul(builder.add(i64(c * height), iy), i64(width)), ix)
                        at = builder.select(inside, at, i64(0))  # never read outside the image
                        value = builder.select(inside, load_element(builder, source, at, I8), padding_code)
                        store_element(builder, value, row, (c * kh + i) * kw + j)
        _emit_block(builder, tiling, q, requant, (pixels, depth, out), i64(0), i64(0), pixels, out)
        target = element_pointer(builder, kernel.output, builder.mul(image, i64(out * pixels)), out_element, "image.y")
        with for_range(builder, out, "channel") as o, for_range(builder, pixels, "pixel") as p:
            value = load_element(builder, result, builder.add(builder.mul(p, i64(out)), o), out_element)
            store_element(builder, value, target, builder.add(builder.mul(o, i64(pixels)), p))


def _limits(builder: ir.IRBuilder, dtype: DType, relu: bool, zy: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
    """(low, high, zy) as f32 for the requantizing epilogue (ops_quant.requantize_limits)."""
    zero, low, high = builder.sitofp(zy, F32, name="zy"), ir.Constant(F32, 0.0), ir.Constant(F32, 0.0)
    if dtype is not DType.f32:
        info = np.iinfo(dtype.numpy)
        low = ir.Constant(F32, float(info.min))
        if relu:
            clipped = builder.select(builder.icmp_signed(">", zy, ir.Constant(I32, int(info.max))),
                                     ir.Constant(I32, int(info.max)), zy)
            low = builder.select(builder.icmp_signed(">", clipped, ir.Constant(I32, int(info.min))),
                                 builder.sitofp(clipped, F32), low, name="low")
        high = ir.Constant(F32, float(info.max))
    return low, high, zero
