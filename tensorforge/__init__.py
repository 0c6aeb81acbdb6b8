"""tensorforge: a small neural-network compiler.

    import tensorforge as tf
    from tensorforge import nn

    graph = tf.trace(model, x)                 # ir.Graph (print it to read the IR)
    ref = tf.interpret(graph, x)               # reference interpreter (numpy)
    cm = tf.compile(model, x, target="armv8")  # passes + llvmlite -> CompiledModel
    tf.check(model, x, target="armv8")         # differential test of every pass and the native code
"""

from . import ir, nn
from .api import check, compile, trace
from .check import CheckError, CheckResult
from .codegen import CodegenError, Target
from .frontend import TraceError
from .ir import Graph, interpret
from .passes import PassContext
from .prune import PruneConfig
from .quantize import QuantConfig, quantize
from .runtime import CompiledModel

__all__ = [
    "CheckError", "CheckResult", "CodegenError", "CompiledModel", "Graph", "PassContext", "PruneConfig", "QuantConfig",
    "Target", "TraceError",
    "check", "compile", "interpret", "ir", "nn", "quantize", "trace",
]
