"""Bad arguments raise InputError naming the input, before native code runs (host and armv8).

The calls run in a subprocess, so a crash in native code fails these tests instead of killing pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tensorforge.runtime import find_cross_tools

TESTS = Path(__file__).resolve().parent

# name -> (expression for the arguments of pair(x: f32[16], c: i32[16]), words the message must contain)
CASES = {
    "no arguments": ("()", ["takes 2 input(s)", "x, c", "got 0"]),
    "one too many": ("(x, c, c)", ["takes 2 input(s)", "got 3"]),
    "wrong shape": ("(x[:8], c)", ["'x'", "shape (8,)", "(16,)"]),
    "wrong rank": ("(x.reshape(4, 4), c)", ["'x'", "shape (4, 4)"]),
    "scalar": ("(x, 3)", ["'c'", "shape ()"]),
    "int for float": ("(c, c)", ["'x'", "dtype int32"]),
    "float for int": ("(x, x)", ["'c'", "dtype float32"]),
    "bool for float": ("(x > 0, c)", ["'x'", "dtype bool"]),
    "complex": ("(x.astype(np.complex64), c)", ["'x'", "complex64"]),
    "int out of range": ("(x, c.astype(np.int64) + 2**40)", ["'c'", "int64"]),
    "None": ("(None, c)", ["'x'", "None"]),
    "object": ("(x, object())", ["'c'", "object"]),
    "string": ("('hello', c)", ["'x'"]),
    "ragged list": ("([[1.0], [1.0, 2.0]], c)", ["'x'"]),
    "dict": ("(x, {'a': 1})", ["'c'"]),
}

SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from runtime_standin import pair_artifact
from tensorforge.runtime import CompiledModel
x = np.ones(16, np.float32)
c = np.arange(16, dtype=np.int32)
results = {{}}
with CompiledModel(pair_artifact({target!r}, 16)) as cm:
    for name, expression in json.loads(sys.argv[1]).items():
        try:
            cm(*eval(expression))
            results[name] = ["no error", ""]
        except Exception as err:
            results[name] = [type(err).__name__, str(err)]
    y, z = cm(x, c)  # the model still works after all that
    results["still works"] = [bool((z == 3 * c).all()), ""]
print(json.dumps(results))
"""


def _cross_tools_missing() -> bool:
    try:
        find_cross_tools("aarch64")
    except Exception:
        return True
    return False


TARGETS = ["host", pytest.param("armv8", marks=pytest.mark.skipif(
    _cross_tools_missing(), reason="needs gcc-aarch64-linux-gnu and qemu-user"))]


@pytest.fixture(scope="module", params=TARGETS)
def outcomes(request) -> dict[str, list]:
    script = SCRIPT.format(tests=str(TESTS), target=request.param)
    cases = {name: expression for name, (expression, _) in CASES.items()}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True, text=True,
                          timeout=120, cwd=TESTS.parent)
    assert done.returncode == 0, f"the subprocess died (status {done.returncode}):\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_argument_raises_input_error(outcomes, case):
    kind, message = outcomes[case]
    assert kind == "InputError", f"{case}: got {kind}: {message}"
    for word in CASES[case][1]:
        assert word in message, f"{case}: {word!r} missing from {message!r}"


def test_model_still_works_after_bad_arguments(outcomes):
    assert outcomes["still works"] == [True, ""]
