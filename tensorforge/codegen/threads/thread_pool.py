"""The thread pool threaded kernels run on: a few pthreads per compiled model, emitted here in LLVM IR.

    call void @tf.pool.run(i64 task, ptr %context, i64 parts, i64 threads)

runs the module's task number `task` (register_task; `@tf.pool.dispatch` calls it directly: no
function pointers) as `task(context, part, thread)` for every part in [0, parts): the calling thread (thread 0) and
`threads - 1` workers (threads 1...) claim parts from one counter; `run` returns when every part is
done. Unlike a fork-join team (OpenMP's), the caller waits for the parts, not for the workers: a
worker that wakes late, because another process had its core, finds nothing left to claim, and
nobody waited for it. A caller waiting on a claimed part yields its core (sched_yield), so a
worker that the scheduler put on the same core gets to run.

State (globals of the module, one pool per compiled model):
  @tf.pool.counter   i64  generation << 32 | next part to claim   (claims: compare-and-swap)
  @tf.pool.word      i32  the generation, which workers wait on (spin, then futex)
  @tf.pool.sleepers  i32  workers in (or entering) a futex wait: a run makes the wake syscall only
                          then (0.25 us a run here; spinning workers need none)
  @tf.pool.done      i64  parts finished in this generation
  @tf.pool.task, .context, .parts   the job (a task number), written before its generation is published
  @tf.pool.busy      i32  a run in progress: another caller (a second Python thread) runs its parts alone
  @tf.pool.started, .stop, .threads  the workers, created on the first run, joined by tf_pool_shutdown

A claim succeeds only while its generation's job is unfinished, so the job a worker read is the
one it claimed a part of. The workers are created on the first run and live until
`tf_pool_shutdown()`, which the runtime calls before it frees the code (runtime/host.py).
"""

from __future__ import annotations

from llvmlite import ir

from ..llvm.utils import I32, I64, PTR, VOID, alloca_once, declare, for_range, i64
from ..target import Target

MAX_WORKERS = 63
WORKER_SPINS = 20000  # polls of the generation before a worker sleeps on the futex (~20-50 us)
CALLER_SPINS = 2000  # polls of the done count before the caller starts yielding its core
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129
SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
SHUTDOWN = "tf_pool_shutdown"
RUN = "tf.pool.run"
DISPATCH = "tf.pool.dispatch"
TASK_TYPE = ir.FunctionType(VOID, [PTR, I64, I64])  # task(context, part, thread)


TYPES = {"counter": I64, "word": I32, "sleepers": I32, "done": I64, "task": I64, "context": PTR, "parts": I64,
         "busy": I32, "started": I32, "stop": I32, "threads": I32, "handles": ir.ArrayType(I64, MAX_WORKERS)}


def _load(builder: ir.IRBuilder, state: dict, field: str, **kwargs) -> ir.Value:
    return builder.load(state[field], typ=TYPES[field], **kwargs)


def _global(module: ir.Module, name: str, type_: ir.Type) -> ir.GlobalVariable:
    variable = ir.GlobalVariable(module, type_, name)
    variable.linkage = "internal"
    variable.initializer = ir.Constant(type_, None)
    variable.align = 64 if type_ in (I64, I32) else 8
    return variable


def _pause(builder: ir.IRBuilder, target: Target) -> None:
    """A spin-wait hint: `pause` on x86, `yield` on AArch64."""
    if target.arch == "x86_64":
        builder.call(declare(builder.module, "llvm.x86.sse2.pause", VOID, []), [])
    elif target.arch == "aarch64":
        builder.call(declare(builder.module, "llvm.aarch64.hint", VOID, [I32]), [ir.Constant(I32, 1)])


def _spin_then(builder: ir.IRBuilder, target: Target, spins: ir.Value, limit: int, retry: ir.Block,
               back_off) -> None:
    """One more round of a wait loop: a pause while the counter in `spins` is under `limit`, then
    `back_off()` (sleep on the futex, or yield the core) every round; both go back to `retry`."""
    count = builder.load(spins, typ=I64)
    builder.store(builder.add(count, i64(1)), spins)
    spin, slow = builder.append_basic_block("spin"), builder.append_basic_block("back_off")
    builder.cbranch(builder.icmp_unsigned("<", count, i64(limit)), spin, slow)
    builder.position_at_end(spin)
    _pause(builder, target)
    builder.branch(retry)
    builder.position_at_end(slow)
    back_off()
    builder.branch(retry)


