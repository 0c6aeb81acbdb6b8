"""Generate Shakespeare-like text with the character-level GPT compiled by tensorforge.

    python examples/shakespeare/generate.py [--prompt "ROMEO:"] [--tokens 300] [--temperature 0.8]
                                            [--seed 0] [--weights PATH] [--target host] [--threads 1]

Loads weights/gpt_char.npz (made by train.py) into tensorforge.nn.GPT, or says so and uses random
weights when the file is absent. The model is traced and compiled once for tokens[1, 128] (its
context), and every new character reruns it on the whole context (full recompute; a KV cache comes
later): a context shorter than 128 is padded at the end, harmless because the model is causal and
the next character is read at the last real position; a longer one is windowed to its last 128
characters. Prints the text, then tokens per second.
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
                  target: str = "host", threads: int = 1) -> tuple[str, float]:
    """(prompt + generated text, tokens per second of the generation loop)."""
    model, _ = load_model(weights, seed)
    context = MODEL["max_seq_len"]
    prompt_ids = encode(prompt).tolist()
    with tf.compile(model, np.zeros((1, context), np.int64), target=target, threads=threads) as compiled:
        start = time.perf_counter()
        ids = nn.generate(compiled, prompt_ids, tokens, context, temperature=temperature,
                          rng=np.random.default_rng(seed))
        seconds = time.perf_counter() - start
    return decode(ids), tokens / seconds if seconds > 0 else float("inf")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="ROMEO:\n")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--target", default="host")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        encode(args.prompt)
    except ValueError as error:
        parser.error(f"--prompt: {error}")
    text, rate = generate_text(args.prompt, args.tokens, args.temperature, args.seed, args.weights, args.target,
                               args.threads)
    print(text)
    print(f"\n{args.tokens} tokens at {rate:.1f} tokens/s (full recompute of {MODEL['max_seq_len']} positions per "
          f"token, target {args.target}, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
