"""ONNX's node test cases (generated from the installed onnx package) run by ONNX's own runner against
tensorforge: the cases of every op the importer claims. Shared by the host and armv8 test modules.

    globals().update(conformance_tests(TensorforgeBackend, __name__, every_case=True))   # unittest classes
"""

from __future__ import annotations

import os

from onnx.backend.test import BackendTest

from tensorforge.frontend.onnx.backend import node_cases, refusals_as_skips

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


def conformance_tests(backend, module: str, every_case: bool) -> dict[str, type]:
    """The unittest classes of ONNX's BackendTest over the claimed ops' node cases: all of them, or the
    first case of each op. (The runner generates every case it knows; the others are left out rather
    than skipped.)"""
    cases = node_cases()
    names = sorted(name for op_cases in cases.values() for name in (op_cases if every_case else op_cases[:1]))
    backend_test = BackendTest(refusals_as_skips(backend), module)
    wanted = {f"{name}_cpu" for name in names}
    test_cases = {}
    for class_name, test_class in backend_test.test_cases.items():
        for attribute in [a for a in vars(test_class) if a.startswith("test_") and a not in wanted]:
            delattr(test_class, attribute)
        if any(a.startswith("test_") for a in vars(test_class)):
            test_cases[class_name] = test_class
    return test_cases
