"""CompiledModel: a compiled graph you call like a function, on this machine or under qemu.

    cm = CompiledModel(artifact)          # host targets: JIT in process; armv8 on x86: qemu runner
    y = cm(x)                             # one output: an array; several: a tuple (or the model's structure)
    cm(x, flat=True)                      # the graph's outputs as they are listed: an array or a tuple
    cm(x, state, out=[y, state])          # outputs written into given arrays (an input's: in place)
    cm.llvm_ir(), cm.assembly()           # what was generated
    cm.export("out/")                     # a C package for the target: model.h, libmodel.a, main.c, Makefile
    cm.memory_report(), cm.profile(x)     # peak activation memory; time per kernel on the roofline
    cm.save("model.tfm")                  # one file; tfg.load("model.tfm") runs the same code (deploy/saved.py)
    cm.close()                            # or `with CompiledModel(artifact) as cm: ...`

A model imported from PyTorch returns what the module returned (`output_structure`, ir/structure.py):
an array, a tuple or list of them, or a dict of arrays for a dict or a Hugging Face ModelOutput. Only
the default return is structured: `flat=True`, `out=` and `bind` give (and take) the flat outputs
in the graph's order, and `cm.unflatten(outputs)` nests a flat list.

Every argument is checked (count, shape, dtype, C-contiguity, alignment, and token ids against the
table a gather reads them from) before native code runs.
An exact float32/shape/C-contiguous ndarray is passed without a copy; anything else goes through
`ir.coerce_input` (lists, float64 -> f32, Fortran order, ...) or raises `ir.InputError` naming
the input. Calls from several threads at once are safe.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..codegen.target import Target
from ..ir import Graph, InputError, TensorType, coerce_input
from ..ir.names import in_input_order
from ..ir.ops_transformer import index_inputs
from ..ir.structure import check_structure, unflatten
from .cross import DEFAULT_TIMEOUT_SECONDS, CrossExecutor
from .host import HostExecutor


def _input_names(artifact, source_graph: Graph | None) -> list[str]:
    for graph in (getattr(artifact, "graph", None), source_graph):
        if isinstance(graph, Graph) and len(graph.inputs) == len(artifact.input_types):
            return [node.name for node in graph.inputs]
    return [f"input{i}" for i in range(len(artifact.input_types))]


def _describe(array) -> str:
    """`array`'s type, dtype and shape for an error message, e.g. `ndarray float64[4, 8]`."""
    return f"{type(array).__name__} {getattr(array, 'dtype', '?')}{list(getattr(array, 'shape', ()))}"


