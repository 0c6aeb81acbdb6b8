"""The error codegen raises when a node cannot be lowered for a target."""

from __future__ import annotations


class CodegenError(NotImplementedError):
    """A node cannot be lowered: the message names the node, its op, the dtype and the target."""
