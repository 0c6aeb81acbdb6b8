"""Pruning: magnitude (zero the smallest weights) and structured (remove whole neurons / channels).

    cm = tf.compile(model, x, prune=tf.PruneConfig(method="structured", sparsity=0.5))

    %y = linear(%x, %w[64,32], %b[32]) : f32[N,32]          %y = linear(%x, %w'[64,16], %b'[16]) : f32[N,16]
    %r = relu(%y) : f32[N,32]                          ->    %r = relu(%y) : f32[N,16]
    %z = linear(%r, %v[32,10]) : f32[N,10]                   %z = linear(%r, %v'[16,10]) : f32[N,10]

config.py holds PruneConfig, the pruning step of tf.compile and the report behind cm.prune_report();
magnitude.py and structured.py rewrite a graph in place. The pipeline's sparsify pass
(passes/sparsify.py) then runs the layers sparse enough on the sparse kernel.
"""

from .config import PruneConfig, PruneReport, apply_pruning
from .magnitude import prunable_weights, prune_magnitude
from .structured import prune_structured

__all__ = ["PruneConfig", "PruneReport", "apply_pruning", "prunable_weights", "prune_magnitude", "prune_structured"]
