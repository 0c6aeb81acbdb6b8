"""Held-out accuracy of the trained digits models, through the reference interpreter and compiled code.

    python examples/digits/evaluate.py [--target host|armv8]

Loads examples/digits/weights/digits_{mlp,cnn}.npz (np.load with allow_pickle=False, through
Module.load) into tensorforge.models.digits_mlp / digits_cnn. This is the fp32 baseline that the
INT8 and pruning results are compared with; each model is also evaluated with 25% and 50% of its
hidden neurons (MLP) or conv channels and hidden neurons (CNN) removed by structured pruning
(tf.PruneConfig(method="structured"), prune/structured.py), without retraining.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import accuracy, load_split  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge.models import digits_cnn, digits_mlp  # noqa: E402

WEIGHTS = Path(__file__).resolve().parent / "weights"
MODELS = {"mlp": digits_mlp, "cnn": digits_cnn}
STRUCTURED = (0.25, 0.5)  # fractions of each layer's neurons / channels removed


def trained(kind: str, weights: Path = WEIGHTS):
    """The trained model of `kind` ("mlp" or "cnn"); FileNotFoundError names the missing file."""
    path = weights / f"digits_{kind}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run python examples/digits/train.py (needs torch)")
    model = MODELS[kind]()
    model.load(path)
    return model


def evaluate(kind: str, target: str = "host", structured: float = 0.0) -> dict[str, float]:
    """Held-out accuracy of the trained model, by the interpreter and by the code compiled for `target`;
    with `structured` > 0, of the model with that fraction of each prunable layer's neurons / channels
    removed first (the interpreter runs the same pruned graph)."""
    model = trained(kind)
    _, _, x_test, y_test = load_split(kind)
    prune = tf.PruneConfig(method="structured", sparsity=structured) if structured else None
    with tf.compile(model, x_test, target=target, prune=prune) as compiled:
        logits = compiled(x_test)
        reference = tf.interpret(compiled.source_graph, x_test)
    return {"reference": accuracy(reference, y_test), target: accuracy(logits, y_test), "images": len(y_test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="host")
    args = parser.parse_args()
    for kind in MODELS:
        for structured in (0.0, *STRUCTURED):
            result = evaluate(kind, args.target, structured)
            label = f"{kind}, {structured:.0%} structured pruning" if structured else kind
            print(f"{label}: held-out accuracy {result[args.target]:.4f} compiled for {args.target}, "
                  f"{result['reference']:.4f} by the reference interpreter ({result['images']} images)")


if __name__ == "__main__":
    main()
