"""Threads (codegen/threads/parallel.py): which kernels split, what a split covers, and the team runtime.

The numerics of split GEMMs and convolutions are property-tested in test_codegen_gemm.py; here:
the partition arithmetic, the size threshold, the thread count option, and that a team smaller
than asked for (OMP_THREAD_LIMIT=1) still computes every part.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time

import llvmlite.binding as llvm
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorforge as tf
from tensorforge import ir
from tensorforge.codegen import build
from tensorforge.codegen.gemm.gemm import GemmSplit
from tensorforge.codegen.gemm.tiling import gemm_tiling
from tensorforge.codegen.target import Target
from tensorforge.codegen.threads import parallel
from tensorforge.codegen.threads.parallel import MIN_PARALLEL_FLOPS, split_parts, uses_threads
from tensorforge.models import cifar_cnn, mlp
from tensorforge.runtime import CompiledModel


@given(st.integers(0, 10_000), st.integers(1, 64))
def test_parts_cover_every_unit_once(units, threads):
    parts, per_part = split_parts(units, threads)
    assert 1 <= parts <= max(1, min(threads, units))
    last = units - per_part * (parts - 1)
    assert (parts == 1 and per_part == max(units, 1)) or 1 <= last <= per_part


def even_bounds_of(parts: int, units: int, total: int, unit_size: int) -> list[tuple[int, int]]:
    """(first, count) of every part from parallel.even_bounds, emitted in a JIT function of the part."""
    from llvmlite import ir as llvm_ir

    from tensorforge.codegen.llvm.utils import I64, PTR, VOID, i64
    from tensorforge.codegen.target import initialize_llvm

    initialize_llvm()
    host = Target.parse("host")
    module = llvm_ir.Module("bounds")
    module.triple = host.triple
    function = llvm_ir.Function(module, llvm_ir.FunctionType(VOID, [I64, PTR]), "bounds")
    builder = llvm_ir.IRBuilder(function.append_basic_block("entry"))
    first, count = parallel.even_bounds(builder, function.args[0], parts, units, total, unit_size, "b")
    builder.store(first, function.args[1])
    builder.store(count, builder.gep(function.args[1], [i64(1)], source_etype=I64))
    builder.ret_void()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(str(module)), host.target_machine())
    try:
        engine.finalize_object()
        entry = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(engine.get_function_address("bounds"))
        result = []
        for part in range(parts):
            out = np.zeros(2, np.int64)
            entry(part, out.ctypes.data)
            result.append((int(out[0]), int(out[1])))
        return result
    finally:
        engine.close()


@settings(max_examples=60)
@given(st.integers(1, 40), st.integers(1, 64), st.data())
def test_even_bounds_give_each_part_a_fair_share_of_the_elements(units, unit_size, data):
    """Every unit once, in order, at least one per part; with two or more units a part, each part's
    elements lie within a unit of total / parts, a short last unit counted by its elements."""
    parts = data.draw(st.integers(2, max(2, units)))
    total = (units - 1) * unit_size + data.draw(st.integers(1, unit_size))
    if units < parts:
        return
    bounds = even_bounds_of(parts, units, total, unit_size)
    assert [first for first, _ in bounds] == [sum(count for _, count in bounds[:k]) for k in range(parts)]
    assert sum(count for _, count in bounds) == units and min(count for _, count in bounds) >= 1
    if units >= 2 * parts:
        elements = [min(total, (first + count) * unit_size) - first * unit_size for first, count in bounds]
        assert max(abs(e - total / parts) for e in elements) <= unit_size


def test_a_short_last_panel_goes_with_the_larger_share():
    """196 pixels in panels of 32 (6 and a panel of 4): 3 + 3 panels, 96 and 100 pixels (equal counts
    would be 4 + 3: 128 and 68)."""
    assert even_bounds_of(2, 7, 196, 32) == [(0, 3), (3, 4)]
    assert even_bounds_of(2, 2, 49, 32) == [(0, 1), (1, 1)]


@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(2, 8), st.booleans())
def test_gemm_split_cuts_rows_evenly_and_columns_along_whole_panels(rows, columns, threads, a_constant):
    tiling = gemm_tiling(Target.parse("host"))
    split = GemmSplit.of(tiling, (rows, 1, columns), threads, a_constant)
    extent = columns if split.axis == "columns" else rows
    # columns in whole NR panels; rows one by one, unless A is packed in MR-row panels at compile time
    assert split.unit == (tiling.columns if split.axis == "columns" else tiling.rows if a_constant else 1)
    assert split.parts <= threads
    last = extent - split.per_part * split.unit * (split.parts - 1)
    assert 0 < last <= split.per_part * split.unit
    if split.axis == "rows" and not a_constant:  # even: ceil(rows / parts) rows in every part but the last
        assert split.per_part == -(-rows // split.parts) and split.per_part - last <= split.parts - 1


def test_a_streamed_weight_is_split_by_columns():
    """A constant b of COLUMN_SPLIT_BYTES or more goes by columns once each thread gets two column panels,
    though its rows would have split; a smaller b, more than COLUMN_SPLIT_ROWS rows, a constant a, or
    too few column panels keep rows."""
    from tensorforge.codegen.gemm.gemm import COLUMN_SPLIT_BYTES, COLUMN_SPLIT_ROWS

    tiling = gemm_tiling(Target.parse("host"))
    shape = (128, 768, 4 * tiling.columns)
    assert GemmSplit.of(tiling, shape, 2).axis == "rows"
    assert GemmSplit.of(tiling, shape, 2, stream_bytes=COLUMN_SPLIT_BYTES).axis == "columns"
    assert GemmSplit.of(tiling, shape, 2, stream_bytes=COLUMN_SPLIT_BYTES - 1).axis == "rows"
    assert GemmSplit.of(tiling, shape, 2, a_constant=True, stream_bytes=COLUMN_SPLIT_BYTES).axis == "rows"
    assert GemmSplit.of(tiling, shape, 3, stream_bytes=COLUMN_SPLIT_BYTES).axis == "rows"  # 4 panels < 2 x 3
    many_rows = (COLUMN_SPLIT_ROWS + 1, 768, 4 * tiling.columns)
    assert GemmSplit.of(tiling, many_rows, 2, stream_bytes=COLUMN_SPLIT_BYTES).axis == "rows"


@pytest.mark.parametrize("target, threads", [("host", 2), ("host", 3), ("armv8", 2)])
def test_a_linear_split_by_columns_matches_the_reference(target, threads):
    """A 48-row linear with a 1.2 MiB weight (bias, relu, residual; a last, narrower column panel) split
    by columns, against the reference interpreter."""
    from codegen_harness import compile_and_run

    from tensorforge.codegen.ops.matmul import gemm_parts

    rng = np.random.default_rng(threads)
    depth, columns = 512, 600
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((48, depth), ir.DType.f32))
    skip = graph.add_input("skip", ir.TensorType((48, columns), ir.DType.f32))
    weight = graph.constant((rng.standard_normal((depth, columns)) / 16).astype(np.float32), "w")
    bias = graph.constant(rng.standard_normal(columns).astype(np.float32), "b")
    graph.outputs = [graph.call("linear", [x, weight, bias, skip], {"activation": "relu", "residual": True})]
    (node,) = graph.op_nodes()
    tiling = gemm_tiling(Target.parse(target))
    assert GemmSplit.of(tiling, (48, depth, columns), threads, stream_bytes=depth * columns * 4).axis == "columns"
    assert gemm_parts(node, Target.parse(target), threads) == threads
    inputs = [rng.standard_normal(shape).astype(np.float32) for shape in ((48, depth), (48, columns))]
    (actual,) = compile_and_run(graph, *inputs, target=target, threads=threads)
    np.testing.assert_allclose(actual, ir.interpret(graph, *inputs), rtol=1e-4, atol=1e-4)


def linear_graph(rows: int, depth: int, columns: int) -> ir.Graph:
    rng = np.random.default_rng(0)
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((rows, depth), ir.DType.f32))
    w = graph.constant(rng.standard_normal((depth, columns)).astype(np.float32), "w")
    graph.outputs = [graph.call("linear", [x, w])]
    return graph


@pytest.mark.parametrize("depth, columns, per_thread", [(256, 256, 1), (512, 1024, 2), (1024, 4096, 4)])
def test_a_weight_stream_takes_more_parts_per_thread_only_when_each_part_streams_a_mib(depth, columns, per_thread):
    """Batch-1 linears of 256 KiB, 2 MiB and 16 MiB on two threads: 1, 2 and 4 parts per thread."""
    from tensorforge.codegen.ops.matmul import gemm_parts
    from tensorforge.codegen.threads.parallel import STREAM_PART_BYTES, stream_parts_per_thread

    weight_bytes = depth * columns * 4
    assert stream_parts_per_thread(weight_bytes) == per_thread == max(1, min(4, weight_bytes // STREAM_PART_BYTES))
    (node,) = linear_graph(1, depth, columns).op_nodes()
    assert gemm_parts(node, Target.parse("host"), 2) == 2 * per_thread


def test_small_work_stays_on_one_thread():
    graph = linear_graph(4, 32, 16)
    assert 2 * 4 * 32 * 16 < MIN_PARALLEL_FLOPS
    artifact = build(graph, "host", threads=2)
    assert artifact.threads == 1 and not uses_threads(artifact.llvm_ir)


def test_big_work_is_shared_and_one_thread_means_none():
    graph = linear_graph(64, 784, 256)
    assert 2 * 64 * 784 * 256 >= MIN_PARALLEL_FLOPS
    threaded = build(graph, "host", threads=2)
    assert threaded.threads == 2 and uses_threads(threaded.llvm_ir)
    serial = build(graph, "host", threads=1)
    assert serial.threads == 1 and not uses_threads(serial.llvm_ir)
    assert threaded.workspace_bytes >= serial.workspace_bytes  # a scratch per thread


def blocks_in_loops(function) -> set[str]:
    """Names of the basic blocks of an llvmlite binding function that lie on a cycle of its CFG."""
    successors = {}
    for block in function.blocks:
        terminator = list(block.instructions)[-1]
        successors[block.name] = [operand.name for operand in terminator.operands
                                  if operand.value_kind == llvm.ValueKind.basic_block]
    looped = set()
    for start in successors:
        seen, stack = set(), list(successors[start])
        while stack:
            name = stack.pop()
            if name == start:
                looped.add(start)
                break
            if name not in seen:
                seen.add(name)
                stack.extend(successors[name])
    return looped


@pytest.mark.parametrize("target", ["host", "armv8"])
def test_no_stack_slot_is_taken_inside_a_loop(target):
    """No alloca of the optimized module is inside a loop. One in the pool worker's wait loop took
    stack every generation: the worker's stack overflowed (a segfault) after ~500,000 threaded
    calls of a model. The profiling build is checked too."""
    graph = linear_graph(64, 784, 256)
    for artifact in (build(graph, target, threads=2), build(graph, target, threads=2, profile=True)):
        assert uses_threads(artifact.llvm_ir)
        for function in artifact.module().functions:
            looped = blocks_in_loops(function)
            for block in function.blocks:
                allocas = [str(i).strip() for i in block.instructions if i.opcode == "alloca"]
                assert block.name not in looped or not allocas, (function.name, block.name, allocas)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_thread_count_must_be_a_positive_int(threads):
    with pytest.raises(ValueError, match="threads"):
        build(linear_graph(2, 2, 2), "host", threads=threads)


@pytest.mark.parametrize("model, shape", [(mlp, (64, 784)), (cifar_cnn, (8, 3, 32, 32)), (cifar_cnn, (1, 3, 32, 32))],
                         ids=["mlp-b64", "cnn-b8", "cnn-b1"])
def test_models_with_two_threads_match_the_reference(model, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    result = tf.check(model(), x, threads=2)  # raises CheckError beyond rtol 1e-4, atol 1e-5
    stage, max_abs, _ = result.stages[-1]
    assert "codegen" in stage or "host" in stage, result
    assert max_abs < 1e-3


def test_concurrent_calls_share_the_pool_or_run_alone():
    """Four Python threads call one threaded model at once: one run has the pool, the others run
    their parts on their own thread (threads/thread_pool.py); every result is right."""
    x = np.random.default_rng(2).standard_normal((4, 3, 32, 32)).astype(np.float32)
    model = cifar_cnn()
    expected = tf.interpret(tf.trace(model, x), x)
    with tf.compile(model, x, threads=3) as cm:
        assert cm.artifact.threads == 3
        results, errors = [], []

        def call() -> None:
            try:
                for _ in range(5):
                    results.append(cm(x))
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        workers = [threading.Thread(target=call) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert not errors and len(results) == 20
    for result in results:
        np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)


def test_closing_a_model_joins_its_pool_threads():
    def threads_now() -> int:
        return len(os.listdir("/proc/self/task"))

    x = np.random.default_rng(3).standard_normal((64, 784)).astype(np.float32)
    before = threads_now()
    cm = tf.compile(mlp(), x, threads=3)
    cm(x)
    assert threads_now() == before + 2  # the caller is thread 0 of the pool; two workers
    cm.close()
    del cm
    gc.collect()
    assert threads_now() == before


def test_a_run_wakes_sleeping_workers():
    """Calls spaced further apart than a worker spins (WORKER_SPINS polls) find the workers asleep
    on the futex: a run makes the wake syscall only when one is counted asleep, and it must still
    wake them. A worker that is never woken gets no CPU time (the caller then claims every part,
    so the results alone would not show it); here the worker's CPU time grows by most of its parts'
    share of the work."""
    def cpu_ticks(task: str) -> int:
        fields = open(f"/proc/self/task/{task}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks

    x = np.random.default_rng(4).standard_normal((64, 3, 32, 32)).astype(np.float32)
    before = set(os.listdir("/proc/self/task"))
    with tf.compile(cifar_cnn(), x, threads=2) as cm:
        expected = cm(x)
        (worker,) = set(os.listdir("/proc/self/task")) - before
        start = cpu_ticks(worker)
        for _ in range(20):
            time.sleep(0.02)  # the worker goes to sleep
            np.testing.assert_array_equal(cm(x), expected)
        worker_ticks = cpu_ticks(worker) - start
    # 20 calls of ~4 ms on two cores: ~40 ms of parts for the worker, 4 ticks at 100 a second
    assert worker_ticks >= 2, worker_ticks


def map_graph(op: str, shape: tuple[int, ...], other: tuple[int, ...]) -> ir.Graph:
    """One elementwise node on x[shape] (and, for add, y[other] broadcast against it)."""
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType(shape, ir.DType.f32))
    if op == "add":
        y = graph.add_input("y", ir.TensorType(other, ir.DType.f32))
        graph.outputs = [graph.call("add", [x, y])]
    elif op == "quantize":
        scale, zero = graph.constant(np.float32(0.05), "scale"), graph.constant(np.int32(3), "zero")
        graph.outputs = [graph.call("quantize", [x, scale, zero], {"dtype": "i8"})]
    else:
        graph.outputs = [graph.call(op, [x])]
    return graph


def test_elementwise_maps_split_by_size_and_cost():
    from tensorforge.codegen.ops.elementwise import elementwise_parts

    host = Target.parse("host")
    assert elementwise_parts(map_graph("add", (512, 512), (512,)).outputs[0], host, 2) == 2
    assert elementwise_parts(map_graph("add", (64, 784), (784,)).outputs[0], host, 2) == 1  # 50k adds: too little
    assert elementwise_parts(map_graph("quantize", (64, 784), ()).outputs[0], host, 2) == 2  # 50k divisions
    assert elementwise_parts(map_graph("quantize", (64, 784), ()).outputs[0], host, 1) == 1


@given(st.sampled_from(["add", "quantize", "gelu", "exp"]), st.lists(st.integers(1, 9), min_size=1, max_size=3),
       st.integers(0, 7), st.integers(2, 5))
def test_split_maps_equal_the_unsplit_map_bit_for_bit(op, shape, mask, threads):
    """Every element is computed once, by the same code: a split map equals the one-thread map
    exactly, for any shape, broadcast pattern (bits of `mask` pick the axes y keeps) and team."""
    shape = tuple(shape)
    other = tuple(extent if mask >> axis & 1 else 1 for axis, extent in enumerate(shape))
    graph = map_graph(op, shape, other)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(value.shape).astype(np.float32) * 4 for value in graph.inputs]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parallel, "MIN_PARALLEL_FLOPS", 4)  # split even these small maps
        split = build(graph, "host", threads=threads)
    whole = build(graph, "host", threads=1)
    assert uses_threads(split.llvm_ir) == (np.prod(shape) >= 2)  # a coalesced outer axis of 2+ splits
    with CompiledModel(split) as a, CompiledModel(whole) as b:
        np.testing.assert_array_equal(a(*inputs), b(*inputs))
        np.testing.assert_allclose(b(*inputs), tf.interpret(graph, *inputs), rtol=1e-5, atol=1e-6)
