"""Graph passes: the registry, the pass manager, instruments, and one file per pass.

    result = run_pipeline(graph, PassContext(opt_level=2, instruments=[VerifyInstrument()]))

The passes (registered by importing their modules; PIPELINE in manager.py gives their order):
    simplify                          simplify.py
    fold-constants                    fold_constants.py
    fold-batch-norm                   fold_batch_norm.py
    eliminate-common-subexpressions   common_subexpressions.py
    eliminate-dead-code               dead_code.py
"""

from .common_subexpressions import eliminate_common_subexpressions
from .dead_code import eliminate_dead_code
from .fold_batch_norm import fold_batch_norm
from .fold_constants import fold_constants
from .instruments import Instrument, PassVerifyError, SnapshotInstrument, TimingInstrument, VerifyInstrument
from .manager import PIPELINE, PassContext, PassReport, PipelineResult, pipeline_for, run_pipeline
from .registry import PASSES, PassInfo, register_pass
from .simplify import simplify

__all__ = [
    "PASSES", "PIPELINE", "Instrument", "PassContext", "PassInfo", "PassReport", "PassVerifyError", "PipelineResult",
    "SnapshotInstrument", "TimingInstrument", "VerifyInstrument", "eliminate_common_subexpressions",
    "eliminate_dead_code", "fold_batch_norm", "fold_constants", "pipeline_for", "register_pass", "run_pipeline",
    "simplify",
]
