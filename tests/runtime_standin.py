"""A stand-in for codegen's Artifact: hand-written LLVM IR for tf_run, for the runtime tests.

    artifact = affine_artifact("host", (4, 8))   # y = 2 * (x + w), through the workspace
    artifact = pair_artifact("armv8", 16)        # (x f32[n], c i32[n]) -> (x + w, 3 * c)

Both follow the native calling convention of docs/architecture.md. The affine model has traps
keyed on the first input element, so tests can make native code fail on purpose:
x[0] == 12345 stores through a null pointer (a crash), x[0] == 54321 returns status 3, and
x[0] == 99999 loops forever.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import llvmlite.binding as llvm
import numpy as np

from tensorforge.codegen.target import Target
from tensorforge.ir import DType, Graph, TensorType

CRASH, FAIL, HANG = 12345.0, 54321.0, 99999.0


@dataclass
class StandInArtifact:
    """The fields of codegen.Artifact that the runtime reads, built from hand-written IR."""

    target: Target
    llvm_ir: str
    input_types: list[TensorType]
    output_types: list[TensorType]
    weights: np.ndarray
    workspace_bytes: int
    graph: object = None
    entry: str = "tf_run"
    compile_seconds: float = 0.0

    def _parsed(self):
        module = llvm.parse_assembly(self.llvm_ir)
        module.verify()
        return module

    def assembly(self) -> str:
        return self.target.target_machine().emit_assembly(self._parsed())

    def object_code(self) -> bytes:
        return self.target.target_machine().emit_object(self._parsed())


def _header(target: Target) -> str:
    machine = target.target_machine()
    return f'target triple = "{target.triple}"\ntarget datalayout = "{machine.target_data}"\n'


def _float_hex(value: float) -> str:
    """LLVM's hexadecimal spelling of a float constant (the double with the same value)."""
    return "0x" + np.float64(np.float32(value)).tobytes()[::-1].hex().upper()


def _affine_ir(target: Target, n: int) -> str:
    crash, fail, hang = (_float_hex(v) for v in (CRASH, FAIL, HANG))
    return _header(target) + f"""
define i32 @tf_run(ptr %inputs, ptr %outputs, ptr %weights, ptr %workspace) {{
entry:
  %x = load ptr, ptr %inputs
  %y = load ptr, ptr %outputs
  %x0 = load float, ptr %x
  %is_crash = fcmp oeq float %x0, {crash}
  br i1 %is_crash, label %crash, label %check_fail
crash:
  store volatile i32 1, ptr null
  ret i32 1
check_fail:
  %is_fail = fcmp oeq float %x0, {fail}
  br i1 %is_fail, label %fail, label %check_hang
fail:
  ret i32 3
check_hang:
  %is_hang = fcmp oeq float %x0, {hang}
  br i1 %is_hang, label %hang, label %add
hang:
  %spin = load volatile i32, ptr %workspace
  br label %hang
add:
  %i = phi i64 [0, %check_hang], [%i.next, %add]
  %px = getelementptr float, ptr %x, i64 %i
  %pw = getelementptr float, ptr %weights, i64 %i
  %pt = getelementptr float, ptr %workspace, i64 %i
  %vx = load float, ptr %px
  %vw = load float, ptr %pw
  %sum = fadd float %vx, %vw
  store float %sum, ptr %pt
  %i.next = add i64 %i, 1
  %add.done = icmp eq i64 %i.next, {n}
  br i1 %add.done, label %scale, label %add
scale:
  %j = phi i64 [0, %add], [%j.next, %scale]
  %qt = getelementptr float, ptr %workspace, i64 %j
  %qy = getelementptr float, ptr %y, i64 %j
  %vt = load float, ptr %qt
  %twice = fmul float %vt, 2.0
  store float %twice, ptr %qy
  %j.next = add i64 %j, 1
  %scale.done = icmp eq i64 %j.next, {n}
  br i1 %scale.done, label %exit, label %scale
exit:
  ret i32 0
}}
"""


def _pair_ir(target: Target, n: int) -> str:
    return _header(target) + f"""
define i32 @tf_run(ptr %inputs, ptr %outputs, ptr %weights, ptr %workspace) {{
entry:
  %x = load ptr, ptr %inputs
  %pc = getelementptr ptr, ptr %inputs, i64 1
  %c = load ptr, ptr %pc
  %y = load ptr, ptr %outputs
  %pz = getelementptr ptr, ptr %outputs, i64 1
  %z = load ptr, ptr %pz
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i.next, %loop]
  %px = getelementptr float, ptr %x, i64 %i
  %pw = getelementptr float, ptr %weights, i64 %i
  %py = getelementptr float, ptr %y, i64 %i
  %vx = load float, ptr %px
  %vw = load float, ptr %pw
  %sum = fadd float %vx, %vw
  store float %sum, ptr %py
  %pci = getelementptr i32, ptr %c, i64 %i
  %pzi = getelementptr i32, ptr %z, i64 %i
  %vc = load i32, ptr %pci
  %tri = mul i32 %vc, 3
  store i32 %tri, ptr %pzi
  %i.next = add i64 %i, 1
  %done = icmp eq i64 %i.next, {n}
  br i1 %done, label %exit, label %loop
exit:
  ret i32 0
}}
"""


def affine_weights(n: int) -> np.ndarray:
    return (np.arange(n, dtype=np.float32) * np.float32(0.5)).astype(np.float32)


def affine_reference(x: np.ndarray) -> np.ndarray:
    """What the affine model computes: 2 * (x + w)."""
    return (np.float32(2) * (x.reshape(-1) + affine_weights(x.size))).reshape(x.shape)


def affine_artifact(target: str = "host", shape: tuple[int, ...] = (4, 8)) -> StandInArtifact:
    """y = 2 * (x + w) for x: f32[shape]; x + w goes through the workspace."""
    start = time.perf_counter()
    tgt = Target.parse(target)
    n = int(np.prod(shape))
    t = TensorType(shape, DType.f32)
    return StandInArtifact(tgt, _affine_ir(tgt, n), [t], [t], affine_weights(n).view(np.uint8).copy(),
                           workspace_bytes=4 * n, compile_seconds=time.perf_counter() - start)


def pair_graph(n: int) -> Graph:
    """The graph the pair model computes, with inputs named x and c."""
    graph = Graph()
    x = graph.add_input("x", TensorType((n,), DType.f32))
    c = graph.add_input("c", TensorType((n,), DType.i32))
    y = graph.call("add", [x, graph.constant(affine_weights(n), "w")])
    z = graph.call("mul", [c, graph.constant(np.full(n, 3, dtype=np.int32), "three")])
    graph.outputs = [y, z]
    return graph


def pair_artifact(target: str = "host", n: int = 16) -> StandInArtifact:
    """(x: f32[n], c: i32[n]) -> (x + w: f32[n], 3 * c: i32[n]); no workspace."""
    tgt = Target.parse(target)
    types = [TensorType((n,), DType.f32), TensorType((n,), DType.i32)]
    return StandInArtifact(tgt, _pair_ir(tgt, n), types, list(types), affine_weights(n).view(np.uint8).copy(),
                           workspace_bytes=0, graph=pair_graph(n))
