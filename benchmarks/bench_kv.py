"""One generated token with the KV cache against full recompute, for the tiny GPT (4 layers, d 256,
4 heads, vocab 512, context 256), at a few positions.

    python benchmarks/bench_kv.py [--rounds 9] [--threads 2] [--positions 15 63 127 255] [--quiet]

"cache" is one compiled decode step of tf.compile_generator at position p (the caches filled by a
real prefill and decode steps up to p, as in generation; the generator's writing of the step's new
k and v rows into its caches, a few microseconds, is not in it); "recompute" is tf.compile of the same GPT
traced on tokens[1, p + 1], one full forward for the logits of the last position (what generation
without a cache pays for that token). Timed interleaved (harness.py: random order each round, a
sleep before each sample, medians). Then a whole greedy generation (prompt 16, up to the context
end) reports prefill time, decode tokens/s and cache memory (gen.stats). Reports, asserts nothing
about speed; checks that the two engines' logits agree first.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import format_time, measure_samples, paired_ratio  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge import nn  # noqa: E402

VOCAB, DIM, LAYERS, HEADS, CONTEXT, PROMPT = 512, 256, 4, 4, 256, 16


def compare(generator, model: nn.GPT, ids: list[int], position: int, args) -> None:
    """Time one decode step at `position` against one full forward on tokens[1, position + 1]; print a row."""
    generator.logits(ids[:position])  # prefill and steps up to position - 1: the caches as in generation
    caches, token = generator.caches, np.array([[ids[position]]], np.int64)
    pos, tokens = np.array([position], np.int64), np.array([ids[:position + 1]], np.int64)
    with tf.compile(model, tokens, threads=args.threads) as recompute:
        logits = generator.decode_model(token, pos, *caches)[0]
        np.testing.assert_allclose(logits[0, 0], recompute(tokens)[0, -1], rtol=1e-3, atol=1e-4)
        samples = measure_samples({"cache": lambda: generator.decode_model(token, pos, *caches),
                                   "recompute": lambda: recompute(tokens)}, args.rounds, not args.quiet)
    cache_time, recompute_time = (float(np.median(samples[name])) for name in ("cache", "recompute"))
    print(f"{position:>8} {format_time(cache_time):>10} {format_time(recompute_time):>10} "
          f"{1 / paired_ratio(samples, 'cache', 'recompute'):>8.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--positions", type=int, nargs="+", default=[15, 63, 127, 255])
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    model = nn.GPT(VOCAB, DIM, LAYERS, HEADS, CONTEXT, rng=np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, VOCAB, CONTEXT).tolist()
    generator = tf.compile_generator(model, CONTEXT, prompt_len=PROMPT, threads=args.threads)
    print(f"tiny GPT: {LAYERS} layers, d {DIM}, {HEADS} heads, vocab {VOCAB}, context {CONTEXT}; "
          f"threads {args.threads}; cache {generator.cache_bytes / 2**20:.2f} MiB")
    print(f"{'position':>8} {'cache':>10} {'recompute':>10} {'speed-up':>9}")
    for position in sorted(args.positions):
        compare(generator, model, ids, position, args)
    generated = generator.generate(ids[:PROMPT], CONTEXT - PROMPT)
    print(f"greedy generation of {len(generated) - PROMPT} tokens after a prompt of {PROMPT}: {generator.stats}")
    generator.close()


if __name__ == "__main__":
    main()
