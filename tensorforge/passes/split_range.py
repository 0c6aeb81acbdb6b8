"""split-range: dynamic_qlinear's range of x computed in blocks of rows by its own node.

    %y = dynamic_qlinear(%x, %w, %sw, %b) : f32[128,3072]
  ->
    %x_range = value_range(%x) {blocks=8} : f32[2,8]
    %y = dynamic_qlinear(%x, %w, %sw, %b, %x_range) {ranged=true} : f32[128,3072]

dynamic_qlinear needs the range of all of x before any part of it can quantize its rows; its parts
cannot wait for each other (the thread pool has no barrier), so each scanned all of x. x was
written by the previous layer, split by rows: half of it sat in the other core's cache, and the
scan took as long as the int8 GEMM (BERT-base's 768-wide layers: about 40 of 117 us in a chain of
them). value_range splits the scan by rows among the threads, and the next node starts when all of
its parts are done; dynamic_qlinear then folds 8 pairs. The quantization is the same: the min of
the blocks' mins is the min of x. Layers reading one x share one value_range. Fires for an x of
RANGE_SPLIT_BYTES or more: below that one scan costs less than another kernel.
"""

from __future__ import annotations

import math

from .. import ir
from .registry import register_pass
from .rewrite import derive, derived_name, rebuilt, replace_node

RANGE_BLOCKS = 8  # blocks of rows: whole blocks for 1, 2, 4 or 8 threads


def _splits(node: ir.Node) -> bool:
    return (node.op == "dynamic_qlinear" and not node.attrs["ranged"]
            and math.prod(node.inputs[0].shape[:-1]) >= RANGE_BLOCKS)


@register_pass("split-range", opt_level=2,
               description="dynamic_qlinear's range of x in blocks of rows, by its own node",
               after={"fuse-residual": "the residual is dynamic_qlinear's operand before the ranges"})
def split_range(graph: ir.Graph, ctx=None) -> ir.Graph:
    ranges: dict[ir.Node, ir.Node] = {}  # x -> its value_range
    for node in [node for node in graph.nodes if _splits(node)]:
        x = node.inputs[0]
        if x not in ranges:
            with graph.inserting_before(node):
                ranges[x] = derive(graph.call("value_range", [x], {"blocks": RANGE_BLOCKS},
                                              name=derived_name(x, "range")), x)
        with graph.inserting_before(node):
            ranged = rebuilt(node, [*node.inputs, ranges[x]], ranged=True)
        replace_node(node, ranged)
    return graph
