"""build: compile a graph to native code for a target, as one `tf_run` entry.

    artifact = build(graph, "host")           # -> Artifact (optimized LLVM IR, weights, sizes)

The steps, in order:
  1. verify the graph and keep the nodes the outputs need;
  2. look up each op node's lowering (CodegenError for an op or dtype that has none);
  3. lay out the weights buffer (constants, some packed once into a kernel's layout) and the
     workspace arena (memory.py);
  4. plan each node (entry.NodePlan: its lowering, buffers, scratch and parts) and emit the module
     from the plans: one function per op node, called from tf_run (entry.py);
  5. optimize it with LLVM's new pass manager for the target machine.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import llvmlite.binding as llvm
import numpy as np

from ..ir import Graph, Node, verify
from .artifact import Artifact
from .entry import ENTRY, NodePlan, StoredCopy, emit_module
from .lowering import Lowering, lowering_for, writes_images_apart
from .memory import (
    ALIGNMENT,
    ConstantLayout,
    WeightsPool,
    WorkspacePlan,
    align_up,
    output_image_stride,
    pack_weights,
    plan_workspace,
)
from .target import Target, initialize_llvm


def live_nodes(graph: Graph) -> list[Node]:
    """The nodes the graph's outputs depend on, in graph order (graph inputs always included)."""
    needed = graph.needed_by_outputs() | set(graph.inputs)
    return [node for node in graph.nodes if node in needed]


def layout_constants(graph: Graph, nodes: Sequence[Node], lowerings: dict[Node, Lowering],
                     target: Target, pack: bool = True, pool: WeightsPool | None = None) -> ConstantLayout:
    """Ask each lowering for its constant operands in its own layout (`pack_constant`).

    A packed copy is stored once per (constant, layout); the row-major original only if some user
    reads it as it is (another op, a view, or a graph output). `pack=False` stores every constant
    as it is (the kernels then pack at run time, on every call), except for kernels that only read
    packed constants (Lowering.always_pack). With a `pool`, each entry is placed in it as soon as it
    is made (`layout.offsets`), so that the packed copies never all exist at once beside the buffer
    (a GPT-2-size model's are 0.5 GB), and a copy the pool holds already, made from the same constant
    array for an earlier graph, is not made again (WeightsPool.place_copy); ValueError when they do
    not fit in it.
    """
    copies: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    offsets: dict[str, int] = {}
    packed: dict[Node, dict[int, str]] = {}
    read_as_is: set[Node] = {node for node in graph.outputs if node.op == "constant"}
    for node, lowering in lowerings.items():
        for index, operand in enumerate(node.inputs):
            if operand.op != "constant":
                continue
            packs = lowering.pack_constant and (pack or lowering.always_pack)
            copy = lowering.pack_constant(node, index, target) if packs else None
            if copy is None:
                read_as_is.add(operand)
                continue
            key = copy.key(operand.name)
            if key not in sizes:
                if pool is None:
                    copies[key] = copy.array()
                    sizes[key] = copies[key].nbytes
                else:  # in the pool as soon as made (or not made: the pool has it from the same array)
                    offsets[key], sizes[key] = pool.place_copy(key, operand.value, copy.array)
            del copy  # (not alive beside the next one, nor while the originals are placed)
            packed.setdefault(node, {})[index] = key
    originals = [(node.name, node.value) for node in nodes if node.op == "constant" and node in read_as_is]
    sizes.update((name, value.nbytes) for name, value in originals)
    if pool is not None:
        offsets.update(pool.place(originals))
        return ConstantLayout([], packed, sizes, offsets)
    return ConstantLayout(originals + list(copies.items()), packed, sizes)


def plan_nodes(nodes: Sequence[Node], lowerings: dict[Node, Lowering], constants: ConstantLayout,
               weight_offsets: dict[str, int], scratch: dict[Node, int], parts: dict[Node, int],
               workspace: WorkspacePlan) -> list[NodePlan]:
    """One NodePlan per live node but the graph inputs, in order: what tf_run does for it (entry.py)."""
    plans = []
    for node in nodes:
        if node.op == "input":
            continue
        if node.op == "constant":
            plans.append(NodePlan(node, None, weight_offsets.get(node.name)))
            continue
        lowering = lowerings[node]
        if lowering.is_view:
            plans.append(NodePlan(node, lowering))
            continue
        copies = {index: StoredCopy(name, weight_offsets[name], constants.nbytes(name))
                  for index, name in constants.packed.get(node, {}).items()}
        if node in workspace.gathered:
            plans.append(NodePlan(node, lowering, workspace.values[node], gathered=True))
            continue
        plans.append(NodePlan(node, lowering, workspace.values[node], copies, scratch.get(node, 0),
                              workspace.scratch.get(node, 0), parts.get(node, 1), workspace.in_place.get(node),
                              output_image_stride=output_image_stride(node, workspace.gathered)))
    return plans


