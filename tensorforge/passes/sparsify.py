"""sparsify: a linear whose constant weight is mostly zeros becomes sparse_linear, its weight in CSR.

    %w = constant() : f32[1024,1024]             %v = constant() : f32[104858]      (w's nonzeros)
    %y = linear(%x, %w, %b) {activation="relu"}  %c = constant() : i32[104858]      (their inputs)
         : f32[1,1024]                      ->   %r = constant() : i32[1025]        (row starts)
                                                 %y = sparse_linear(%x, %v, %c, %r, %b) {activation="relu"}

The sparse kernel (codegen/ops/sparse/linear.py) does work in proportion to the nonzeros, the dense GEMM
in proportion to the whole weight; the pass fires where the weight's fraction of zeros reaches the
break-even measured with benchmarks/bench_sparse.py for the layer's rows of x (BREAK_EVEN);
`ctx.config["sparse_threshold"]` replaces it (1.0 or more: never). Runs after fuse-residual and
fuse-activation: the sparse op keeps their residual and activation. Only f32 linears with a
constant, non-empty weight; the new node's `meta["dense_weight"]` names the weight it replaced
(tf.compile's prune report reads it).
"""

from __future__ import annotations

import math

import numpy as np

from .. import ir
from ..ir.ops_nn import ACTIVATIONS, split_contraction
from ..ir.ops_sparse import to_csr
from .registry import register_pass
from .rewrite import derive, derived_name, erase_if_unused

# Fraction of zeros from which the sparse kernel beats the dense GEMM on a 1024 x 1024 linear with
# bias, by rows of x (leading axes folded; a count between two entries takes the lower one's), per
# call on every core. Measured with `python benchmarks/bench_sparse.py --batches 1 2 4 8 16 64` on
# this project's shared 2-core host, AMD Zen 4 with AVX-512, on 2026-12-02 (BENCHMARKS.md; runs
# differ by about 0.05-0.1; on Zen 3 with AVX2 it was {1: 0.64, 2: 0.78, 4: 0.81, 8: 0.70, 16: 0.66,
# 64: 0.65}, before the dense batch-1 GEMM stopped packing its one row of x): a few rows still
# stream the weight as one does, while the sparse kernel's work grows with them.
BREAK_EVEN = {1: 0.73, 2: 0.86, 4: 0.73, 8: 0.75, 16: 0.70, 64: 0.77}
# One row of x on a target that permutes two vectors (AVX-512: the kernel's windowed slices, from
# 2026-12-03, Zen 4): `bench_sparse.py --batches 1` put the break-even per call below 0.30, below 0.50
# and at 0.53 in three runs (the kernels alone 0.30-0.52); 0.5, where no run lost more than 14%.
WINDOWED_BREAK_EVEN = 0.5


def sparsity_threshold(node: ir.Node, config: dict, target=None) -> float:
    """The fraction of zeros from which this linear goes sparse (on `target`, a codegen Target or None)."""
    if "sparse_threshold" in config:
        return float(config["sparse_threshold"])
    rows = math.prod(node.inputs[0].shape[:-1])
    if rows <= 1 and target is not None and target.permutes_two_vectors:
        return WINDOWED_BREAK_EVEN
    return BREAK_EVEN[max((key for key in BREAK_EVEN if key <= rows), default=min(BREAK_EVEN))]


def _sparse_weight(node: ir.Node) -> ir.Node | None:
    """The constant weight of an f32 linear, when it has one with at least one element (and an
    activation sparse_linear has: not a fused gelu)."""
    if node.op != "linear" or node.dtype is not ir.DType.f32 or node.attrs["activation"] not in ACTIVATIONS:
        return None
    weight = split_contraction(node.inputs, node.attrs["residual"])[1]
    return weight if weight.op == "constant" and weight.value.size else None


@register_pass("sparsify", opt_level=2, description="a linear with a mostly-zero constant weight becomes sparse_linear",
               after={"fuse-residual": "sparse_linear keeps the residual fused into the linear",
                      "fuse-activation": "sparse_linear keeps the activation fused into the linear"})
def sparsify(graph: ir.Graph, ctx=None) -> ir.Graph:
    config = ctx.config if ctx is not None else {}
    target = ctx.target if ctx is not None else None
    converted: dict[ir.Node, list[ir.Node]] = {}  # a weight read by several linears is stored once in CSR
    erased: set[ir.Node] = set()
    for node in list(graph.nodes):
        weight = _sparse_weight(node)
        if weight is None or float(np.mean(weight.value == 0)) < sparsity_threshold(node, config, target):
            continue
        with graph.inserting_before(node):
            if weight not in converted:
                converted[weight] = [derive(graph.constant(array, derived_name(weight, f"csr_{part}")), weight)
                                     for array, part in zip(to_csr(weight.value), ("values", "columns", "row_starts"))]
            x, _, *rest = node.inputs
            sparse = graph.call("sparse_linear", [x, *converted[weight], *rest], dict(node.attrs))
        sparse.meta["dense_weight"] = weight.name
        node.replace_all_uses_with(sparse)
        erase_if_unused(graph, node, erased)
    return graph
