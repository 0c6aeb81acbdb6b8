"""Train the digits MLP and CNN (tensorforge.models.digits_mlp / digits_cnn) and save their weights.

    python examples/digits/train.py [--epochs 80] [--out examples/digits/weights]

Training uses PyTorch (the `torch` extra) on a copy of the tensorforge model (frontend.torch_bridge):
Adam, cross-entropy, minibatches of 64, a fixed seed. The trained weights are copied back and saved
with Module.save as .npz (no pickle); examples/digits/evaluate.py loads them with allow_pickle=False.
Prints the held-out accuracy of the saved model as tensorforge computes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import accuracy, load_split  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge.frontend.torch_bridge import copy_from_torch, to_torch  # noqa: E402
from tensorforge.models import digits_cnn, digits_mlp  # noqa: E402

WEIGHTS = Path(__file__).resolve().parent / "weights"
MODELS = {"mlp": digits_mlp, "cnn": digits_cnn}


def train(kind: str, epochs: int, verbose: bool = True):
    import torch

    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = load_split(kind)
    model = MODELS[kind]()
    net = to_torch(model).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    inputs, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(0)
    for _ in tqdm(range(epochs), desc=f"train {kind}", disable=not verbose):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
    copy_from_torch(model, net.eval())
    return model, x_test, y_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in MODELS:
        model, x_test, y_test = train(kind, args.epochs, verbose=not args.quiet)
        path = args.out / f"digits_{kind}.npz"
        model.save(path)
        with tf.compile(model, x_test) as compiled:
            print(f"{kind}: held-out accuracy {accuracy(compiled(x_test), y_test):.4f} "
                  f"({len(y_test)} images), weights {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
