"""Sparse kernel against the dense GEMM: a 1024 x 1024 linear pruned to sparsities 0.5 .. 0.99.

    python benchmarks/bench_sparse.py [--rounds 9] [--threads 2] [--batches 1 2 4 8 16 64] [--quiet]

For each batch size (rows of x: batch 1 streams the weight, batch 64 reuses it; the ones between
fill passes/sparsify.py's BREAK_EVEN table), the linear (with bias) is pruned by magnitude to each sparsity
(tf.PruneConfig(method="magnitude", scope="layer")) and compiled twice: with the sparse kernel
forced (`config={"sparse_threshold": 0}`, sparsify switches it at any sparsity) and dense
(`PruneConfig(sparse_kernel=False)`: the sparsify pass off). The dense GEMM's time does not depend on
the zeros, so one dense model per batch size is timed against all the sparse ones, interleaved
(harness.py: random order each round, a sleep before each sample, median of per-round ratios).
Prints per sparsity the times and the speed-up, the break-even sparsity (where the speed-up
crosses 1, interpolated linearly between the measured sparsities) and the figure at 90%. The
"kernel" columns are the layer's own time without the Python call around it (cm.profile: the median
over rounds of --profile-runs / --rounds instrumented calls, the models in a random order each round).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import format_time, measure_samples, paired_ratio  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge.models import mlp  # noqa: E402

SPARSITIES = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99)
FEATURES = 1024


def compiled(x: np.ndarray, sparsity: float, sparse: bool, threads: int):
    """The 1024 x 1024 linear pruned to `sparsity`, on the sparse kernel or the dense GEMM, checked."""
    prune = tf.PruneConfig(method="magnitude", sparsity=sparsity, scope="layer", sparse_kernel=sparse)
    model = tf.compile(mlp((FEATURES, FEATURES)), x, prune=prune, threads=threads,
                       config={"sparse_threshold": 0.0} if sparse else None)
    kernels = {row[4] for row in model.prune_report().rows}
    assert kernels == {"csr" if sparse else "dense"}, kernels
    np.testing.assert_allclose(model(x), tf.interpret(model.source_graph, x), rtol=1e-4, atol=1e-4)
    return model


def layer_seconds(models: dict, x: np.ndarray, rounds: int, runs: int) -> dict:
    """Per model, the median time of its one layer kernel without the Python call around it
    (cm.profile: `runs` instrumented calls per round, the models in a random order each round)."""
    times: dict = {name: [] for name in models}
    order = list(models)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            profile = models[name].profile(x, repeat=max(1, runs // rounds))
            (row,) = [row for row in profile.rows if row.op in ("linear", "sparse_linear")]
            times[name].append(row.seconds)
    return {name: statistics.median(values) for name, values in times.items()}


def break_even(sparsities: list[float], speedups: list[float]) -> str:
    """The sparsity where the speed-up first reaches 1 for good, interpolated; or a bound."""
    if speedups[0] >= 1 and all(s >= 1 for s in speedups):
        return f"< {sparsities[0]:.2f}"
    last_slower = max(i for i, speedup in enumerate(speedups) if speedup < 1)
    if last_slower == len(speedups) - 1:
        return f"> {sparsities[-1]:.2f}"
    (s0, r0), (s1, r1) = (sparsities[last_slower], speedups[last_slower]), (sparsities[last_slower + 1],
                                                                           speedups[last_slower + 1])
    return f"{s0 + (1 - r0) / (r1 - r0) * (s1 - s0):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    parser.add_argument("--sparsities", type=float, nargs="+", default=list(SPARSITIES))
    parser.add_argument("--profile-runs", type=int, default=200)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    print(f"linear {FEATURES} x {FEATURES} + bias, {args.threads} thread(s); load average before: "
          f"{os.getloadavg()[0]:.2f} (other processes share these cores)")
    summary = []
    for batch in args.batches:
        x = np.random.default_rng(batch).standard_normal((batch, FEATURES)).astype(np.float32)
        models = {"dense": compiled(x, args.sparsities[0], False, args.threads)}
        models |= {sparsity: compiled(x, sparsity, True, args.threads) for sparsity in args.sparsities}
        samples = measure_samples({name: (lambda model=model, x=x: model(x)) for name, model in models.items()},
                                  rounds=args.rounds, verbose=not args.quiet, desc=f"batch {batch}")
        kernels = layer_seconds(models, x, args.rounds, args.profile_runs)
        for model in models.values():
            model.close()
        speedups = [paired_ratio(samples, "dense", sparsity) for sparsity in args.sparsities]
        kernel_speedups = [kernels["dense"] / kernels[sparsity] for sparsity in args.sparsities]
        print(f"\nbatch {batch}: dense GEMM {format_time(statistics.median(samples['dense']))} a call, "
              f"{format_time(kernels['dense'])} its kernel")
        print(f"{'sparsity':>8} | {'sparse call':>11} | {'speed-up':>8} | {'sparse kernel':>13} | {'speed-up':>8}")
        for sparsity, speedup, kernel_speedup in zip(args.sparsities, speedups, kernel_speedups, strict=True):
            print(f"{sparsity:>8.2f} | {format_time(statistics.median(samples[sparsity])):>11} | {speedup:>7.2f}x | "
                  f"{format_time(kernels[sparsity]):>13} | {kernel_speedup:>7.2f}x")
        at_90 = args.sparsities.index(0.9) if 0.9 in args.sparsities else None
        summary.append((batch, break_even(args.sparsities, speedups), break_even(args.sparsities, kernel_speedups),
                        *((speedups[at_90], kernel_speedups[at_90]) if at_90 is not None else (np.nan, np.nan))))
    print()
    for batch, even, kernel_even, at_90, kernel_at_90 in summary:
        print(f"batch {batch}: break-even sparsity {even} (kernels alone: {kernel_even}); at 90% the sparse "
              f"kernel is {at_90:.2f}x faster a call ({kernel_at_90:.2f}x the kernel alone)")
    table = ", ".join(f"{batch}: {even}" for batch, even, *_ in summary)
    print(f"as passes/sparsify.py's table, per call: BREAK_EVEN = {{{table}}}")
    print(f"median of {args.rounds} interleaved samples per model; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
