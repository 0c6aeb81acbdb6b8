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
    """[..., K, N] -> [..., ceil(N / columns), K, columns], zero-padded: B panels for the micro-kernel."""
    *batch, depth, width = array.shape
    panels = -(-width // columns)
    padded = np.zeros((*batch, depth, panels * columns), dtype=array.dtype)
    padded[..., :width] = array
    packed = padded.reshape(*batch, depth, panels, columns)
    return np.ascontiguousarray(np.moveaxis(packed, -2, -3))


def pack_a_panels(array: np.ndarray, rows: int) -> np.ndarray:
    """[..., M, K] -> [..., ceil(M / rows), K, rows], zero-padded: A panels for the micro-kernel."""
    return pack_b_panels(np.swapaxes(array, -1, -2), rows)
