"""Threads: a node's work cut into parts, run on the module's thread pool (threads/thread_pool.py).

A node big enough to share (its lowering's `parts`, with MIN_PARALLEL_FLOPS) keeps its usual
function, which tf_run calls as for any node; that function hands its arguments to the pool and
returns when every part is done:

    void @"conv2d.x"(ptr %x, ptr %w, ptr %out, ptr %scratch)
      store the arguments in %context (a struct on the stack)
      call @tf.pool.run(i64 <task number>, ptr %context, i64 parts, i64 threads)
    void @"conv2d.x.task"(ptr %context, i64 part, i64 thread)                 ; run for every part
      call @"conv2d.x.part"(x, w, out, scratch + thread * scratch_bytes, part)    ; the kernel's loops

Parts are fixed at compile time (the kernel splits its loops by `kernel.part` of `kernel.parts`);
the calling thread and the pool's workers claim them one at a time from a counter, so a worker
whose core is busy elsewhere does fewer, and none is waited for unless it holds a part. Each
thread has its own slice of the node's scratch (one per thread of the pool). No Python runs in the
loop; the workers are created on the first call and sleep on a futex between calls.
"""

from __future__ import annotations

from llvmlite import ir

from ..llvm.utils import I32, PTR, i64
from ..target import Target
from .thread_pool import SHUTDOWN, TASK_TYPE, pool_run, register_task

# Work below this many flops (or element reads and writes) stays on one thread: waking a team
# costs a few microseconds. Chosen with benchmarks/bench_models.py (docs/architecture.md); 2^20
# since 2026-12-03 (it was 2^21): the CNN's first conv at batch 1 (1.8 MFLOP, 18 us on one Zen 4
# core) now takes both cores, a bound call 86.9 -> 79-84 us.
MIN_PARALLEL_FLOPS = 1 << 20
# ... unless it streams a weight this big: split among the cores, each part of the weight can stay
# in that core's own L2 cache (a batch-1 linear of 784 x 256 runs 1.3x faster on two cores here).
MIN_PARALLEL_WEIGHT_BYTES = 256 << 10

# A kernel bound by memory (a copy, value_range's scan) whose data has at least this many bytes is
# split among the threads. SqueezeNet's concats (0.26-1.5 MB at batch 1, 2-12 MB at 8) ran 1.09x
# and 1.13x faster as a whole model so (in-process A/B); BERT's head transposes (0.39 MB) neither
# gained nor lost, and smaller copies stay on one thread: waking the team costs more.
PARALLEL_BYTES = 256 << 10

# Independent pieces of work (images, rows of a pool) are cut into up to this many parts per
# thread, so that a thread that starts late or runs slower (a busy core) can be made up for, and
# the last part leaves little idle time (CNN at batch 64: 6.8 ms with 4 parts per thread, 6.1 with
# one image per part). A matrix-vector GEMM repacks its small A per part: fewer parts there.
PARTS_PER_THREAD = 16
GEMM_PARTS_PER_THREAD = 4
# A matrix-vector product takes GEMM_PARTS_PER_THREAD parts per thread only when each part still
# streams about this much weight: below it, claiming a part costs more than the balance it buys.
# Tiny GPT decode (linears of 0.25-1 MiB), `benchmarks/bench_bound.py` on Zen 4: a step 1.24-1.25x
# faster in int8, 1.05-1.12x in fp32, than with 4 parts per thread (BENCHMARKS.md).
STREAM_PART_BYTES = 1 << 20


