"""Compile time of tf.compile_generator (issue 5's target: under 30 s for GPT-2-small size).

    python benchmarks/bench_gpt_compile.py [--sizes tiny gpt2] [--rounds 3] [--threads 2]

Each sample is a fresh Python process (nothing cached from an earlier build, LLVM initialized in it)
timing tf.compile_generator(model, context, prompt_len=32, threads) on bench_gpt.py's random-weight
GPT: trace, the KV-cache rewrite, int8 (for int8), then each of the prefill and decode graphs through
the passes, LLVM and loading. Building the model's weights (numpy's random numbers) is not counted.
Samples run one after another, never two at once; the figure is the median over rounds, with the
prefill and decode compiles' own breakdown (passes, LLVM) from the median sample.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPT = 32


def child(size: str, precision: str, threads: int) -> None:
    """In the sample's process: build the model, time the compile, print one JSON line."""
    from bench_gpt import build_model

    import tensorforge as tf

    model = build_model(size)
    start = time.perf_counter()
    generator = tf.compile_generator(model, model.max_seq_len, prompt_len=PROMPT, threads=threads,
                                     quantize="int8" if precision == "int8" else None,
                                     cache=False)  # every sample compiles: no compile-cache hits
    total = time.perf_counter() - start
    prefill = generator.first_model or generator.prefill_model  # the first-token prefill when there is one
    parts = {name: compiled.compile_seconds for name, compiled in
             (("prefill", prefill), ("decode", generator.decode_model))}
    print(json.dumps({"total": total, "parts": parts}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=("tiny", "gpt2"), default=["tiny", "gpt2"])
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "int8"), default=["fp32", "int8"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.threads)
        return
    print("$ python " + " ".join(sys.argv))
    print(f"{'model':<6} {'precision':<9} {'median s':>8} {'samples s':<22} {'prefill: passes, llvm':>22} "
          f"{'decode: passes, llvm':>21}")
    for size in args.sizes:
        for precision in args.precisions:
            samples = []
            for _ in range(args.rounds):
                run = subprocess.run([sys.executable, __file__, "--child", size, precision, "--threads",
                                      str(args.threads)], capture_output=True, text=True, check=True)
                samples.append(json.loads(run.stdout.strip().splitlines()[-1]))
            samples.sort(key=lambda sample: sample["total"])
            median = samples[len(samples) // 2]
            times = ", ".join(f"{sample['total']:.1f}" for sample in samples)
            prefill, decode = (median["parts"][name] for name in ("prefill", "decode"))
            print(f"{size:<6} {precision:<9} {statistics.median(s['total'] for s in samples):>8.1f} {times:<22} "
                  f"{prefill['passes']:>13.1f}, {prefill['llvm']:>6.1f} {decode['passes']:>12.1f}, "
                  f"{decode['llvm']:>6.1f}")


if __name__ == "__main__":
    main()