def _is_ready(array, shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """True when `array` can go to native code as it is: an aligned C-contiguous ndarray of the exact type."""
    if type(array) is not np.ndarray or array.dtype != dtype or array.shape != shape:
        return False
    flags = array.flags
    return flags.c_contiguous and flags.aligned


def _overlapping(inputs, outputs) -> list[int]:
    """The positions of the output arrays whose memory may overlap an input's or another output's (by
    address bounds: a constant-time test on the call's path; a false alarm only costs a copy)."""
    return [index for index, array in enumerate(outputs)
            if any(np.may_share_memory(array, other) for other in inputs)
            or any(np.may_share_memory(array, other) for position, other in enumerate(outputs) if position != index)]


class BoundCall:
    """CompiledModel.bind's call: runs the model on the arrays it was bound to; returns the outputs."""

    def __init__(self, model: CompiledModel, inputs: list[np.ndarray], outputs: list[np.ndarray]):
        self.model, self.inputs, self.outputs = model, inputs, outputs
        # outputs that overlap an input are computed into temporaries, copied in after the run
        self._copies = [(index, np.empty_like(outputs[index])) for index in _overlapping(inputs, outputs)]
        targets = list(outputs)
        for index, temporary in self._copies:
            targets[index] = temporary
        self._run = model._executor.bound(inputs, targets)
        self._checks = [(ids, model.input_names[ids.position], inputs[ids.position]) for ids in model._index_inputs]

    def __call__(self) -> np.ndarray | tuple[np.ndarray, ...]:
        if self.model._executor is None:
            raise RuntimeError("this CompiledModel is closed")
        for ids, name, array in self._checks:
            problem = ids.problem(name, array)
            if problem is not None:
                raise InputError(problem)
        self._run()
        for index, temporary in self._copies:
            np.copyto(self.outputs[index], temporary)
        return self.outputs[0] if self.model._single_output else tuple(self.outputs)


class CompiledModel:
    """A compiled model: checks its arguments, runs the native code, returns new output arrays."""

    def __init__(self, artifact, source_graph: Graph | None = None, snapshots: list[tuple[str, Graph]] | None = None,
                 report=None, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, output_structure=None):
        self.artifact = artifact
        self.target: Target = artifact.target
        self.input_types: list[TensorType] = list(artifact.input_types)
        self.output_types: list[TensorType] = list(artifact.output_types)
        self.graph: Graph | None = getattr(artifact, "graph", None)
        self.source_graph = source_graph
        self._snapshots = list(snapshots or [])
        self._replay = None  # a cache hit's passes, run again when their snapshots are asked for (api.py)
        self.pass_report = report
        self.loaded_from: Path | None = None  # the saved-model file or cache entry it was loaded from
        self.cache_status = "off"  # compile's cache: "hit" (loaded from loaded_from), "miss" (stored), "off"
        self.compile_seconds: dict[str, float] = {"llvm": float(getattr(artifact, "compile_seconds", 0.0))}
        self.input_names = _input_names(artifact, source_graph)
        self._input_specs = [(t.shape, t.dtype.numpy) for t in self.input_types]
        self._output_specs = [(t.shape, t.dtype.numpy) for t in self.output_types]
        self._single_output = len(self.output_types) == 1
        if output_structure is not None:
            check_structure(output_structure, len(self.output_types))
        self.output_structure = output_structure  # how the outputs nest (ir/structure.py); None: flat
        # token ids that index a gather's table straight from an input: checked on every call
        self._index_inputs = index_inputs(self.graph) if isinstance(self.graph, Graph) else []
        if self.target.runs_in_process:
            self._executor: HostExecutor | CrossExecutor | None = HostExecutor(artifact)
        else:
            self._executor = CrossExecutor(artifact, timeout_seconds)

    def __call__(self, *arrays, out: list[np.ndarray] | tuple[np.ndarray, ...] | None = None, flat: bool = False):
        """Run on `arrays` (by position, or one dict keyed by the input names: an ONNX model's own names or
        a torch module's forward parameters); the outputs are new arrays, nested as `output_structure`
        says (a model imported from PyTorch: its tuple, list or dict; `flat=True`: one array, or a tuple in the graph's
        order), or written into `out` (one array per output in the graph's order, of its exact shape
        and dtype, C-contiguous, writeable) and returned as given (flat). An `out` array may be an
        input array, or overlap one: an in-place state update, a history shift (`cm(x, h1, h2,
        out=[h1, h2])`), a swap. Such outputs are computed into temporaries and copied in after the
        run, so every input is read before any output array is written."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("this CompiledModel is closed")
        if len(arrays) != len(self._input_specs):
            arrays = self._positional(arrays)
        for array, (shape, dtype) in zip(arrays, self._input_specs):
            if not _is_ready(array, shape, dtype):  # (a dict of one model input is not ready either)
                arrays = self._coerce(self._positional(arrays))
                break
        for ids in self._index_inputs:
            problem = ids.problem(self.input_names[ids.position], arrays[ids.position])
            if problem is not None:
                raise InputError(problem)
        if out is None:
            outputs = [np.empty(shape, dtype) for shape, dtype in self._output_specs]
            executor.run(arrays, outputs)
            if self.output_structure is not None and not flat:
                return unflatten(self.output_structure, outputs)
        else:
            outputs = self._check_out(out)
            overlapping = _overlapping(arrays, outputs)
            targets = [np.empty_like(array) if index in overlapping else array for index, array in enumerate(outputs)]
            executor.run(arrays, targets)  # every input is read before any output array is written
            for index in overlapping:
                np.copyto(outputs[index], targets[index])
        return outputs[0] if self._single_output else tuple(outputs)

    def bind(self, *arrays: np.ndarray, out: list[np.ndarray] | tuple[np.ndarray, ...] | None = None) -> BoundCall:
        """The model on fixed arrays: `call = cm.bind(x, out=[y])`, then write new values into x and
        `call()` writes y, as `cm(x, out=[y])` without the per-call checks and argument handling.
        The call returns the flat outputs (`cm.unflatten(call())` nests them as the model did).

        The arrays are checked once, here: each input must already be what the model takes (an
        aligned C-contiguous ndarray of its exact shape and dtype: no conversion, as the call
        reads the array itself each time), and `out` as for __call__ (new arrays if None). The call
        holds them, so their shape, dtype and memory cannot change. Ids that index a table (token
        inputs of a gather) are still checked on every call."""
        if self._executor is None:
            raise RuntimeError("this CompiledModel is closed")
        arrays = self._positional(arrays)
        for name, expected, array, (shape, dtype) in zip(self.input_names, self.input_types, arrays,
                                                         self._input_specs):
            if not _is_ready(array, shape, dtype):
                got = _describe(array)
                raise InputError(f"bind: input '{name}' must be an aligned C-contiguous ndarray {expected}, got {got}")
        outputs = [np.empty(shape, dtype) for shape, dtype in self._output_specs] if out is None \
            else self._check_out(out)
        return BoundCall(self, list(arrays), outputs)

    def unflatten(self, outputs):
        """Flat outputs (a BoundCall's, an `out=` list) nested as the model returned them (as they are
        when the model has no output structure)."""
        outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
        if len(outputs) != len(self._output_specs):
            raise ValueError(f"the model has {len(self._output_specs)} output(s), got {len(outputs)}")
        if self.output_structure is None:
            return outputs[0] if self._single_output else tuple(outputs)
        return unflatten(self.output_structure, outputs)

    def _positional(self, arrays: tuple) -> tuple:
        """The arguments by position: one dict keyed by the input names (the model's own, e.g. an ONNX
        model's 'input.1', or the IR's) in the inputs' order; InputError for a wrong count."""
        if len(arrays) == 1 and isinstance(arrays[0], Mapping):
            return in_input_order(self.input_names, arrays[0], InputError)
        if len(arrays) != len(self._input_specs):
            raise self._count_error(len(arrays))
        return arrays

    def _count_error(self, count: int) -> InputError:
        return InputError(f"the model takes {len(self._input_specs)} input(s) ({', '.join(self.input_names)}), "
                          f"got {count}")

    def _check_out(self, out) -> list[np.ndarray]:
        if len(out) != len(self._output_specs):
            raise InputError(f"out= needs {len(self._output_specs)} array(s), one per output, got {len(out)}")
        for index, (array, (shape, dtype)) in enumerate(zip(out, self._output_specs)):
            if not _is_ready(array, shape, dtype) or not array.flags.writeable:
                got = _describe(array)
                raise InputError(f"out[{index}] must be a writeable C-contiguous aligned ndarray "
                                 f"{self.output_types[index]}, got {got}")
        return list(out)

    def _coerce(self, arrays: tuple) -> list[np.ndarray]:
        """The slow path: documented safe conversions, then the same check as the fast path."""
        ready = []
        for name, expected, (shape, dtype), value in zip(self.input_names, self.input_types, self._input_specs,
                                                          arrays):
            try:
                array = coerce_input(name, expected, value)
            except InputError:
                raise
            except (TypeError, ValueError) as err:
                raise InputError(f"input '{name}' cannot be read as an array {expected}: {err}") from None
            if isinstance(array, np.ndarray) and not array.flags.aligned:
                array = array.copy()
            if not _is_ready(array, shape, dtype):
                got = _describe(array)
                raise InputError(f"input '{name}' was converted to {got}, not a C-contiguous array {expected}")
            ready.append(array)
        return ready

    # --- what was generated ---------------------------------------------------------------

    def llvm_ir(self) -> str:
        """The optimized LLVM module text."""
        return self.artifact.llvm_ir

    def assembly(self) -> str:
        """The target's assembly for the LLVM module."""
        return self.artifact.assembly()

    @property
    def shared_library(self) -> Path | None:
        """The linked shared library (foreign targets; None on the host). It is removed by close()."""
        return getattr(self._executor, "shared_library", None)

    def export(self, directory, *, weights: str = "linked", verbose: bool = False) -> Path:
        """Write a C package for the target into `directory` (created if missing), run without Python:
        model.h (the C API), model_io.h, libmodel.a and libmodel.so built for the target, main.c, a
        Makefile and a README (docs/deploy.md). `weights="file"` puts the weights in model.weights,
        which tf_model_open checks, instead of in the libraries. Returns the directory."""
        from ..deploy.export import export_model

        return export_model(self, directory, weights=weights, verbose=verbose)

    def save(self, path) -> Path:
        """Write this model to one file at `path` (object code, weights, graph text, io, build options,
        versions; deploy/saved.py); `tensorforge.load(path)` gives back a model computing the same bits."""
        from ..deploy.saved import save_model

        return save_model(self, path)

    @property
    def snapshots(self) -> list[tuple[str, Graph]]:
        """The graph before and after every pass: [("input", g0), (pass, g1), ...]. A model compile found
        in the compile cache runs its passes again for them (no LLVM); a loaded file has none."""
        if not self._snapshots and self._replay is not None:
            replay, self._replay = self._replay, None
            self._snapshots = replay().snapshots
        return self._snapshots

    @snapshots.setter
    def snapshots(self, value) -> None:
        self._snapshots = list(value)

    def report(self) -> str:
        """The pass report (pass, time, nodes before/after) as text; empty when none was given. A model
        from a file or the compile cache gives its compile's report, after a line saying so."""
        if self.pass_report is None:
            return ""
        if self.loaded_from is None:
            return str(self.pass_report)
        where = "the compile cache" if self.cache_status == "hit" else "a saved file"
        return (f"loaded from {where} ({self.loaded_from}): the passes ran when it was compiled, "
                f"with these times\n{self.pass_report}")

    def save_pictures(self, directory, fmt: str = "svg") -> Path:
        """Draw the graph after every pass into `directory`, with an index.html; returns the directory.
        (A compile answered by the cache runs the passes again to draw them; a loaded file cannot.)"""
        from ..visualize import save_pictures

        if not self.snapshots:
            if self.loaded_from is not None:
                raise ValueError(f"this model was loaded from {self.loaded_from}, which keeps the optimized graph "
                                 f"(cm.graph) but not the graph after every pass: compile the model to draw them")
            raise ValueError("this CompiledModel has no pass snapshots to draw (it was built without them)")
        return save_pictures(self.snapshots, self.pass_report, directory, fmt)

    def prune_report(self):
        """What tf.compile(prune=...) did, per layer (tensorforge/prune/): sparsity, shapes, kernel."""
        report = getattr(self, "pruning", None)
        if report is None:
            raise ValueError("this model was compiled without prune=tf.PruneConfig(...)")
        return report

    def quant_report(self):
        """What tf.compile(quantize=...) did, per linear layer (tensorforge/quant/): scheme, SQNR, decision."""
        report = getattr(self, "quantization", None)
        if report is None:
            raise ValueError("this model was compiled without quantize='int8' (or a tf.QuantConfig)")
        return report

    def memory_report(self):
        """Peak activation memory (the workspace arena) against the sum of all intermediate tensors."""
        from ..codegen.memory import memory_report

        if getattr(self.artifact, "memory", None) is None:
            raise ValueError("this artifact carries no memory plan")
        return memory_report(self.artifact.memory, int(self.artifact.weights.size))

    def profile(self, *arrays, repeat: int = 30, warmup: int = 3, verbose: bool = False):
        """Time every kernel on `arrays` in an instrumented build of the same graph (host targets only).

        Returns a runtime.profile.Profile: print it for the table, `.rows` for the data, `.plot(path)`
        for the roofline picture. The kernels' peaks are measured once per process (about a second).
        """
        from tqdm.auto import tqdm

        from ..codegen import build
        from .machine import machine_peaks
        from .profile import Profile, profile_rows

        if not self.target.runs_in_process:
            raise ValueError(f"profile() times code on this machine; target {self.target.name} runs under qemu, "
                             f"whose times say nothing about the device: profile a host build instead")
        if self._executor is None:
            raise RuntimeError("this CompiledModel is closed")
        artifact = self.artifact
        if getattr(self, "_profiled", None) is None:
            self._profiled = CompiledModel(build(artifact.graph, self.target, artifact.opt_level, artifact.threads,
                                                 profile=True))
        instrumented = self._profiled
        # the instrumented runs back to back, then the plain calls: the two builds hold their own
        # copies of the weights, and alternating them would evict each other's from the caches
        runs, calls = [], []
        with tqdm(total=2 * (warmup + repeat), desc="profile", disable=not verbose) as progress:
            for index in range(warmup + repeat):
                instrumented(*arrays)
                if index >= warmup:
                    runs.append(instrumented._executor.kernel_nanoseconds())
                progress.update()
            for index in range(warmup + repeat):
                start = time.perf_counter()
                self(*arrays)
                if index >= warmup:
                    calls.append(time.perf_counter() - start)
                progress.update()
        nodes = {node.name: node for node in artifact.graph.nodes}
        peaks = machine_peaks(artifact.threads)
        rows = profile_rows(nodes, instrumented.artifact.profile_kernels, np.stack(runs),
                            instrumented.artifact.parts, peaks)
        return Profile(rows, peaks, float(np.median(calls)), repeat)

    # --- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Release the JIT engine or stop the qemu runner and remove its temporary directory. Idempotent."""
        executor, self._executor = self._executor, None
        if isinstance(executor, CrossExecutor):
            executor.close()

    @property
    def closed(self) -> bool:
        return self._executor is None

    def __enter__(self) -> CompiledModel:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        inputs = ", ".join(str(t) for t in self.input_types)
        outputs = ", ".join(str(t) for t in self.output_types)
        state = " (closed)" if self.closed else ""
        return f"<CompiledModel {self.target.name}: ({inputs}) -> ({outputs}){state}>"
