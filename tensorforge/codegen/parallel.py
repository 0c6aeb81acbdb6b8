"""Threads: a node's work cut into parts, run by an OpenMP team through libgomp's `GOMP_parallel`.

A node big enough to share (its lowering's `parts`, with MIN_PARALLEL_FLOPS) keeps its usual
function, which tf_run calls as for any node; that function hands its arguments to a team and
waits for it:

    void @"conv2d.x"(ptr %x, ptr %w, ptr %out, ptr %scratch)
      store the arguments in %context (an array of pointers on the stack)
      call @GOMP_parallel(ptr @"conv2d.x.team", ptr %context, i32 threads, i32 0)   ; returns when all are done
    void @"conv2d.x.team"(ptr %context)                                              ; every thread of the team
      tid = omp_get_thread_num()
      while (part = atomic next_part++) < parts:                                     ; claimed, not assigned
          call @"conv2d.x.part"(x, w, out, scratch + tid * scratch_bytes, part)     ; the kernel's loops

Parts are fixed at compile time (the kernel splits its loops by `kernel.part` of `kernel.parts`);
threads claim them one at a time from a counter, so a team smaller than asked for (a call from
inside another parallel region gets a team of one) still does every part, and a thread whose core
is busy elsewhere does fewer. Each thread has its own slice of the node's scratch. libgomp keeps its
threads between calls, so a call costs a wake-up, not a thread creation; no Python runs in the loop.
"""

from __future__ import annotations

from llvmlite import ir

from .llvm_utils import I32, I64, PTR, VOID, declare, i64

# Work below this many flops (or element reads and writes) stays on one thread: waking a team
# costs a few microseconds. Chosen with benchmarks/bench_models.py (docs/architecture.md).
MIN_PARALLEL_FLOPS = 1 << 21
# ... unless it streams a weight this big: split among the cores, each part of the weight can stay
# in that core's own L2 cache (a batch-1 linear of 784 x 256 runs 1.3x faster on two cores here).
MIN_PARALLEL_WEIGHT_BYTES = 256 << 10

# Independent pieces of work (images, rows of a pool) are cut into up to this many parts per
# thread, so that a thread that starts late or runs slower (a busy core) can be made up for, and
# the last part leaves little idle time (CNN at batch 64: 6.8 ms with 4 parts per thread, 6.1 with
# one image per part). A matrix-vector GEMM repacks its small A per part: fewer parts there.
PARTS_PER_THREAD = 16
GEMM_PARTS_PER_THREAD = 4


def split_parts(units: int, threads: int) -> tuple[int, int]:
    """(parts, units per part) to share `units` indivisible units among at most `threads` parts.

    Every part but the last has `per_part` units; the last has the rest (at least one).
    """
    if threads <= 1 or units <= 1:
        return 1, max(units, 1)
    per_part = -(-units // min(threads, units))
    return -(-units // per_part), per_part


def uses_threads(module_ir: str) -> bool:
    """Whether an LLVM module calls into the OpenMP runtime (its loader must provide libgomp)."""
    return "@GOMP_parallel(" in module_ir


def emit_team_call(function: ir.Function, part_function: ir.Function, threads: int, parts: int,
                   scratch_bytes: int) -> None:
    """Fill `function` (a node's function: pointer arguments, the scratch last when `scratch_bytes`)
    with a GOMP_parallel call whose team calls `part_function(arguments..., part)` for every part.

    Threads claim parts from a shared counter (an atomic add), so a thread that starts late (its
    core busy with another process) leaves its parts to the others instead of making them wait.
    Each thread passes its own `scratch_bytes` slice of the scratch (the node's scratch holds one
    per thread of the team).
    """
    module = function.module
    count = len(function.args)
    team = ir.Function(module, ir.FunctionType(VOID, [PTR]), f"{function.name}.team")
    team.linkage = "internal"
    team.attributes.add("nounwind")

    caller = ir.IRBuilder(function.append_basic_block("entry"))
    fields = ir.LiteralStructType([PTR] * count + [I64])  # the arguments, then the part counter
    context = caller.alloca(fields, name="context")

    def field(index: int) -> ir.Value:
        return caller.gep(context, [ir.Constant(I32, 0), ir.Constant(I32, index)], inbounds=True)

    for index, argument in enumerate(function.args):
        caller.store(argument, field(index))
    counter = field(count)
    caller.store(i64(0), counter)
    gomp = declare(module, "GOMP_parallel", VOID, [PTR, PTR, I32, I32])
    caller.call(gomp, [team, context, ir.Constant(I32, threads), ir.Constant(I32, 0)])
    caller.ret_void()

    builder = ir.IRBuilder(team.append_basic_block("entry"))
    (pointer,) = team.args
    pointer.name = "context"
    arguments = []
    for index, argument in enumerate(function.args):
        slot = builder.gep(pointer, [i64(index)], inbounds=True, source_etype=PTR)
        arguments.append(builder.load(slot, name=argument.name, typ=PTR))
    counter = builder.gep(pointer, [i64(count)], inbounds=True, source_etype=I64, name="next_part")
    thread = builder.sext(builder.call(declare(module, "omp_get_thread_num", I32, []), [], name="tid"), I64)
    if scratch_bytes:
        arguments[-1] = builder.gep(arguments[-1], [builder.mul(thread, i64(scratch_bytes))], inbounds=True,
                                    source_etype=ir.IntType(8), name="thread.scratch")

    header = team.append_basic_block("part.claim")
    body = team.append_basic_block("part.body")
    end = team.append_basic_block("part.end")
    builder.branch(header)
    builder.position_at_end(header)
    part = builder.atomic_rmw("add", counter, i64(1), "monotonic", name="part")
    builder.cbranch(builder.icmp_signed("<", part, i64(parts), name="part.more"), body, end)
    builder.position_at_end(body)
    builder.call(part_function, [*arguments, part])
    builder.branch(header)
    builder.position_at_end(end)
    builder.ret_void()
