"""Threads: a node's work cut into parts, run by an OpenMP team through libgomp's `GOMP_parallel`.

A node big enough to share (its lowering's `parts`, with MIN_PARALLEL_FLOPS) keeps its usual
function, which tf_run calls as for any node; that function hands its arguments to a team and
waits for it:

    void @"conv2d.x"(ptr %x, ptr %w, ptr %out, ptr %scratch)
      store the arguments in %context (an array of pointers on the stack)
      call @GOMP_parallel(ptr @"conv2d.x.team", ptr %context, i32 threads, i32 0)   ; returns when all are done
    void @"conv2d.x.team"(ptr %context)                                              ; every thread of the team
      tid, team = omp_get_thread_num(), omp_get_num_threads()
      for part = tid; part < parts; part += team:
          call @"conv2d.x.part"(x, w, out, scratch + tid * scratch_bytes, part)     ; the kernel's loops

Parts are fixed at compile time (the kernel splits its loops by `kernel.part` of `kernel.parts`),
and a team smaller than asked for (a call from inside another parallel region gets a team of one)
still does every part. Each thread has its own slice of the node's scratch. libgomp keeps its
threads between calls, so a call costs a wake-up, not a thread creation; no Python runs in the loop.
"""

from __future__ import annotations

from llvmlite import ir

from .llvm_utils import I32, I64, PTR, VOID, declare, i64

# Work below this many flops (or element reads and writes) stays on one thread: waking a team
# costs a few microseconds. Chosen with benchmarks/bench_models.py (docs/architecture.md).
MIN_PARALLEL_FLOPS = 1 << 21


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

    Each thread passes its own `scratch_bytes` slice of the scratch (the node's scratch holds one
    per thread of the team).
    """
    module = function.module
    count = len(function.args)
    team = ir.Function(module, ir.FunctionType(VOID, [PTR]), f"{function.name}.team")
    team.linkage = "internal"
    team.attributes.add("nounwind")

    caller = ir.IRBuilder(function.append_basic_block("entry"))
    context = caller.alloca(ir.ArrayType(PTR, count), name="context")
    for index, argument in enumerate(function.args):
        slot = caller.gep(context, [ir.Constant(I32, 0), ir.Constant(I32, index)], inbounds=True)
        caller.store(argument, slot)
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
    thread = builder.sext(builder.call(declare(module, "omp_get_thread_num", I32, []), [], name="tid"), I64)
    size = builder.sext(builder.call(declare(module, "omp_get_num_threads", I32, []), [], name="team"), I64)
    if scratch_bytes:
        arguments[-1] = builder.gep(arguments[-1], [builder.mul(thread, i64(scratch_bytes))], inbounds=True,
                                    source_etype=ir.IntType(8), name="thread.scratch")

    preheader = builder.block
    header = team.append_basic_block("part.header")
    body = team.append_basic_block("part.body")
    end = team.append_basic_block("part.end")
    builder.branch(header)
    builder.position_at_end(header)
    part = builder.phi(I64, name="part")
    part.add_incoming(thread, preheader)
    builder.cbranch(builder.icmp_signed("<", part, i64(parts), name="part.more"), body, end)
    builder.position_at_end(body)
    builder.call(part_function, [*arguments, part])
    following = builder.add(part, size, name="part.next", flags=("nsw",))
    part.add_incoming(following, builder.block)
    builder.branch(header)
    builder.position_at_end(end)
    builder.ret_void()
