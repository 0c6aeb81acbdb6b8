"""fuse-elementwise: chains of elementwise ops become one fused_elementwise node, computed in one loop.

    %1 = add(%x, %b) : f32[4,8]                  %3 = fused_elementwise(%x, %b)
    %2 = mul(%1, %x) : f32[4,8]            ->         {program=[["add", ["in", 0], ["in", 1]],
    %3 = relu(%2) : f32[4,8]                                    ["mul", ["t", 0], ["in", 0]],
                                                                ["relu", ["t", 1]]]} : f32[4,8]

Intermediates are never written to memory: one loop reads %x and %b once per element and writes
the result. A producer is folded into its elementwise consumer only when that consumer is its
only user, it is not a graph output, and it has the consumer's shape (a producer broadcast up
would be recomputed for every element it is repeated over). A fused node is itself a producer or
a consumer for the next fold, so chains grow to their full length; an operand read twice becomes
one operand. A single op stays as it is.
"""

from __future__ import annotations

from .. import ir
from ..ir.ops_fused import Ref, decode_instruction, encode_instruction, is_fusable
from .manager import PassContext
from .registry import register_pass
from .rewrite import needed_by_outputs, replace_node, single_use

FUSED = "fused_elementwise"


def is_elementwise(node: ir.Node) -> bool:
    return is_fusable(node.op) or node.op == FUSED


def _can_fold(producer: ir.Node, consumer: ir.Node) -> bool:
    """Fold `producer` into `consumer`: it is elementwise, read by the consumer alone, and not broadcast up."""
    return is_elementwise(producer) and single_use(producer) and producer.shape == consumer.shape


def program_of(node: ir.Node) -> tuple[tuple[ir.Node, ...], tuple[tuple, ...]]:
    """(operands, program) of an elementwise node; a single op is a program of one instruction."""
    if node.op == FUSED:
        return node.inputs, node.attrs["program"]
    operands = tuple(dict.fromkeys(node.inputs))
    refs = tuple(("in", operands.index(operand)) for operand in node.inputs)
    return operands, (encode_instruction(node.op, refs, node.attrs),)


class _ProgramBuilder:
    """Collects the operands (each node once) and the instructions of a fused program."""

    def __init__(self) -> None:
        self.operands: dict[ir.Node, int] = {}
        self.program: list[tuple] = []

    def operand(self, node: ir.Node, replaced: dict[ir.Node, Ref]) -> Ref:
        """The ref that reads `node`: the one in `replaced`, else its operand (added on first use)."""
        if node in replaced:
            return replaced[node]
        return ("in", self.operands.setdefault(node, len(self.operands)))

    def append(self, operands: tuple[ir.Node, ...], program: tuple[tuple, ...],
               replaced: dict[ir.Node, Ref]) -> None:
        """Append `program` over `operands`, its own results renumbered after the instructions already in."""
        offset = len(self.program)
        for instruction in program:
            op, refs, attrs = decode_instruction(instruction)
            refs = tuple(self.operand(operands[i], replaced) if kind == "in" else ("t", i + offset)
                         for kind, i in refs)
            self.program.append(encode_instruction(op, refs, attrs))


def _fold(graph: ir.Graph, producer: ir.Node, consumer: ir.Node) -> ir.Node:
    """One fused_elementwise node computing the producer's program, then the consumer's reading it."""
    builder = _ProgramBuilder()
    builder.append(*program_of(producer), replaced={})
    builder.append(*program_of(consumer), replaced={producer: ("t", len(builder.program) - 1)})
    with graph.inserting_before(consumer):
        fused = graph.call(FUSED, list(builder.operands), {"program": tuple(builder.program)})
    replace_node(consumer, fused, [producer])
    return fused


def _fold_producers(graph: ir.Graph, node: ir.Node) -> None:
    """Fold foldable producers into `node`, then into the fused node that replaced it, until none is left."""
    while True:
        producer = next((operand for operand in node.inputs if _can_fold(operand, node)), None)
        if producer is None:
            return
        node = _fold(graph, producer, node)


@register_pass("fuse-elementwise", opt_level=2,
               description="merge chains of elementwise ops into one fused_elementwise loop",
               after={
                   "fuse-activation": "a relu after a linear/conv goes to its epilogue first",
                   "lower-quant": "chains are only fused once nothing else rewrites their ops (lower-quant takes "
                                  "relus and quantizes into int8 layers)",
                   "simplify": "chains are only fused once nothing else rewrites their ops (simplify removes x*1, "
                               "x+0, -(-x))",
                   "fold-constants": "chains are only fused once nothing else rewrites their ops (fold-constants "
                                     "makes constants of weight-only ones)",
                   "eliminate-common-subexpressions": "chains are only fused once nothing else rewrites their "
                                                      "ops (CSE merges equal ones)",
                   "fuse-residual": "chains are only fused once nothing else rewrites their ops (fuse-residual "
                                    "takes an add into a linear/conv epilogue)",
               })
def fuse_elementwise(graph: ir.Graph, ctx: PassContext | None = None) -> ir.Graph:
    """Visit the live elementwise nodes in order; fold producers into each until none qualifies.

    Producers come first in the graph, so each is already as long a chain as it can be when its
    consumer absorbs it. Dead nodes are left to eliminate-dead-code.
    """
    live = needed_by_outputs(graph)
    for node in list(graph.nodes):
        if node in live and is_elementwise(node):
            _fold_producers(graph, node)
    return graph

