"""GFLOP/s of tensorforge's f32 GEMM against numpy's matmul (OpenBLAS), interleaved in one run, per thread count.

    python benchmarks/bench_gemm.py [--sizes 256 512 1024 2048] [--threads 1 2] [--rounds 9] [--quiet]

For each size n, the graph `matmul(a, b)` with a f32[n, n] input and b a constant (packed into
panels at compile time) is compiled for the host (codegen.build + runtime.CompiledModel) once per
thread count T; numpy runs `a @ b` with OpenBLAS limited to T threads by threadpoolctl. The
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE variables are removed before numpy loads, so OpenBLAS picks
its kernel for this CPU itself. Engines alternate in random order with a short sleep before each sample (harness.py);
a sample is a block of calls of at least 20 ms; the table shows the median sample. Also prints
which BLAS numpy runs (threadpoolctl.threadpool_info) and the compile time of each GEMM.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _variable in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # read by OpenBLAS when numpy loads it
    os.environ.pop(_variable, None)

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SLEEP_AFTER_THREAD_POOLS, measure  # noqa: E402

from tensorforge import ir  # noqa: E402
from tensorforge.codegen import Target, build  # noqa: E402
from tensorforge.codegen.gemm.tiling import gemm_tiling  # noqa: E402
from tensorforge.runtime import CompiledModel  # noqa: E402


def matmul_graph(a_shape: tuple[int, int], b: np.ndarray) -> ir.Graph:
    """`matmul(a, b)`: a is the graph input, b a constant."""
    graph = ir.Graph()
    a = graph.add_input("a", ir.TensorType(a_shape, ir.DType.f32))
    graph.outputs = [graph.call("matmul", [a, graph.constant(b, "b")])]
    return graph


def blas_description() -> str:
    """Which BLAS numpy calls, from threadpoolctl (library, version, kernel architecture, threads)."""
    pools = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return "; ".join(f"{pool.get('internal_api')} {pool.get('version')} ({pool.get('architecture', '?')} kernels, "
                     f"{pool.get('num_threads')} threads by default) at {pool.get('filepath')}" for pool in pools) \
        or "no BLAS found by threadpoolctl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, len(os.sched_getaffinity(0))])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    host = Target.parse("host")
    tiling = gemm_tiling(host)
    print(f"host: {host.cpu}, {host.vector_width} f32 lanes x {host.vector_registers} vector registers; "
          f"micro-tile {tiling.rows} x {tiling.columns}, kc {tiling.kc}, mc {tiling.mc}, nc {tiling.nc}")
    print(f"numpy {np.__version__}: {blas_description()}")
    for variable in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if variable in os.environ:
            print(f"  note: {variable}={os.environ[variable]} is set")
    print(f"load average before the run: {os.getloadavg()[0]:.2f} (other processes share these 2 cores)\n")

    rng = np.random.default_rng(0)
    operands = {n: (rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32))
                for n in args.sizes}
    rows = []
    for threads in dict.fromkeys(args.threads):
        engines, compile_seconds, models = {}, {}, []
        for n, (a, b) in operands.items():
            start = time.perf_counter()
            artifact = build(matmul_graph((n, n), b), "host", threads=threads)
            compiled = CompiledModel(artifact)
            compile_seconds[n] = (artifact.compile_seconds, time.perf_counter() - start)
            models.append(compiled)
            np.testing.assert_allclose(compiled(a), a @ b, rtol=1e-3, atol=1e-3 * np.sqrt(n))
            engines[f"tensorforge {n}"] = lambda compiled=compiled, a=a: compiled(a)
            engines[f"numpy {n}"] = lambda a=a, b=b: a @ b
        with threadpool_limits(threads):
            seconds = measure(engines, rounds=args.rounds, verbose=not args.quiet, desc=f"gemm, {threads} threads",
                              sleep=SLEEP_AFTER_THREAD_POOLS)
        for compiled in models:
            compiled.close()
        for n in args.sizes:
            flops = 2.0 * n ** 3
            ours, theirs = flops / seconds[f"tensorforge {n}"] / 1e9, flops / seconds[f"numpy {n}"] / 1e9
            rows.append((threads, n, ours, theirs, *compile_seconds[n]))

    print(f"{'threads':>7} | {'M=N=K':>6} | {'tensorforge GFLOP/s':>19} | {'numpy GFLOP/s':>13} | {'ratio':>6} | "
          f"{'build s':>7} | {'build+load s':>12}")
    print("-" * 91)
    for threads, n, ours, theirs, built, loaded in rows:
        print(f"{threads:>7} | {n:>6} | {ours:>19.1f} | {theirs:>13.1f} | {ours / theirs:>6.2f} | {built:>7.3f} | "
              f"{loaded:>12.3f}")
    print(f"\nmedian of {args.rounds} interleaved samples per engine; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
