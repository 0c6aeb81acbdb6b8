"""The graph IR: types, the op registry, Graph/Node, printer, parser, verifier, interpreter."""

from . import (  # noqa: F401  (register the ops)
    ops_fused,
    ops_kv_cache,
    ops_logic,
    ops_math,
    ops_nn,
    ops_quant,
    ops_shape,
    ops_sparse,
    ops_transformer,
)
from .graph import Graph, Node
from .interpreter import InputError, coerce_input, coerce_inputs, interpret, run_graph
from .parser import ParseError, parse
from .registry import OPS, OpDef, OpError, evaluate, get_op, infer_type, ops_with, register_op
from .types import DType, TensorType
from .verifier import VerifyError, verify

__all__ = [
    "OPS", "DType", "Graph", "InputError", "Node", "OpDef", "OpError", "ParseError", "TensorType",
    "VerifyError", "coerce_input", "coerce_inputs", "evaluate", "get_op", "infer_type", "interpret",
    "ops_with", "parse", "register_op", "run_graph", "verify",
]
