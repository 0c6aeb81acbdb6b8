"""Per-kernel profile (cm.profile: time, FLOPs, bytes, roofline) of a benchmark workload.

    python benchmarks/profile_model.py mlp --batch 64
    python benchmarks/profile_model.py cnn --batch 64
    python benchmarks/profile_model.py gpt2 --phase decode [--int8]      (or tiny; --phase prefill)

mlp and cnn are bench_models.py's models (random input of the batch); tiny and gpt2 are
bench_gpt.py's random-weight GPTs compiled by tf.compile_generator with prompt_len 32: the
first-token prefill of a 32-token prompt (generation's: the output layer at the last position only),
or one decode step at position 32 after it. `--threads` as in the other
benchmarks (default 2). The table is the median of cm.profile's runs per kernel; the last line
says how much of a call the kernels take.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpt import PROMPT, build_model, prompt_ids  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge import models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=("mlp", "cnn", "tiny", "gpt2"))
    parser.add_argument("--batch", type=int, default=1, help="mlp and cnn")
    parser.add_argument("--phase", choices=("prefill", "decode"), default="decode", help="tiny and gpt2")
    parser.add_argument("--int8", action="store_true", help="tiny and gpt2: quantize='int8'")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print("$ python " + " ".join(sys.argv))
    rng = np.random.default_rng(0)
    if args.model in ("mlp", "cnn"):
        shape = (args.batch, 784) if args.model == "mlp" else (args.batch, 3, 32, 32)
        x = rng.standard_normal(shape).astype(np.float32)
        model = models.mlp() if args.model == "mlp" else models.cifar_cnn()
        with tf.compile(model, x, threads=args.threads) as compiled:
            print(compiled.profile(x))
        return
    model = build_model(args.model)
    with tf.compile_generator(model, model.max_seq_len, prompt_len=PROMPT, threads=args.threads,
                              quantize="int8" if args.int8 else None, verbose=True) as generator:
        prompt = prompt_ids(args.model)
        if args.phase == "prefill":  # the first-token prefill generation runs (logits at the last position)
            tokens = np.array([prompt], np.int64)
            if generator.first_model is not None:
                print(generator.first_model.profile(tokens, np.array([len(prompt) - 1], np.int64)))
            else:
                print(generator.prefill_model.profile(tokens))
            return
        generator.next_logits(prompt)  # fills the caches' first 32 rows
        token, position = np.array([[prompt[-1]]], np.int64), np.array([PROMPT], np.int64)
        print(generator.decode_model.profile(token, position, *generator.caches))


if __name__ == "__main__":
    main()
