"""The pass registry: every pass by name, with the lowest opt level that runs it.

    @register_pass("fold-constants", opt_level=1, description="evaluate nodes whose inputs are all constants")
    def fold_constants(graph: ir.Graph, ctx: PassContext) -> ir.Graph: ...

A pass is a function `(graph, ctx) -> graph`: it may rewrite `graph` in place and return it. It must
leave the IR valid (VerifyInstrument checks) and never print or read the environment: options come
from `ctx.config`. The pipeline looks passes up in `PASSES` when it runs them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: its name, its function, the lowest opt level that runs it, one line on what it does."""

    name: str
    function: Callable
    opt_level: int
    description: str

    def replace(self, **changes) -> PassInfo:
        return dataclasses.replace(self, **changes)


PASSES: dict[str, PassInfo] = {}


def register_pass(name: str, opt_level: int, description: str) -> Callable:
    def wrap(function: Callable) -> Callable:
        if name in PASSES:
            raise ValueError(f"pass '{name}' is registered twice")
        PASSES[name] = PassInfo(name, function, opt_level, description)
        return function

    return wrap
