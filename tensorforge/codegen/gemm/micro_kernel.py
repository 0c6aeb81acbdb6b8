"""The f32 GEMM micro-kernel: one register-blocked tile, emitted in LLVM vector types.

    call @"tf.gemm.f32.6x16.6x16.columnbias"(kc, a_panel, b_panel, c, ldc, accumulate, finish, bias)

It computes one rows x columns tile of c from a packed A panel (k-major: the tile's `rows` A
elements of one k step together) and a packed B panel (the tile's columns of one k step together),
with the accumulators in vector registers across the k loop (gemm/tiling.py sizes it: 6 x 16 on AVX2,
14 x 32 on AVX-512, 8 x 12 on NEON):

    for k < kc:  b0, b1 = b[k, 0:8], b[k, 8:16]                         whole-vector loads
                 for r < 6:  acc[r] = fmuladd(splat(a[k, r]), (b0, b1), acc[r])
    then, once:  acc += c (a later depth block); + bias; relu (the last depth block); store

Each (rows, columns, epilogue) variant is one small function, defined once per module and shared
by every GEMM in it. Tails need no loop of their own: the last row panel calls a variant with
fewer rows, the last column panel one with fewer columns, which loads and stores only its valid
lanes of c (packed panels are zero-padded, so every load of a and b is whole).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llvmlite import ir

from ..llvm import float_math
from ..llvm.utils import (
    F32,
    I1,
    I32,
    I64,
    PTR,
    VOID,
    call_intrinsic,
    carried_loop,
    element_pointer,
    i64,
    lane_indices,
    load_element,
    store_element,
)
from .tiling import FLOAT_BYTES, INDEPENDENT_CHAINS, GemmTiling

ACTIVATIONS = ("relu", "relu6", *float_math.GELU_ACTIVATIONS)  # ir.ops_nn's, computed on whole vectors


@dataclass(frozen=True)
class Epilogue:
    """What happens to a finished tile before it is stored: `bias` per "row" or "column", `residual`
    (a tensor like c, added tile by tile), then `activation`."""

    bias: str | None = None
    activation: str | None = None
    residual: bool = False

    def __post_init__(self):
        if self.bias not in (None, "row", "column") or self.activation not in (None, *ACTIVATIONS):
            raise ValueError(f"unsupported GEMM epilogue {self}")

    @property
    def suffix(self) -> str:
        parts = (self.bias and f"{self.bias}bias", self.residual and "residual", self.activation)
        return "".join(f".{part}" for part in parts if part)


def vector_type(tiling: GemmTiling) -> ir.VectorType:
    return ir.VectorType(F32, tiling.vector_width)


def splat(builder: ir.IRBuilder, value: ir.Value, vector: ir.VectorType) -> ir.Value:
    """`value` in every lane of `vector` (its element type)."""
    lane = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(I64, 0))
    return builder.shuffle_vector(lane, ir.Constant(vector, ir.Undefined), lane_indices([0] * vector.count))


def _alignment(element: ir.Type) -> int:
    return FLOAT_BYTES if element == F32 else max(1, element.width // 8)


def load_lanes(builder: ir.IRBuilder, pointer: ir.Value, lanes: int, vector: ir.VectorType) -> ir.Value:
    """A vector of `lanes` valid elements from `pointer` (the others zero): whole-vector load when full."""
    if lanes == vector.count:
        return builder.load(pointer, typ=vector, align=_alignment(vector.element))
    value = ir.Constant(vector, None)
    for lane in range(lanes):
        value = builder.insert_element(value, load_element(builder, pointer, lane, vector.element), i64(lane))
    return value


def store_lanes(builder: ir.IRBuilder, value: ir.Value, pointer: ir.Value, lanes: int) -> None:
    """Store the first `lanes` lanes of `value` at `pointer` (a whole-vector store when all)."""
    if lanes == value.type.count:
        builder.store(value, pointer, align=_alignment(value.type.element))
        return
    for lane in range(lanes):
        store_element(builder, builder.extract_element(value, i64(lane)), pointer, lane)


def _update(builder: ir.IRBuilder, condition: ir.Value, tile: list[ir.Value], compute, name: str) -> list[ir.Value]:
    """`compute(tile)` if `condition` else `tile`, as a branch (the loads it does are skipped otherwise)."""
    before = builder.block
    with builder.if_then(condition, likely=False):
        updated = compute(tile)
        after = builder.block
    merged = []
    for old, new in zip(tile, updated):
        phi = builder.phi(old.type, name=name)
        phi.add_incoming(new, after)
        phi.add_incoming(old, before)
        merged.append(phi)
    return merged


@dataclass(frozen=True)
class _Tile:
    """The shape of one micro-kernel variant: `rows` x (`lanes` per vector, the last may be partial)."""

    tiling: GemmTiling
    rows: int
    columns: int

    @property
    def lanes(self) -> list[int]:
        width = self.tiling.vector_width
        return [min(width, self.columns - v * width) for v in range(-(-self.columns // width))]

    @property
    def vector(self) -> ir.VectorType:
        return vector_type(self.tiling)


def _accumulate(builder: ir.IRBuilder, tile: _Tile, depth: ir.Value, a: ir.Value, b: ir.Value,
                a_layout: tuple[int, int], prefetch: str | None = None,
                ahead: ir.Value | None = None) -> list[ir.Value]:
    """The k loop: sum over k < depth of a[k, :rows] (outer product) b[k, :columns], row-major list of
    vectors; a's element (r, k) is at k * S + r * R for a_layout (S, R) (accumulate_in_turns).
    `prefetch` ("a" or "b"): each k step also fetches into L2 that operand's k step `ahead` elements on.
    """
    tiling, vector, lanes = tile.tiling, tile.vector, tile.lanes
    width = tiling.vector_width

    def step(k: ir.Value, values: list[ir.Value]) -> list[ir.Value]:
        a_k = element_pointer(builder, a, builder.mul(k, i64(a_layout[0])), F32, "a_k")
        b_k = element_pointer(builder, b, builder.mul(k, i64(tiling.columns)), F32, "b_k")
        b_vectors = [builder.load(element_pointer(builder, b_k, v * width, F32), typ=vector, align=FLOAT_BYTES,
                                  name=f"b{v}") for v in range(len(lanes))]
        if prefetch == "b":
            prefetch_lines(builder, b_k, builder.mul(ahead, i64(FLOAT_BYTES)), tiling.columns * FLOAT_BYTES)
        elif prefetch == "a":
            prefetch_lines(builder, a_k, builder.mul(ahead, i64(FLOAT_BYTES)), a_layout[0] * FLOAT_BYTES)
        updated = []
        for r in range(tile.rows):
            a_element = splat(builder, load_element(builder, a_k, r * a_layout[1], F32, f"a{r}"), vector)
            for v, b_vector in enumerate(b_vectors):
                updated.append(call_intrinsic(builder, f"llvm.fmuladd.v{width}f32", vector,
                                              [a_element, b_vector, values[r * len(lanes) + v]]))
        return updated

    return accumulate_in_turns(builder, depth, [ir.Constant(vector, None)] * (tile.rows * len(lanes)), step,
                               builder.fadd)


CACHE_LINE = 64


def prefetch_lines(builder: ir.IRBuilder, base: ir.Value, ahead: ir.Value, nbytes: int) -> None:
    """Fetch the `nbytes` `ahead` bytes past `base` into L2 (a read, llvm.prefetch locality 2:
    prefetcht1 on x86, prfm pldl2keep on AArch64), one request per cache line; a hint, which never
    faults. The address may lie past the operand (the last panel's next), so it is computed without
    `inbounds`."""
    byte = ir.IntType(8)
    for offset in range(0, nbytes, CACHE_LINE):
        at = builder.gep(base, [builder.add(ahead, i64(offset))], source_etype=byte)
        call_intrinsic(builder, "llvm.prefetch.p0", VOID, [at, *(ir.Constant(I32, flag) for flag in (0, 2, 1))])


def accumulate_in_turns(builder: ir.IRBuilder, depth: ir.Value, cleared: list[ir.Value],
                        step: Callable[[ir.Value, list[ir.Value]], list[ir.Value]],
                        add: Callable[[ir.Value, ir.Value], ir.Value]) -> list[ir.Value]:
    """values = step(k, values) for k < depth from `cleared`, the accumulators of a micro-kernel tile.

    A small tile has too few accumulators to hide its multiply-add's latency: it keeps up to 4
    independent partial tiles (k steps taken in turn, INDEPENDENT_CHAINS accumulators in all) and
    `add`s them up after the loop. The f32 and the int8 micro-kernels share it.
    """
    size = len(cleared)
    split = max(1, min(4, -(-INDEPENDENT_CHAINS // size)))
    if split == 1:
        return carried_loop(builder, i64(0), depth, cleared, step, "k")

    def steps(k: ir.Value, values: list[ir.Value]) -> list[ir.Value]:
        return [value for s in range(split)
                for value in step(builder.add(builder.mul(k, i64(split)), i64(s)), values[s * size:(s + 1) * size])]

    rounds = builder.udiv(depth, i64(split), name="k.rounds")
    partial = carried_loop(builder, i64(0), rounds, cleared * split, steps, "k.split")
    total = carried_loop(builder, builder.mul(rounds, i64(split)), depth, partial[:size], step, "k.rest")
    for s in range(1, split):
        total = [add(x, y) for x, y in zip(total, partial[s * size:(s + 1) * size])]
    return total


def _apply_epilogue(builder: ir.IRBuilder, tile: _Tile, epilogue: Epilogue, bias: ir.Value,
                    values: list[ir.Value], residual_places: list[tuple[ir.Value, int]]) -> list[ir.Value]:
    """values + bias (a row vector per column, or a splat per row) + the residual tile, then the activation."""
    vector, lanes, width = tile.vector, tile.lanes, tile.tiling.vector_width
    if epilogue.bias == "column":
        row = [load_lanes(builder, element_pointer(builder, bias, v * width, F32), count, vector)
               for v, count in enumerate(lanes)]
        values = [builder.fadd(value, row[index % len(lanes)]) for index, value in enumerate(values)]
    elif epilogue.bias == "row":
        column = [splat(builder, load_element(builder, bias, r, F32), vector) for r in range(tile.rows)]
        values = [builder.fadd(value, column[index // len(lanes)]) for index, value in enumerate(values)]
    if epilogue.residual:
        values = [builder.fadd(value, load_lanes(builder, pointer, count, vector))
                  for value, (pointer, count) in zip(values, residual_places)]
    # relu: np.maximum(x, 0), relu6: the clip op (NaN stays NaN); a gelu: the elementwise op's own steps
    values = [float_math.activation(builder, epilogue.activation, value) for value in values]
    return values


def define_kernel(module: ir.Module, name: str, arguments: Sequence[tuple[str, ir.Type]],
                  noalias: Sequence[str]) -> ir.Function:
    """A micro-kernel's function: `void name(arguments)`, internal, never inlined (one copy per tile
    shape, called from the loops), its arguments named and the pointers in `noalias` marked so."""
    function = ir.Function(module, ir.FunctionType(VOID, [type_ for _, type_ in arguments]), name)
    function.linkage = "internal"
    for attribute in ("nounwind", "norecurse", "noinline"):
        function.attributes.add(attribute)
    for argument, (label, _) in zip(function.args, arguments):
        argument.name = label
        if label in noalias:
            argument.add_attribute("noalias")
    return function


def micro_kernel(module: ir.Module, tiling: GemmTiling, rows: int, columns: int, epilogue: Epilogue,
                 a_layout: tuple[int, int] | None = None, prefetch: str | None = None) -> ir.Function:
    """`void(i64 kc, ptr a, ptr b, ptr c, i64 ldc, i1 accumulate, i1 finish, ptr bias, ptr residual,
    i64 ahead)` for one tile shape.

    c[r, j] (+)= sum over k < kc of a[k * S + r * R] * b[k * NR + j], for r < rows and j < columns,
    with (S, R) = `a_layout`: (MR, 1) by default, a packed A panel; (rows, 1) a tail panel packed
    only `rows` wide; (1, lda) rows of a row-major A read in place (emit_gemm's `a_in_place`);
    `accumulate` adds the tile to what c holds, `finish` applies the epilogue (bias at the tile's
    first row or column; the residual's tile, with c's row stride ldc). With `prefetch` ("a" or "b"),
    each k step also fetches into L2 that operand's k step `ahead` elements on: the next panel of a
    weight streamed from memory (BlockStep.prefetch); other variants ignore `ahead`. Defined once
    per module and variant.
    """
    a_layout = (tiling.rows, 1) if a_layout is None else a_layout
    layout_suffix = "" if a_layout == (tiling.rows, 1) else f".a{a_layout[0]}_{a_layout[1]}"
    name = (f"tf.gemm.f32.{tiling.rows}x{tiling.columns}.{rows}x{columns}{layout_suffix}{epilogue.suffix}"
            f"{f'.prefetch_{prefetch}' if prefetch else ''}")
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    function = define_kernel(module, name, [("kc", I64), ("a", PTR), ("b", PTR), ("c", PTR), ("ldc", I64),
                                            ("accumulate", I1), ("finish", I1), ("bias", PTR), ("residual", PTR),
                                            ("ahead", I64)], noalias=("a", "b", "c"))
    depth, a, b, c, ldc, accumulate, finish, bias, residual, ahead = function.args

    tile = _Tile(tiling, rows, columns)
    lanes, width = tile.lanes, tiling.vector_width
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    c_rows = [element_pointer(builder, c, builder.mul(ldc, i64(r)), F32, f"c{r}") for r in range(rows)]
    for row in c_rows:  # the tile of c is read or written only after the k loop: fetch it meanwhile
        for offset in sorted({0, columns - 1}):
            write, keep, data = (ir.Constant(I32, flag) for flag in (1, 3, 1))
            call_intrinsic(builder, "llvm.prefetch.p0", VOID, [element_pointer(builder, row, offset, F32), write,
                                                               keep, data])
    values = _accumulate(builder, tile, depth, a, b, a_layout, prefetch, ahead)
    places = [(element_pointer(builder, c_rows[r], v * width, F32), count) for r in range(rows)
              for v, count in enumerate(lanes)]

    def add_c(values: list[ir.Value]) -> list[ir.Value]:
        return [builder.fadd(value, load_lanes(builder, pointer, count, tile.vector))
                for value, (pointer, count) in zip(values, places)]

    values = _update(builder, accumulate, values, add_c, "summed")
    if epilogue.bias or epilogue.activation or epilogue.residual:
        def finish_tile(tile_values: list[ir.Value]) -> list[ir.Value]:
            residual_rows = [element_pointer(builder, residual, builder.mul(ldc, i64(r)), F32) for r in range(rows)]
            residual_places = [(element_pointer(builder, residual_rows[r], v * width, F32), count)
                               for r in range(rows) for v, count in enumerate(lanes)]
            return _apply_epilogue(builder, tile, epilogue, bias, tile_values,
                                   residual_places if epilogue.residual else [])

        values = _update(builder, finish, values, finish_tile, "finished")
    for value, (pointer, count) in zip(values, places):
        store_lanes(builder, value, pointer, count)
    builder.ret_void()
    return function
