"""Reference models used by the examples, the benchmarks and the end-to-end tests.

    mlp()        784-256-128-10 MLP with ReLU (the benchmark MLP)
    cifar_cnn()  3x32x32 -> conv 3->32, relu, pool, conv 32->64, relu, pool, fc 4096->128, fc 128->10
    small_cnn()  conv, batch norm, relu, pool, flatten, linear: every CNN op on a small input
    digits_mlp() 64-128-64-10 MLP for scikit-learn's 8x8 digits (examples/digits)
    digits_cnn() 1x8x8 -> conv 1->16, relu, pool, conv 16->32, relu, pool, fc 128->10 (examples/digits)
"""

from __future__ import annotations

import numpy as np

from . import nn


def mlp(sizes=(784, 256, 128, 10), seed: int = 0) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out, rng=rng))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def cifar_cnn(seed: int = 0) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128, rng=rng), nn.ReLU(), nn.Linear(128, 10, rng=rng))


def small_cnn(channels: int = 3, size: int = 12, classes: int = 10, seed: int = 0) -> nn.Sequential:
    """Every CNN op once: conv, batch norm (with non-trivial statistics), relu, both pools, flatten, linear."""
    rng = np.random.default_rng(seed)
    bn = nn.BatchNorm2d(8)
    bn.gamma = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    bn.beta = rng.normal(0, 0.1, 8).astype(np.float32)
    bn.running_mean = rng.normal(0, 0.1, 8).astype(np.float32)
    bn.running_var = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    side = size // 2 // 2
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1, rng=rng), bn, nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, rng=rng), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * side * side, classes, rng=rng), nn.Softmax())


def digits_mlp(seed: int = 0) -> nn.Sequential:
    """The digits MLP, 64-128-64-10 with ReLU (inputs: the 8x8 images flattened, scaled to [0, 1])."""
    return mlp((64, 128, 64, 10), seed)


def digits_cnn(seed: int = 0) -> nn.Sequential:
    """The digits CNN on 1x8x8 images scaled to [0, 1]."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10, rng=rng))
