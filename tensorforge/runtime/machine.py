"""This machine's measured peaks, for the profiler's roofline: f32 FLOP/s and memory read bandwidth;
and the int8 vector instruction's peak (`int8_peak`: VNNI, sdot, ...; not AMX tiles), for the INT8 benchmark.

    peaks = machine_peaks(threads=2)     # measured once per process and thread count (about 0.5 s)
    peaks.gflops, peaks.gbytes_per_second, peaks.ridge   # ridge: FLOPs per byte where the roofs meet

Both are measured with small kernels emitted here for the host's vector width, run from `threads`
Python threads at once (ctypes releases the GIL):
  - `fma_loop(n)`: 12-16 vector FMA accumulators (all in registers), n iterations: the FMA units' peak;
  - `read_sum(p, n)`: sums n floats with 4 vector accumulators: streaming reads of a 256 MiB
    buffer, far bigger than any cache;
  - `int8_loop(n)`: the same number of accumulators, each step the int8 GEMM's own multiply-add
    (codegen/gemm/qgemm.py's scheme for the host: vpmaddwd + vpaddd on AVX2, vpdpbusd with VNNI).
"""

from __future__ import annotations

import ctypes
import functools
import threading
import time
from dataclasses import dataclass

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from ..codegen.gemm.qgemm import int8_scheme, multiply_add
from ..codegen.gemm.tiling import INDEPENDENT_CHAINS
from ..codegen.llvm.utils import F32, I8, I32, I64, PTR, call_intrinsic, carried_loop, i64, lane_sum
from ..codegen.target import Target, initialize_llvm

FMA_ITERATIONS = 20_000_000
STREAM_BYTES = 256 << 20
REPEATS = 3


