"""The pass manager: PassContext, which passes run at each opt level, running them, and the report.

    result = run_pipeline(graph, PassContext(opt_level=2, instruments=[VerifyInstrument()]))
    result.graph        the optimized graph (the caller's graph is not modified)
    result.snapshots    [("input", g0), ("eliminate-dead-code", g1), ...]: copies, before and after each pass
    print(result.report)
      pass                                   time         nodes  changed
      eliminate-dead-code                 0.01 ms        5 -> 5  no
      ...
      fuse-activation                     0.05 ms        4 -> 3  yes
      total                               0.35 ms        5 -> 3

The order of the passes is the one listing `PIPELINE` in `tensorforge/passes/__init__.py`. Before
it runs anything, run_pipeline checks its list against every pass's `after`/`before` (registry.py:
`check_order`, PassOrderError), and before each pass, that pass's `requires` on the graph it gets
(PassRequirementError naming the pass and the condition that does not hold). Each pass starts a
rewrite epoch (`graph.begin_rewrite()`): its snapshot's `graph.provenance` says which value of the
previous snapshot each new node stands for (ir/provenance.py; check.py compares by it).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any

from .. import ir
from .instruments import SnapshotInstrument
from .registry import PASSES, PassRequirementError, check_order, unmet_requirements

MAX_OPT_LEVEL = 3  # 3 runs what 2 runs; the codegen uses it for LLVM's O3


def _pipeline() -> list[str]:
    # PIPELINE lives in the package's __init__, next to the imports of every pass; that module imports
    # this one first, so it is looked up when a pipeline is built, not when this module loads.
    from . import PIPELINE

    return PIPELINE


@dataclass
class PassContext:
    """Everything that configures a pipeline run; passes read nothing else (no environment, no globals).

    `target` is the codegen Target (or None); `disabled` names passes to skip; `config` holds pass
    options (e.g. `fold_max_elements`); `instruments` run around every pass.
    """

    opt_level: int = 2
    target: Any = None
    disabled: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)
    instruments: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.opt_level, bool) or not isinstance(self.opt_level, int) \
                or not 0 <= self.opt_level <= MAX_OPT_LEVEL:
            raise ValueError(f"opt_level must be an int from 0 to {MAX_OPT_LEVEL}, got {self.opt_level!r}")
        if isinstance(self.disabled, str):
            raise ValueError(f"disabled must be a tuple of pass names, got the string {self.disabled!r}")
        self.disabled = tuple(self.disabled)
        unknown = sorted(set(self.disabled) - set(PASSES))
        if unknown:
            raise ValueError(f"unknown pass name(s) in disabled: {unknown}; known passes: {', '.join(_pipeline())}")


def pipeline_for(opt_level: int, disabled: tuple[str, ...] = ()) -> list[str]:
    """The pass names run at `opt_level`, in PIPELINE order, without `disabled`.

    Level 0 runs no pass at all (the graph goes to codegen as traced); level 1 the cheap cleanups
    (simplify, fold-constants, eliminate-dead-code); level 2 (and 3) every pass.
    """
    return [name for name in _pipeline() if PASSES[name].opt_level <= opt_level and name not in disabled]


@dataclass(frozen=True)
class PassRow:
    """One pass run: its name, seconds, node count before and after, whether the printed graph changed."""

    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    changed: bool


@dataclass
class PassReport:
    """One row per pass run, printable as an aligned text table (`str`) or an HTML table (`to_html`)."""

    rows: list[PassRow] = field(default_factory=list)
    disabled: tuple[str, ...] = ()

    @property
    def total_seconds(self) -> float:
        return sum(row.seconds for row in self.rows)

    def __str__(self) -> str:
        width = max([len("total")] + [len(row.name) for row in self.rows]) + 2
        lines = [f"{'pass':<{width}}{'time':>10}  {'nodes':>12}  changed"]
        for row in self.rows:
            nodes, changed = f"{row.nodes_before} -> {row.nodes_after}", "yes" if row.changed else "no"
            lines.append(f"{row.name:<{width}}{row.seconds * 1e3:>7.2f} ms  {nodes:>12}  {changed}")
        nodes = f"{self.rows[0].nodes_before} -> {self.rows[-1].nodes_after}" if self.rows else ""
        lines.append(f"{'total':<{width}}{self.total_seconds * 1e3:>7.2f} ms  {nodes:>12}")
        if self.disabled:
            lines.append(f"disabled: {', '.join(self.disabled)}")
        return "\n".join(lines)

    def to_html(self) -> str:
        cells = "".join(
            f"<tr><td>{html.escape(row.name)}</td><td>{row.seconds * 1e3:.2f} ms</td>"
            f"<td>{row.nodes_before} &rarr; {row.nodes_after}</td><td>{'yes' if row.changed else 'no'}</td></tr>"
            for row in self.rows)
        total = f"<tr><th>total</th><th>{self.total_seconds * 1e3:.2f} ms</th><th></th><th></th></tr>"
        return ("<table class=\"pass-report\"><tr><th>pass</th><th>time</th><th>nodes</th><th>changed</th></tr>"
                f"{cells}{total}</table>")


@dataclass
class PipelineResult:
    """What run_pipeline returns: the optimized graph, the graph before/after each pass, the report."""

    graph: ir.Graph
    snapshots: list[tuple[str, ir.Graph]]
    report: PassReport


def _call_hook(instruments: list, hook: str, *args) -> None:
    for instrument in instruments:
        method = getattr(instrument, hook, None)
        if method is not None:
            method(*args)


def run_pipeline(graph: ir.Graph, ctx: PassContext | None = None, passes: list[str] | None = None) -> PipelineResult:
    """Run `passes` (default: `pipeline_for(ctx.opt_level)`), but not `ctx.disabled`, on a copy of `graph`.

    The passes must be in an order their `after`/`before` allow (PassOrderError), and each pass's
    `requires` must hold when it starts (PassRequirementError). Each pass function is looked up in
    PASSES when it runs. Instruments see every pass
    (`run_before_pipeline`, `run_before_pass`, `run_after_pass`); the snapshots come from the
    SnapshotInstrument in `ctx.instruments`, or from one added for this run.
    """
    ctx = ctx if ctx is not None else PassContext()
    names = pipeline_for(ctx.opt_level) if passes is None else list(passes)
    unknown = [name for name in names if name not in PASSES]
    if unknown:
        raise ValueError(f"unknown pass name(s) {unknown}; known passes: {', '.join(_pipeline())}")
    names = [name for name in names if name not in ctx.disabled]
    check_order(names)
    instruments = list(ctx.instruments)
    snapshots = next((i for i in instruments if isinstance(i, SnapshotInstrument)), None)
    if snapshots is None:
        snapshots = SnapshotInstrument()
        instruments.append(snapshots)
    graph = graph.copy()
    _call_hook(instruments, "run_before_pipeline", graph)
    report = PassReport(disabled=ctx.disabled)
    for name in names:
        unmet = unmet_requirements(name, graph)
        if unmet:
            raise PassRequirementError(f"pass '{name}' requires that {'; and that '.join(unmet)}: "
                                       "the graph it was given does not")
        before_text, before_count = str(graph), len(graph)
        graph.begin_rewrite()  # the pass's new nodes record the values they stand for (ir/provenance.py)
        _call_hook(instruments, "run_before_pass", name, graph, ctx)
        start = time.perf_counter()
        graph = PASSES[name].function(graph, ctx)
        seconds = time.perf_counter() - start
        _call_hook(instruments, "run_after_pass", name, graph, ctx)
        report.rows.append(PassRow(name, seconds, before_count, len(graph), str(graph) != before_text))
    return PipelineResult(graph, list(snapshots.snapshots), report)
