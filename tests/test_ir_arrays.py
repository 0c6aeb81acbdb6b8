"""ir/arrays.py: comparing constants by their bytes without whole-array temporaries, fingerprints,
and arrays derived from constants shared by the graphs of one compile (sharing_derived_arrays)."""

from __future__ import annotations

import tracemalloc

import numpy as np

from tensorforge.ir.arrays import CHUNK_BYTES, derived, fingerprint, same_bytes, sharing_derived_arrays


def test_same_bytes_compares_dtype_shape_and_every_byte():
    a = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    assert same_bytes(a, a.copy()) and same_bytes(a, np.asfortranarray(a)) and same_bytes(a.T, a.T.copy())
    assert same_bytes(a[:, ::2], a[:, ::2].copy()) and same_bytes(a[:0], a[:0].copy())
    assert not same_bytes(a, a.astype(np.float64)) and not same_bytes(a, a.reshape(7, 5))
    changed = a.copy()
    changed[4, 6] = np.nextafter(changed[4, 6], np.inf)
    assert not same_bytes(a, changed) and not same_bytes(a[:, 1:], changed[:, 1:])
    zero = np.zeros(3, np.float32)
    assert not same_bytes(zero, -zero)  # equal values, other bytes: a weights buffer keeps both
    nan = np.array([np.nan], np.float32)
    assert same_bytes(nan, nan.copy())
    assert not same_bytes(nan, (nan.view(np.uint32) | 1).view(np.float32))


def test_same_bytes_finds_a_difference_in_any_chunk_and_makes_no_big_temporaries():
    big = np.arange(3 * CHUNK_BYTES // 4, dtype=np.float32)
    other = big.copy()
    assert same_bytes(big, other)
    other[-1] += 1  # in the last chunk
    tracemalloc.start()
    try:
        assert not same_bytes(big, other)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < big.nbytes / 2, peak  # np.array_equal(equal_nan=True) copies both arrays


def test_fingerprints_of_equal_bytes_are_equal():
    a = np.random.default_rng(1).standard_normal((300, 40)).astype(np.float32)
    assert fingerprint(a) == fingerprint(a.copy()) == fingerprint(np.asfortranarray(a))
    assert fingerprint(a) != fingerprint(a.astype(np.float64)) and fingerprint(a) != fingerprint(a.reshape(40, 300))
    assert fingerprint(a) != fingerprint(a + 1)
    assert hash(fingerprint(np.zeros((0, 3), np.float32))) is not None


def test_derived_arrays_are_shared_only_inside_a_block_and_for_the_same_sources():
    w, v = np.ones((4, 2), np.float32), np.zeros((4, 3), np.float32)
    calls = []

    def joined(*arrays):
        def make():
            calls.append(arrays)
            return np.concatenate(arrays, axis=1)
        return derived(("concatenate", 1), arrays, make)

    assert joined(w, v) is not joined(w, v) and len(calls) == 2  # no block: made every time
    with sharing_derived_arrays():
        first = joined(w, v)
        assert joined(w, v) is first and len(calls) == 3
        assert joined(w.copy(), v) is not first  # equal bytes, another array: made again
        assert joined(v, w) is not first and derived("other", (w, v), lambda: w) is w
        np.testing.assert_array_equal(first, np.concatenate([w, v], axis=1))
    assert joined(w, v) is not first