def _futex(builder: ir.IRBuilder, target: Target, word: ir.Value, operation: int, value: ir.Value) -> None:
    """syscall(SYS_futex, word, operation, value, NULL). The variadic arguments are all 64-bit: the
    kernel reads whole registers, and a 32-bit value leaves the upper half undefined."""
    syscall = builder.module.globals.get("syscall") or ir.Function(
        builder.module, ir.FunctionType(I64, [I64], var_arg=True), "syscall")
    builder.call(syscall, [i64(SYS_FUTEX[target.arch]), word, i64(operation), value, ir.Constant(PTR, None)])


class _Loop:
    """A `while True` loop whose body decides: builder.branch(loop.head) to go on, to loop.exit to leave."""

    def __init__(self, builder: ir.IRBuilder, name: str):
        function = builder.function
        self.head = function.append_basic_block(f"{name}.head")
        self.exit = function.append_basic_block(f"{name}.exit")
        builder.branch(self.head)
        builder.position_at_end(self.head)


def _claim_parts(builder: ir.IRBuilder, state: dict, generation: ir.Value, thread: ir.Value) -> None:
    """Claim and run parts of `generation` until none is left (or a newer generation is published)."""
    loop = _Loop(builder, "claim")
    counter = builder.load_atomic(state["counter"], "acquire", 8, name="counter", typ=TYPES["counter"])
    current = builder.trunc(builder.lshr(counter, i64(32)), I32, name="counter.generation")
    run = builder.append_basic_block("claim.check")
    builder.cbranch(builder.icmp_unsigned("==", current, generation), run, loop.exit)
    builder.position_at_end(run)
    part = builder.and_(counter, i64(0xFFFFFFFF), name="part")
    parts = _load(builder, state, "parts", name="parts")
    task = _load(builder, state, "task", name="task")
    context = _load(builder, state, "context", name="context")
    take = builder.append_basic_block("claim.take")
    builder.cbranch(builder.icmp_unsigned("<", part, parts), take, loop.exit)
    builder.position_at_end(take)
    exchanged = builder.cmpxchg(state["counter"], counter, builder.add(counter, i64(1)), "acq_rel", "acquire")
    won = builder.extract_value(exchanged, 1, name="claimed")
    execute = builder.append_basic_block("claim.run")
    builder.cbranch(won, execute, loop.head)
    builder.position_at_end(execute)
    builder.call(state["dispatch"], [task, context, part, thread])
    builder.atomic_rmw("add", state["done"], i64(1), "release")
    builder.branch(loop.head)
    builder.position_at_end(loop.exit)


def register_task(module: ir.Module, task: ir.Function) -> int:
    """The number of `task` (a TASK_TYPE function) in the module's dispatch (finish_pool emits it)."""
    tasks = module.__dict__.setdefault("_tf_pool_tasks", [])
    tasks.append(task)
    return len(tasks) - 1


def finish_pool(module: ir.Module) -> None:
    """Emit `@tf.pool.dispatch(task, context, part, thread)`: a switch calling each registered task."""
    dispatch = module.globals.get(DISPATCH)
    if dispatch is None:
        return
    task, context, part, thread = dispatch.args
    builder = ir.IRBuilder(dispatch.append_basic_block("entry"))
    done = dispatch.append_basic_block("done")
    switch = builder.switch(task, done)
    for number, function in enumerate(module.__dict__.get("_tf_pool_tasks", [])):
        block = dispatch.append_basic_block(f"task.{number}")
        switch.add_case(i64(number), block)
        builder.position_at_end(block)
        builder.call(function, [context, part, thread])
        builder.branch(done)
    builder.position_at_end(done)
    builder.ret_void()


