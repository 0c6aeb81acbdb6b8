"""Structured pruning: speed of the pruned MLP and accuracy of the pruned digits models.

    python benchmarks/bench_prune.py [--rounds 11] [--quiet]

Speed: the MLP 784-256-128-10 at batch 64, unpruned and with 25% / 50% of its hidden neurons
removed (prune/structured.py), interleaved (harness.py). Accuracy: the trained digits MLP
and CNN (examples/digits) on the held-out split, pruned without retraining: structured (hidden
neurons, conv channels) and magnitude (weights zeroed, one global threshold).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "examples" / "digits"))

from harness import format_time, measure_samples, paired_ratio  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge.models import mlp  # noqa: E402
from tensorforge.prune.magnitude import prune_magnitude  # noqa: E402
from tensorforge.prune.structured import prune_structured  # noqa: E402

FRACTIONS = (0.0, 0.25, 0.5)


def pruned_graph(model, x, fraction):
    graph = tf.trace(model, x)
    prune_structured(graph, fraction)
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal((64, 784)).astype(np.float32)
    models = {f"{int(f * 100)}% pruned": tf.compile(pruned_graph(mlp(), x, f)) for f in FRACTIONS}
    samples = measure_samples({name: (lambda cm=cm: cm(x)) for name, cm in models.items()}, rounds=args.rounds,
                              verbose=not args.quiet, desc="prune")
    print("MLP 784-256-128-10, batch 64, structured pruning of the hidden neurons")
    for name in models:
        print(f"  {name:<12} {format_time(float(np.median(samples[name]))):>10}  "
              f"{paired_ratio(samples, '0% pruned', name):5.2f}x faster than unpruned")
    try:
        from data import accuracy, load_split
        from evaluate import trained
    except ImportError as error:
        print(f"(no accuracy: {error})")
        return
    for kind in ("mlp", "cnn"):
        _, _, x_test, y_test = load_split(kind)
        model = trained(kind)
        for fraction in (0.0, 0.25, 0.5):
            graph = pruned_graph(model, x_test, fraction)
            print(f"  digits {kind}, {int(fraction * 100)}% of neurons / channels removed (structured): held-out "
                  f"accuracy {accuracy(tf.interpret(graph, x_test), y_test):.4f}")
        for sparsity in (0.5, 0.7, 0.9):
            graph = tf.trace(model, x_test)
            prune_magnitude(graph, sparsity, "global")
            print(f"  digits {kind}, {int(sparsity * 100)}% of weights zeroed (magnitude, global): held-out "
                  f"accuracy {accuracy(tf.interpret(graph, x_test), y_test):.4f}")


if __name__ == "__main__":
    main()
