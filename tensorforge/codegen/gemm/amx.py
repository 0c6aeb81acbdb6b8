"""The int8 GEMM's micro-kernel on AMX, the tile unit of x86 CPUs from Sapphire Rapids on.

AMX has eight tile registers of up to 16 rows x 64 bytes, and one instruction multiplies three of
them:

    tdpbusd / tdpbssd   C[16 x 16 i32] += A[16 x 64 u8 / i8] . B[16 x 64 i8]

where each 32-bit element of B holds one column's 4 consecutive k values, a row of B one k group of
16 columns: that is the vector schemes' weight panel (qgemm.py: [panels, K/4, NR, 4]) with NR = 32,
two B tiles side by side (row stride 128 bytes). A is x's rows as they lie (row-major, 64 bytes of
k per tile row), so x is not packed, only copied with its rows padded to a multiple of 64 bytes
when K is not one (qgemm.emit_block). x's signedness picks the instruction (u8: tdpbusd, i8:
tdpbssd), so it needs no shift either.

The micro-tile is 32 x 32: 4 C tiles, 2 A, 2 B (all eight registers); per 64 k values, 4 tile loads
and 4 multiplies of 16 x 16 x 64 products. After the k loop the C tiles go to the stack, and the
common epilogue (requant.py) reads them back a row of 16 lanes at a time. LLVM configures the
tiles (ldtilecfg) on entry to each kernel and releases them on exit.

Linux gives a process the tile state only on request (arch_prctl(ARCH_REQ_XCOMP_PERM,
XFEATURE_XTILEDATA)); a tile instruction before it kills the process. tf_run asks once
(`request_tiles`) before any kernel runs and returns TILES_REFUSED when Linux says no.
"""

from __future__ import annotations

from llvmlite import ir

from ..llvm.utils import I8, I32, I64, PTR, VOID, call_intrinsic, carried_loop, element_pointer, i64
from .micro_kernel import define_kernel
from .requant import EPILOGUE_ARGUMENTS, Requant, TileArguments, write_tile

I16 = ir.IntType(16)
TILE_ROWS = 16
TILE_BYTES = 64  # bytes of one tile row: 64 k values of A, 16 columns of B or C
MR = NR = 2 * TILE_ROWS
SYS_ARCH_PRCTL = 158
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
TILES_REFUSED = 2  # tf_run's status when Linux refuses the tile state


class _TileType(ir.Type):
    """LLVM's x86_amx: a tile register's value (llvmlite has no such type)."""

    def _to_string(self) -> str:
        return "x86_amx"

    def __eq__(self, other) -> bool:
        return isinstance(other, _TileType)

    def __hash__(self) -> int:
        return hash("x86_amx")


TILE = _TileType()


def _shape(rows: int) -> list[ir.Constant]:
    """A tile's shape operands: `rows` rows of TILE_BYTES bytes (every tile here is that wide)."""
    return [ir.Constant(I16, rows), ir.Constant(I16, TILE_BYTES)]


def _load(builder: ir.IRBuilder, rows: int, pointer: ir.Value, stride: ir.Value) -> ir.Value:
    return call_intrinsic(builder, "llvm.x86.tileloadd64.internal", TILE, [*_shape(rows), pointer, stride])