def optimize(llvm_ir: str, target: Target, opt_level: int) -> str:
    """Verify the module text and run LLVM's O`opt_level` pipeline on it for the target machine."""
    machine = target.target_machine(opt_level)
    module = llvm.parse_assembly(llvm_ir)
    module.triple = target.triple
    module.data_layout = str(machine.target_data)
    module.verify()
    tuning = llvm.create_pipeline_tuning_options(speed_level=opt_level)
    tuning.loop_vectorization = opt_level >= 2  # as clang does; LLVM's own default leaves SLP off
    tuning.slp_vectorization = opt_level >= 2
    passes = llvm.create_pass_builder(machine, tuning)
    passes.getModulePassManager().run(module, passes)
    module.verify()
    return str(module)


def build(graph: Graph, target: Target | str = "host", opt_level: int = 3, threads: int = 1,
          profile: bool = False, *, pack: bool = True, share_memory: bool = True,
          weights_pool: WeightsPool | None = None) -> Artifact:
    """Compile `graph` for `target` into an Artifact holding `tf_run` (docs/architecture.md).

    `threads` > 1 lets the kernels that support it (threads/parallel.py) split work big enough to share
    among that many threads. `profile` times every kernel call (`Artifact.profile_kernels`).
    `pack=False` (no weight packing at compile time) and `share_memory=False` (every intermediate
    in bytes of its own) exist to measure what those two buy (benchmarks/bench_ablation.py).
    `weights_pool`: the constants go into this shared buffer (memory.WeightsPool), equal ones only once
    across the graphs built with it.
    """
    start = time.perf_counter()
    initialize_llvm()
    target = Target.parse(target)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    verify(graph)
    nodes = live_nodes(graph)
    lowerings = {node: lowering_for(node, target) for node in nodes if node.op not in ("input", "constant")}

    constants = None
    if weights_pool is not None:
        with contextlib.suppress(ValueError):  # the pool is full: a buffer of this graph's own
            constants = layout_constants(graph, nodes, lowerings, target, pack, weights_pool)
            weights, weight_offsets = weights_pool.buffer(), constants.offsets
    if constants is None:
        constants = layout_constants(graph, nodes, lowerings, target, pack)
        weights, weight_offsets = pack_weights(constants.entries)
    computed = [node for node, lowering in lowerings.items() if not lowering.is_view]
    scratch = {node: lowerings[node].scratch_bytes(node, target, frozenset(constants.packed.get(node, {})))
               for node in computed if lowerings[node].scratch_bytes}
    scratch = {node: align_up(nbytes) for node, nbytes in scratch.items() if nbytes}
    parts = {node: lowerings[node].parts(node, target, threads) for node in computed
             if threads > 1 and lowerings[node].parts}
    parts = {node: count for node, count in parts.items() if count > 1}
    team_scratch = {node: nbytes * (threads if node in parts else 1) for node, nbytes in scratch.items()}
    workspace = plan_workspace(computed, team_scratch, share=share_memory,
                               image_strided=lambda node: writes_images_apart(node, target))
    parts = {node: count for node, count in parts.items() if node not in workspace.gathered}
    called = [node for node in computed if node not in workspace.gathered]  # the kernels tf_run calls
    profile_offset = align_up(workspace.size) if profile else None
    workspace_bytes = workspace.size + (8 * len(called) + ALIGNMENT if profile else 0)

    plans = plan_nodes(nodes, lowerings, constants, weight_offsets, scratch, parts, workspace)
    module = emit_module(graph, plans, target, threads, profile_offset)
    llvm_ir = optimize(str(module), target, opt_level)
    return Artifact(target=target, graph=graph, llvm_ir=llvm_ir, input_types=[node.type for node in graph.inputs],
                    output_types=[node.type for node in graph.outputs], weights=weights,
                    weight_offsets=weight_offsets, workspace_bytes=workspace_bytes,
                    compile_seconds=time.perf_counter() - start, opt_level=opt_level, entry=ENTRY,
                    threads=threads if parts else 1, memory=workspace,
                    parts={node.name: count for node, count in parts.items()}, profile_offset=profile_offset,
                    profile_kernels=[node.name for node in called] if profile else [])
