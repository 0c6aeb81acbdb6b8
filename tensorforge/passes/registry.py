"""The pass registry: every pass by name, with its function, the lowest opt level that runs it,
and where it must run: the passes it must follow or precede and its preconditions, each with its reason.

    @register_pass("absorb-transpose", opt_level=2, description="read a matmul operand transposed ...",
                   after={"fold-constants": "a weight's transpose is folded already"})
    def absorb_transpose(graph: ir.Graph, ctx: PassContext | None = None) -> ir.Graph: ...

    %1 = transpose(%w) ...      -- PASSES["fold-constants"].function(graph, ctx) -->      %1 = constant() ...

A pass is a function `(graph, ctx) -> graph`: it may rewrite `graph` in place and return it. It must
leave the IR valid (VerifyInstrument checks) and never print or read the environment: options come
from `ctx.config`. The pipeline looks each pass up in `PASSES` when it runs it, so replacing an
entry (a test's monkeypatch) changes what runs.

`after` and `before` map pass names to the reason for the order; `check_order(names)` checks a list
of passes against every such constraint between two of its passes (PIPELINE in a test, and every
run of the pass manager). `requires` maps a condition, in words, to a predicate on the graph that
must hold before the pass runs (`unmet_requirements`; the pass manager checks it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import ir

PassFunction = Callable[[ir.Graph, Any], ir.Graph]
GraphPredicate = Callable[[ir.Graph], bool]


class PassOrderError(ValueError):
    """A list of passes puts two of them in an order one of them forbids."""


class PassRequirementError(ValueError):
    """A pass was about to run on a graph that does not meet one of its preconditions."""


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: its name, its function, the lowest opt level that runs it, one line on what it
    does; the passes it must run after / before (name -> why) and its preconditions (condition -> predicate)."""

    name: str
    function: PassFunction
    opt_level: int
    description: str
    after: Mapping[str, str] = field(default_factory=dict)
    before: Mapping[str, str] = field(default_factory=dict)
    requires: Mapping[str, GraphPredicate] = field(default_factory=dict)

    def replace(self, **changes: Any) -> PassInfo:
        """A copy with some fields changed, e.g. `info.replace(function=other)`."""
        return dataclasses.replace(self, **changes)


PASSES: dict[str, PassInfo] = {}


def register_pass(name: str, opt_level: int, description: str, *, after: Mapping[str, str] | None = None,
                  before: Mapping[str, str] | None = None, requires: Mapping[str, GraphPredicate] | None = None,
                  ) -> Callable[[PassFunction], PassFunction]:
    """Decorator: register the decorated function as the pass `name`, run from `opt_level` (0 to 2) up,
    after / before the passes named in `after` / `before` (each with its reason), on graphs where every
    predicate of `requires` holds (each keyed by the condition in words)."""
    if not 0 <= opt_level <= 2:
        raise ValueError(f"pass '{name}': opt_level must be 0, 1 or 2, got {opt_level}")
    after, before, requires = dict(after or {}), dict(before or {}), dict(requires or {})
    for other in (*after, *before):
        if other == name:
            raise ValueError(f"pass '{name}' cannot run after or before itself")
    both = sorted(set(after) & set(before))
    if both:
        raise ValueError(f"pass '{name}' must run both after and before {both}")

    def wrap(function: PassFunction) -> PassFunction:
        if name in PASSES:
            raise ValueError(f"pass '{name}' is registered twice")
        PASSES[name] = PassInfo(name, function, opt_level, description, after, before, requires)
        return function

    return wrap


@dataclass(frozen=True)
class OrderConstraint:
    """`first` must run before `second`, because of `reason` (declared by pass `declared_by`)."""

    first: str
    second: str
    reason: str
    declared_by: str

    def __str__(self) -> str:
        if self.declared_by == self.second:
            return f"'{self.second}' must run after '{self.first}': {self.reason}"
        return f"'{self.first}' must run before '{self.second}': {self.reason}"


def order_constraints(passes: Mapping[str, PassInfo] | None = None) -> list[OrderConstraint]:
    """Every `after` and `before` of the registered passes, as (first, second, reason) constraints."""
    passes = PASSES if passes is None else passes
    constraints = []
    for info in passes.values():
        constraints += [OrderConstraint(other, info.name, reason, info.name) for other, reason in info.after.items()]
        constraints += [OrderConstraint(info.name, other, reason, info.name) for other, reason in info.before.items()]
    return constraints


def check_order(names: Sequence[str], passes: Mapping[str, PassInfo] | None = None) -> None:
    """Raise PassOrderError naming every pair of `names` in an order some constraint forbids (a
    constraint with one of its passes missing from `names` does not apply; a pass listed twice must
    meet it both times), and ValueError for a constraint naming a pass that is not registered."""
    passes = PASSES if passes is None else passes
    constraints = order_constraints(passes)
    unknown = sorted({f"'{c.declared_by}' names '{other}'" for c in constraints for other in (c.first, c.second)
                      if other not in passes})
    if unknown:
        raise ValueError(f"order constraints name unregistered passes: {'; '.join(unknown)}")
    last = {name: index for index, name in enumerate(names)}
    first = {name: index for index, name in reversed(list(enumerate(names)))}
    broken = [c for c in constraints if c.first in last and c.second in first and last[c.first] > first[c.second]]
    if broken:
        raise PassOrderError("passes out of order: " + "; ".join(
            f"{c} (here '{c.second}' runs before '{c.first}')" for c in broken))


def unmet_requirements(name: str, graph: ir.Graph, passes: Mapping[str, PassInfo] | None = None) -> list[str]:
    """The preconditions of pass `name` (in words) that do not hold for `graph`."""
    info = (PASSES if passes is None else passes)[name]
    return [condition for condition, holds in info.requires.items() if not holds(graph)]