def _worker(module: ir.Module, state: dict, target: Target) -> ir.Function:
    worker = ir.Function(module, ir.FunctionType(PTR, [PTR]), "tf.pool.worker")
    worker.linkage = "internal"
    builder = ir.IRBuilder(worker.append_basic_block("entry"))
    thread = builder.ptrtoint(worker.args[0], I64, name="thread")
    # Stack slots in the entry block only: an alloca inside the wait loop took 16 more bytes of
    # the worker's stack every generation, and the 8 MiB stack overflowed after ~500,000 runs.
    seen_slot = builder.alloca(I32, name="seen")
    spins = builder.alloca(I64, name="spins")
    builder.store(builder.load_atomic(state["word"], "acquire", 4, typ=TYPES["word"]), seen_slot)

    outer = _Loop(builder, "wait")
    seen = builder.load(seen_slot, typ=I32)
    builder.store(i64(0), spins)
    poll = _Loop(builder, "poll")
    stop = builder.load_atomic(state["stop"], "acquire", 4, typ=TYPES["stop"])
    running = builder.append_basic_block("poll.running")  # stop first: a worker that starts after the
    builder.cbranch(builder.icmp_unsigned("!=", stop, ir.Constant(I32, 0)), outer.exit, running)  # shutdown
    builder.position_at_end(running)
    word = builder.load_atomic(state["word"], "acquire", 4, name="word", typ=TYPES["word"])
    same = builder.icmp_unsigned("==", word, seen)
    waiting = builder.append_basic_block("poll.same")
    builder.cbranch(same, waiting, poll.exit)
    builder.position_at_end(waiting)

    def sleep() -> None:  # counted first: a run that publishes after this sees it and wakes us; one
        # that published before it changed the word, and the futex wait returns at once
        builder.atomic_rmw("add", state["sleepers"], ir.Constant(I32, 1), "seq_cst")
        _futex(builder, target, state["word"], FUTEX_WAIT_PRIVATE, builder.zext(seen, I64))
        builder.atomic_rmw("sub", state["sleepers"], ir.Constant(I32, 1), "seq_cst")

    _spin_then(builder, target, spins, WORKER_SPINS, poll.head, sleep)

    builder.position_at_end(poll.exit)
    builder.store(word, seen_slot)
    _claim_parts(builder, state, word, thread)
    builder.branch(outer.head)
    builder.position_at_end(outer.exit)
    builder.ret(ir.Constant(PTR, None))
    return worker


def _start_workers(builder: ir.IRBuilder, state: dict, worker: ir.Function, workers: ir.Value) -> None:
    """Create `workers` pthreads (once per module); their handles go in @tf.pool.handles."""
    module = builder.module
    started = _load(builder, state, "started")
    create = builder.append_basic_block("start.create")
    after = builder.append_basic_block("start.done")
    builder.cbranch(builder.icmp_unsigned("==", started, ir.Constant(I32, 0)), create, after)
    builder.position_at_end(create)
    pthread_create = declare(module, "pthread_create", I32, [PTR, PTR, PTR, PTR])
    with for_range(builder, workers, "start", unroll=False) as index:
        handle = builder.gep(state["handles"], [ir.Constant(I32, 0), index], inbounds=True)
        builder.call(pthread_create, [handle, ir.Constant(PTR, None), worker,
                                      builder.inttoptr(builder.add(index, i64(1)), PTR)])
    builder.store(builder.trunc(workers, I32), state["threads"])
    builder.store(ir.Constant(I32, 1), state["started"])
    builder.branch(after)
    builder.position_at_end(after)


