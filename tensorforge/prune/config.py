"""PruneConfig and the pruning step of tf.compile, with the report behind cm.prune_report().

    cm = tf.compile(model, x, prune=tf.PruneConfig(method="structured", sparsity=0.5))
    print(cm.prune_report())        # layer, sparsity, shape before -> after, kernel

method "magnitude" zeroes the smallest weights (prune/magnitude.py; scope "global", one
threshold for all weights as TinyTorch does, or "layer"); "structured" removes the smallest output
neurons of linear layers and output channels of conv2d layers, and shrinks what reads them
(prune/structured.py; `sparsity` is the fraction of neurons / channels removed per layer).
The traced graph is pruned before the pass pipeline; the compiled model's `source_graph` is the
pruned graph.
The pipeline's sparsify pass then runs the layers whose weights are sparse enough on the sparse
kernel (kernel "csr" in the report; "dense" otherwise); `sparse_kernel=False` keeps every layer
dense.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir import Graph
from .magnitude import SCOPES, prunable_weights, prune_magnitude
from .structured import prune_structured

METHODS = ("magnitude", "structured")


@dataclass(frozen=True)
class PruneConfig:
    method: str = "magnitude"
    sparsity: float = 0.5
    scope: str = "global"
    sparse_kernel: bool = True  # let the sparsify pass switch sparse enough layers to the CSR kernel

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"PruneConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"PruneConfig.scope must be one of {SCOPES}, got {self.scope!r}")
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"PruneConfig.sparsity must be in [0, 1), got {self.sparsity}")

    @property
    def disabled_passes(self) -> tuple[str, ...]:
        """The passes tf.compile skips for this config."""
        return () if self.sparse_kernel else ("sparsify",)


@dataclass
class PruneReport:
    """One row per weight: (layer, sparsity, shape before, shape after, kernel)."""

    config: PruneConfig
    rows: list[tuple[str, float, tuple, tuple, str]] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=dict)  # a pruned weight's node name -> its row

    def record_kernels(self, graph: Graph) -> None:
        """Mark "csr" the layers whose weight the optimized `graph` reads in CSR (passes/sparsify.py)."""
        for node in graph.nodes:
            row = self.weights.get(node.meta.get("dense_weight")) if node.op == "sparse_linear" else None
            if row is not None:
                self.rows[row] = (*self.rows[row][:4], "csr")

    def __str__(self) -> str:
        lines = [f"pruning: {self.config.method}, sparsity {self.config.sparsity:.0%}, scope {self.config.scope}",
                 f"{'layer':<24} {'sparsity':>9} {'shape before':>16} {'shape after':>16} {'kernel':>8}"]
        lines += [f"{name:<24} {sparsity:>9.1%} {str(list(before)):>16} {str(list(after)):>16} {kernel:>8}"
                  for name, sparsity, before, after, kernel in self.rows]
        return "\n".join(lines)


def apply_pruning(graph: Graph, config: PruneConfig) -> tuple[Graph, PruneReport]:
    """A pruned copy of `graph` and its report."""
    pruned = graph.copy()
    shapes = {node.name: node.shape for node in prunable_weights(pruned)}
    if config.method == "magnitude":
        prune_magnitude(pruned, config.sparsity, config.scope)
    else:
        prune_structured(pruned, config.sparsity)
    report = PruneReport(config)
    for weight in prunable_weights(pruned):
        origin = weight.name
        while origin.endswith("_pruned"):  # a layer pruned as a producer and then as a consumer
            origin = origin.removesuffix("_pruned")
        report.weights[weight.name] = len(report.rows)
        report.rows.append((origin, float(np.mean(weight.value == 0)), shapes.get(origin, weight.shape),
                            weight.shape, "dense"))
    return pruned, report
