"""ONNX's own node test cases, every case of every op the importer claims, compiled for the host.

A case the importer or the codegen refuses (an element type such as float16 or double, an attribute
value) is skipped with the refusal as its reason; every other case must give ONNX's expected
outputs. The per-op counts are in docs/onnx-support.md (scripts/onnx_support.py).
"""

import pytest

pytest.importorskip("onnx")

from onnx_conformance import conformance_tests  # noqa: E402

from tensorforge.frontend.onnx.backend import TensorforgeBackend  # noqa: E402

globals().update(conformance_tests(TensorforgeBackend, __name__, every_case=True))
