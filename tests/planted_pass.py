"""Deliberately wrong passes for the tests of check(): planted into the pipeline only inside a test.

    with planted("relu-of-sum"):            # registers the pass, puts it in PIPELINE after fold-constants
        tfg.check(graph, x)                 # CheckError: planted-relu-of-sum changes output 0 ...
                                            # (unregistered again when the block ends)

"relu-of-sum": relu(a + b) -> clip(a + b){min=-0.01} (0.01 off where the sum is below zero: the
reference there is 0, so only an absolute error makes sense); "sum": a + b -> a - b * -1.001 (a
relative error of about 1e-3). Both are rewrite rules, so they record provenance like any pass.
A repro run in a child process plants the same pass first: `python -c "import planted_pass; ..."`.
"""

from __future__ import annotations

import contextlib

import numpy as np

from tensorforge.passes import PASSES, PIPELINE, register_pass
from tensorforge.passes.rewrite import Pattern, rewrite_to_fixpoint


def _clip_for_relu(m):
    return m["relu"].graph.call("clip", [m["sum"]], {"min": -0.01})


def _scaled_sum(m):
    graph, (a, b) = m["sum"].graph, m["sum"].inputs
    factor = graph.constant(np.array(-1.001, dtype=b.dtype.numpy))
    return graph.call("sub", [a, graph.call("mul", [b, factor])])


RULES = {
    "relu-of-sum": [(Pattern("relu", [Pattern("add", name="sum", single_use=True)], name="relu"), _clip_for_relu)],
    "sum": [(Pattern("add", name="sum", where=lambda node: node.dtype.is_float), _scaled_sum)],
}


@contextlib.contextmanager
def planted(kind: str):
    """Register the wrong pass `planted-<kind>` and run it right after fold-constants, for the block."""
    name = f"planted-{kind}"
    rules = RULES[kind]
    register_pass(name, opt_level=1, description=f"a deliberately wrong rewrite ({kind})",
                  after={"fold-constants": "test"}, before={"fuse-residual": "test", "fuse-activation": "test"})(
        lambda graph, ctx=None: rewrite_to_fixpoint(graph, rules))
    PIPELINE.insert(PIPELINE.index("fold-constants") + 1, name)
    try:
        yield name
    finally:
        PIPELINE.remove(name)
        del PASSES[name]