def micro_kernel(module: ir.Module, rows: int, columns: int, requant: Requant, signed_x: bool) -> ir.Function:
    """`void(i64 steps, ptr a, i64 lda, ptr b, ptr c, i64 ldc, ptr bias, ptr colsum, ptr m,
    i32 correction, float zy, float low, float high, float sx, ptr residual)`: one rows x columns
    tile (at most 32 x 32) of the result, requantized.

    a: the tile's first row of x, rows `lda` bytes apart; b: the weight's panel; `steps` the
    depth's blocks of 64 k values (both zero-padded to them). The epilogue's arguments are the
    vector micro-kernel's (requant.TileArguments). Defined once per module and variant."""
    name = f"tf.qgemm.amx.{rows}x{columns}.{'i8' if signed_x else 'u8'}{requant.suffix}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    function = define_kernel(module, name, [("steps", I64), ("a", PTR), ("lda", I64), ("b", PTR), *EPILOGUE_ARGUMENTS],
                             noalias=("a", "b", "c", "residual"))
    (steps, a, lda, b, c, ldc, bias, colsum, multiplier, correction, zero, low, high, x_scale,
     residual) = function.args
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    results = builder.alloca(ir.ArrayType(I32, MR * NR), name="results")
    results.align = 64
    a_tiles = [min(TILE_ROWS, rows - TILE_ROWS * i) for i in range(-(-rows // TILE_ROWS))]
    b_tiles = -(-columns // TILE_ROWS)  # whole 16-column tiles: a panel's columns past N are zeros
    multiply = "llvm.x86.tdpbssd.internal" if signed_x else "llvm.x86.tdpbusd.internal"
    zeros = [call_intrinsic(builder, "llvm.x86.tilezero.internal", TILE, _shape(height))
             for height in a_tiles for _ in range(b_tiles)]
    b_stride = i64(NR * 4)

    def step(k: ir.Value, tiles: list[ir.Value]) -> list[ir.Value]:
        a_k = element_pointer(builder, a, builder.mul(k, i64(TILE_BYTES)), I8, "a_k")
        b_k = element_pointer(builder, b, builder.mul(k, i64(TILE_ROWS * NR * 4)), I8, "b_k")
        a_values = [_load(builder, height, element_pointer(builder, a_k, builder.mul(lda, i64(TILE_ROWS * i)),
                                                           I8), lda)
                    for i, height in enumerate(a_tiles)]
        b_values = [_load(builder, TILE_ROWS, element_pointer(builder, b_k, j * TILE_BYTES, I8), b_stride)
                    for j in range(b_tiles)]
        return [call_intrinsic(builder, multiply, TILE,
                               [*_shape(height), ir.Constant(I16, TILE_BYTES), tiles[i * b_tiles + j],
                                a_values[i], b_values[j]])
                for i, height in enumerate(a_tiles) for j in range(b_tiles)]

    tiles = carried_loop(builder, i64(0), steps, zeros, step, "k")
    for i, height in enumerate(a_tiles):
        for j in range(b_tiles):
            at = element_pointer(builder, results, (TILE_ROWS * i * NR + TILE_ROWS * j), I32)
            call_intrinsic(builder, "llvm.x86.tilestored64.internal", VOID,
                           [*_shape(height), at, i64(NR * 4), tiles[i * b_tiles + j]])
    vector = ir.VectorType(I32, TILE_ROWS)

    def accumulator(r: int, v: int) -> ir.Value:
        return builder.load(element_pointer(builder, results, r * NR + v * TILE_ROWS, I32), typ=vector, align=64)

    write_tile(builder, requant, TILE_ROWS, rows, columns,
               TileArguments(c, ldc, bias, colsum, multiplier, correction, zero, low, high, x_scale, residual),
               accumulator)
    builder.ret_void()
    return function


def uses_tiles(module: ir.Module) -> bool:
    return any(name.startswith("tf.qgemm.amx.") for name in module.globals)


def request_tiles(function: ir.Function) -> None:
    """Put in front of `function` (tf_run, returning i32) a first block that asks Linux for the tile
    state once per process (a global flag; asking twice is harmless) and returns TILES_REFUSED if
    it is refused."""
    module = function.module
    ready = ir.GlobalVariable(module, I32, "tf.amx.ready")
    ready.linkage = "internal"
    ready.initializer = ir.Constant(I32, 0)
    start = function.blocks[0]
    check = function.insert_basic_block(0, "tiles")
    ask = function.insert_basic_block(1, "tiles.ask")
    refused = function.insert_basic_block(2, "tiles.refused")
    builder = ir.IRBuilder(check)
    flag = builder.load_atomic(ready, "monotonic", 4)
    builder.cbranch(builder.icmp_unsigned("!=", flag, ir.Constant(I32, 0)), start, ask)
    builder.position_at_end(ask)
    syscall = module.globals.get("syscall") or ir.Function(module, ir.FunctionType(I64, [I64], var_arg=True),
                                                           "syscall")
    answer = builder.call(syscall, [i64(SYS_ARCH_PRCTL), i64(ARCH_REQ_XCOMP_PERM), i64(XFEATURE_XTILEDATA)])
    granted = function.insert_basic_block(2, "tiles.granted")
    builder.cbranch(builder.icmp_signed("==", answer, i64(0)), granted, refused)
    builder.position_at_end(granted)
    builder.store_atomic(ir.Constant(I32, 1), ready, "monotonic", 4)
    builder.branch(start)
    builder.position_at_end(refused)
    builder.ret(ir.Constant(I32, TILES_REFUSED))
