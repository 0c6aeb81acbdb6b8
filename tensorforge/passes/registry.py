"""The pass registry: every pass by name, with its function and the lowest opt level that runs it.

    @register_pass("fold-constants", opt_level=1, description="evaluate nodes whose operands are all constants")
    def fold_constants(graph: ir.Graph, ctx: PassContext | None = None) -> ir.Graph: ...

    %1 = transpose(%w) ...      -- PASSES["fold-constants"].function(graph, ctx) -->      %1 = constant() ...

A pass is a function `(graph, ctx) -> graph`: it may rewrite `graph` in place and return it. It must
leave the IR valid (VerifyInstrument checks) and never print or read the environment: options come
from `ctx.config`. The pipeline looks each pass up in `PASSES` when it runs it, so replacing an
entry (a test's monkeypatch) changes what runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import ir

PassFunction = Callable[[ir.Graph, Any], ir.Graph]


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: its name, its function, the lowest opt level that runs it, one line on what it does."""

    name: str
    function: PassFunction
    opt_level: int
    description: str

    def replace(self, **changes: Any) -> PassInfo:
        """A copy with some fields changed, e.g. `info.replace(function=other)`."""
        return dataclasses.replace(self, **changes)


PASSES: dict[str, PassInfo] = {}


def register_pass(name: str, opt_level: int, description: str) -> Callable[[PassFunction], PassFunction]:
    """Decorator: register the decorated function as the pass `name`, run from `opt_level` (0 to 2) up."""
    if not 0 <= opt_level <= 2:
        raise ValueError(f"pass '{name}': opt_level must be 0, 1 or 2, got {opt_level}")

    def wrap(function: PassFunction) -> PassFunction:
        if name in PASSES:
            raise ValueError(f"pass '{name}' is registered twice")
        PASSES[name] = PassInfo(name, function, opt_level, description)
        return function

    return wrap
