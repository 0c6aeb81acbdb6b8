"""Small helpers that keep LLVM emission readable, in the style of numba's cgutils.

    with for_range(builder, 17, "i") as i:            # for (i = 0; i < 17; ++i)
        x = load_element(builder, src, i, F32)
        store_element(builder, builder.fadd(x, x), dst, i)

    [total] = carried_loop(builder, i64(0), i64(17), [zero], lambda i, acc: [builder.fadd(acc[0], x_at(i))])

    with strided_loops(builder, (4, 8), [((8, 1), 0), ((1, 4), 0)], "t") as (src_at, dst_at):
        ...                                            # one element offset per access

Loops are counted with i64 indices from 0; blocks are named `<name>.header`, `<name>.body` and
`<name>.end`, so the emitted IR reads like the Python that produced it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from llvmlite import ir

from ...ir import DType

VOID = ir.VoidType()
I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
PTR = ir.PointerType()

_LLVM_TYPES = {DType.f32: F32, DType.i8: I8, DType.u8: I8, DType.bool: I8, DType.i32: I32, DType.i64: I64}

Offset = ir.Value | int
Access = tuple[Sequence[int], Offset]  # (element strides per loop axis, base element offset)


def llvm_type(dtype: DType) -> ir.Type:
    """The LLVM type of one element of `dtype` in memory (bool is a byte holding 0 or 1)."""
    return _LLVM_TYPES[dtype]


def i64(value: int) -> ir.Constant:
    return ir.Constant(I64, value)


def as_i64(value: Offset) -> ir.Value:
    return i64(value) if isinstance(value, int) else value


def keep_rolled(branch: ir.Instruction, vectorize: bool = True) -> None:
    """Mark the loop whose latch is `branch` as not to be unrolled (`llvm.loop.unroll.disable`), and
    with `vectorize=False` not to be vectorized either (`llvm.loop.vectorize.enable` false).

    For loops whose full unrolling would make one huge basic block: the machine schedulers' time
    grows with the square of a block's memory operations, and compile time matters. Not vectorized:
    loops of strided stores, which LLVM otherwise "vectorizes" on AVX-512 into one extract and store
    per lane with 64-bit vector multiplies for the addresses (an int8 GEMM's packing of x ran ~3x
    slower than its multiply-adds so).
    """
    module = branch.module
    hints = [module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])]
    if not vectorize:
        hints.append(module.add_metadata([ir.MetaDataString(module, "llvm.loop.vectorize.enable"),
                                          ir.Constant(ir.IntType(1), 0)]))
    loop_id = ir.values.MDValue(module, [], name=str(len(module.metadata)))
    loop_id.operands = (loop_id, *hints)  # a loop id refers to itself, so each loop's is distinct
    branch.set_metadata("llvm.loop", loop_id)


@contextlib.contextmanager
def for_range(builder: ir.IRBuilder, count: Offset, name: str = "i", unroll: bool = True,
              vectorize: bool = True) -> Iterator[ir.Value]:
    """A counted loop `for index in range(count)`; yields the i64 index inside the loop body.

    `unroll=False` asks LLVM to keep the loop rolled, `vectorize=False` also scalar (keep_rolled)."""
    count = as_i64(count)
    preheader = builder.block
    header = builder.append_basic_block(f"{name}.header")
    body = builder.append_basic_block(f"{name}.body")
    end = builder.append_basic_block(f"{name}.end")
    builder.branch(header)

    builder.position_at_end(header)
    index = builder.phi(I64, name=name)
    index.add_incoming(i64(0), preheader)
    builder.cbranch(builder.icmp_signed("<", index, count, name=f"{name}.more"), body, end)

    builder.position_at_end(body)
    yield index
    latch = builder.block
    following = builder.add(index, i64(1), name=f"{name}.next", flags=("nuw", "nsw"))
    index.add_incoming(following, latch)
    branch = builder.branch(header)
    if not unroll or not vectorize:
        keep_rolled(branch, vectorize)

    builder.position_at_end(end)


def with_tail(builder: ir.IRBuilder, index: ir.Value, last: int, tail: int, whole: int,
              emit: Callable[[int], None]) -> None:
    """emit(whole) for unit `index` of a loop, or emit(tail) when `index` is its unit `last` and that
    unit is partial (`tail` not 0): a partial panel takes code of its own, its size static."""
    if not tail:
        emit(whole)
        return
    with builder.if_else(builder.icmp_unsigned("==", index, i64(last))) as (partial, full):
        with partial:
            emit(tail)
        with full:
            emit(whole)


def carried_loop(builder: ir.IRBuilder, start: ir.Value, stop: ir.Value, values: list[ir.Value],
                 body: Callable[[ir.Value, list[ir.Value]], list[ir.Value]], name: str = "i") -> list[ir.Value]:
    """`for index in range(start, stop): values = body(index, values)`, the values carried in registers
    (phi nodes); returns them after the loop. A reduction's accumulators, for example."""
    preheader = builder.block
    header = builder.append_basic_block(f"{name}.header")
    loop = builder.append_basic_block(f"{name}.body")
    end = builder.append_basic_block(f"{name}.end")
    builder.branch(header)
    builder.position_at_end(header)
    index = builder.phi(I64, name=name)
    index.add_incoming(start, preheader)
    carried = []
    for value in values:
        phi = builder.phi(value.type)
        phi.add_incoming(value, preheader)
        carried.append(phi)
    builder.cbranch(builder.icmp_signed("<", index, stop), loop, end)
    builder.position_at_end(loop)
    updated = body(index, carried)
    latch = builder.block
    index.add_incoming(builder.add(index, i64(1), flags=("nuw", "nsw")), latch)
    for phi, value in zip(carried, updated):
        phi.add_incoming(value, latch)
    builder.branch(header)
    builder.position_at_end(end)
    return carried


