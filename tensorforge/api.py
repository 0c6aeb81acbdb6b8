"""The public entry points: trace, compile and check a model.

    cm = tf.compile(model, x, target="armv8")   # trace -> passes -> LLVM -> CompiledModel
    y = cm(x)
    tf.check(model, x, target="armv8")          # raises CheckError naming the first diverging pass
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .check import FLOAT_TOLERANCE, CheckError, CheckResult, compare_stages, distances
from .codegen import build
from .codegen.target import Target
from .deploy.cache import array_digest, cache_directory, config_record, entry_for
from .deploy.saved import read_model, save_model
from .frontend.onnx import is_onnx_model, load_onnx
from .frontend.torch import is_torch_model, load_torch
from .frontend.torch.export import to_numpy
from .frontend.tracing import trace as _trace
from .ir import Graph, coerce_inputs, interpret
from .ir.names import in_input_order
from .ir.structure import check_structure
from .passes import PassContext, SnapshotInstrument, TimingInstrument, VerifyInstrument, run_pipeline
from .prune import PruneConfig, apply_pruning
from .quant import QuantConfig
from .quant import quantize as quantize_graph
from .runtime import CompiledModel


def _as_tuple(example_inputs) -> tuple:
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    return (example_inputs,)


def trace(model, example_inputs=None) -> Graph:
    """Record `model(*example_inputs)` as a graph. A Graph is returned as it is; an ONNX model (a path
    ending in .onnx, its bytes or a ModelProto) is imported, its symbolic axes sized by the example
    inputs (by position, or a dict keyed by the model's input names); a torch.nn.Module (in eval mode)
    or a torch.export.ExportedProgram is imported through torch.export (inputs: torch tensors or
    numpy arrays, by position or by the forward's parameter names)."""
    if isinstance(model, Graph):
        return model
    if is_onnx_model(model):
        return load_onnx(model, example_inputs)
    if is_torch_model(model):
        return load_torch(model, example_inputs)
    if example_inputs is None:
        raise TypeError("trace() needs example_inputs to run the model on (one array or a tuple of arrays)")
    return _trace(model, _positional(example_inputs))


def _positional(example_inputs):
    """Example inputs as trace() passes them: a dict (keyed by input names) is refused for a Python model."""
    if isinstance(example_inputs, dict):
        raise TypeError("example inputs by name (a dict) are for ONNX models; pass a tuple in the model's order")
    return example_inputs


def inputs_in_order(graph: Graph, inputs) -> tuple:
    """`inputs` as a tuple in the graph's input order: a tuple as it is, a dict by input name (the model's
    own names, or the IR's, e.g. 'input.1' or 'input_1'). Torch tensors become numpy arrays."""
    if not isinstance(inputs, dict):
        return tuple(to_numpy(value) for value in _as_tuple(inputs))
    inputs = {key: to_numpy(value) for key, value in inputs.items()}
    return in_input_order([node.name for node in graph.inputs], inputs, TypeError)


LLVM_OPT_LEVEL = {0: 0, 1: 1, 2: 3}  # compile's opt_level -> LLVM's


def default_threads(target: Target) -> int:
    """The cores this process may run on, for the host; 1 for another machine (say `threads=`)."""
    if not target.runs_in_process:
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def checked_threads(threads, target: Target) -> int:
    """`threads` validated: an int >= 1 (None: default_threads); on the host, more threads than the cores
    this process may use draw a warning (they would mostly wait for each other: 64 threads on 2 cores
    ran 17x slower). They are kept: a test of the thread pool may want more threads than cores."""
    if threads is None:
        return default_threads(target)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1 (or None: every core of the host), got {threads!r}")
    cores = default_threads(target)
    if target.runs_in_process and threads > cores:
        warnings.warn(f"threads={threads} but this process may run on {cores} cores: the extra threads mostly "
                      f"wait for each other (threads={cores} is the default here)", stacklevel=3)
    return threads


def _check_prune(prune) -> None:
    if prune is not None and not isinstance(prune, PruneConfig):
        raise TypeError(f"prune= takes a tfg.PruneConfig, e.g. tfg.PruneConfig(method=\"structured\", sparsity=0.5); "
                        f"got {prune!r} ({type(prune).__name__})")


def compile(model, example_inputs=None, target: str | Target = "host", opt_level: int = 2, *,
            threads: int | None = None, disabled: tuple[str, ...] = (), config: dict | None = None,
            pack: bool = True, share_memory: bool = True, prune=None, quantize=None, calibration=None,
            cache=True, verbose: bool = False, weights_pool=None) -> CompiledModel:
    """Trace `model` on `example_inputs`, optimize the graph and build native code for `target`.

    `model` is a tensorforge.nn Module, a plain function of arrays, an ONNX model (a path, bytes or
    ModelProto; example inputs by position or by input name), a torch.nn.Module in eval mode or a
    torch.export.ExportedProgram (example inputs: torch tensors or numpy arrays) or an ir.Graph (then `example_inputs`
    may be omitted, as for an ONNX model whose input shapes are all static). Several inputs go in a
    tuple. `disabled` names passes to skip.
    `threads` is the most threads a kernel may use (default: every core of the host; 1 for other
    targets); small kernels always run on one. `opt_level` picks the passes (0: none, 1: clean-ups
    and folding, 2: fusion too) and LLVM's level (O0, O1, O3 for 2 and above). `pack=False` and
    `share_memory=False` turn off weight packing and memory planning, to measure what they buy.
    `prune=tf.PruneConfig(...)` prunes the traced graph first (tensorforge/prune/).
    `quantize="int8"` (or a tf.QuantConfig) with `calibration` (an array of samples, batched like
    example_inputs) quantizes its linear layers to int8 (tensorforge/quant/): cm.quant_report().
    A torch model's compiled call returns what the module returns: an array, a tuple or list of
    arrays, or a dict of arrays for a dict or a Hugging Face ModelOutput (its fields that are not
    None); `cm(x, flat=True)`, `out=` and `cm.bind` keep the flat list of the graph's outputs.
    `cache` (True: the default directory, unless TENSORFORGE_CACHE=0; False: off; or a directory):
    the compile cache (tensorforge/deploy/cache.py) returns the model an earlier compile of the same
    traced graph, target and options built, skipping everything after tracing (cm.cache_status).
    `weights_pool` (a codegen.memory.WeightsPool; with cache=False): the weights buffer shared with the
    other models built with it (compile_generator's prefill and decode).
    """
    target = Target.parse(target)
    threads = checked_threads(threads, target)
    _check_prune(prune)
    cache_directory(cache)  # a bad value is refused before any work
    if not isinstance(model, Graph) and not is_onnx_model(model) and example_inputs is None and \
            not is_torch_model(model):
        raise TypeError("compile() needs example_inputs to trace the model (one array or a tuple of arrays)")
    quant_config = None
    if quantize is not None:
        quant_config = QuantConfig.of(quantize)
        if calibration is None and not quant_config.dynamic:
            raise TypeError("compile(quantize=...) needs calibration=<samples> to choose the int8 scales "
                            "(or quantize=tf.QuantConfig(dynamic=True))")
    if prune is not None:
        disabled = (*disabled, *prune.disabled_passes)
    start = time.perf_counter()
    traced = trace(model, example_inputs)
    structure = traced.output_structure  # the model's own output nesting (a torch model's); rewrites drop it
    trace_seconds = time.perf_counter() - start
    llvm_level = LLVM_OPT_LEVEL[min(opt_level, 2)]

    def rewritten(graph: Graph) -> tuple[Graph, object, object]:
        """The graph the passes get: pruned, quantized (with their reports) as asked."""
        prune_report = quant_report = None
        if prune is not None:
            graph, prune_report = apply_pruning(graph, prune)
        if quant_config is not None:
            graph, quant_report = quantize_graph(graph, calibration, quant_config)
        return graph, prune_report, quant_report

    def context() -> PassContext:
        return PassContext(opt_level=opt_level, target=target, disabled=tuple(disabled), config=dict(config or {}),
                           instruments=[VerifyInstrument(), TimingInstrument(), SnapshotInstrument()])

    entry = None
    if cache is not False:
        options = {"opt_level": opt_level, "llvm_opt_level": llvm_level, "threads": threads,
                   "disabled": sorted(set(disabled)), "config": config or {}, "pack": pack,
                   "share_memory": share_memory, "prune": config_record(prune), "quantize": config_record(quant_config),
                   "calibration": None if quant_config is None or calibration is None else array_digest(calibration)}
        entry = entry_for(cache, "model", traced, target, options)
    if entry is not None:
        compiled = entry.load(read_model)
        if compiled is not None:
            compiled.cache_status = "hit"
            if structure is not None:
                check_structure(structure, len(compiled.output_types))
                compiled.output_structure = structure
            compiled.source_graph = traced if prune is None and quant_config is None else None
            compiled._replay = lambda: run_pipeline(rewritten(traced)[0], context())
            done = time.perf_counter()
            compiled.compile_seconds = {"trace": trace_seconds, "passes": 0.0, "llvm": 0.0,
                                        "cache key": entry.seconds["key"], "load": entry.seconds["load"],
                                        "total": done - start}
            if verbose:
                print(compiled.report())
            return compiled
    rewriting = time.perf_counter()
    graph, prune_report, quant_report = rewritten(traced)
    trace_seconds += time.perf_counter() - rewriting  # tracing, pruning and quantizing, as before the cache
    result = run_pipeline(graph, context())
    if prune_report is not None:
        prune_report.record_kernels(result.graph)
    artifact = build(result.graph, target, llvm_level, threads=threads, pack=pack, share_memory=share_memory,
                     weights_pool=weights_pool)
    loading = time.perf_counter()
    compiled = CompiledModel(artifact, source_graph=graph, snapshots=result.snapshots, report=result.report,
                             output_structure=structure)
    compiled.pruning = prune_report
    compiled.quantization = quant_report
    done = time.perf_counter()
    compiled.compile_seconds = {"trace": trace_seconds,
                                "passes": sum(r.seconds for r in result.report.rows),
                                "llvm": artifact.compile_seconds, "load": done - loading}
    if entry is not None:
        entry.store(functools.partial(save_model, compiled))
        compiled.cache_status = "miss"
        compiled.compile_seconds.update({"cache key": entry.seconds["key"], "cache store": entry.seconds["store"]})
    compiled.compile_seconds["total"] = time.perf_counter() - start
    if verbose:
        print(result.report)
    return compiled


def _int8_step(graph: Graph) -> float:
    """One code of the coarsest int8 activation of a QDQ graph (the largest constant scale of a quantize
    node); 0 when there is none. lower-quant's integer kernels compute the QDQ graph's values up to the
    rounding of the int32 bias (half a step of x's scale times w's) and one code of a requantized value."""
    scales = [float(np.max(node.inputs[1].value)) for node in graph.nodes
              if node.op == "quantize" and node.inputs[1].op == "constant"]
    return max(scales, default=0.0)


def check(model, inputs, target: str | Target = "host", opt_level: int = 2, *, rtol: float | None = None,
          atol: float | None = None, disabled: tuple[str, ...] = (), threads: int | None = None, prune=None,
          quantize=None, calibration=None, minimize: bool = False, repro_dir=None,
          verbose: bool = False) -> CheckResult:
    """Differential test: every pass and the compiled code against the reference interpreter.

    Raises CheckError naming the first pass (or the codegen) whose outputs differ, the first node
    whose value differs from the value it stands for before that pass (in both graphs, with op,
    attributes, input shapes) and the errors. Float tolerances default to rtol 1e-4, atol 1e-5
    (with `quantize=`, atol is at least one code of the coarsest int8 activation); integer outputs
    are exact.
    `prune=`, `quantize=` and `calibration=` build what `compile` would with them; the build is then
    checked against its own pruned or quantized graph (the int8 kernels compute that graph's values
    up to the int32 bias's rounding and one code of a requantized value), and `result.fp32_distance`
    says how far its outputs are from the fp32 model's.
    `minimize=True`: on a divergence, shrink the graph to a small one where the same stage diverges
    (tensorforge/minimize.py) and write a standalone repro (graph.tfir, constants, inputs as .npy,
    repro.py) into `repro_dir` (default: a new temporary directory); the CheckError names it
    (`error.repro_dir`, `error.minimized`). `verbose` shows the minimizer's progress.
    """
    if not isinstance(minimize, bool):
        raise TypeError(f"minimize= takes True or False, got {minimize!r}")
    if repro_dir is not None and not isinstance(repro_dir, (str, os.PathLike)):
        raise TypeError(f"repro_dir= takes a directory path (str or pathlib.Path), got {repro_dir!r}")
    if repro_dir is not None and not minimize:
        raise ValueError("repro_dir= is where minimize=True writes its repro: pass minimize=True with it")
    target = Target.parse(target)
    compiled = compile(model, inputs, target, opt_level, threads=threads, disabled=disabled, prune=prune,
                       quantize=quantize, calibration=calibration, cache=False)  # it checks every pass: run them
    inputs = inputs_in_order(compiled.source_graph, inputs)
    rtol = FLOAT_TOLERANCE["rtol"] if rtol is None else rtol
    if atol is None:
        atol = max(FLOAT_TOLERANCE["atol"], _int8_step(compiled.source_graph) if quantize is not None else 0.0)
    with compiled:
        arrays = tuple(coerce_inputs(compiled.source_graph, inputs))
        outputs = compiled(*arrays, flat=True)
        outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
        built = "quantized graph" if quantize is not None else "pruned graph" if prune is not None else "traced graph"
        stages = [(built, compiled.source_graph)] + list(compiled.snapshots[1:])
        try:
            result = compare_stages(stages, arrays, outputs, compiled.target.name, rtol, atol)
        except CheckError as error:
            if minimize:
                try:
                    _minimized(error, stages, arrays, target, opt_level, compiled.pass_report.disabled, threads, rtol,
                               atol, repro_dir, verbose)
                except Exception as failure:  # noqa: BLE001 - the divergence found is still the error to raise
                    error.args = (f"{error}\n(minimize failed: {type(failure).__name__}: {failure})",)
            raise
        if quantize is not None or prune is not None:
            fp32 = interpret(trace(model, inputs), *arrays)
            result.fp32_distance = distances(list(fp32) if isinstance(fp32, tuple) else [fp32], outputs)
        return result


def _minimized(error: CheckError, stages, arrays, target: Target, opt_level: int, disabled: tuple[str, ...],
               threads, rtol: float, atol: float, repro_dir, verbose: bool) -> None:
    """Minimize the graph `error` was found on, write the repro and add both to `error`."""
    from . import minimize

    start = time.perf_counter()
    names = [name for name, _ in stages]
    stage = "codegen" if error.stage is None or error.stage.startswith("codegen") else error.stage

    def run_compiled(graph, inputs, passes_disabled):
        with compile(graph, inputs, target, opt_level, threads=threads, disabled=passes_disabled) as cm:
            out = cm(*inputs)
            return list(out) if isinstance(out, tuple) else [out]

    failure = minimize.Failure(stage, opt_level, target, tuple(disabled), {}, rtol, atol, run_compiled)
    suspects: set[str] = set()
    if error.divergence is not None and stage in names:
        suspects = minimize.traced_back(stages, names.index(stage) - 1, error.divergence.origin.values)
    found = minimize.minimize(stages[0][1], arrays, failure, sorted(suspects), verbose=verbose)
    directory = Path(repro_dir) if repro_dir is not None else Path(tempfile.mkdtemp(prefix="tensorforge-repro-"))
    summary = str(error).splitlines()[0]
    script = minimize.write_repro(directory, found, failure, target.name, summary)
    try:  # the repro's own check, in this process: does the minimized graph fail at the same stage?
        check(found.graph, found.inputs, target, opt_level, rtol=rtol, atol=atol, disabled=found.disabled,
              threads=threads)
        reproduced = "but its check passes (the minimized graph did not keep the failure)"
    except CheckError as again:
        reproduced = "reproduces it" if again.stage == error.stage else f"fails at {again.stage} instead"
    except Exception as other:  # noqa: BLE001 - reported, not raised: the original error is the one to raise
        reproduced = f"fails differently: {type(other).__name__}: {other}"
    error.repro_dir, error.minimized = str(directory), found.graph
    error.args = (f"{error}\nminimized from {found.nodes_before} to {found.nodes} nodes in {found.seconds:.2f} s "
                  f"({found.trials} trials; {time.perf_counter() - start:.2f} s with the repro written and "
                  f"checked): {script} {reproduced}",)
