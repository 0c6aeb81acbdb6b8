"""fuse-sibling-linears: linear layers that read the same input become one linear, its result sliced.

    %q = linear(%x, %wq, %bq) : f32[1,1,256]        %qkv = linear(%x, %wqkv, %bqkv) : f32[1,1,768]
    %k = linear(%x, %wk, %bk) : f32[1,1,256]   ->   %q = slice(%qkv) {starts=[0,0,0], stops=[1,1,256]}
    %v = linear(%x, %wv, %bv) : f32[1,1,256]        %k = slice(%qkv) {... [256, 512]}, %v = ... [512, 768]

with %wqkv the weights side by side ([in, 256 + 256 + 256], a new constant) and the biases after one
another (zeros for a layer without one). An attention block's q, k and v projections are the usual
case: in a decode step one GEMM instead of three streams the weights once (one team of threads
woken, not three). The slices copy the results, which outweighs that from a few dozen rows on.
Graphs compiled together (a generator's) share the new constant (ir/arrays.py: derived).

Fires for two or more f32 `linear`s of one input of at most SIBLING_ROWS rows whose weights (and
biases, if any) are constants, with the same activation and no residual. Runs after fuse-residual
and fuse-activation (those fuse into each layer's epilogue first: a fused relu is kept, as all
siblings must share it) and after sparsify (a sparse layer is a sparse_linear by then, and keeps its own kernel).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import ir
from ..ir.arrays import derived
from .registry import register_pass
from .rewrite import carry_layer, derive, derived_name, erase_if_unused

# Siblings fuse when their input has at most this many rows (every leading axis of x): a decode step's
# one row, a small batch. With more rows the slices' copies of the result cost more than one GEMM
# saves (3 linears of 768 -> 768 read by attention: fused 0.91x the separate time at 8 rows, 1.00x at
# 32 and 64, 1.03x at 128; BERT-base from ONNX at sequence 128 ran 1.04x slower fused at batch 1).
SIBLING_ROWS = 16


def _fusable(node: ir.Node, rows: int | None) -> bool:
    operands = node.inputs
    return (node.op == "linear" and node.dtype is ir.DType.f32 and not node.attrs["residual"]
            and operands[1].op == "constant" and operands[1].type.rank == 2
            and all(bias.op == "constant" for bias in operands[2:])
            and (rows is None or math.prod(operands[0].shape[:-1]) <= rows))


def _groups(graph: ir.Graph, rows: int | None) -> list[list[ir.Node]]:
    """Fusable linears, grouped by input and activation, in graph order; groups of two or more."""
    groups: dict[tuple[ir.Node, object], list[ir.Node]] = {}
    for node in graph.nodes:
        if _fusable(node, rows):
            groups.setdefault((node.inputs[0], node.attrs["activation"]), []).append(node)
    return [group for group in groups.values() if len(group) > 1]


@register_pass("fuse-sibling-linears", opt_level=2,
               description="linears reading one input become one linear and slices of its result",
               after={"fuse-residual": "the epilogue fusions go into each layer first, then q, k, v -> one linear",
                      "fuse-activation": "the epilogue fusions go into each layer first, then q, k, v -> one linear "
                                         "(a fused relu is kept, as all siblings must share it)",
                      "sparsify": "a sparse layer is a sparse_linear by then, and keeps its own kernel"})
def fuse_sibling_linears(graph: ir.Graph, ctx=None) -> ir.Graph:
    """`ctx.config["sibling_rows"]`: the row limit (default SIBLING_ROWS; None: none, for graphs that
    share their weights and must fuse alike, a generator's)."""
    rows = (ctx.config if ctx is not None else {}).get("sibling_rows", SIBLING_ROWS)
    for group in _groups(graph, rows):
        first = group[0]
        weights = [node.inputs[1].value for node in group]
        widths = [weight.shape[1] for weight in weights]
        with graph.inserting_before(first):
            side_by_side = derived(("concatenate", 1), weights, functools.partial(np.concatenate, weights, axis=1))
            operands = [first.inputs[0], graph.constant(side_by_side, derived_name(first.inputs[1], "siblings"))]
            derive(operands[1], *(node.inputs[1] for node in group))
            if any(len(node.inputs) > 2 for node in group):
                biases = [node.inputs[2].value if len(node.inputs) > 2 else np.zeros(width, np.float32)
                          for node, width in zip(group, widths)]
                operands.append(derive(graph.constant(np.concatenate(biases), derived_name(first, "siblings_bias")),
                                       *(bias for node in group for bias in node.inputs[2:])))
            fused = graph.call("linear", operands, {"activation": first.attrs["activation"]},
                               name=derived_name(first, "siblings"))
            graph.record_origin(fused, group, "concat")  # provenance: the siblings' values side by side
            carry_layer(fused, group)
            slices, start = [], 0
            for width in widths:
                starts, stops = (0,) * (fused.type.rank - 1) + (start,), (*fused.shape[:-1], start + width)
                slices.append(graph.call("slice", [fused], {"starts": starts, "stops": stops}))
                start += width
        erased: set[ir.Node] = set()
        for node, sliced in zip(group, slices):
            node.replace_all_uses_with(sliced)
            erase_if_unused(graph, node, erased)
    return graph