def pool_run(module: ir.Module, target: Target) -> ir.Function:
    """`void @tf.pool.run(ptr task, ptr context, i64 parts, i64 threads)` and the pool behind it
    (defined once per module, with the exported `tf_pool_shutdown`)."""
    existing = module.globals.get(RUN)
    if existing is not None:
        return existing
    state = {name: _global(module, f"tf.pool.{name}", type_) for name, type_ in TYPES.items()}
    state["dispatch"] = ir.Function(module, ir.FunctionType(VOID, [I64, PTR, I64, I64]), DISPATCH)
    state["dispatch"].linkage = "internal"
    worker = _worker(module, state, target)

    run = ir.Function(module, ir.FunctionType(VOID, [I64, PTR, I64, I64]), RUN)
    run.linkage = "internal"
    task, context, parts, threads = run.args
    for argument, name in zip(run.args, ("task", "context", "parts", "threads")):
        argument.name = name
    builder = ir.IRBuilder(run.append_basic_block("entry"))
    exchanged = builder.cmpxchg(state["busy"], ir.Constant(I32, 0), ir.Constant(I32, 1), "acquire", "monotonic")
    alone, shared = builder.append_basic_block("alone"), builder.append_basic_block("shared")
    builder.cbranch(builder.extract_value(exchanged, 1), shared, alone)

    builder.position_at_end(alone)  # another caller has the workers: every part on this thread
    with for_range(builder, parts, "alone", unroll=False) as index:
        builder.call(state["dispatch"], [task, context, index, i64(0)])
    builder.ret_void()

    builder.position_at_end(shared)
    workers = builder.sub(threads, i64(1))
    workers = builder.select(builder.icmp_unsigned("<", workers, i64(MAX_WORKERS)), workers, i64(MAX_WORKERS))
    _start_workers(builder, state, worker, workers)
    builder.store(task, state["task"])
    builder.store(context, state["context"])
    builder.store(parts, state["parts"])
    builder.store(i64(0), state["done"])
    generation = builder.add(_load(builder, state, "word"), ir.Constant(I32, 1), name="generation")
    builder.store_atomic(builder.shl(builder.zext(generation, I64), i64(32)), state["counter"], "release", 8)
    builder.store_atomic(generation, state["word"], "seq_cst", 4)  # before the sleepers are read
    sleepers = builder.load_atomic(state["sleepers"], "seq_cst", 4, typ=TYPES["sleepers"], name="sleepers")
    with builder.if_then(builder.icmp_unsigned("!=", sleepers, ir.Constant(I32, 0))):
        _futex(builder, target, state["word"], FUTEX_WAKE_PRIVATE, i64(MAX_WORKERS))
    _claim_parts(builder, state, generation, i64(0))

    spins = alloca_once(builder, I64, "spins")
    builder.store(i64(0), spins)
    wait = _Loop(builder, "finish")
    done = builder.load_atomic(state["done"], "acquire", 8, typ=TYPES["done"])
    pending = builder.append_basic_block("finish.pending")
    builder.cbranch(builder.icmp_unsigned("<", done, parts), pending, wait.exit)
    builder.position_at_end(pending)
    _spin_then(builder, target, spins, CALLER_SPINS, wait.head,
               lambda: builder.call(declare(module, "sched_yield", I32, []), []))
    builder.position_at_end(wait.exit)
    builder.store_atomic(ir.Constant(I32, 0), state["busy"], "release", 4)
    builder.ret_void()

    _shutdown(module, state, target)
    return run


def _shutdown(module: ir.Module, state: dict, target: Target) -> None:
    """`void tf_pool_shutdown()`: stop and join the workers (before the code is unloaded)."""
    function = ir.Function(module, ir.FunctionType(VOID, []), SHUTDOWN)
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    started = _load(builder, state, "started")
    join, done = builder.append_basic_block("join"), builder.append_basic_block("done")
    builder.cbranch(builder.icmp_unsigned("!=", started, ir.Constant(I32, 0)), join, done)
    builder.position_at_end(join)
    builder.store_atomic(ir.Constant(I32, 1), state["stop"], "release", 4)
    generation = builder.add(_load(builder, state, "word"), ir.Constant(I32, 1))
    builder.store_atomic(generation, state["word"], "release", 4)
    _futex(builder, target, state["word"], FUTEX_WAKE_PRIVATE, i64(MAX_WORKERS))
    pthread_join = declare(module, "pthread_join", I32, [I64, PTR])
    with for_range(builder, builder.zext(_load(builder, state, "threads"), I64), "join", unroll=False) as index:
        handle = builder.load(builder.gep(state["handles"], [ir.Constant(I32, 0), index], inbounds=True), typ=I64)
        builder.call(pthread_join, [handle, ir.Constant(PTR, None)])
    builder.store(ir.Constant(I32, 0), state["started"])
    builder.store_atomic(ir.Constant(I32, 0), state["stop"], "release", 4)
    builder.branch(done)
    builder.position_at_end(done)
    builder.ret_void()
