"""Peak memory of compiling a GPT-2-size generator, against its weights (issue 21: at most 2x above the model).

    python benchmarks/bench_compile_memory.py [--size gpt2] [--precision fp32 int8] [--threads 2]

Each measurement is a fresh Python process: it builds bench_gpt.py's random-weight model, reads its
resident set (the model itself: its weights as numpy arrays, plus the interpreter and libraries), then
runs tf.compile_generator(model, max_len, prompt_len=32, cache=False) (a compile, never a load from the
compile cache; storing in it does not raise the peak) and reads the peak resident set of the process
(getrusage's ru_maxrss, which covers LLVM's memory too). Reported: weights (MB), the model's RSS, the
peak, and (peak - model) / weights: what compiling costs beyond the model, in copies of its weights.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(size: str, precision: str, threads: int) -> None:
    from bench_gpt import build_model

    import tensorforge as tf

    model = build_model(size)
    weights = sum(array.nbytes for array in model.state_dict().values()) / 2**20
    before = _rss_mb()
    generator = tf.compile_generator(model, model.max_seq_len, prompt_len=32, threads=threads, cache=False,
                                     quantize="int8" if precision == "int8" else None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    after = _rss_mb()
    generator.close()
    print(json.dumps({"weights_mb": weights, "model_mb": before, "peak_mb": peak, "after_mb": after}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="gpt2")
    parser.add_argument("--precision", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    print(f"{'size':<6} {'precision':<9} {'weights MB':>10} {'model RSS':>10} {'peak RSS':>9} {'after':>7} "
          f"{'(peak - model) / weights':>25}")
    for precision in args.precision:
        output = subprocess.run([sys.executable, __file__, "--child", args.size, precision, str(args.threads)],
                                check=True, capture_output=True, text=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        ratio = (row["peak_mb"] - row["model_mb"]) / row["weights_mb"]
        print(f"{args.size:<6} {precision:<9} {row['weights_mb']:>10.0f} {row['model_mb']:>10.0f} "
              f"{row['peak_mb']:>9.0f} {row['after_mb']:>7.0f} {ratio:>25.2f}", flush=True)


if __name__ == "__main__":
    main()