def add_offsets(builder: ir.IRBuilder, base: Offset, index: ir.Value, stride: int, name: str = "") -> Offset:
    """base + index * stride, folding the cases stride 0 and stride 1."""
    if stride == 0:
        return base
    step = index if stride == 1 else builder.mul(index, i64(stride), flags=("nsw",))
    if isinstance(base, int) and base == 0:
        return step
    return builder.add(as_i64(base), step, name=name, flags=("nsw",))


@contextlib.contextmanager
def strided_loops(builder: ir.IRBuilder, shape: Sequence[int], accesses: Sequence[Access],
                  name: str = "i") -> Iterator[list[ir.Value]]:
    """A loop nest over `shape` (outermost axis first); yields one i64 element offset per access.

    Each access is (strides, base): its offset is base + sum(index[axis] * strides[axis]). Callers
    pass coalesced shapes (see layout.coalesce) so the innermost loop is long and simple. Only the
    innermost loop may be unrolled: fully unrolled outer loops (a transpose's heads x rows of row
    copies) made basic blocks of thousands of instructions that took LLVM's schedulers about 19 s
    per GPT-2-size layer.
    """
    offsets = [base for _, base in accesses]
    with contextlib.ExitStack() as stack:
        for axis, extent in enumerate(shape):
            innermost = axis == len(shape) - 1
            index = stack.enter_context(for_range(builder, extent, f"{name}{axis}", unroll=innermost))
            offsets = [add_offsets(builder, offset, index, strides[axis], f"{name}{axis}.at")
                       for offset, (strides, _) in zip(offsets, accesses)]
        yield [as_i64(offset) for offset in offsets]


def lane_sum(builder: ir.IRBuilder, vectors: Sequence[ir.Value], name: str = "lane_sum") -> ir.Value:
    """The sum of every lane of `vectors` (f32 vectors of one type), in any order: the vectors added,
    then one horizontal sum (`llvm.vector.reduce.fadd` with reassoc, a tree of shuffles)."""
    total = vectors[0]
    for vector in vectors[1:]:
        total = builder.fadd(total, vector, name=f"{name}.partial", flags=("reassoc",))
    reduce = declare(builder.module, f"llvm.vector.reduce.fadd.v{total.type.count}f32", F32, [F32, total.type])
    return builder.call(reduce, [ir.Constant(F32, -0.0), total], name=name, fastmath=("reassoc",))


def lane_indices(lanes) -> ir.Constant:
    """A shufflevector mask: the constant i32 vector of these lane numbers."""
    lanes = list(lanes)
    return ir.Constant(ir.VectorType(I32, len(lanes)), lanes)


def alloca_once(builder: ir.IRBuilder, type_: ir.Type, name: str) -> ir.AllocaInstr:
    """A stack slot in the function's entry block (promoted to a register by LLVM's mem2reg)."""
    with builder.goto_entry_block():
        return builder.alloca(type_, name=name)


def element_pointer(builder: ir.IRBuilder, base: ir.Value, offset: Offset, type_: ir.Type,
                    name: str = "") -> ir.Value:
    """The address of element `offset` of an array of `type_` starting at `base`."""
    if isinstance(offset, int) and offset == 0:
        return base
    return builder.gep(base, [as_i64(offset)], inbounds=True, name=name, source_etype=type_)


