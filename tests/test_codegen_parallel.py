"""Threads (codegen/parallel.py): which kernels split, what a split covers, and the team runtime.

The numerics of split GEMMs and convolutions are property-tested in test_codegen_gemm.py; here:
the partition arithmetic, the size threshold, the thread count option, and that a team smaller
than asked for (OMP_THREAD_LIMIT=1) still computes every part.
"""

from __future__ import annotations

import gc
import os
import threading

import llvmlite.binding as llvm
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorforge as tf
from tensorforge import ir
from tensorforge.codegen import build
from tensorforge.codegen.emit_gemm import GemmSplit
from tensorforge.codegen.parallel import MIN_PARALLEL_FLOPS, split_parts, uses_threads
from tensorforge.codegen.target import Target
from tensorforge.codegen.tiling import gemm_tiling
from tensorforge.models import cifar_cnn, mlp


@given(st.integers(0, 10_000), st.integers(1, 64))
def test_parts_cover_every_unit_once(units, threads):
    parts, per_part = split_parts(units, threads)
    assert 1 <= parts <= max(1, min(threads, units))
    last = units - per_part * (parts - 1)
    assert (parts == 1 and per_part == max(units, 1)) or 1 <= last <= per_part


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
    from tensorforge.codegen.emit_matmul import gemm_parts
    from tensorforge.codegen.parallel import STREAM_PART_BYTES, stream_parts_per_thread

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
    their parts on their own thread (thread_pool.py); every result is right."""
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
