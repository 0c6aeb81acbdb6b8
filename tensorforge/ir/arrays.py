"""Comparing constant arrays by their bytes without copying them (a GPT-2's weights are 0.5 GB).

    same_bytes(a, b)      True when dtype, shape and every byte agree (NaN payloads and -0.0 included),
                          compared a slice at a time: no whole-array temporaries
    fingerprint(a)        a small hashable key (dtype, shape, a sample of the elements): arrays with
                          equal bytes have equal fingerprints; equal fingerprints still need same_bytes

The passes (eliminate-common-subexpressions) and the weights pool (codegen/memory.py) use them where
`a.tobytes()` or `np.array_equal` would make copies or boolean arrays as big as the weights.

Arrays computed from constants (a fused layer's concatenated weights, int8 codes) can be shared by
several graphs compiled together:

    with sharing_derived_arrays():            # compile_generator: around its graphs' compiles
        w = derived(("concatenate", 1), [wq, wk, wv], lambda: np.concatenate([wq, wk, wv], axis=1))
        ...                                   # the same call for the next graph gives the same array

Outside such a block `derived` just calls `make`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Hashable, Iterator, Sequence

import numpy as np

CHUNK_BYTES = 1 << 22  # compared at a time: the temporaries of one comparison are this small
SAMPLES = 64  # elements of a fingerprint


def _chunks(array: np.ndarray):
    """The array's bytes in row-major order, as flat unsigned integers of its item size (one per
    element: comparing them makes one bool per element) in chunks of about CHUNK_BYTES (views of a
    contiguous array; copies of one chunk at a time of a strided one)."""
    step = max(1, CHUNK_BYTES // array.itemsize)
    bits = np.dtype(f"u{array.itemsize}") if array.itemsize in (1, 2, 4, 8) else np.dtype(np.uint8)
    flat = array.reshape(-1) if array.flags.c_contiguous else None
    for start in range(0, array.size, step):
        chunk = flat[start:start + step] if flat is not None else array.flat[start:start + step]
        yield chunk.view(bits)


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether `a` and `b` have the same dtype, shape and bytes, compared a chunk at a time."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a is b or a.size == 0 or (a.flags.c_contiguous and b.flags.c_contiguous
                                 and a.ctypes.data == b.ctypes.data):
        return True
    return all(np.array_equal(x, y) for x, y in zip(_chunks(a), _chunks(b)))


def fingerprint(array: np.ndarray) -> tuple:
    """(dtype, shape, bytes of up to SAMPLES elements evenly spread): cheap for any size."""
    count = min(array.size, SAMPLES)
    picks = np.linspace(0, array.size - 1, count).astype(np.int64) if count else np.zeros(0, np.int64)
    return array.dtype.str, array.shape, array.flat[picks].tobytes()


_DERIVED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tensorforge_derived_arrays", default=None)


@contextlib.contextmanager
def sharing_derived_arrays() -> Iterator[None]:
    """Within the block (in this thread), `derived` gives back the array it made before for the same
    recipe and the same source array objects, kept until the block ends. (Constant arrays are never
    written, so one made from the same objects is the same; a block spans one compile, so a model's
    arrays changed by its user between two compiles are never mistaken for the old ones.)"""
    token = _DERIVED.set({})
    try:
        yield
    finally:
        _DERIVED.reset(token)


def derived(recipe: Hashable, sources: Sequence[np.ndarray], make: Callable[[], np.ndarray]) -> np.ndarray:
    """`make()`: an array computed from the arrays `sources` (and nothing else but `recipe`, which names
    how); inside a sharing_derived_arrays block, the one made before for the same recipe and sources."""
    memo = _DERIVED.get()
    if memo is None:
        return make()
    key = (recipe, tuple(id(source) for source in sources))
    if key not in memo:  # the sources are kept with it: their ids are not reused while the block lasts
        memo[key] = (tuple(sources), make())
    return memo[key][1]
