"""A minimal private harness for codegen tests: JIT an Artifact on the host and call tf_run.

    outputs = run_artifact(build(graph, "host"), x, w)     # a list of arrays, one per graph output
    outputs = compile_and_run(graph, x, w)                 # the same, building for the host first
    outputs = compile_and_run(graph, x, w, target="armv8") # built for AArch64, run under qemu-user
    outputs = compile_and_run(graph, x, w, threads=3)      # every splittable kernel split for 3 threads
    assert_matches_reference(outputs, graph, [x, w], rtol=1e-4, atol=1e-5)   # against ir.interpret(graph, ...)

The real runtime (tensorforge/runtime) adds input checks, per-thread workspaces and the qemu path;
this file only needs to be right for well-formed test inputs.
"""

from __future__ import annotations

import ctypes
from unittest import mock

import llvmlite.binding as llvm
import numpy as np

from tensorforge.codegen import Artifact, build
from tensorforge.codegen.target import initialize_llvm
from tensorforge.codegen.threads import parallel
from tensorforge.ir import Graph, interpret

ALIGNMENT = 64
ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


def aligned_buffer(nbytes: int) -> np.ndarray:
    """A zeroed uint8 buffer of at least one alignment unit, starting at a 64-byte aligned address."""
    size = max(nbytes, ALIGNMENT)
    raw = np.zeros(size + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + size]


def pointer_array(arrays: list[np.ndarray]) -> ctypes.Array:
    return (ctypes.c_void_p * max(len(arrays), 1))(*[array.ctypes.data for array in arrays])


def run_artifact(artifact: Artifact, *inputs: np.ndarray) -> list[np.ndarray]:
    """Call the artifact's tf_run once on `inputs` (converted to the input types) and return its outputs."""
    initialize_llvm()
    arrays = [np.ascontiguousarray(np.asarray(value, dtype=t.dtype.numpy).reshape(t.shape))
              for value, t in zip(inputs, artifact.input_types, strict=True)]
    outputs = [np.full(t.shape, 0x5A, dtype=np.uint8).view(t.dtype.numpy) if t.dtype.itemsize == 1
               else np.full(t.shape, np.nan if t.dtype.is_float else 0x5A5A, dtype=t.dtype.numpy)
               for t in artifact.output_types]
    weights = aligned_buffer(artifact.weights.size)
    weights[:artifact.weights.size] = artifact.weights
    workspace = aligned_buffer(artifact.workspace_bytes)

    engine = llvm.create_mcjit_compiler(artifact.module(), artifact.target.target_machine(artifact.opt_level))
    try:
        engine.finalize_object()
        entry = ENTRY_TYPE(engine.get_function_address(artifact.entry))
        input_pointers, output_pointers = pointer_array(arrays), pointer_array(outputs)
        status = entry(ctypes.addressof(input_pointers), ctypes.addressof(output_pointers),
                       weights.ctypes.data, workspace.ctypes.data)
    finally:
        engine.close()
    assert status == 0, f"tf_run returned {status}"
    return outputs


def compile_and_run(graph: Graph, *inputs: np.ndarray, opt_level: int = 3, target: str = "host",
                    threads: int = 1, **build_options) -> list[np.ndarray]:
    """Build `graph` for `target` and run it once: the host by JIT here, armv8 through the runtime (qemu-user).

    With `threads` > 1 every kernel that can split its work does, however small (threads/parallel.py's
    size threshold is lifted), and the host runs through the runtime too (it joins the pool's threads).
    `build_options` go to codegen.build (pack=False, share_memory=False).
    """
    if target == "host" and threads == 1 and not build_options:
        return run_artifact(build(graph, "host", opt_level), *inputs)
    from tensorforge.runtime import CompiledModel

    with mock.patch.object(parallel, "MIN_PARALLEL_FLOPS", 0):
        artifact = build(graph, target, opt_level, threads=threads, **build_options)
    with CompiledModel(artifact) as compiled:
        outputs = compiled(*inputs)
    return list(outputs) if isinstance(outputs, tuple) else [outputs]


def reference_outputs(graph: Graph, inputs) -> list[np.ndarray]:
    """The reference interpreter's outputs of `graph` on `inputs`, as a list."""
    result = interpret(graph, *inputs)
    return list(result) if isinstance(result, (list, tuple)) else [result]


def assert_matches_reference(actual: list[np.ndarray], graph: Graph, inputs, rtol: float, atol: float) -> None:
    """`actual` (one array per output) equals the reference interpreter's outputs of `graph` on `inputs`."""
    for value, wanted in zip(actual, reference_outputs(graph, inputs), strict=True):
        np.testing.assert_allclose(value, wanted, rtol=rtol, atol=atol)


def single_op_graph(op: str, operands: list[np.ndarray], attrs: dict | None = None,
                    constants: tuple[int, ...] = ()) -> tuple[Graph, list[np.ndarray]]:
    """The graph `op(operands) {attrs}` (operands at positions `constants` become weights) and its inputs."""
    from tensorforge.ir import TensorType

    graph = Graph()
    nodes, inputs = [], []
    for position, array in enumerate(operands):
        if position in constants:
            nodes.append(graph.constant(array, f"w{position}"))
        else:
            nodes.append(graph.add_input(f"x{position}", TensorType.of(array)))
            inputs.append(array)
    graph.outputs = [graph.call(op, nodes, attrs or {})]
    return graph, inputs


def conv_graph(rng: np.random.Generator, channels: int, outputs: int, height: int, width: int, kernel: int,
               stride: int = 1, padding: int = 0, dilation: int = 1, batch: int = 1, residual: bool = False,
               bias: bool = True) -> tuple[Graph, list[np.ndarray]]:
    """An f32 conv2d graph (normalized random weight, random bias unless `bias` is False, relu, and with
    `residual` a second input laid out like the output) and its inputs."""
    from tensorforge.ir import TensorType

    x = rng.standard_normal((batch, channels, height, width)).astype(np.float32)
    weight = rng.standard_normal((outputs, channels, kernel, kernel)) / np.sqrt(channels * kernel ** 2)
    graph = Graph()
    operands = [graph.add_input("x", TensorType.of(x)), graph.constant(weight.astype(np.float32), "w")]
    if bias:
        operands.append(graph.constant(rng.standard_normal(outputs).astype(np.float32), "b"))
    span = dilation * (kernel - 1) + 1
    out_shape = (batch, outputs, *((size + 2 * padding - span) // stride + 1 for size in (height, width)))
    inputs = [x]
    if residual:
        inputs.append(rng.standard_normal(out_shape).astype(np.float32))
        operands.append(graph.add_input("r", TensorType.of(inputs[1])))
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "activation": "relu", "residual": residual}
    graph.outputs = [graph.call("conv2d", operands, attrs)]
    return graph, inputs
