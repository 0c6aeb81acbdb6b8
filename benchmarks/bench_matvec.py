"""Matrix-vector product 1x768 @ 768x3072 (a decoder's MLP at batch 1) against the memory bandwidth.

    python benchmarks/bench_matvec.py [--rounds 15] [--quiet]

The weight matrix (9.4 MB) is read once per call, so the achievable speed is the machine's memory
bandwidth. The bandwidth is measured here, in the same run, before and after the timings, with as
many threads as the compiled model uses: tensorforge.runtime.machine_peaks (vector loads summing a
256 MiB buffer, one slice per thread; the best of the two). Our figure is the weight bytes over the
median time of a call; numpy's (OpenBLAS sgemv, all cores) is measured beside it. One call does
the product with 8 different weight matrices (75 MB, more than the caches), as a decoder's layers
do; numpy does the same 8 products.
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
    model = tf.compile(lambda x: tuple(x @ w for w in weights), x, target="host")  # one model, COPIES products
    for product, w in zip(model(x), weights, strict=True):
        np.testing.assert_allclose(product, x @ w, rtol=1e-4, atol=1e-4)

    def ours():
        return model(x)

    def numpy_matvec():
        return [x @ w for w in weights]

    threads = model.artifact.threads
    before = machine_peaks(threads).gbytes_per_second
    medians = measure({"tensorforge host": ours, "numpy (OpenBLAS)": numpy_matvec}, rounds=args.rounds,
                      verbose=not args.quiet, desc="matvec", sleep=SLEEP_AFTER_THREAD_POOLS)
    machine_peaks.cache_clear()
    bandwidth = max(before, machine_peaks(threads).gbytes_per_second) * 1e9
    weight_bytes = COPIES * 768 * 3072 * 4
    print(f"tensorforge uses {threads} thread(s); memory read bandwidth with {threads} thread(s) "
          f"(machine_peaks, best of before and after): {bandwidth / 1e9:.1f} GB/s")
    for engine, seconds in medians.items():
        rate = weight_bytes / seconds
        print(f"  {engine:<20} {format_time(seconds):>10}  {rate / 1e9:6.1f} GB/s  {rate / bandwidth:5.0%} of it")


if __name__ == "__main__":
    main()
