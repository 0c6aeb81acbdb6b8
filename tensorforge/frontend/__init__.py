"""The frontend: TinyTorch-style modules (tensorforge.nn), functional ops and the Proxy tracer."""

from . import functional
from . import functional as F  # noqa: N812  (the customary short name)
from .tracer import Proxy, TraceError, trace

__all__ = ["F", "Proxy", "TraceError", "functional", "trace"]
