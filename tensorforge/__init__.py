"""tensorforge: a small neural-network compiler.

    import tensorforge as tfg                       # not `tf`, TensorFlow's customary name (it still works)
    from tensorforge import nn

    graph = tfg.trace(model, x)                     # ir.Graph (print it to read the IR)
    ref = tfg.interpret(graph, x)                   # reference interpreter (numpy)
    cm = tfg.compile(model, x, target="armv8")      # passes + llvmlite -> CompiledModel
    gen = tfg.compile_generator(gpt, max_len=128)   # prefill + decode with a KV cache: gen.generate(ids, 20)
    tfg.check(model, x, target="armv8")             # differential test of every pass and the native code
    cm.save("model.tfm"); cm = tfg.load("model.tfm")  # one file, loaded without LLVM (gen.save, tfg.load_generator)
"""

from . import ir, nn
from .api import check, compile, trace
from .check import CheckError, CheckResult
from .codegen import CodegenError, Target
from .deploy.saved import SavedModelError, load, load_generator
from .frontend import TraceError
from .generate import Generator, compile_generator
from .ir import Graph, interpret
from .passes import PassContext
from .prune import PruneConfig
from .quant import QuantConfig, quantize
from .runtime import CompiledModel

__all__ = [
    "CheckError", "CheckResult", "CodegenError", "CompiledModel", "Generator", "Graph", "PassContext", "PruneConfig",
    "QuantConfig", "SavedModelError", "Target", "TraceError",
    "check", "compile", "compile_generator", "interpret", "ir", "load", "load_generator", "nn", "quantize", "trace",
]
