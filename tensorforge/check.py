"""Differential testing: the optimized and compiled model against the reference interpreter.

`check(model, inputs, target="armv8")` interprets the traced graph (the oracle), then the graph
after every pass, then runs the compiled code. The first stage whose outputs differ from the
oracle beyond the tolerance is reported: the pass (or "codegen"), the first node of that pass's
output whose value differs from the value it stands for in the pass's input, and the errors.

    CheckError: fuse-activation changes output 0: max abs error 0.01, max rel error 0.0023 (rtol=0.0001, atol=1e-05)
      first diverging node: %9 = clip(%8) {min=-0.01} : f32[4,8]   (inputs f32[4,8]; layer %relu3)
        stands for, before the pass: %relu3 = relu(%8) : f32[4,8]   (inputs f32[4,8])
        error: max abs 0.00998 at [2, 5] (reference 0, got -0.00998); max rel 0 where |reference| > 1e-05; ...

Nodes are matched by value, not by name: a pass's new nodes record which value of its input they
stand for (ir/provenance.py), nodes it kept keep their name. The relative error is only measured
where the reference is not near zero (|reference| > atol): a reference of 1e-30 gives no 1e+29.
`minimize.py` shrinks a diverging graph to a small repro (`check(..., minimize=True)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ir import Graph, Node, run_graph
from .ir.provenance import Origin

FLOAT_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}  # fp32 after reassociation and fusion
CODE_TOLERANCE = 1  # an int8/uint8 code of an integer layer may be one off its QDQ form (lower-quant)


class CheckError(AssertionError):
    """An optimized or compiled result differs from the reference interpreter.

    `stage` is the pass (or "codegen (<target>)") whose outputs differ, `divergence` the first node
    whose value differs (a Divergence, or None), `repro_dir` where a minimized repro was written
    (check(..., minimize=True)) and `minimized` its graph."""

    def __init__(self, message: str, stage: str | None = None, divergence: Divergence | None = None):
        super().__init__(message)
        self.stage = stage
        self.divergence = divergence
        self.repro_dir: str | None = None
        self.minimized: Graph | None = None


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


@dataclass(frozen=True)
class Errors:
    """How far one array is from its reference: the max abs error, where, and the max relative error
    over the elements whose reference is not near zero (None when every differing one is)."""

    max_abs: float
    index: tuple[int, ...] | None = None
    expected: float = 0.0
    actual: float = 0.0
    max_rel: float | None = 0.0
    near_zero: int = 0  # elements that differ where the reference is near zero (no relative error)

    def __str__(self) -> str:
        if self.index is None:
            return f"max abs {self.max_abs:.3g}"
        where = f"[{', '.join(map(str, self.index))}]"
        rel = ("no element differs where the reference is not near zero" if self.max_rel is None
               else f"max rel {self.max_rel:.3g} where the reference is not near zero")
        text = f"max abs {self.max_abs:.3g} at {where} (reference {self.expected:.6g}, got {self.actual:.6g}); {rel}"
        return text + (f"; {self.near_zero} element(s) differ where it is" if self.near_zero else "")


def array_errors(expected: np.ndarray, actual: np.ndarray, near_zero: float = FLOAT_TOLERANCE["atol"]) -> Errors:
    """The errors of `actual` against `expected` (same shape). NaN against NaN and an infinity against
    the same one agree; `near_zero` bounds the references too small for a relative error."""
    if expected.size == 0:
        return Errors(0.0)
    e = np.asarray(expected).astype(np.float64)
    a = np.asarray(actual).astype(np.float64)
    agree = (np.isnan(e) & np.isnan(a)) | (np.isinf(e) & (e == a))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.nan_to_num(np.where(agree, 0.0, np.abs(e - a)), nan=np.inf)
        magnitude = np.abs(e)
        measurable = np.isfinite(magnitude) & (magnitude > near_zero)
        rel = np.where(measurable & (diff > 0), diff / np.where(measurable, magnitude, 1.0), 0.0)
    differs = diff > 0
    if not differs.any():
        return Errors(0.0)
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    has_rel = bool((differs & measurable).any())
    return Errors(float(diff.max()), index, float(e[index]), float(a[index]), float(rel.max()) if has_rel else None,
                  int((differs & ~measurable).sum()))


def distances(expected: list[np.ndarray], actual: list[np.ndarray]) -> list[tuple[float, float]]:
    """(max abs, max rel) error of each output of `actual` against `expected` (relative error only
    where the reference is not near zero)."""
    return [_errors(np.asarray(e), np.asarray(a)) for e, a in zip(expected, actual, strict=True)]


def _errors(expected: np.ndarray, actual: np.ndarray, atol: float = FLOAT_TOLERANCE["atol"]) -> tuple[float, float]:
    errors = array_errors(expected, actual, atol)
    return errors.max_abs, errors.max_rel or 0.0


def _close(expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float) -> bool:
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        return False
    if expected.dtype.kind != "f":
        return bool(np.array_equal(expected, actual))
    return bool(np.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True))


def values_agree(expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float) -> bool:
    """A node's value against the value it stands for: floats within the tolerance, 8-bit codes within
    one (integer layers round once where their QDQ form rounds the f32 sum), other integers exactly."""
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        return False
    if expected.dtype in (np.int8, np.uint8):
        return bool(np.all(np.abs(expected.astype(np.int32) - actual.astype(np.int32)) <= CODE_TOLERANCE))
    return _close(expected, actual, rtol, atol)


# --- which value of the graph before a pass each node after it stands for ----------------------------

def origin_in(before_names, after: Graph, node: Node) -> Origin | None:
    """What `node` of `after` stands for in the graph before the pass (whose value names are
    `before_names`): its recorded provenance if the pass made it, itself if it was there before,
    None if neither is known."""
    if after.is_new(node):
        return after.provenance.get(node.name)
    return Origin((node.name,)) if node.name in before_names else None


def expected_value(origin: Origin, before_values: dict[str, np.ndarray]) -> np.ndarray | None:
    """The value `origin` says its node computes, from the earlier graph's values by name (None for a
    derived node, or when a value it names is unknown)."""
    if origin.relation == "derived" or any(name not in before_values for name in origin.values):
        return None
    if origin.relation == "same":
        return before_values[origin.values[0]]
    return np.concatenate([before_values[name] for name in origin.values], axis=-1)


@dataclass
class Divergence:
    """The first node of a pass's output whose value differs from the value it stands for."""

    stage: str
    node: str                  # the node after the pass, as text
    op: str
    attrs: dict
    input_types: list[str]
    layer: str                 # the model's layer it computes (meta["layer"], else its name)
    origin: Origin
    before: list[str]          # the nodes it stands for, before the pass, as text
    before_inputs: list[list[str]]
    errors: Errors | None      # None when the shapes or dtypes differ
    mismatch: str = ""

    @property
    def name(self) -> str:
        return self.node.split(" = ", 1)[0].lstrip("%")

    def __str__(self) -> str:
        relation = {"same": "stands for", "concat": "stands for the concatenation (last axis) of"}[self.origin.relation]
        lines = [f"first diverging node: {self.node}   (inputs {', '.join(self.input_types) or 'none'}; "
                 f"layer %{self.layer})"]
        for index, (text, inputs) in enumerate(zip(self.before, self.before_inputs)):
            lead = f"{relation}, before the pass:" if index == 0 else " " * len(f"{relation}, before the pass:")
            lines.append(f"  {lead} {text}   (inputs {', '.join(inputs) or 'none'})")
        lines.append(f"  error: {self.errors}" if self.errors is not None else f"  error: {self.mismatch}")
        return "\n".join(lines)


