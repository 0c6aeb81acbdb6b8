"""tensorforge as an ONNX backend (`onnx.backend.base.Backend`), for ONNX's own conformance tests.

    rep = TensorforgeBackend.prepare(model)            # checked and imported (UnsupportedOnnxOp here)
    outputs = rep.run([x])                             # compiled for the inputs' shapes, then run
    Armv8Backend.run_model(model, [x])                 # the same for armv8 (under qemu on x86)

    backend_test = onnx.backend.test.BackendTest(TensorforgeBackend, __name__)   # ONNX's node cases

The model is imported in `prepare`, so an unsupported op or attribute is refused there; it is
compiled in `run`, once per set of input shapes. `node_cases()` lists the ONNX package's node test
cases whose ops the importer claims (`supported_ops()`): the conformance tests and the table in
docs/onnx-support.md run exactly those. This module imports `onnx`: use it with the onnx extra.
"""

from __future__ import annotations

import onnx
from onnx.backend.base import Backend, BackendRep

from ...api import compile as compile_model
from .importer import load_onnx, supported_ops


class TensorforgeRep(BackendRep):
    """A prepared model: imported once, compiled for each new set of input shapes and dtypes."""

    def __init__(self, model, target: str):
        self.model = model
        self.target = target
        self.graph = load_onnx(model, None) if _static_inputs(model) else None
        self._compiled = {}

    def run(self, inputs, **kwargs):
        arrays = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
        if not isinstance(inputs, (list, tuple, dict)):
            arrays = [inputs]
        key = tuple((a.shape, a.dtype.str) for a in arrays)
        if key not in self._compiled:  # a model of static shapes was imported in prepare: compile that graph
            source = self.model if self.graph is None else self.graph
            self._compiled[key] = compile_model(source, tuple(arrays), target=self.target)
        outputs = self._compiled[key](*arrays)
        return tuple(outputs) if isinstance(outputs, tuple) else (outputs,)


def _static_inputs(model) -> bool:
    """Every input has a known shape (or is not a tensor, which the import then refuses)."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        shape = value.type.tensor_type.shape
        if not value.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in shape.dim):
            return False
    return True


class TensorforgeBackend(Backend):
    """The host target (this machine's CPU, JIT-compiled in process)."""

    target = "host"

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> TensorforgeRep:
        onnx.checker.check_model(model)
        return TensorforgeRep(model, cls.target)

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        raise NotImplementedError("tensorforge runs whole models: use run_model")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


class Armv8Backend(TensorforgeBackend):
    """The armv8 (AArch64) target: on an x86 host its code runs under qemu-user."""

    target = "armv8"


def node_cases() -> dict[str, list[str]]:
    """ONNX's node test cases (from the installed onnx package) whose ops are all ones the importer
    claims, by op type: {"Relu": ["test_relu"], ...}. Cases of several op types (most are function
    bodies, "_expanded") are listed under COMPOSITE."""
    import warnings

    from onnx.backend.test.loader import load_model_tests

    claimed = set(supported_ops())
    cases: dict[str, list[str]] = {}
    with warnings.catch_warnings():  # generating the cases computes overflows and logs of zero on purpose
        warnings.simplefilter("ignore")
        generated = load_model_tests(kind="node")
    for case in generated:
        model = case.model if case.model is not None else onnx.load(f"{case.model_dir}/model.onnx")
        ops = [node.op_type for node in model.graph.node]
        if ops and all(op in claimed and node.domain in ("", "ai.onnx") for op, node in zip(ops, model.graph.node)):
            cases.setdefault(ops[0] if len(set(ops)) == 1 else COMPOSITE, []).append(case.name)
    return cases


COMPOSITE = "(several ops)"




def refusals_as_skips(backend: type[TensorforgeBackend]) -> type[TensorforgeBackend]:
    """`backend` for ONNX's test runner: a case the importer or codegen refuses with a clear error
    (an op version, attribute value, element type or dtype it does not support) is skipped with that
    error as the reason, so the runner counts it as unsupported; any other error, or a wrong
    output, fails the case."""
    import unittest

    from ...codegen import CodegenError
    from .reader import OnnxImportError

    refusals = (OnnxImportError, CodegenError)

    class Rep(TensorforgeRep):
        def run(self, inputs, **kwargs):
            try:
                return super().run(inputs, **kwargs)
            except refusals as error:
                raise unittest.SkipTest(f"unsupported: {error}") from None

    class Refusing(backend):
        @classmethod
        def prepare(cls, model, device: str = "CPU", **kwargs):
            onnx.checker.check_model(model)
            try:
                return Rep(model, cls.target)
            except refusals as error:
                raise unittest.SkipTest(f"unsupported: {error}") from None

    Refusing.__name__ = f"Refusing{backend.__name__}"
    return Refusing


__all__ = ["COMPOSITE", "Armv8Backend", "TensorforgeBackend", "TensorforgeRep", "node_cases", "refusals_as_skips"]
