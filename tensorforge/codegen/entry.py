"""Emission of the module: the entry `tf_run` and one internal function per op node.

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

Writing only workspace bytes is also what makes `noalias` on the node functions' arguments true:
a node writes its own output (and scratch) bytes, which no other pointer it receives can reach;
its operands may share a buffer, but they are only read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llvmlite import ir

from ..ir import Graph, Node
from .kernel import Kernel
from .llvm_utils import I32, I64, PTR, VOID, byte_pointer, copy_bytes
from .lowering import Lowering
from .memory import ALIGNMENT, WorkspacePlan
from .target import Target

ENTRY = "tf_run"


@dataclass(frozen=True)
class Buffer:
    """Where a value lives inside tf_run: a pointer, its known alignment (0: unknown), its origin."""

    pointer: ir.Value
    align: int
    is_graph_input: bool


def _mark_pointer(argument: ir.Argument, align: int, nbytes: int) -> None:
    argument.add_attribute("noalias")
    argument.add_attribute("captures(none)")
    argument.add_attribute("noundef")
    if align:
        argument.attributes.align = align
    if nbytes:
        argument.attributes.dereferenceable = nbytes


def emit_node_function(module: ir.Module, node: Node, lowering: Lowering, operands: Sequence[Buffer],
                       scratch_bytes: int, target: Target) -> ir.Function:
    """`void @"<op>.<name>"(operands..., output[, scratch])` holding the node's loops."""
    argument_count = len(operands) + 1 + (1 if scratch_bytes else 0)
    function = ir.Function(module, ir.FunctionType(VOID, [PTR] * argument_count), f"{node.op}.{node.name}")
    function.linkage = "internal"
    function.attributes.add("nounwind")
    function.attributes.add("norecurse")
    arguments = list(function.args)
    for argument, operand, buffer in zip(arguments, node.inputs, operands):
        argument.name = f"x.{operand.name}"
        _mark_pointer(argument, buffer.align, operand.type.nbytes)
    output = arguments[len(operands)]
    output.name = "out"
    _mark_pointer(output, ALIGNMENT, node.type.nbytes)
    scratch = None
    if scratch_bytes:
        scratch = arguments[-1]
        scratch.name = "scratch"
        _mark_pointer(scratch, ALIGNMENT, scratch_bytes)

    builder = ir.IRBuilder(function.append_basic_block("entry"))
    lowering.emit(Kernel(node, builder, arguments[:len(operands)], output, scratch, target))
    builder.ret_void()
    return function


def _load_pointer(builder: ir.IRBuilder, array: ir.Value, index: int, name: str) -> ir.Value:
    slot = builder.gep(array, [ir.Constant(I64, index)], inbounds=True, source_etype=PTR)
    return builder.load(slot, name=name, typ=PTR)


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


def emit_module(graph: Graph, nodes: Sequence[Node], lowerings: dict[Node, Lowering], plan: WorkspacePlan,
                weight_offsets: dict[str, int], target: Target) -> ir.Module:
    """The whole module for `graph`: tf_run calls each node's function in order, then copies the outputs."""
    module = ir.Module(name="tensorforge")
    module.triple = target.triple
    function = _entry_function(module)
    inputs, outputs, weights, workspace = function.args
    builder = ir.IRBuilder(function.append_basic_block("entry"))

    buffers: dict[Node, Buffer] = {}
    for index, node in enumerate(graph.inputs):
        buffers[node] = Buffer(_load_pointer(builder, inputs, index, f"input.{node.name}"), 0, True)
    for node in nodes:
        if node.op == "input":
            continue
        if node.op == "constant":
            pointer = byte_pointer(builder, weights, weight_offsets[node.name], node.name)
            buffers[node] = Buffer(pointer, ALIGNMENT, False)
            continue
        lowering = lowerings[node]
        if lowering.is_view:
            buffers[node] = buffers[node.inputs[0]]
            continue
        output = Buffer(byte_pointer(builder, workspace, plan.values[node], f"value.{node.name}"), ALIGNMENT, False)
        operands = [buffers[operand] for operand in node.inputs]
        arguments = [operand.pointer for operand in operands] + [output.pointer]
        scratch_bytes = lowering.scratch_bytes(node) if lowering.scratch_bytes else 0
        if scratch_bytes:
            arguments.append(byte_pointer(builder, workspace, plan.scratch[node], f"scratch.{node.name}"))
        builder.call(emit_node_function(module, node, lowering, operands, scratch_bytes, target), arguments)
        buffers[node] = output

    # Outputs that are graph inputs are copied first: a later copy may write into an input's buffer.
    order = sorted(range(len(graph.outputs)), key=lambda i: not buffers[graph.outputs[i]].is_graph_input)
    for index in order:
        node = graph.outputs[index]
        source = buffers[node]
        destination = _load_pointer(builder, outputs, index, f"output.{index}")
        copy_bytes(builder, destination, source.pointer, node.type.nbytes, may_overlap=source.is_graph_input)
    builder.ret(ir.Constant(I32, 0))
    return module
