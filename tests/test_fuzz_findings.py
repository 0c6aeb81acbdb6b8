"""Regression tests for what the fuzz campaign (tests/test_fuzz.py) found, one per finding.

    PYTHONPATH=. pytest tests/test_fuzz_findings.py -q
"""

import numpy as np
import pytest

import tensorforge as tfg


@pytest.mark.parametrize("function, shapes", [
    (lambda v, m: v @ m, [(4,), (4, 3)]),          # vector @ matrix -> (3,)
    (lambda m, v: m @ v, [(3, 4), (4,)]),          # matrix @ vector -> (3,)
    (lambda v, w: v @ w, [(4,), (4,)]),            # dot product -> ()
    (lambda x, v: x @ v, [(2, 3, 4), (4,)]),       # batched matrices @ vector -> (2, 3)
    (lambda v, x: v @ x, [(3,), (2, 3, 4)]),       # vector @ batched matrices -> (2, 4)
])
def test_a_vector_operand_of_matmul_follows_numpy(function, shapes):
    """Fuzzing: `v @ w` with v of shape (1,) raised TraceError "matmul needs operands of rank >= 2"."""
    rng = np.random.default_rng(0)
    args = tuple(rng.standard_normal(shape).astype(np.float32) for shape in shapes)
    with tfg.compile(function, args) as cm:
        out = cm(*args)
    expected = function(*args)
    assert np.shape(out) == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_a_vector_constant_on_either_side_of_matmul():
    rng = np.random.default_rng(1)
    w = rng.standard_normal(5).astype(np.float32)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    with tfg.compile(lambda x: x @ w + (w @ x.T).sum(), x) as cm:
        np.testing.assert_allclose(cm(x), x @ w + (w @ x.T).sum(), rtol=1e-5, atol=1e-5)
