"""Emission of the module from build.py's NodePlans: the entry `tf_run`, one internal function per op node.

    define i32 @tf_run(ptr noalias %inputs, ptr noalias %outputs, ptr noalias align 64 %weights,
                       ptr noalias align 64 %workspace) {
    entry:
      %input.x = load ptr, ptr %inputs                         ; graph inputs, in order
      %"fc.weight" = getelementptr inbounds i8, ptr %weights, i64 0
      %"value.1" = getelementptr inbounds i8, ptr %workspace, i64 0
      call void @"linear.1"(ptr %input.x, ptr %"fc.weight", ptr %"value.1")
      %output.0 = load ptr, ptr %outputs
      call void @llvm.memcpy.p0.p0.i64(ptr %output.0, ptr %"value.1", i64 128, i1 false)
      ret i32 0
    }

Every computed value lives in the workspace; the outputs are copied out at the end, after every
input has been read, so an output buffer may be an input buffer (an in-place state update). Outputs
that are graph inputs are copied first (with memmove); only outputs that are inputs permuted in a
cycle over their own buffers would need a temporary, and that is not supported.

Nodes whose kernels would be the same code share one function: the twelve layers of a GPT call
the same few kernels with different pointers (see `kernel_key`), so LLVM compiles each once.

Writing only workspace bytes is also what makes `noalias` on the node functions' arguments true:
a node writes its own output (and scratch) bytes, which no other pointer it receives can reach;
its operands may share a buffer, but they are only read. The exception is an elementwise node the
memory plan computes in place of a dying operand: that operand and the output are not `noalias`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from llvmlite import ir

from ..ir import Graph, Node
from ..ir.printer import format_attr
from .gemm import amx
from .kernel import Kernel
from .llvm.utils import I32, I64, PTR, VOID, byte_pointer, copy_bytes, declare
from .lowering import Lowering
from .memory import ALIGNMENT
from .target import Target
from .threads.parallel import emit_team_call
from .threads.thread_pool import finish_pool

ENTRY = "tf_run"


@dataclass(frozen=True)
class StoredCopy:
    """A constant's copy in a kernel's own layout, in the weights buffer: its entry name, offset, size."""

    name: str  # `<constant name>@<layout>` (lowering.PackedConstant.key)
    offset: int
    nbytes: int


@dataclass(frozen=True)
class NodePlan:
    """What tf_run does for one node (graph inputs aside), as build.py decided it:

        NodePlan(%fc.weight, None, offset=0)             a constant: a pointer into the weights buffer
        NodePlan(%2 = reshape(%1), VIEW)                 a view: its operand's buffer
        NodePlan(%3 = linear(%2, %fc.weight, %fc.bias), LOWERINGS["linear"], offset=512,
                 packed={1: StoredCopy("fc.weight@gemm.b16", 128, 8192)},
                 scratch_bytes=4096, scratch_offset=1024, parts=2)     a call of its kernel, in two parts

    `offset` is a constant's bytes in the weights buffer (None when every user reads a packed copy)
    or a computed value's in the workspace. A node split into `parts` runs on the team, its scratch
    then holding `scratch_bytes` per thread; `in_place_of` is the operand whose bytes it overwrites.
    `gathered`: a concat whose operands were computed into its bytes (memory.concat_sinks): no call.
    `output_image_stride`: elements between the images of the output of such an operand, when the
    concat joins the channels of several images (0: contiguous).
    """

    node: Node
    lowering: Lowering | None  # None: a constant
    offset: int | None = None
    packed: Mapping[int, StoredCopy] = field(default_factory=dict)  # operand index -> the copy read instead
    scratch_bytes: int = 0  # 0: no scratch argument
    scratch_offset: int = 0
    parts: int = 1
    in_place_of: Node | None = None
    gathered: bool = False
    output_image_stride: int = 0


@dataclass(frozen=True)
class Buffer:
    """Where a value lives inside tf_run: a pointer, its known alignment (0: unknown), its size, its origin."""

    pointer: ir.Value
    align: int
    nbytes: int
    is_graph_input: bool


def _mark_pointer(argument: ir.Argument, align: int, nbytes: int, alias_free: bool = True) -> None:
    if alias_free:
        argument.add_attribute("noalias")
    argument.add_attribute("captures(none)")
    argument.add_attribute("noundef")
    if align:
        argument.attributes.align = align
    if nbytes:
        argument.attributes.dereferenceable = nbytes


def emit_node_function(module: ir.Module, plan: NodePlan, operands: Sequence[Buffer], target: Target,
                       threads: int = 1) -> ir.Function:
    """`void @"<op>.<name>"(operands..., output[, scratch])` holding the loops of `plan`'s node.

    Operands whose index is in `plan.packed` point at a copy in the lowering's own layout. With
    `plan.parts` > 1 the loops go into `@"<op>.<name>.part"(..., i64 part)`, which a team of `threads`
    runs for every part (threads/parallel.py); `plan.scratch_bytes` is then one thread's share of the
    scratch. A node computed `in_place_of` an operand (memory.py) writes that operand's bytes: its loops read
    that operand through the output pointer, whose loads and stores then provably meet only at the
    same element, so the loop vectorizes without run-time overlap checks (which two equal pointers
    fail: a GPT's in-place GELU ran its scalar fallback, about 14x slower); the unused argument is not
    `noalias`.
    """
    node, scratch_bytes, parts, in_place_of = plan.node, plan.scratch_bytes, plan.parts, plan.in_place_of
    packed = frozenset(plan.packed)
    name = f"{node.op}.{node.name}"
    argument_count = len(operands) + 1 + (1 if scratch_bytes else 0)
    function = ir.Function(module, ir.FunctionType(VOID, [PTR] * argument_count), name)
    function.linkage = "internal"
    function.attributes.add("nounwind")
    if parts > 1:
        body = ir.Function(module, ir.FunctionType(VOID, [PTR] * argument_count + [I64]), f"{name}.part")
        body.linkage = "internal"
        body.attributes.add("nounwind")
        body.attributes.add("norecurse")
        _mark_arguments(body, node, operands, scratch_bytes, in_place_of)
        part = body.args[-1]
        part.name = "part"
        _emit_kernel(body, node, plan.lowering, operands, scratch_bytes, target, packed, part, parts, in_place_of,
                     plan.output_image_stride)
        for argument, source in zip(function.args, body.args):
            argument.name = source.name
        emit_team_call(function, body, threads, parts, scratch_bytes, target)
        return function
    function.attributes.add("norecurse")
    _mark_arguments(function, node, operands, scratch_bytes, in_place_of)
    _emit_kernel(function, node, plan.lowering, operands, scratch_bytes, target, packed, None, 1, in_place_of,
                 plan.output_image_stride)
    return function


def kernel_key(plan: NodePlan, operands: Sequence[Buffer]) -> tuple | None:
    """Everything emit_node_function's code depends on besides names; None for a kernel that must
    not be shared (its code reads constant values, or an attribute has no exact text form)."""
    node, in_place_of = plan.node, plan.in_place_of
    if plan.lowering.reads_values:
        return None
    try:
        attrs = tuple(sorted((name, format_attr(value)) for name, value in node.attrs.items()))
    except (TypeError, ValueError):
        return None
    inputs = tuple((str(operand.type), operand.op == "constant", node.inputs.index(operand), buffer.align,
                    buffer.nbytes, operand is in_place_of) for operand, buffer in zip(node.inputs, operands))
    return (node.op, attrs, inputs, str(node.type), plan.scratch_bytes, tuple(sorted(plan.packed)), plan.parts,
            plan.output_image_stride)


def _mark_arguments(function: ir.Function, node: Node, operands: Sequence[Buffer], scratch_bytes: int,
                    in_place_of: Node | None = None) -> None:
    arguments = list(function.args)
    for argument, operand, buffer in zip(arguments, node.inputs, operands):
        argument.name = f"x.{operand.name}"
        _mark_pointer(argument, buffer.align, buffer.nbytes, alias_free=operand is not in_place_of)
    output = arguments[len(operands)]
    output.name = "out"
    _mark_pointer(output, ALIGNMENT, node.type.nbytes)  # an in-place operand is read through it
    if scratch_bytes:
        scratch = arguments[len(operands) + 1]
        scratch.name = "scratch"
        _mark_pointer(scratch, ALIGNMENT, scratch_bytes)


def _emit_kernel(function: ir.Function, node: Node, lowering: Lowering, operands: Sequence[Buffer],
                 scratch_bytes: int, target: Target, packed: frozenset[int], part: ir.Value | None,
                 parts: int, in_place_of: Node | None = None, output_image_stride: int = 0) -> None:
    arguments = list(function.args)
    output = arguments[len(operands)]
    inputs = [output if operand is in_place_of else argument for operand, argument in zip(node.inputs, arguments)]
    scratch = arguments[len(operands) + 1] if scratch_bytes else None
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    lowering.emit(Kernel(node, builder, inputs, output, scratch, target, packed, part, parts, output_image_stride))
    builder.ret_void()


def _load_pointer(builder: ir.IRBuilder, array: ir.Value, index: int, name: str) -> ir.Value:
    slot = builder.gep(array, [ir.Constant(I64, index)], inbounds=True, source_etype=PTR)
    return builder.load(slot, name=name, typ=PTR)


CLOCK_MONOTONIC = 1  # Linux, every architecture


def _clock_ns(builder: ir.IRBuilder) -> ir.Value:
    """clock_gettime(CLOCK_MONOTONIC) in nanoseconds (struct timespec is two 64-bit fields on 64-bit Linux)."""
    timespec = ir.LiteralStructType([I64, I64])
    slot = builder.alloca(timespec, name="timespec")
    clock_gettime = declare(builder.module, "clock_gettime", I32, [I32, PTR])
    builder.call(clock_gettime, [ir.Constant(I32, CLOCK_MONOTONIC), slot])
    seconds = builder.load(builder.gep(slot, [ir.Constant(I32, 0), ir.Constant(I32, 0)], inbounds=True), typ=I64)
    nanoseconds = builder.load(builder.gep(slot, [ir.Constant(I32, 0), ir.Constant(I32, 1)], inbounds=True), typ=I64)
    return builder.add(builder.mul(seconds, ir.Constant(I64, 1_000_000_000)), nanoseconds)


def _entry_function(module: ir.Module) -> ir.Function:
    function = ir.Function(module, ir.FunctionType(I32, [PTR] * 4), ENTRY)
    function.attributes.add("nounwind")
    inputs, outputs, weights, workspace = function.args
    for argument, name in zip(function.args, ("inputs", "outputs", "weights", "workspace")):
        argument.name = name
        argument.add_attribute("noalias")
        argument.add_attribute("captures(none)")
    weights.attributes.align = ALIGNMENT
    workspace.attributes.align = ALIGNMENT
    return function


def emit_module(graph: Graph, plans: Sequence[NodePlan], target: Target, threads: int = 1,
                profile_offset: int | None = None) -> ir.Module:
    """The whole module for `graph`: tf_run follows `plans` (one per node but the graph inputs, in
    order), calling each computed node's function, then copies the outputs.

    `threads` is the team a node split into parts runs on. With `profile_offset`, tf_run stores each
    node call's wall time in nanoseconds (i64, in node order) at that byte offset of the workspace:
    the profiler's build (runtime/profile.py).
    """
    module = ir.Module(name="tensorforge")
    module.triple = target.triple
    function = _entry_function(module)
    inputs, outputs, weights, workspace = function.args
    builder = ir.IRBuilder(function.append_basic_block("entry"))

    buffers: dict[Node, Buffer] = {}
    kernels: dict[tuple, ir.Function] = {}  # kernel_key -> the function already emitted for it
    timed = 0
    for index, node in enumerate(graph.inputs):
        buffers[node] = Buffer(_load_pointer(builder, inputs, index, f"input.{node.name}"), 0, node.type.nbytes, True)
    for plan in plans:
        node = plan.node
        if plan.lowering is None:  # a constant
            if plan.offset is not None:  # not when every user reads a packed copy
                pointer = byte_pointer(builder, weights, plan.offset, node.name)
                buffers[node] = Buffer(pointer, ALIGNMENT, node.type.nbytes, False)
            continue
        if plan.lowering.is_view:
            buffers[node] = buffers[node.inputs[0]]
            continue
        if plan.gathered:
            buffers[node] = Buffer(byte_pointer(builder, workspace, plan.offset, f"value.{node.name}"), ALIGNMENT,
                                   node.type.nbytes, False)
            continue
        output = Buffer(byte_pointer(builder, workspace, plan.offset, f"value.{node.name}"), ALIGNMENT,
                        node.type.nbytes, False)
        operands = [Buffer(byte_pointer(builder, weights, copy.offset, copy.name), ALIGNMENT, copy.nbytes, False)
                    if (copy := plan.packed.get(index)) is not None else buffers[operand]
                    for index, operand in enumerate(node.inputs)]
        arguments = [operand.pointer for operand in operands] + [output.pointer]
        if plan.scratch_bytes:
            arguments.append(byte_pointer(builder, workspace, plan.scratch_offset, f"scratch.{node.name}"))
        key = kernel_key(plan, operands)
        function = kernels.get(key) if key is not None else None
        if function is None:
            function = emit_node_function(module, plan, operands, target, threads)
            if key is not None:
                kernels[key] = function
        if profile_offset is None:
            builder.call(function, arguments)
        else:
            started = _clock_ns(builder)
            builder.call(function, arguments)
            elapsed = builder.sub(_clock_ns(builder), started, name=f"ns.{node.name}")
            slot = byte_pointer(builder, workspace, profile_offset + 8 * timed, f"time.{node.name}")
            builder.store(elapsed, slot)
            timed += 1
        buffers[node] = output

    # Outputs that are graph inputs are copied first: a later copy may write into an input's buffer.
    order = sorted(range(len(graph.outputs)), key=lambda i: not buffers[graph.outputs[i]].is_graph_input)
    for index in order:
        node = graph.outputs[index]
        source = buffers[node]
        destination = _load_pointer(builder, outputs, index, f"output.{index}")
        copy_bytes(builder, destination, source.pointer, node.type.nbytes, may_overlap=source.is_graph_input)
    builder.ret(ir.Constant(I32, 0))
    if amx.uses_tiles(module):
        amx.request_tiles(module.get_global(ENTRY))
    finish_pool(module)
    return module
