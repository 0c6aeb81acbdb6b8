"""The runtime: load compiled code (JIT in process, or a qemu runner for foreign targets) and call it.

    cm = CompiledModel(artifact)     # checks every argument, then one native call per model call
"""

from .compiled import CompiledModel
from .cross import CrossExecutor, CrossTools, find_cross_tools
from .errors import NativeError, RunnerError, RunnerTimeoutError, ToolMissingError
from .host import HostExecutor

__all__ = [
    "CompiledModel", "CrossExecutor", "CrossTools", "HostExecutor", "NativeError", "RunnerError",
    "RunnerTimeoutError", "ToolMissingError", "find_cross_tools",
]
