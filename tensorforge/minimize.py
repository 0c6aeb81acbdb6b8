"""Shrink a graph that a pass (or the codegen) gets wrong to a small one that still fails, and write a repro.

    tfg.check(model, x, minimize=True, repro_dir="bug")   # on a divergence, CheckError ends with:
      minimized from 412 to 4 nodes in 0.9 s (23 trials): bug/repro.py reproduces it
    python bug/repro.py                                   # graph.tfir, constants/*.npy, input_0.npy, ...

The failure kept is "the same stage diverges": every stage before it agrees with the oracle (the
graph as given, interpreted) and its outputs do not. Candidates are sub-graphs of the graph given
to the pipeline, each node keeping its name and attributes: the operands of a kept node that are
not kept become new graph inputs holding the values they had (constants when they were computed
from constants only, as fold-constants would have made them). The search:

1. the node the failing pass got wrong (check.py's Divergence, traced back through the earlier
   passes' provenance to the graph given) and the nodes up to r operands above it, r = 0, 1, 2, ...:
   a local rewrite needs only its pattern, so this usually ends at a handful of nodes at once;
   failing that, everything it depends on, and failing that, the whole graph;
2. delta debugging (ddmin) over the nodes kept: drop chunks while the failure stays;
3. ddmin over the passes that run besides the failing one: those not needed are disabled.

A pass divergence is tested with the passes and the interpreter only (milliseconds per candidate);
a codegen divergence compiles each candidate. `write_repro` writes the graph's text IR, its
constants and inputs as .npy files, and a repro.py that runs `tfg.check` with the same settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .check import _close
from .ir import Graph, Node, run_graph
from .ir.printer import print_graph
from .passes import PassContext, pipeline_for, run_pipeline

# (graph, inputs, disabled) -> the compiled outputs, for a divergence of the codegen
RunCompiled = Callable[[Graph, tuple, tuple], list]


@dataclass
class Failure:
    """What must keep failing: `stage` (a pass name, or "codegen") diverges, with these settings."""

    stage: str
    opt_level: int = 2
    target: object = None
    disabled: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)
    rtol: float = 1e-4
    atol: float = 1e-5
    run_compiled: RunCompiled | None = None


@dataclass
class Minimized:
    """The smallest failing graph found, its inputs, the passes disabled for it, and what it took."""

    graph: Graph
    inputs: tuple[np.ndarray, ...]
    disabled: tuple[str, ...]
    passes: tuple[str, ...]  # the passes that run (PIPELINE order): the others are disabled
    nodes_before: int
    seconds: float
    trials: int

    @property
    def nodes(self) -> int:
        return len(self.graph)


def _agree(expected: list, actual: list, rtol: float, atol: float) -> bool:
    return len(expected) == len(actual) and all(_close(e, np.asarray(a), rtol, atol) for e, a in zip(expected, actual))


def _outputs(graph: Graph, inputs: tuple) -> list[np.ndarray]:
    values = run_graph(graph, inputs)
    return [values[node] for node in graph.outputs]


def reproduces(graph: Graph, inputs: tuple, failure: Failure, disabled: tuple[str, ...]) -> bool:
    """Whether `failure.stage` is the first stage of `graph` (passes `disabled`) to diverge. Any
    exception of a candidate (a pass's precondition, an op that cannot run) counts as not failing."""
    try:
        with np.errstate(all="ignore"):
            ctx = PassContext(opt_level=failure.opt_level, target=failure.target, disabled=disabled,
                              config=dict(failure.config))
            snapshots = run_pipeline(graph, ctx).snapshots
            names = [name for name, _ in snapshots]
            oracle = _outputs(snapshots[0][1], inputs)
            if failure.stage == "codegen":
                if failure.run_compiled is None:
                    return False
                if not _agree(oracle, _outputs(snapshots[-1][1], inputs), failure.rtol, failure.atol):
                    return False
                return not _agree(oracle, list(failure.run_compiled(graph, inputs, disabled)), failure.rtol,
                                  failure.atol)
            if failure.stage not in names:
                return False
            index = names.index(failure.stage)
            before = _outputs(snapshots[index - 1][1], inputs) if index > 1 else oracle
            return (_agree(oracle, before, failure.rtol, failure.atol)
                    and not _agree(oracle, _outputs(snapshots[index][1], inputs), failure.rtol, failure.atol))
    except Exception:  # noqa: BLE001 - a candidate that breaks differently is simply not this failure
        return False


def _static_nodes(graph: Graph) -> set[Node]:
    """The op nodes computed from constants only (fold-constants makes constants of them)."""
    static: set[Node] = set()
    for node in graph.nodes:
        if node.op == "constant" or (node.op != "input" and node.inputs and all(i in static for i in node.inputs)):
            static.add(node)
    return static


class Cutter:
    """Makes the sub-graph of `graph` that keeps some of its op nodes (see the module docstring)."""

    def __init__(self, graph: Graph, inputs: tuple) -> None:
        self.graph = graph
        self.values = run_graph(graph, inputs)
        self.static = _static_nodes(graph)
        self.order = {node: index for index, node in enumerate(graph.nodes)}

    def cut(self, keep: set[Node]) -> tuple[Graph, tuple[np.ndarray, ...]]:
        new = Graph()
        mapping: dict[Node, Node] = {}
        arrays: list[np.ndarray] = []
        for node in sorted(keep, key=self.order.__getitem__):
            operands = []
            for operand in node.inputs:
                if operand not in mapping:
                    if operand.op == "constant" or operand in self.static:
                        mapping[operand] = new.constant(self.values[operand], operand.name)
                    else:
                        attrs = dict(operand.attrs) if operand.op == "input" else {}
                        mapping[operand] = new.add_input(operand.name, operand.type, **attrs)
                        arrays.append(self.values[operand])
                operands.append(mapping[operand])
            mapping[node] = new.call(node.op, operands, dict(node.attrs), node.name)
        read = {operand for node in keep for operand in node.inputs}
        new.outputs = [mapping[node] for node in sorted(keep, key=self.order.__getitem__) if node not in read]
        return new, tuple(arrays)


def ddmin(items: list, fails: Callable[[list], bool]) -> list:
    """Zeller's delta debugging: a 1-minimal sub-list of `items` (for which `fails` holds) keeping it."""
    chunks = 2
    while len(items) >= 2:
        size = -(-len(items) // chunks)
        parts = [items[i:i + size] for i in range(0, len(items), size)]
        for part in parts:  # a small failing part: keep only it
            if len(part) < len(items) and fails(part):
                items, chunks = part, 2
                break
        else:
            for part in parts:  # else drop a part
                rest = [item for item in items if item not in part]
                if rest and fails(rest):
                    items, chunks = rest, max(chunks - 1, 2)
                    break
            else:
                if chunks >= len(items):
                    return items
                chunks = min(len(items), 2 * chunks)
    return items


def traced_back(stages: Sequence[tuple[str, Graph]], index: int, names: Sequence[str]) -> set[str]:
    """The values of the first stage's graph that `names` (values of stage `index`) come from,
    following each pass's provenance back."""
    names = set(names)
    for position in range(index, 0, -1):
        graph = stages[position][1]
        by_name = {node.name: node for node in graph.nodes}
        earlier: set[str] = set()
        for name in names:
            node = by_name.get(name)
            if node is not None and graph.is_new(node):
                origin = graph.provenance.get(name)
                earlier.update(origin.values if origin is not None else ())
            else:
                earlier.add(name)
        names = earlier
    return names


def _window(starts: set[Node], radius: int | None) -> set[Node]:
    """`starts` and the op nodes up to `radius` operands above them (None: all of them)."""
    keep, frontier, depth = set(starts), set(starts), 0
    while frontier and (radius is None or depth < radius):
        frontier = {operand for node in frontier for operand in node.inputs
                    if operand.op not in ("input", "constant") and operand not in keep}
        keep |= frontier
        depth += 1
    return keep


def minimize(graph: Graph, inputs: tuple, failure: Failure, suspects: Sequence[str] = (), *,
             verbose: bool = False) -> Minimized:
    """The smallest sub-graph of `graph` (with its inputs) that still fails as `failure` says,
    searched from the values named `suspects` (see the module docstring)."""
    from tqdm import tqdm

    start = time.perf_counter()
    cutter = Cutter(graph, inputs)
    ops = [node for node in graph.nodes if node.op not in ("input", "constant")]
    cache: dict[tuple, bool] = {}
    progress = tqdm(desc=f"minimizing ({failure.stage})", unit=" trials", disable=not verbose, leave=False)

    def fails(keep: Sequence[Node], disabled: tuple[str, ...] = failure.disabled) -> bool:
        key = (frozenset(keep), disabled)
        if key not in cache:
            if not keep:
                cache[key] = False
            else:
                candidate, arrays = cutter.cut(set(keep))
                cache[key] = reproduces(candidate, arrays, failure, disabled)
            progress.update()
        return cache[key]

    by_name = {node.name: node for node in ops}
    starts = {by_name[name] for name in suspects if name in by_name}
    kept: list[Node] | None = None
    if starts:
        previous: set[Node] = set()
        for radius in range(8):
            window = _window(starts, radius)
            if window == previous:
                break
            previous = window
            if fails(sorted(window, key=cutter.order.__getitem__)):
                kept = sorted(window, key=cutter.order.__getitem__)
                break
        if kept is None:
            cone = sorted(_window(starts, None), key=cutter.order.__getitem__)
            kept = cone if fails(cone) else None
    if kept is None:
        kept = ops if fails(ops) else None
    if kept is None:  # not even the whole graph, cut to its sinks, fails alone: hand it back as it is
        progress.close()
        runs = tuple(pipeline_for(failure.opt_level, failure.disabled))
        return Minimized(graph, tuple(inputs), failure.disabled, runs, len(graph), time.perf_counter() - start,
                         len(cache))
    kept = ddmin(kept, fails)
    # the passes besides the failing one that the failure needs; the others are disabled
    others = [name for name in pipeline_for(failure.opt_level, failure.disabled) if name != failure.stage]

    def needs(passes: list[str]) -> bool:
        return fails(kept, (*failure.disabled, *(name for name in others if name not in passes)))

    if others and needs([]):
        needed: list[str] = []
    elif others:
        needed = ddmin(others, needs)
    else:
        needed = []
    disabled = (*failure.disabled, *(name for name in others if name not in needed))
    progress.close()
    minimized, arrays = cutter.cut(set(kept))
    return Minimized(minimized, arrays, disabled, tuple(pipeline_for(failure.opt_level, disabled)), len(graph),
                     time.perf_counter() - start, len(cache))


REPRO = '''"""tensorforge repro, written by tfg.check(..., minimize=True), minimized from {before} to {after} nodes:
{summary}
Needs only tensorforge (and numpy): python repro.py
"""
from pathlib import Path

import numpy as np

import tensorforge as tfg

here = Path(__file__).resolve().parent
constants = {{path.name[:-4]: np.load(path) for path in (here / "constants").glob("*.npy")}}
graph = tfg.ir.parse((here / "graph.tfir").read_text(), constants)
inputs = tuple(np.load(here / f"input_{{i}}.npy") for i in range({count}))
print(graph)
runs = {runs}  # the passes the failure needs; the others are disabled
disabled = tuple(name for name in tfg.passes.PIPELINE if name not in runs)
print(tfg.check(graph, inputs, target={target!r}, opt_level={opt_level}, rtol={rtol!r}, atol={atol!r},
                disabled=disabled))  # raises CheckError: {stage} diverges
'''


def _wrapped(names: tuple[str, ...]) -> str:
    """A tuple literal of `names`, broken into lines of at most about 100 characters."""
    lines, line = [], ""
    for name in names:
        item = f"{name!r}, "
        if line and len(line) + len(item) > 90:
            lines.append(line.rstrip())
            line = ""
        line += item
    lines.append(line.rstrip().removesuffix(",") if len(names) != 1 else line.rstrip())
    return "(" + "\n            ".join(lines) + ")"


def write_repro(directory: str | Path, minimized: Minimized, failure: Failure, target: str, summary: str) -> Path:
    """Write the repro of `minimized` into `directory` (made if missing): graph.tfir, constants/<name>.npy,
    input_<i>.npy and repro.py. Returns the path of repro.py."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    graph = minimized.graph
    (directory / "graph.tfir").write_text(print_graph(graph) + "\n")
    (directory / "constants").mkdir(exist_ok=True)
    for name, array in graph.constants().items():  # value names are file names: letters, digits, '_', '.'
        np.save(directory / "constants" / f"{name}.npy", array, allow_pickle=False)
    for index, array in enumerate(minimized.inputs):
        np.save(directory / f"input_{index}.npy", np.asarray(array), allow_pickle=False)
    script = directory / "repro.py"
    stage = "the codegen" if failure.stage == "codegen" else f"pass '{failure.stage}'"
    script.write_text(REPRO.format(summary=summary.replace('"""', "'''"), before=minimized.nodes_before,
                                   after=minimized.nodes, count=len(minimized.inputs), target=target,
                                   opt_level=failure.opt_level, rtol=failure.rtol, atol=failure.atol,
                                   runs=_wrapped(minimized.passes), stage=stage))
    return script