def stream_parts_per_thread(weight_bytes: int) -> int:
    """Parts per thread of a matrix-vector product (a weight stream) of `weight_bytes`."""
    return max(1, min(GEMM_PARTS_PER_THREAD, weight_bytes // STREAM_PART_BYTES))


def split_parts(units: int, threads: int) -> tuple[int, int]:
    """(parts, units per part) to share `units` indivisible units among at most `threads` parts.

    Every part but the last has `per_part` units; the last has the rest (at least one).
    """
    if threads <= 1 or units <= 1:
        return 1, max(units, 1)
    per_part = -(-units // min(threads, units))
    return -(-units // per_part), per_part


def row_parts(units: int, work: int, threads: int) -> int:
    """Parts of `units` independent rows (elements, softmax rows, attention heads) for a team of
    `threads`: one block of rows per thread, when the node's `work` (in flops) reaches
    MIN_PARALLEL_FLOPS; else 1."""
    if threads <= 1 or work < MIN_PARALLEL_FLOPS:
        return 1
    return split_parts(units, threads)[0]


def part_bounds(builder: ir.IRBuilder, part: ir.Value | None, parts: int, units: int,
                name: str) -> tuple[ir.Value, ir.Value]:
    """(first unit, unit count) of part `part` of `parts` over `units` (split_parts), or all of them."""
    if parts == 1 or part is None:
        return i64(0), i64(units)
    per_part = split_parts(units, parts)[1]
    first = builder.mul(part, i64(per_part), name=f"{name}.first")
    count = builder.sub(i64(units), first)
    count = builder.select(builder.icmp_signed("<", count, i64(per_part)), count, i64(per_part), name=f"{name}.count")
    return first, count


def even_bounds(builder: ir.IRBuilder, part: ir.Value | None, parts: int, units: int, total: int, unit_size: int,
                name: str) -> tuple[ir.Value, ir.Value]:
    """(first unit, unit count) of part `part` of `parts` over `units` units of `unit_size` elements,
    `total` elements in all (the last unit may be short: a tail panel). Part k starts at the unit
    boundary nearest k * total / parts, so the parts' elements are as even as whole units allow, and
    each part has at least one unit (parts <= units, as split_parts gives).

    split_parts' equal counts put a short last unit with the last part, the smallest: 196 pixels in
    panels of 32 split 4 + 3 panels, 128 pixels against 68; here 3 + 3, 96 against 100."""
    if parts == 1 or part is None:
        return i64(0), i64(units)

    def first_of(k: ir.Value) -> ir.Value:
        nearest = builder.udiv(builder.add(builder.mul(k, i64(2 * total)), i64(parts * unit_size)),
                               i64(2 * parts * unit_size))
        low, high = k, builder.add(k, i64(units - parts))  # room for one unit in every part
        nearest = builder.select(builder.icmp_signed("<", nearest, low), low, nearest)
        return builder.select(builder.icmp_signed(">", nearest, high), high, nearest, name=f"{name}.first")

    first = first_of(part)
    following = builder.add(part, i64(1))
    end = builder.select(builder.icmp_signed("==", following, i64(parts)), i64(units), first_of(following))
    return first, builder.sub(end, first, name=f"{name}.count")


def uses_threads(module_ir: str) -> bool:
    """Whether an LLVM module runs work on its thread pool (then it exports tf_pool_shutdown)."""
    return f"@{SHUTDOWN}(" in module_ir


def emit_team_call(function: ir.Function, part_function: ir.Function, threads: int, parts: int,
                   scratch_bytes: int, target: Target) -> None:
    """Fill `function` (a node's function: pointer arguments, the scratch last when `scratch_bytes`)
    with a call of the module's thread pool running `part_function(arguments..., part)` for every part.

    The arguments travel in a struct on the caller's stack; the pool's task unpacks them, and
    gives each thread its own `scratch_bytes` slice of the scratch (the node's scratch holds one
    per thread).
    """
    module = function.module
    count = len(function.args)
    fields = ir.LiteralStructType([PTR] * count)

    task = ir.Function(module, TASK_TYPE, f"{function.name}.task")
    task.linkage = "internal"
    task.attributes.add("nounwind")
    pointer, part, thread = task.args
    pointer.name, part.name, thread.name = "context", "part", "thread"
    builder = ir.IRBuilder(task.append_basic_block("entry"))
    arguments = [builder.load(builder.gep(pointer, [i64(index)], inbounds=True, source_etype=PTR), typ=PTR,
                              name=argument.name) for index, argument in enumerate(function.args)]
    if scratch_bytes:
        arguments[-1] = builder.gep(arguments[-1], [builder.mul(thread, i64(scratch_bytes))], inbounds=True,
                                    source_etype=ir.IntType(8), name="thread.scratch")
    builder.call(part_function, [*arguments, part])
    builder.ret_void()

    caller = ir.IRBuilder(function.append_basic_block("entry"))
    context = caller.alloca(fields, name="context")
    for index, argument in enumerate(function.args):
        caller.store(argument, caller.gep(context, [ir.Constant(I32, 0), ir.Constant(I32, index)], inbounds=True))
    run = pool_run(module, target)
    caller.call(run, [i64(register_task(module, task)), context, i64(parts), i64(threads)])
    caller.ret_void()
