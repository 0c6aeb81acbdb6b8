"""Code generation: lowering of graph nodes to loop nests, emitted as LLVM IR with llvmlite.

    artifact = build(graph, "armv8")    # one native entry `tf_run` per graph (docs/architecture.md)
"""

from . import ops  # noqa: F401  (registers every op's lowering)
from .artifact import Artifact
from .build import build
from .errors import CodegenError
from .target import Target

__all__ = ["Artifact", "CodegenError", "Target", "build"]
