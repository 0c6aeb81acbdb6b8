"""ONNX's own node test cases compiled for armv8 (run under qemu-user on an x86 host): the first case
of every op the importer claims in CI, every case with HYPOTHESIS_PROFILE=thorough."""

import pytest

pytest.importorskip("onnx")

from onnx_conformance import THOROUGH, conformance_tests  # noqa: E402

from tensorforge.frontend.onnx.backend import Armv8Backend  # noqa: E402

globals().update(conformance_tests(Armv8Backend, __name__, every_case=THOROUGH))
