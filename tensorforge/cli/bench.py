"""Interleaved timing of engines on one input, for `tensorforge bench`.

    samples = interleaved({"tensorforge": call, "onnxruntime 1 thread": other}, rounds=15)
    median(samples["tensorforge"]), paired_ratio(samples, "onnxruntime 1 thread", "tensorforge")

Each round runs every engine once, in a fresh random order, after a short sleep (the previous
engine's spinning thread pool would otherwise hold a core). A sample is the mean time of a block
of calls at least `min_seconds` long. Both engines run in this one process: benchmarks/ runs each
in a process of its own for the published figures.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from tqdm import tqdm


def block_size(fn: Callable[[], object], min_seconds: float = 0.02) -> int:
    """How many calls make one sample of at least `min_seconds`.

    Sized from the mean of the calls that fill a quarter of `min_seconds`, after three calls that
    start thread pools and fault in pages: sized from one call (before 2026-12-03, second session),
    a slow one made blocks of a few calls, each dominated by waking up after the sleep."""
    for _ in range(3):
        fn()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < min_seconds / 4:
        fn()
        calls += 1
    once = max((time.perf_counter() - start) / calls, 1e-7)
    return max(1, int(min_seconds / once))


def interleaved(engines: dict[str, Callable[[], object]], rounds: int, verbose: bool = True,
                min_seconds: float = 0.02, sleep: float = 0.05, desc: str = "timing") -> dict[str, list[float]]:
    """Seconds per call of each engine, one sample per round, the engines in a random order each round
    (benchmarks/harness.py times with this too)."""
    blocks = {name: block_size(fn, min_seconds) for name, fn in engines.items()}
    samples: dict[str, list[float]] = {name: [] for name in engines}
    order = list(engines)
    for _ in tqdm(range(rounds), desc=desc, disable=not verbose, leave=False):
        random.shuffle(order)
        for name in order:
            fn, count = engines[name], blocks[name]
            time.sleep(sleep)
            start = time.perf_counter()
            for _ in range(count):
                fn()
            samples[name].append((time.perf_counter() - start) / count)
    return samples


def paired_ratio(samples: dict[str, list[float]], engine: str, reference: str) -> float:
    """The median over rounds of engine's time / reference's time in the same round: steadier than
    the ratio of medians when the machine's speed drifts between rounds."""
    return statistics.median(a / b for a, b in zip(samples[engine], samples[reference], strict=True))


def format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds:.2f} s"


def onnxruntime_session(model: str | bytes, threads: int, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session of `model` (a path or the model's bytes) with `threads` intra-op threads
    (inter-op 1, sequential, every graph optimization): how the command line and the benchmarks run it.
    `profile_prefix`: ONNX Runtime's own per-node profiling on, its JSON written at that path prefix
    (`session.end_profiling()` returns the file)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("--against onnxruntime needs the onnxruntime package: pip install "
                          "'tensorforge[onnx]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
