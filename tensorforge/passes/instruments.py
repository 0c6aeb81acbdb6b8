"""Instruments: what runs around every pass (TVM's PassInstrument). Passes themselves stay silent.

    VerifyInstrument()    ir.verify after each pass; PassVerifyError names the pass that broke the IR
    TimingInstrument()    seconds per pass, in `.seconds[name]`
    SnapshotInstrument()  a copy of the graph after each pass, in `.snapshots` (the first is "input")
"""

from __future__ import annotations

import time

from .. import ir


class Instrument:
    """Base class: override the hooks you need."""

    def run_before_pipeline(self, graph: ir.Graph) -> None:
        pass

    def run_before_pass(self, name: str, graph: ir.Graph, ctx) -> None:
        pass

    def run_after_pass(self, name: str, graph: ir.Graph, ctx) -> None:
        pass


class PassVerifyError(ir.VerifyError):
    """A pass left an invalid graph."""


class VerifyInstrument(Instrument):
    def run_before_pipeline(self, graph: ir.Graph) -> None:
        ir.verify(graph)

    def run_after_pass(self, name: str, graph: ir.Graph, ctx) -> None:
        try:
            ir.verify(graph)
        except ir.VerifyError as error:
            raise PassVerifyError(f"pass '{name}' left an invalid graph: {error}") from None


class TimingInstrument(Instrument):
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = 0.0

    def run_before_pass(self, name: str, graph: ir.Graph, ctx) -> None:
        self._start = time.perf_counter()

    def run_after_pass(self, name: str, graph: ir.Graph, ctx) -> None:
        self.seconds[name] = time.perf_counter() - self._start


class SnapshotInstrument(Instrument):
    def __init__(self) -> None:
        self.snapshots: list[tuple[str, ir.Graph]] = []

    def run_before_pipeline(self, graph: ir.Graph) -> None:
        self.snapshots = [("input", graph.copy())]

    def run_after_pass(self, name: str, graph: ir.Graph, ctx) -> None:
        self.snapshots.append((name, graph.copy()))
