"""Matrix-vector product 1x768 @ 768x3072 (a decoder's MLP at batch 1) against the memory bandwidth.

    python benchmarks/bench_matvec.py [--rounds 15] [--quiet]

The weight matrix (9.4 MB) is read once per call, so the achievable speed is the machine's memory
bandwidth. The bandwidth is measured here, in the same run, before and after the timings, with as
many threads as the compiled model uses: tensorforge.runtime.machine_peaks (vector loads summing a
256 MiB buffer, one slice per thread; the best of the two). Our figure is the weight bytes over the
median time of a call; numpy's (OpenBLAS sgemv, all cores) is measured beside it. Several weight
matrices are cycled through so the 9.4 MB does not sit in the cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SLEEP_AFTER_THREAD_POOLS, format_time, measure  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge.runtime.machine import machine_peaks  # noqa: E402

COPIES = 8  # distinct weight matrices, 75 MB together: more than the caches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 768), dtype=np.float32)
    weights = [rng.standard_normal((768, 3072), dtype=np.float32) / 28 for _ in range(COPIES)]
    models = [tf.compile(lambda x, w=w: x @ w, x, target="host") for w in weights]
    for model, w in zip(models, weights):
        np.testing.assert_allclose(model(x), x @ w, rtol=1e-4, atol=1e-4)
    state = {"ours": 0, "numpy": 0}

    def ours():
        state["ours"] = (state["ours"] + 1) % COPIES
        return models[state["ours"]](x)

    def numpy_matvec():
        state["numpy"] = (state["numpy"] + 1) % COPIES
        return x @ weights[state["numpy"]]

    threads = models[0].artifact.threads
    before = machine_peaks(threads).gbytes_per_second
    medians = measure({"tensorforge host": ours, "numpy (OpenBLAS)": numpy_matvec}, rounds=args.rounds,
                      verbose=not args.quiet, desc="matvec", sleep=SLEEP_AFTER_THREAD_POOLS)
    machine_peaks.cache_clear()
    bandwidth = max(before, machine_peaks(threads).gbytes_per_second) * 1e9
    weight_bytes = 768 * 3072 * 4
    print(f"tensorforge uses {threads} thread(s); memory read bandwidth with {threads} thread(s) "
          f"(machine_peaks, best of before and after): {bandwidth / 1e9:.1f} GB/s")
    for engine, seconds in medians.items():
        rate = weight_bytes / seconds
        print(f"  {engine:<20} {format_time(seconds):>10}  {rate / 1e9:6.1f} GB/s  {rate / bandwidth:5.0%} of it")


if __name__ == "__main__":
    main()
