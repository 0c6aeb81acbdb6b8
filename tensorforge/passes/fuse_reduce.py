"""fuse-reduce: a reduction of an elementwise chain computes the chain's values as it reads them.

    %d = sub(%x, %m) : f32[64,768]                   (%m = reduce_mean(%x) {keepdims}: f32[64,1])
    %s = mul(%d, %d) : f32[64,768]            ->     %v = fused_reduce(%x, %m)
    %v = reduce_mean(%s) {axes=[1]} : f32[64,1]          {program=[["sub", ["in", 0], ["in", 1]],
                                                                   ["mul", ["t", 0], ["t", 0]]],
                                                          reduction="reduce_mean", axes=[1], keepdims=true}

A variance, a sum of squares, a norm written with tensor operators (a user's own layer or RMS
norm) reduces a value that is only made to be reduced. Fused, the reduction's kernel computes each
value in registers as it folds it in (codegen/ops/reduce.py): the chain's kernel, and the tensor it
wrote and the reduction read back, are gone. Each value is computed by the unfused op's own element
function, so only the reduction's summation order can differ from the unfused kernels' (it is
reassociated in both).

Fires on reduce_sum, reduce_mean and reduce_max whose operand is an elementwise op or a
fused_elementwise chain (fuse-elementwise has run) with no other user that is not a graph output.
Runs after fuse-elementwise.
"""

from __future__ import annotations

from .. import ir
from ..ir.ops_fused import REDUCTIONS
from .fuse_elementwise import is_elementwise, program_of
from .registry import register_pass
from .rewrite import Captures, Pattern, rewrite_to_fixpoint


def _fused_reduce(m: Captures) -> ir.Node:
    """One fused_reduce computing the chain's program over its operands and reducing the result."""
    reduction = m["reduction"]
    operands, program = program_of(m["chain"])
    return reduction.graph.call("fused_reduce", list(operands),
                                {"program": program, "reduction": reduction.op, **reduction.attrs})


CHAIN = Pattern(name="chain", where=is_elementwise, single_use=True)

RULES = [
    # reduce_mean(elementwise chain(a, b, ...)) -> fused_reduce(a, b, ...){program=the chain's, reduction="reduce_mean"}
    (Pattern(REDUCTIONS, [CHAIN], name="reduction"), _fused_reduce),
]


@register_pass("fuse-reduce", opt_level=2,
               description="compute an elementwise chain inside the reduction that reads it",
               after={"fuse-elementwise": "a reduction takes in the chain fuse-elementwise made"})
def fuse_reduce(graph: ir.Graph, ctx=None) -> ir.Graph:
    return rewrite_to_fixpoint(graph, RULES)
