"""Artifact: what codegen produces for one graph, and what the runtime loads.

    artifact = build(graph, "armv8")
    artifact.llvm_ir            # optimized LLVM IR defining `i32 @tf_run(ptr, ptr, ptr, ptr)`
    artifact.object_code()      # a PIC ELF object for the target: what the runtime loads (host: LLJIT;
                                # armv8: linked by gcc), made once and kept (a saved model stores it)
    artifact.weights            # every constant at artifact.weight_offsets[name], 64-byte aligned
"""

from __future__ import annotations

from dataclasses import dataclass, field

import llvmlite.binding as llvm
import numpy as np

from ..ir import Graph, TensorType
from .memory import WorkspacePlan
from .target import Target


@dataclass
class Artifact:
    """Native code for one graph: `tf_run(inputs, outputs, weights, workspace)` in LLVM IR.

    `inputs`/`outputs` are arrays of pointers to C-contiguous buffers of `input_types` and
    `output_types`; `weights` must be passed 64-byte aligned (a copy of `self.weights`), and
    `workspace` is a 64-byte aligned arena of `workspace_bytes`.
    """

    target: Target
    graph: Graph = field(repr=False)
    llvm_ir: str = field(repr=False)
    input_types: list[TensorType]
    output_types: list[TensorType]
    weights: np.ndarray = field(repr=False)
    weight_offsets: dict[str, int] = field(repr=False)
    workspace_bytes: int
    compile_seconds: float
    opt_level: int = 3
    entry: str = "tf_run"
    threads: int = 1  # the threads of the model's pool (threads/thread_pool.py); 1: no pool, every node on the caller
    memory: WorkspacePlan | None = field(default=None, repr=False)  # where each value lives in the workspace
    parts: dict[str, int] = field(default_factory=dict, repr=False)  # node name -> parts, for split kernels
    profile_offset: int | None = field(default=None, repr=False)  # profiling build: ns per kernel at this offset
    profile_kernels: list[str] = field(default_factory=list, repr=False)  # ... for these nodes, in order
    object: bytes | None = field(default=None, repr=False)  # object_code(), once made (or as loaded from a file)

    def __post_init__(self) -> None:
        self._object_ir = self.llvm_ir if self.object is not None else None  # the IR `object` was made from

    def module(self) -> llvm.ModuleRef:
        """The optimized module, parsed and verified."""
        module = llvm.parse_assembly(self.llvm_ir)
        module.verify()
        return module

    def assembly(self) -> str:
        """The target's assembly text for the module."""
        return self.target.target_machine(self.opt_level).emit_assembly(self.module())

    def object_code(self) -> bytes:
        """The module as a relocatable, position-independent ELF object for the target (made on the
        first call and kept: every runtime loads these bytes, so a saved model runs the same code)."""
        if self.object is None or self._object_ir is not self.llvm_ir:  # (a test may edit llvm_ir)
            self.object = self.target.target_machine(self.opt_level).emit_object(self.module())
            self._object_ir = self.llvm_ir
        return self.object
