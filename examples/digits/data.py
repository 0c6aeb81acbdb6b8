"""scikit-learn's digits (1797 real 8x8 images of handwritten digits, bundled: no download), split once.

    x_train, y_train, x_test, y_test = load_split("mlp")     # images flattened to 64 features
    x_train, y_train, x_test, y_test = load_split("cnn")     # images as 1x8x8

Pixels (0..16) are scaled to [0, 1] as float32. The held-out split is a stratified 25% with a fixed
seed, so every script (training, accuracy, quantization, pruning) sees the same test images.
"""

from __future__ import annotations

import numpy as np

TEST_FRACTION = 0.25
SEED = 0


def load_split(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) shaped for the "mlp" (N, 64) or the "cnn" (N, 1, 8, 8)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise ImportError("the digits examples need scikit-learn: pip install 'tensorforge[data]'") from error
    if kind not in ("mlp", "cnn"):
        raise ValueError(f"kind must be 'mlp' or 'cnn', got {kind!r}")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    x = images.reshape(-1, 64) if kind == "mlp" else images.reshape(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=TEST_FRACTION,
                                                        stratify=digits.target, random_state=SEED)
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))