@dataclass(frozen=True)
class MachinePeaks:
    """Measured f32 peak (GFLOP/s) and memory read bandwidth (GB/s) with `threads` threads."""

    threads: int
    gflops: float
    gbytes_per_second: float

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOPs per byte) above which a kernel can be compute-bound."""
        return self.gflops / self.gbytes_per_second

    def __str__(self) -> str:
        return (f"{self.threads} thread(s): {self.gflops:.0f} GFLOP/s f32 FMA peak, {self.gbytes_per_second:.1f} GB/s "
                f"read bandwidth (ridge {self.ridge:.1f} FLOP/byte)")


def fma_chains(target: Target) -> int:
    """Independent FMA accumulators: enough to cover latency x units, as many as fit with the two operands."""
    return min(2 * INDEPENDENT_CHAINS, target.vector_registers - 4)


def _kernels_ir(target: Target) -> str:
    """fma_loop(n, scale, step) and read_sum(pointer, n), accumulators carried in registers (no
    optimizer run needed, none that could fold the work away)."""
    module = ir.Module("tensorforge.machine")
    module.triple = target.triple
    lanes = target.vector_width
    vector = ir.VectorType(F32, lanes)

    fma = ir.Function(module, ir.FunctionType(F32, [I64, F32, F32]), "fma_loop")
    builder = ir.IRBuilder(fma.append_basic_block("entry"))
    count, scale, step = fma.args
    splat = [builder.insert_element(ir.Constant(vector, None), value, i64(0)) for value in (scale, step)]
    scale, step = (builder.shuffle_vector(value, ir.Constant(vector, None), ir.Constant(ir.VectorType(ir.IntType(32),
                   lanes), [0] * lanes)) for value in splat)
    start = [ir.Constant(vector, [1.0 + index * 1e-3] * lanes) for index in range(fma_chains(target))]

    def fma_step(_, values):
        return [call_intrinsic(builder, f"llvm.fma.v{lanes}f32", vector, [value, scale, step]) for value in values]

    builder.ret(lane_sum(builder, carried_loop(builder, i64(0), count, start, fma_step, "k")))

    read = ir.Function(module, ir.FunctionType(F32, [PTR, I64]), "read_sum")
    builder = ir.IRBuilder(read.append_basic_block("entry"))
    pointer, count = read.args

    def read_step(block, values):
        loaded = []
        for index in range(len(values)):
            at = builder.add(builder.mul(block, i64(4 * lanes)), i64(index * lanes))
            loaded.append(builder.load(builder.gep(pointer, [at], inbounds=True, source_etype=F32), typ=vector,
                                       align=4))
        return [builder.fadd(value, data) for value, data in zip(values, loaded)]

    zeros = [ir.Constant(vector, [0.0] * lanes)] * 4
    blocks = builder.udiv(count, i64(4 * lanes))
    builder.ret(lane_sum(builder, carried_loop(builder, i64(0), blocks, zeros, read_step, "block")))

    scheme = int8_scheme(target)
    accumulator = ir.VectorType(I32, scheme.lanes)
    word = I32 if scheme.group * scheme.a_bits == 32 else scheme.a_type
    loop = ir.Function(module, ir.FunctionType(I32, [I64, I32]), "int8_loop")
    builder = ir.IRBuilder(loop.append_basic_block("entry"))
    count, seed = loop.args
    a_word = builder.trunc(seed, word) if word != I32 else seed
    b_vector = ir.VectorType(I8, scheme.lanes * scheme.group)
    start = [ir.Constant(accumulator, [index] * scheme.lanes) for index in range(fma_chains(target))]

    def int8_step(k, values):  # the weights change every step (a broadcast of k), as loads would
        lanes = builder.insert_element(ir.Constant(accumulator, [7] * scheme.lanes), builder.trunc(k, I32), i64(1))
        b_bytes = builder.bitcast(lanes, ir.VectorType(I8, 4 * scheme.lanes))
        if scheme.group != 4:
            b_bytes = builder.shuffle_vector(b_bytes, b_bytes, ir.Constant(ir.VectorType(I32, b_vector.count),
                                                                           list(range(b_vector.count))))
        return [multiply_add(builder, scheme, value, a_word, b_bytes) for value in values]

    values = carried_loop(builder, i64(0), count, start, int8_step, "k")
    total = values[0]
    for value in values[1:]:
        total = builder.add(total, value)
    builder.ret(builder.extract_element(total, i64(0)))
    return str(module)


class _Kernels:
    def __init__(self):
        initialize_llvm()
        target = Target.parse("host")
        module = llvm.parse_assembly(_kernels_ir(target))
        module.verify()
        self._engine = llvm.create_mcjit_compiler(module, target.target_machine(3))
        self._engine.finalize_object()
        self.fma_loop = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64, ctypes.c_float, ctypes.c_float)(
            self._engine.get_function_address("fma_loop"))
        self.read_sum = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_void_p, ctypes.c_int64)(
            self._engine.get_function_address("read_sum"))
        self.flops_per_iteration = 2 * fma_chains(target) * target.vector_width
        self.int8_loop = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int64, ctypes.c_int32)(
            self._engine.get_function_address("int8_loop"))
        scheme = int8_scheme(target)
        self.int8_ops_per_iteration = 2 * fma_chains(target) * scheme.lanes * scheme.group


def _concurrently(threads: int, work) -> float:
    """Seconds for `threads` Python threads to each run work(index), started together."""
    barrier = threading.Barrier(threads + 1)

    def run(index: int) -> None:
        barrier.wait()
        work(index)

    pool = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in pool:
        thread.join()
    return time.perf_counter() - start


@functools.cache
def machine_peaks(threads: int = 1) -> MachinePeaks:
    """Measure (once per process and `threads`) the f32 FMA peak and the read bandwidth of this host."""
    kernels = _Kernels()
    kernels.fma_loop(FMA_ITERATIONS // 20, 0.999999, 1e-6)  # warm up: clocks, page in the code

    def fma(_: int) -> None:
        kernels.fma_loop(FMA_ITERATIONS, 0.999999, 1e-6)

    fma_seconds = min(_concurrently(threads, fma) for _ in range(REPEATS))
    gflops = threads * FMA_ITERATIONS * kernels.flops_per_iteration / fma_seconds / 1e9

    data = np.ones(STREAM_BYTES // 4, np.float32)
    share = data.size // threads
    addresses = [data[index * share:].ctypes.data for index in range(threads)]
    kernels.read_sum(addresses[0], share)
    read_seconds = min(_concurrently(threads, lambda index: kernels.read_sum(addresses[index], share))
                       for _ in range(REPEATS))
    return MachinePeaks(threads, gflops, threads * share * 4 / read_seconds / 1e9)


@functools.cache
def int8_peak(threads: int = 1) -> float:
    """GOP/s (an int8 multiply-add = 2) of the host's int8 GEMM instruction with `threads` threads."""
    kernels = _Kernels()
    kernels.int8_loop(FMA_ITERATIONS // 20, 3)
    seconds = min(_concurrently(threads, lambda _: kernels.int8_loop(FMA_ITERATIONS, 3)) for _ in range(REPEATS))
    return threads * FMA_ITERATIONS * kernels.int8_ops_per_iteration / seconds / 1e9
