"""Thread safety on the host: per-thread workspaces (what the runtime does) against one lock per model.

    python benchmarks/thread_safety.py

For a small model (32 floats), a medium one (64K floats, fits in L2) and a large one (4M floats,
16 MB through the workspace) it prints the single-thread cost of one call, and the throughput of
8 threads calling the same model, (a) with the runtime's per-thread workspaces (threading.local),
and (b) with every call under a lock (the alternative design: one shared workspace). The model is
the hand-written stand-in tf_run of tests/runtime_standin.py; run this on a quiet machine.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from runtime_standin import affine_artifact  # noqa: E402

from tensorforge.runtime import CompiledModel  # noqa: E402

THREADS = 8


def per_call_us(call, x: np.ndarray, seconds: float) -> float:
    best = float("inf")
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            for _ in range(100):
                call(x)
            count += 100
        best = min(best, (time.perf_counter() - start) / count)
    return best * 1e6


def threaded_calls_per_second(call, x: np.ndarray, calls_per_thread: int) -> float:
    barrier = threading.Barrier(THREADS + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(calls_per_thread):
            call(x)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return THREADS * calls_per_thread / (time.perf_counter() - start)


def main() -> None:
    for label, shape, calls in [("small f32[4,8]", (4, 8), 20000), ("medium f32[256,256]", (256, 256), 2000),
                                ("large f32[2048,2048]", (2048, 2048), 40)]:
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        with CompiledModel(affine_artifact("host", shape)) as cm:
            lock = threading.Lock()

            def locked(array, cm=cm, lock=lock):
                with lock:
                    return cm(array)

            seconds = 1.0 if calls > 100 else 3.0
            print(f"{label}:")
            for name, call in [("per-thread workspace", cm), ("lock around each call", locked)]:
                single = per_call_us(call, x, seconds)
                rate = threaded_calls_per_second(call, x, calls)
                print(f"  {name:<24} 1 thread {single:9.2f} us/call   {THREADS} threads {rate:10.0f} calls/s "
                      f"({1e6 / rate:9.2f} us/call)")


if __name__ == "__main__":
    main()