def _ancestors(nodes: list[Node]) -> set[Node]:
    seen: set[Node] = set()
    pending = list(nodes)
    while pending:
        node = pending.pop()
        if node not in seen:
            seen.add(node)
            pending.extend(node.inputs)
    return seen


def first_divergence(stage: str, before: Graph, before_values: dict[Node, np.ndarray], after: Graph,
                     after_values: dict[Node, np.ndarray], outputs: list[int], rtol: float, atol: float,
                     ) -> Divergence | None:
    """The first node of `after` (in graph order, among those `outputs` depend on) whose value
    differs from the value of `before` it stands for (provenance), or None."""
    by_name = {node.name: value for node, value in before_values.items()}
    before_nodes = {node.name: node for node in before.nodes}
    needed = _ancestors([after.outputs[i] for i in outputs])
    for node in after.nodes:
        if node not in needed or node.op == "input":
            continue
        origin = origin_in(before_nodes, after, node)
        expected = None if origin is None else expected_value(origin, by_name)
        if expected is None:
            continue
        actual = after_values[node]
        if values_agree(expected, actual, rtol, atol):
            continue
        if expected.shape != actual.shape or expected.dtype != actual.dtype:
            errors, mismatch = None, (f"it is {actual.dtype}{list(actual.shape)}, the value it stands for "
                                      f"{expected.dtype}{list(expected.shape)}")
        else:
            errors, mismatch = array_errors(expected, actual, atol), ""
        olds = [before_nodes[name] for name in origin.values]
        return Divergence(stage, node.format(), node.op, dict(node.attrs), [str(n.type) for n in node.inputs],
                          node.meta.get("layer", node.name), origin, [old.format() for old in olds],
                          [[str(n.type) for n in old.inputs] for old in olds], errors, mismatch)
    return None


