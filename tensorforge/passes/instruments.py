"""Instruments: what runs around every pass (TVM's PassInstrument). Passes themselves stay silent.

    VerifyInstrument()    ir.verify after each pass; PassVerifyError names the pass that broke the IR
    TimingInstrument()    seconds per pass, in `.seconds[name]`
    SnapshotInstrument()  a copy of the graph after each pass, in `.snapshots` (the first is "input")

An instrument is any object with `run_before_pass(name, graph, ctx)` and `run_after_pass(name, graph,
ctx)`, and optionally `run_before_pipeline(graph)`; subclass `Instrument` to get no-op defaults.

    %1 = exp(%x) : f32[4]      -- pass 'simplify' -->      %1 = exp(%x) : f32[8]   (stale type)
    PassVerifyError: pass 'simplify' left an invalid graph: %1 = exp(...) is typed f32[8] but ...
"""

from __future__ import annotations

import time

from .. import ir


class Instrument:
    """Base class with hooks that do nothing: override the ones you need."""

    def run_before_pipeline(self, graph: ir.Graph) -> None:
        pass

    def run_before_pass(self, name: str, graph: ir.Graph, ctx) -> None:
        pass

    def run_after_pass(self, name: str, graph: ir.Graph, ctx) -> None:
        pass


class PassVerifyError(ir.VerifyError):
    """A pass left an invalid graph; the message names the pass, then the verifier's complaint."""


class VerifyInstrument(Instrument):
    """Verifies the input graph, then the graph after every pass."""

    def run_before_pipeline(self, graph: ir.Graph) -> None:
        try:
            ir.verify(graph)
        except ir.VerifyError as error:
            raise PassVerifyError(f"the input graph is invalid (before any pass ran): {error}") from None

    def run_after_pass(self, name: str, graph: ir.Graph, ctx) -> None:
        try:
            ir.verify(graph)
        except ir.VerifyError as error:
            raise PassVerifyError(f"pass '{name}' left an invalid graph: {error}") from None


class TimingInstrument(Instrument):
    """Wall-clock seconds of each pass, in `.seconds[name]` (in pipeline order)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = 0.0

    def run_before_pass(self, name: str, graph: ir.Graph, ctx) -> None:
        self._start = time.perf_counter()

    def run_after_pass(self, name: str, graph: ir.Graph, ctx) -> None:
        self.seconds[name] = time.perf_counter() - self._start


class SnapshotInstrument(Instrument):
    """`(name, graph.copy())` after each pass, after `("input", copy)`; copies share constant arrays."""

    def __init__(self) -> None:
        self.snapshots: list[tuple[str, ir.Graph]] = []

    def run_before_pipeline(self, graph: ir.Graph) -> None:
        self.snapshots = [("input", graph.copy())]

    def run_after_pass(self, name: str, graph: ir.Graph, ctx) -> None:
        self.snapshots.append((name, graph.copy()))