def load_element(builder: ir.IRBuilder, base: ir.Value, offset: Offset, type_: ir.Type, name: str = "") -> ir.Value:
    return builder.load(element_pointer(builder, base, offset, type_), name=name, typ=type_)


def store_element(builder: ir.IRBuilder, value: ir.Value, base: ir.Value, offset: Offset) -> None:
    builder.store(value, element_pointer(builder, base, offset, value.type))


def byte_pointer(builder: ir.IRBuilder, base: ir.Value, offset: int, name: str = "") -> ir.Value:
    """`base` advanced by `offset` bytes."""
    return element_pointer(builder, base, offset, I8, name)


def declare(module: ir.Module, name: str, return_type: ir.Type, argument_types: Sequence[ir.Type]) -> ir.Function:
    """The function `name` of the module, declared on first use (intrinsics and libm alike)."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(return_type, list(argument_types)), name)


def call_intrinsic(builder: ir.IRBuilder, name: str, return_type: ir.Type, args: Sequence[ir.Value],
                   result: str = "") -> ir.Value:
    """Call an LLVM intrinsic such as `llvm.exp.f32`, declaring it on first use."""
    function = declare(builder.module, name, return_type, [arg.type for arg in args])
    return builder.call(function, list(args), name=result)


def masked_load(builder: ir.IRBuilder, pointer: ir.Value, mask: ir.Value, passthru: ir.Value) -> ir.Value:
    """llvm.masked.load of a float vector: the lanes of `mask` from memory at `pointer`, the others from
    `passthru`; masked-off lanes are not read (no fault past a buffer's end)."""
    vector = passthru.type
    return call_intrinsic(builder, f"llvm.masked.load.v{vector.count}f32.p0", vector,
                          [pointer, ir.Constant(ir.IntType(32), 4), mask, passthru])


def lane_mask(lanes: int, valid) -> ir.Constant:
    """The i1 vector of `valid(lane)` for lane < lanes (a static mask for masked loads, stores, selects)."""
    return ir.Constant(ir.VectorType(I1, lanes), [bool(valid(lane)) for lane in range(lanes)])


def first_lanes(lanes: int, count: int) -> ir.Constant:
    """The mask of a vector's first `count` of `lanes` lanes."""
    return lane_mask(lanes, lambda lane: lane < count)


def masked_store(builder: ir.IRBuilder, value: ir.Value, pointer: ir.Value, mask: ir.Value) -> None:
    """llvm.masked.store of a float vector: the lanes of `mask` to memory at `pointer`; nothing else is
    written."""
    vector = value.type
    call_intrinsic(builder, f"llvm.masked.store.v{vector.count}f32.p0", VOID,
                   [value, pointer, ir.Constant(ir.IntType(32), 4), mask])


def copy_bytes(builder: ir.IRBuilder, destination: ir.Value, source: ir.Value, nbytes: int, may_overlap: bool) -> None:
    """memcpy, or memmove when the two buffers may overlap."""
    intrinsic = "llvm.memmove.p0.p0.i64" if may_overlap else "llvm.memcpy.p0.p0.i64"
    function = declare(builder.module, intrinsic, VOID, [PTR, PTR, I64, I1])
    builder.call(function, [destination, source, i64(nbytes), ir.Constant(I1, 0)])


def zero_bytes(builder: ir.IRBuilder, destination: ir.Value, nbytes: int) -> None:
    """memset to zero (the bytes of 0.0 in f32); nothing for 0 bytes."""
    if nbytes:
        function = declare(builder.module, "llvm.memset.p0.i64", VOID, [PTR, ir.IntType(8), I64, I1])
        builder.call(function, [destination, ir.Constant(ir.IntType(8), 0), i64(nbytes), ir.Constant(I1, 0)])


def fill_elements(builder: ir.IRBuilder, base: ir.Value, count: int, value: ir.Value, name: str = "fill") -> None:
    """base[0:count] = value."""
    with for_range(builder, count, name) as index:
        store_element(builder, value, base, index)


def affine_offset(builder: ir.IRBuilder, terms: Sequence[tuple[ir.Value, int]], base: Offset = 0,
                  name: str = "") -> Offset:
    """base + sum(index * stride for index, stride in terms): an element offset into a nested array."""
    offset = base
    for index, stride in terms:
        offset = add_offsets(builder, offset, index, stride, name)
    return offset
