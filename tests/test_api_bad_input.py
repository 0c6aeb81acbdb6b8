"""Bad input through the public API, on a traced and compiled model (host and armv8): each case
raises a clear exception naming the input, the op or the target. The calls run in a subprocess,
so a crash in native code fails the test instead of killing pytest."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import tensorforge as tf
from tensorforge import models

SCRIPT = """
import json, sys
import numpy as np
import tensorforge as tf
from tensorforge import models
model = models.mlp((6, 5, 3))
x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
cases = {
    "wrong shape": "cm(x[:, :4])", "wrong rank": "cm(x.reshape(12))", "two inputs": "cm(x, x)",
    "no input": "cm()", "None": "cm(None)", "string": "cm('x')", "int dtype": "cm(x.astype(np.int32))",
}
results = {}
with tf.compile(model, x, target=sys.argv[1]) as cm:
    for name, expression in cases.items():
        try:
            eval(expression)
            results[name] = ["no error", ""]
        except Exception as err:
            results[name] = [type(err).__name__, str(err)]
    fortran = np.asfortranarray(np.random.default_rng(1).standard_normal((2, 6)))  # float64, Fortran order
    expected = model(fortran.astype(np.float32))
    results["converted"] = [bool(np.allclose(cm(fortran), expected, rtol=1e-4, atol=1e-5)), ""]
    results["nan"] = [bool(np.isnan(cm(np.full((2, 6), np.nan, np.float32))).all()), ""]
print(json.dumps(results))
"""

EXPECTED = {
    "wrong shape": ["'x'", "shape (2, 4)", "(2, 6)"],
    "wrong rank": ["'x'", "shape (12,)"],
    "two inputs": ["takes 1 input", "got 2"],
    "no input": ["takes 1 input", "got 0"],
    "None": ["'x'", "None"],
    "string": ["'x'"],
    "int dtype": ["'x'", "int32"],
}


@pytest.fixture(scope="module", params=["host", "armv8"])
def outcomes(request):
    done = subprocess.run([sys.executable, "-c", SCRIPT, request.param], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the subprocess died (status {done.returncode}):\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_call_names_the_input(outcomes, case):
    kind, message = outcomes[case]
    assert kind == "InputError", f"{case}: {kind}: {message}"
    for words in EXPECTED[case]:
        assert words in message, f"{case}: {words!r} not in {message!r}"


def test_safe_conversions_and_nan(outcomes):
    assert outcomes["converted"] == [True, ""], "float64 Fortran-order input is converted, not refused"
    assert outcomes["nan"] == [True, ""], "NaN in gives NaN out, as the reference does"


def test_unsupported_op_in_a_traced_model_names_it():
    class Sorting(tf.nn.Module):
        def __init__(self):
            self.fc = tf.nn.Linear(4, 4)

        def forward(self, x):
            return np.sort(self.fc(x), axis=1)

    with pytest.raises(tf.TraceError, match="np.sort is not supported on traced values"):
        tf.compile(Sorting(), np.zeros((2, 4), np.float32))


def test_wrong_example_input_shape_names_the_op():
    with pytest.raises(tf.TraceError, match="op 'linear'.*f32\\[2,5\\]"):
        tf.compile(models.mlp((4, 3)), np.zeros((2, 5), np.float32))


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown target 'sparc'.*known targets: host, x86-64"):
        tf.compile(models.mlp((4, 3)), np.zeros((1, 4), np.float32), target="sparc")