# --- the stages ------------------------------------------------------------------------------

def compare_stages(stages: list[tuple[str, Graph]], inputs: tuple, compiled_outputs, target: str,
                   rtol: float, atol: float) -> CheckResult:
    """Compare each graph in `stages` (the first is the oracle) and then the compiled outputs."""
    result = CheckResult(target)
    oracle_graph = stages[0][1]
    oracle_values = run_graph(oracle_graph, inputs)
    oracle = [oracle_values[n] for n in oracle_graph.outputs]
    previous, previous_graph = oracle_values, oracle_graph
    for stage, graph in stages[1:]:
        values = run_graph(graph, inputs)
        outputs = [values[n] for n in graph.outputs]

        def locate(diverging, stage=stage, graph=graph, values=values, before=previous_graph, old=previous):
            return first_divergence(stage, before, old, graph, values, diverging, rtol, atol)

        _compare(stage, oracle, outputs, result, rtol, atol, locate)
        previous, previous_graph = values, graph
    _compare(f"codegen ({target})", oracle, compiled_outputs, result, rtol, atol, None)
    return result


def _compare(stage, oracle, outputs, result, rtol, atol, locate) -> None:
    worst_abs = worst_rel = 0.0
    for index, (expected, actual) in enumerate(zip(oracle, outputs, strict=True)):
        actual = np.asarray(actual)
        if expected.shape != actual.shape or expected.dtype != actual.dtype:
            raise CheckError(f"{stage}: output {index} is {actual.dtype}{list(actual.shape)}, "
                             f"the reference gives {expected.dtype}{list(expected.shape)}", stage)
        if not _close(expected, actual, rtol, atol):
            errors = array_errors(expected, actual, atol)
            diverging = [i for i, (e, a) in enumerate(zip(oracle, outputs)) if not _close(e, np.asarray(a), rtol, atol)]
            rel = "n/a (the reference is near zero wherever they differ)" if errors.max_rel is None \
                else f"{errors.max_rel:.3g}"
            divergence = locate(diverging) if locate is not None else None
            if locate is None:
                where = "  first diverging node: (inside the native code; compare cm.llvm_ir() with the last graph)"
            elif divergence is None:
                where = ("  first diverging node: (none: every node stays within the tolerance of the value it "
                         "stands for; the error grows across nodes)")
            else:
                where = "  " + str(divergence).replace("\n", "\n  ")
            raise CheckError(
                f"{stage} changes output {index}: max abs error {errors.max_abs:.3g}, max rel error {rel} "
                f"(rtol={rtol}, atol={atol})\n{where}", stage, divergence)
        abs_err, rel_err = _errors(expected, actual, atol)
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
    result.stages.append((stage, worst_abs, worst_rel))
