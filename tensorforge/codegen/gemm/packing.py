"""The GEMM's panel layouts, into which constant operands are packed once at compile time.

A lowering's `pack_constant` returns a constant in one of these layouts as a lowering.PackedConstant;
build.py stores it in the weights buffer (lowering.py says how).

The layouts (gemm/tiling.py gives `rows` MR and `columns` NR):

    pack_b_panels(w f32[K, N], NR) -> f32[ceil(N/NR), K, NR]   panel p holds columns p*NR.. of w
    pack_a_panels(a f32[M, K], MR) -> f32[ceil(M/MR), K, MR]   panel p holds rows p*MR.. of a,
                                                               one k step's MR elements together
Missing columns or rows of the last panel are zeros. Leading (batch) axes are kept:
f32[2, K, N] packs to f32[2, panels, K, NR].
"""

from __future__ import annotations

import numpy as np


def pack_b_panels(array: np.ndarray, columns: int) -> np.ndarray:
    """[..., K, N] -> [..., ceil(N / columns), K, columns], zero-padded: B panels for the micro-kernel.
    The panels are written straight from `array` (no padded or transposed temporaries: a GPT-2's output
    layer alone is 150 MB)."""
    *batch, depth, width = array.shape
    full, rest = divmod(width, columns)
    packed = np.empty((*batch, full + (rest > 0), depth, columns), dtype=array.dtype)
    if full:  # [..., K, full * NR] -> [..., K, full, NR] -> [..., full, K, NR]
        packed[..., :full, :, :] = np.moveaxis(array[..., :full * columns].reshape(*batch, depth, full, columns),
                                               -2, -3)
    if rest:
        packed[..., full, :, :rest] = array[..., full * columns:]
        packed[..., full, :, rest:] = 0
    return packed


def pack_a_panels(array: np.ndarray, rows: int) -> np.ndarray:
    """[..., M, K] -> [..., ceil(M / rows), K, rows], zero-padded: A panels for the micro-kernel."""
    return pack_b_panels(np.swapaxes(array, -1, -2), rows)
