"""Graph passes: the registry, the pass manager, instruments, and one file per pass.

    result = run_pipeline(graph, PassContext(opt_level=2, instruments=[VerifyInstrument()]))

    %w = constant() : f32[3,3]                          %folded_1 = constant() : f32[3,3]
    %1 = transpose(%w) {perm=[1, 0]} : f32[3,3]   ->    %0 = linear(%x, %folded_1) {activation="relu"} : f32[2,3]
    %2 = linear(%x, %1) : f32[2,3]
    %3 = relu(%2) : f32[2,3]
    print(result.report)      one row per pass: time, nodes before -> after, changed

Every pass module is imported here (which registers it) and PIPELINE below is the one listing of
their order. A pass runs when `ctx.opt_level >= PASSES[name].opt_level` (see `pipeline_for`). Why
the order is what it is lives with each pass, as data: `register_pass(..., after={"fold-constants":
"a weight's transpose is folded already"}, before=..., requires=...)`; `check_order(PIPELINE)`
checks the list against every constraint (tests/test_passes_manager.py, and every run_pipeline).
Each name appears once (snapshots and pictures are keyed by pass name); a cleanup that must reach
a fixpoint iterates inside its pass. Every pass erases the nodes its own rewrites leave unused, so
dead code only needs removing once, before the passes that count users.
Not passes, and not here: the kv-cache rewrite (tensorforge/generate/kv_cache.py) makes two graphs
of one before the pipeline runs on each; insert-quant and calibration (tensorforge/quant/) and
pruning (tensorforge/prune/) rewrite a graph before the pipeline. Their names once imported from
here (`KVCacheError`, `rewrite_for_kv_cache`, `insert_quant`, ...) still are, from those packages,
when first asked for (not when this package loads: they import from it).
"""

from importlib import import_module

from .absorb_transpose import absorb_transpose
from .common_subexpressions import eliminate_common_subexpressions
from .dead_code import eliminate_dead_code
from .fold_batch_norm import fold_batch_norm
from .fold_constants import fold_constants
from .fuse_activation import fuse_activation
from .fuse_bias import fuse_bias
from .fuse_elementwise import fuse_elementwise
from .fuse_pool import fuse_pool
from .fuse_reduce import fuse_reduce
from .fuse_residual import fuse_residual
from .fuse_siblings import fuse_sibling_linears
from .fuse_softmax import fuse_softmax
from .instruments import Instrument, PassVerifyError, SnapshotInstrument, TimingInstrument, VerifyInstrument
from .lower_quant import lower_quant
from .manager import PassContext, PassReport, PassRow, PipelineResult, pipeline_for, run_pipeline
from .registry import (
    PASSES,
    OrderConstraint,
    PassInfo,
    PassOrderError,
    PassRequirementError,
    check_order,
    order_constraints,
    register_pass,
)
from .select_winograd import select_winograd
from .simplify import simplify
from .sparsify import sparsify
from .split_range import split_range

PIPELINE = [
    "eliminate-dead-code",
    "lower-quant",
    "simplify",
    "fold-constants",
    "fold-batch-norm",
    "eliminate-common-subexpressions",
    "absorb-transpose",
    "fuse-bias",
    "fuse-residual",
    "fuse-activation",
    "fuse-pool",
    "select-winograd",
    "sparsify",
    "fuse-sibling-linears",
    "fuse-softmax",
    "fuse-elementwise",
    "fuse-reduce",
    "split-range",
]

__all__ = [
    "PASSES", "PIPELINE", "Instrument", "OrderConstraint", "PassContext", "PassInfo", "PassOrderError", "PassReport",
    "PassRequirementError", "PassRow", "PassVerifyError", "PipelineResult", "SnapshotInstrument", "TimingInstrument",
    "VerifyInstrument",
    "absorb_transpose", "check_order", "eliminate_common_subexpressions", "eliminate_dead_code", "fold_batch_norm",
    "fold_constants", "fuse_activation", "fuse_bias", "fuse_elementwise", "fuse_pool", "fuse_reduce", "fuse_residual",
    "fuse_sibling_linears", "fuse_softmax", "lower_quant", "order_constraints", "pipeline_for", "register_pass",
    "run_pipeline", "select_winograd", "simplify", "sparsify", "split_range",
]

_MOVED = {"KVCacheError": "generate", "KVCacheGraphs": "generate", "find_attentions": "generate",
          "rewrite_for_kv_cache": "generate", "LayerQuant": "quant", "insert_quant": "quant"}


def __getattr__(name: str):
    """The names that moved to tensorforge.generate and tensorforge.quant, imported when first asked for."""
    if name in _MOVED:
        return getattr(import_module(f"..{_MOVED[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
