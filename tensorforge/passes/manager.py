"""The pass manager: which passes run at each opt level, running them, and the report.

    result = run_pipeline(graph, PassContext(opt_level=2, instruments=[VerifyInstrument()]))
    result.graph        the optimized graph (the caller's graph is not modified)
    result.snapshots    [("input", g0), ("simplify", g1), ...] when a SnapshotInstrument was given (else [])
    print(result.report)
      pass                              time   nodes  changed
      simplify                        0.2 ms   9 -> 8  yes
      ...
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any

from .. import ir
from .instruments import SnapshotInstrument
from .registry import PASSES

# The one pipeline, in order. Each pass runs if ctx.opt_level >= its own opt_level.
PIPELINE = [
    "simplify",                          # x*1, x+0, reshape chains: cheap, and exposes constant subgraphs
    "fold-constants",                    # weight-only subgraphs (transposes, scalings) become constants
    "fold-batch-norm",                   # needs conv/linear weights as constants: after folding
    "eliminate-common-subexpressions",   # after folding, equal constants and equal ops are visible
    "eliminate-dead-code",               # last: drops what the passes above left unused
]
MAX_OPT_LEVEL = 3  # 3 runs what 2 runs; the codegen uses it for LLVM's O3


@dataclass
class PassContext:
    """Everything that configures a pipeline run: passes never read anything else."""

    opt_level: int = 2
    target: Any = None
    disabled: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)
    instruments: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.opt_level, int) or not 0 <= self.opt_level <= MAX_OPT_LEVEL:
            raise ValueError(f"opt_level must be an int from 0 to {MAX_OPT_LEVEL}, got {self.opt_level!r}")
        self.disabled = tuple(self.disabled)
        unknown = sorted(set(self.disabled) - set(PASSES))
        if unknown:
            raise ValueError(f"unknown pass name(s) in disabled: {unknown}; known passes: {', '.join(PIPELINE)}")


def pipeline_for(opt_level: int, disabled: tuple[str, ...] = ()) -> list[str]:
    """The pass names run at `opt_level`, in order. Level 0 runs none."""
    return [name for name in PIPELINE if PASSES[name].opt_level <= opt_level and name not in disabled]


@dataclass(frozen=True)
class PassRow:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    changed: bool


@dataclass
class PassReport:
    """One row per pass run: time, node count before and after, whether the graph changed."""

    rows: list[PassRow] = field(default_factory=list)
    disabled: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"{'pass':<34}{'time':>10}  {'nodes':>12}  changed"]
        for row in self.rows:
            nodes = f"{row.nodes_before} -> {row.nodes_after}"
            lines.append(f"{row.name:<34}{row.seconds * 1e3:>7.2f} ms  {nodes:>12}  {'yes' if row.changed else 'no'}")
        total = sum(row.seconds for row in self.rows)
        lines.append(f"{'total':<34}{total * 1e3:>7.2f} ms")
        if self.disabled:
            lines.append(f"disabled: {', '.join(self.disabled)}")
        return "\n".join(lines)

    def to_html(self) -> str:
        cells = "".join(
            f"<tr><td>{html.escape(row.name)}</td><td>{row.seconds * 1e3:.2f} ms</td>"
            f"<td>{row.nodes_before} &rarr; {row.nodes_after}</td><td>{'yes' if row.changed else 'no'}</td></tr>"
            for row in self.rows)
        return ("<table class='pass-report'><tr><th>pass</th><th>time</th><th>nodes</th><th>changed</th></tr>"
                f"{cells}</table>")


@dataclass
class PipelineResult:
    graph: ir.Graph
    snapshots: list[tuple[str, ir.Graph]]
    report: PassReport


def run_pipeline(graph: ir.Graph, ctx: PassContext | None = None, passes: list[str] | None = None) -> PipelineResult:
    """Run `passes` (default: the pipeline of ctx.opt_level) on a copy of `graph`, with ctx's instruments."""
    ctx = ctx or PassContext()
    names = pipeline_for(ctx.opt_level, ctx.disabled) if passes is None else list(passes)
    graph = graph.copy()
    for instrument in ctx.instruments:
        instrument.run_before_pipeline(graph)
    report = PassReport(disabled=ctx.disabled)
    for name in names:
        if name not in PASSES:
            raise ValueError(f"unknown pass '{name}'; known passes: {', '.join(PIPELINE)}")
        before_text, before_count = str(graph), len(graph)
        for instrument in ctx.instruments:
            instrument.run_before_pass(name, graph, ctx)
        start = time.perf_counter()
        graph = PASSES[name].function(graph, ctx)
        seconds = time.perf_counter() - start
        for instrument in ctx.instruments:
            instrument.run_after_pass(name, graph, ctx)
        report.rows.append(PassRow(name, seconds, before_count, len(graph), str(graph) != before_text))
    snapshots = next((i.snapshots for i in ctx.instruments if isinstance(i, SnapshotInstrument)), [])
    return PipelineResult(graph, list(snapshots), report)
