"""Differential testing: the optimized and compiled model against the reference interpreter.

`check(model, inputs, target="armv8")` interprets the traced graph (the oracle), then the graph
after every pass, then runs the compiled code. The first stage whose outputs differ from the
oracle beyond the tolerance is reported: the pass (or "codegen"), the first node of that graph
whose value differs from the graph before it, and the max abs/rel error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ir import Graph, run_graph

FLOAT_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}  # fp32 after reassociation and fusion


class CheckError(AssertionError):
    """An optimized or compiled result differs from the reference interpreter."""


@dataclass
class CheckResult:
    """What `check` compared: one row per stage (pass or codegen) with the max errors seen."""

    target: str
    stages: list[tuple[str, float, float]] = field(default_factory=list)  # (stage, max abs, max rel)
    # an int8 or pruned build is checked against its own (quantized or pruned) graph; this is how far
    # the compiled outputs are from the fp32 model's, per output: (max abs, max rel)
    fp32_distance: list[tuple[float, float]] | None = None

    def __str__(self) -> str:
        lines = [f"check against the reference interpreter, target {self.target}: all stages agree"]
        lines += [f"  {stage:<36} max abs {abs_:.3g}  max rel {rel:.3g}" for stage, abs_, rel in self.stages]
        if self.fp32_distance is not None:
            lines.append("distance of the compiled outputs to the fp32 model's (not checked against a tolerance):")
            lines += [f"  output {index:<29} max abs {abs_:.3g}  max rel {rel:.3g}"
                      for index, (abs_, rel) in enumerate(self.fp32_distance)]
        return "\n".join(lines)


def distances(expected: list[np.ndarray], actual: list[np.ndarray]) -> list[tuple[float, float]]:
    """(max abs, max rel) error of each output of `actual` against `expected`."""
    return [_errors(np.asarray(e), np.asarray(a)) for e, a in zip(expected, actual, strict=True)]


def _errors(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    if expected.size == 0:
        return 0.0, 0.0
    e = expected.astype(np.float64)
    a = actual.astype(np.float64)
    both_nan = np.isnan(e) & np.isnan(a)
    same_inf = np.isinf(e) & (e == a)
    diff = np.where(both_nan | same_inf, 0.0, np.abs(e - a))
    diff = np.nan_to_num(diff, nan=np.inf)
    rel = diff / np.maximum(np.abs(np.nan_to_num(e, nan=0.0, posinf=0.0, neginf=0.0)), 1e-30)
    return float(diff.max()), float(np.where(diff == 0, 0.0, rel).max())


def _close(expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float) -> bool:
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        return False
    if expected.dtype.kind != "f":
        return bool(np.array_equal(expected, actual))
    return bool(np.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True))


def _first_diverging_node(before: dict, after: dict, rtol: float, atol: float) -> str:
    """The first node of the later graph whose same-named value in the earlier graph differs."""
    by_name = {node.name: value for node, value in before.items()}
    for node, value in after.items():
        old = by_name.get(node.name)
        if old is not None and old.shape == value.shape and not _close(old, value, rtol, atol):
            return node.format()
    return "(no node with the same name differs; the outputs are computed differently)"


def compare_stages(stages: list[tuple[str, Graph]], inputs: tuple, compiled_outputs, target: str,
                   rtol: float, atol: float) -> CheckResult:
    """Compare each graph in `stages` (the first is the oracle) and then the compiled outputs."""
    result = CheckResult(target)
    oracle_values = run_graph(stages[0][1], inputs)
    oracle = [oracle_values[n] for n in stages[0][1].outputs]
    previous = oracle_values
    for stage, graph in stages[1:]:
        values = run_graph(graph, inputs)
        outputs = [values[n] for n in graph.outputs]
        _compare(stage, oracle, outputs, result, rtol, atol,
                 lambda v=values, p=previous: _first_diverging_node(p, v, rtol, atol))
        previous = values
    _compare(f"codegen ({target})", oracle, compiled_outputs, result, rtol, atol,
             lambda: "(inside the native code; compare cm.llvm_ir() with the last graph)")
    return result


def _compare(stage, oracle, outputs, result, rtol, atol, locate) -> None:
    worst_abs = worst_rel = 0.0
    for index, (expected, actual) in enumerate(zip(oracle, outputs, strict=True)):
        actual = np.asarray(actual)
        if expected.shape != actual.shape or expected.dtype != actual.dtype:
            raise CheckError(f"{stage}: output {index} is {actual.dtype}{list(actual.shape)}, "
                             f"the reference gives {expected.dtype}{list(expected.shape)}")
        abs_err, rel_err = _errors(expected, actual)
        if not _close(expected, actual, rtol, atol):
            raise CheckError(
                f"{stage} changes output {index}: max abs error {abs_err:.3g}, max rel error {rel_err:.3g} "
                f"(rtol={rtol}, atol={atol})\n  first diverging node: {locate()}")
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
    result.stages.append((stage, worst_abs, worst_rel))
