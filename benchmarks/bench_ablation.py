"""Ablation: what each optimization buys, per model. Each one turned off in turn, all timed interleaved.

    python benchmarks/bench_ablation.py [--rounds 9] [--quiet] [--out out/bench]

Configurations (tf.compile options), for the MLP 784-256-128-10 and the CIFAR CNN at batch 1 and 64:
  final              everything on (opt_level 2, packing, memory planning, every core)
  no fusion          without the fusion passes (fuse-activation, fuse-residual, fuse-pool, fuse-softmax,
                     fuse-elementwise, fuse-reduce)
  no winograd        3 x 3 convolutions direct, not by Winograd's F(2x2, 3x3) (select-winograd off)
  no memory planning every intermediate in bytes of its own (share_memory=False)
  no packing         weights packed into GEMM panels on every call, not once (pack=False)
  1 thread           threads=1
  opt_level 0        no graph passes, LLVM at O0
  baseline           all of the above off at once
Prints a table per model (median time, and time relative to final: the median over rounds of the
ratio within a round), writes ablation.json and ablation.png into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import bar_charts, format_time, measure_samples, paired_ratio  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge.models import cifar_cnn, mlp  # noqa: E402

FUSION_PASSES = ("fuse-activation", "fuse-residual", "fuse-pool", "fuse-softmax", "fuse-elementwise", "fuse-reduce")
CONFIGURATIONS = {
    "final": {},
    "no fusion": {"disabled": FUSION_PASSES},
    "no winograd": {"disabled": ("select-winograd",)},
    "no memory planning": {"share_memory": False},
    "no packing": {"pack": False},
    "1 thread": {"threads": 1},
    "opt_level 0": {"opt_level": 0},
    "baseline": {"opt_level": 0, "pack": False, "share_memory": False, "threads": 1},
}


def workloads():
    rng = np.random.default_rng(0)
    for batch in (1, 64):
        yield f"MLP batch {batch}", mlp(), rng.standard_normal((batch, 784), dtype=np.float32)
    for batch in (1, 64):
        yield f"CNN batch {batch}", cifar_cnn(), rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    print(f"{len(os.sched_getaffinity(0))} cores; load average before: {os.getloadavg()[0]:.2f}")
    results = []
    for name, model, x in workloads():
        expected = tf.interpret(tf.trace(model, x), x)
        models, engines = {}, {}
        for configuration, options in CONFIGURATIONS.items():
            cm = tf.compile(model, x, **options)
            np.testing.assert_allclose(cm(x), expected, rtol=1e-3, atol=1e-4)
            models[configuration] = cm
            engines[configuration] = lambda cm=cm, x=x: cm(x)
        samples = measure_samples(engines, rounds=args.rounds, verbose=not args.quiet, desc=name)
        medians = {configuration: statistics.median(values) for configuration, values in samples.items()}
        print(f"\n{name}")
        print(f"  {'configuration':<20} {'median':>10} {'vs final':>9} {'workspace KiB':>14}")
        for configuration in CONFIGURATIONS:
            arena = models[configuration].artifact.workspace_bytes / 1024
            print(f"  {configuration:<20} {format_time(medians[configuration]):>10} "
                  f"{paired_ratio(samples, configuration, 'final'):>8.2f}x {arena:>14.0f}")
        results.append({"workload": name, "medians_s": medians, "samples_s": samples,
                        "workspace_bytes": {c: m.artifact.workspace_bytes for c, m in models.items()}})
        for cm in models.values():
            cm.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps({"rounds": args.rounds, "results": results}, indent=2))
    chart(results, args.out / "ablation.png")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def chart(results, path: Path) -> None:
    names = list(CONFIGURATIONS)[::-1]
    bar_charts(path, [{
        "title": f"{result['workload']} (final {format_time(result['medians_s']['final'])})", "names": names,
        "values": [result["medians_s"][n] / result["medians_s"]["final"] for n in names],
        "colors": ["#dd8452" if n == "final" else "#4c72b0" for n in names], "mark": 1.0,
        "xlabel": "time relative to final (log)"} for result in results])

if __name__ == "__main__":
    main()
