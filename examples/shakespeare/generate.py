"""Generate Shakespeare-like text with the character-level GPT compiled by tensorforge.

    python examples/shakespeare/generate.py [--prompt "ROMEO:"] [--tokens 300] [--temperature 0.8]
                                            [--seed 0] [--weights PATH] [--target host] [--threads 1]
                                            [--int8]

Loads weights/gpt_char.npz (made by train.py) into tensorforge.nn.GPT, or says so and uses random
weights when the file is absent. tf.compile_generator rewrites the traced model for a KV cache of
the model's whole context (128 positions) and compiles a prefill and a one-token decode step (with
--int8, its linear layers in dynamic int8). When the cache is full, generation goes on from a fresh
prefill of the last 64 characters (a sliding window, as the full-recompute model would see only its
last 128 anyway). Prints the text, then tokens per second of the whole generation loop and the
decode steps' own rate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import MODEL, build_model, decode, encode  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge import nn  # noqa: E402

WEIGHTS = Path(__file__).resolve().parent / "weights" / "gpt_char.npz"


def load_model(weights: Path, seed: int = 0) -> tuple[nn.GPT, bool]:
    """(model, trained): the trained weights when the file exists, else a random model (and a note)."""
    model = build_model(np.random.default_rng(seed))
    if not weights.is_file():
        print(f"note: no weights at {weights}; generating with RANDOM weights (train them with "
              "examples/shakespeare/train.py)", file=sys.stderr)
        return model, False
    model.load(weights)
    return model, True


def generate_text(prompt: str, tokens: int, temperature: float = 0.8, seed: int = 0, weights: Path = WEIGHTS,
                  target: str = "host", threads: int = 1, int8: bool = False,
                  kv_int8: bool = False) -> tuple[str, float, float]:
    """(prompt + generated text, tokens per second of the generation loop, of the decode steps alone)."""
    model, _ = load_model(weights, seed)
    context = MODEL["max_seq_len"]
    window = context // 2  # what a fresh prefill keeps when the cache is full
    ids = encode(prompt).tolist()
    total = len(ids) + tokens
    rng = np.random.default_rng(seed)
    steps, step_seconds = 0, 0.0
    with tf.compile_generator(model, context, prompt_len=window, target=target, threads=threads,
                              quantize="int8" if int8 else None, kv_cache="int8" if kv_int8 else "f32") as generator:
        start = time.perf_counter()
        while len(ids) < total:
            recent = ids[-window:] if len(ids) >= context else ids
            wanted = min(total - len(ids), context - len(recent))
            ids += list(generator.stream(recent, wanted, temperature, seed=int(rng.integers(2**31))))
            steps += generator.stats.decode_steps
            step_seconds += generator.stats.decode_seconds
        seconds = time.perf_counter() - start
    rate = tokens / seconds if seconds > 0 else float("inf")
    return decode(ids), rate, steps / step_seconds if step_seconds > 0 else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="ROMEO:\n")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--target", default="host")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--int8", action="store_true", help="dynamic int8 linear layers")
    parser.add_argument("--kv-int8", action="store_true", help="an int8 KV cache (codes and a scale per row)")
    args = parser.parse_args(argv)
    try:
        encode(args.prompt)
    except ValueError as error:
        parser.error(f"--prompt: {error}")
    text, rate, decode_rate = generate_text(args.prompt, args.tokens, args.temperature, args.seed, args.weights,
                                            args.target, args.threads, args.int8, args.kv_int8)
    print(text)
    print(f"\n{args.tokens} tokens at {rate:.1f} tokens/s (decode steps alone {decode_rate:.1f} tokens/s; linear "
          f"layers {'int8' if args.int8 else 'f32'}, KV cache {'int8' if args.kv_int8 else 'f32'}, target "
          f"{args.target}, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
