"""absorb-transpose: a transpose of the last two axes feeding a matmul becomes the matmul's way of reading.

    %kt = transpose(%k) {perm=[0, 2, 1]} : f32[4,16,8]        %s = matmul(%q, %k) {transpose_b=true} : f32[4,8,8]
    %s = matmul(%q, %kt) : f32[4,8,8]                   ->

The GEMM packs its operands into panels anyway (codegen/gemm/gemm.py); reading the stored matrix
transposed while packing costs nothing extra, where the transpose node would copy the whole tensor
first. Attention's `q @ k^T` is the common case. A transpose that also moves batch axes is left
alone; one that other nodes read stays for them (the matmul reads its operand all the same). A
constant operand was already transposed by fold-constants.
"""

from __future__ import annotations

from .. import ir
from .registry import register_pass
from .rewrite import replace_node


def swaps_last_two_axes(node: ir.Node) -> bool:
    """A transpose whose perm is (0, 1, ..., r-1, r-2): each matrix transposed, batch axes in place."""
    if node.op != "transpose" or node.type.rank < 2:
        return False
    rank = node.type.rank
    return tuple(node.attrs["perm"]) == tuple(range(rank - 2)) + (rank - 1, rank - 2)


@register_pass("absorb-transpose", opt_level=2, description="read a matmul operand transposed instead of copying it",
               after={"fold-constants": "a weight's transpose is folded already"})
def absorb_transpose(graph: ir.Graph, ctx=None) -> ir.Graph:
    for node in list(graph.nodes):
        if node.op != "matmul" or not any(swaps_last_two_axes(operand) for operand in node.inputs):
            continue
        operands, attrs, replaced = list(node.inputs), dict(node.attrs), []
        for index, flag in enumerate(("transpose_a", "transpose_b")):
            if swaps_last_two_axes(operands[index]):
                replaced.append(operands[index])
                operands[index] = operands[index].inputs[0]
                attrs[flag] = not attrs[flag]
        with graph.inserting_before(node):
            absorbed = graph.call("matmul", operands, attrs)
        replace_node(node, absorbed, replaced)  # and the transposes, unless something else reads them
    return graph
