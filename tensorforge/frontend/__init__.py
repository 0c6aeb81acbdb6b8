"""The frontend: TinyTorch-style modules (tensorforge.nn), functional ops (F) and the Proxy tracer.

    graph = trace(model, x)        # model: a Module or any function of arrays
    y = F.relu(F.linear(x, w, b))  # the same ops eagerly, on numpy arrays
"""

from . import functional
from . import functional as F  # noqa: N812  (the customary short name)
from .proxy import Proxy, TraceError
from .tracing import trace

__all__ = ["F", "Proxy", "TraceError", "functional", "trace"]
