"""The tensorforge demo: trace, optimize, compile for x86-64 and ARMv8, check, and draw each pass.

    python examples/demo.py [--out out/demo] [--targets host armv8]

For an MLP and a small CNN (conv, batch norm, pool, flatten, linear) it prints the traced IR, the
pass report, the differential check against the reference interpreter for each target (armv8 runs
under qemu-user on an x86 host), and writes the graph after every pass as pictures with an
index.html to look at.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import tensorforge as tf
from tensorforge import models


def run_model(name: str, model, x: np.ndarray, targets: list[str], out: Path) -> None:
    print(f"\n=== {name}: input {x.dtype}{list(x.shape)} ===")
    graph = tf.trace(model, x)
    print(graph)
    reference = tf.interpret(graph, x)
    eager = model(x)
    print(f"reference interpreter equals eager numpy: max abs diff {np.abs(reference - eager).max():.2e}")
    for target in targets:
        with tf.compile(model, x, target=target) as cm:
            y = cm(x)
            print(f"\n--- target {target} ({cm.target.triple}); compile time "
                  + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in cm.compile_seconds.items()))
            print(cm.report())
            print(f"compiled output, first row: {np.array2string(y[0], precision=4, max_line_width=200)}")
            pictures = cm.save_pictures(out / f"{name}-{target}")
            print(f"pass pictures: {pictures / 'index.html'}")
        print(tf.check(model, x, target=target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="where the pictures go")
    parser.add_argument("--targets", nargs="+", default=["host", "armv8"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    mlp = tf.nn.Sequential(tf.nn.Linear(64, 32), tf.nn.ReLU(), tf.nn.Linear(32, 10), tf.nn.Softmax())
    run_model("mlp", mlp, rng.standard_normal((4, 64), dtype=np.float32), args.targets, args.out)

    cnn = models.small_cnn(channels=3, size=12)
    run_model("cnn", cnn, rng.standard_normal((2, 3, 12, 12), dtype=np.float32), args.targets, args.out)
    print(f"\nopen {args.out}/*/index.html to see the graph after every pass")


if __name__ == "__main__":
    main()
