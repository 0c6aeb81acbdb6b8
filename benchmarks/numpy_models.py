"""Hand-written numpy forwards of the benchmark models: what a user would write without a compiler.

They read the weights of the same tensorforge.nn models, so every engine computes the same function.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def mlp_forward(model):
    layers = [(layer.weight, layer.bias) for layer in model.layers if hasattr(layer, "weight")]

    def forward(x):
        for i, (w, b) in enumerate(layers):
            x = x @ w + b
            if i < len(layers) - 1:
                x = np.maximum(x, 0)
        return x

    return forward


def _conv3x3_same(x, w, b):
    """3x3 convolution with padding 1 as one tensordot over sliding windows."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = sliding_window_view(xp, (3, 3), axis=(2, 3))  # N, C, H, W, 3, 3
    return np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2) + b[None, :, None, None]


def _maxpool2(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def cnn_forward(model):
    conv1, conv2 = model.layers[0], model.layers[3]
    fc1, fc2 = model.layers[7], model.layers[9]

    def forward(x):
        x = _maxpool2(np.maximum(_conv3x3_same(x, conv1.weight, conv1.bias), 0))
        x = _maxpool2(np.maximum(_conv3x3_same(x, conv2.weight, conv2.bias), 0))
        x = x.reshape(x.shape[0], -1)
        x = np.maximum(x @ fc1.weight + fc1.bias, 0)
        return x @ fc2.weight + fc2.bias

    return forward
