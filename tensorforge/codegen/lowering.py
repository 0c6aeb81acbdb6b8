"""The lowering table: for every op in ir.OPS, its emission function and the dtypes it supports.

    EMIT["add"]      -> Lowering(emit_binary, every dtype)
    EMIT["reshape"]  -> VIEW: no code, the result is the operand's buffer
    EMIT["linear"]   -> Lowering(emit_linear, every dtype, scratch for packing, weight packed at compile time)

`lowering_for(node, target)` is the one place that decides whether a node can be compiled; it
raises CodegenError naming the node, op, dtype and target otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..ir import DType, Node
from .errors import CodegenError
from .gemm.packing import PackedConstant
from .kernel import Kernel
from .ops.conv.conv import (
    conv2d_parts,
    conv2d_scratch_bytes,
    emit_batch_norm,
    emit_conv2d,
    emit_pool,
    pack_conv2d_weight,
    padded_bytes,
    pool_parts,
)
from .ops.elementwise import elementwise_parts, emit_binary, emit_cast, emit_float_unary, emit_gelu, emit_neg, emit_relu
from .ops.fused import emit_fused_elementwise
from .ops.kv_cache import (
    cached_attention_parts,
    cached_attention_scratch_bytes,
    emit_cache_write,
    emit_cached_attention,
    emit_position_mask,
)
from .ops.matmul import emit_linear, emit_matmul, gemm_node_scratch_bytes, gemm_parts, pack_gemm_constant
from .ops.qlayers import (
    dynamic_scratch_bytes,
    emit_dynamic_qlinear,
    emit_qconv2d,
    emit_qlinear,
    pack_qconv_constant,
    pack_qlinear_constant,
    qconv_parts,
    qconv_scratch_bytes,
    qlinear_parts,
    qlinear_scratch_bytes,
)
from .ops.quant import emit_dequantize, emit_matmul_integer, emit_quantize
from .ops.reduce import emit_reduce, emit_softmax, reduce_parts, softmax_parts
from .ops.shape import emit_concat, emit_slice, emit_transpose
from .ops.sparse.linear import emit_sparse_linear, pack_sparse_constant, sparse_parts, sparse_scratch_bytes
from .ops.transformer import emit_argmax, emit_causal_mask, emit_gather, emit_layer_norm
from .target import Target

ALL = frozenset(DType)
NUMERIC = ALL - {DType.bool}  # numpy refuses bool for -, unary -, and the padding of pools
FLOAT = frozenset({DType.f32})


@dataclass(frozen=True)
class Lowering:
    """How one op is compiled: `emit` fills a Kernel, for operands of one of `dtypes`.

    `scratch_bytes(node, target, packed)` is the private workspace the kernel needs besides its
    output, given the operands it receives packed.
    `pack_constant(node, operand_index, target)` may return a constant operand in the kernel's own
    layout (gemm/packing.py), stored once at compile time; the kernel then finds that operand's index
    in `kernel.packed` (always, with `always_pack`). `parts(node, target, threads)` says into how
    many parts the kernel splits its work for a team of `threads` (threads/parallel.py); without it a node
    runs on one thread. A view
    (`emit` None) has no code: its result is its first operand's buffer. The code of a kernel may
    depend on its node's op, attributes, types and which operands are constants and packed, never on
    constant values (unless `reads_values`): nodes equal in those share one function (entry.py).
    """

    emit: Callable[[Kernel], None] | None
    dtypes: frozenset[DType]
    scratch_bytes: Callable[[Node, Target, frozenset[int]], int] | None = None
    pack_constant: Callable[[Node, int, Target], PackedConstant | None] | None = None
    parts: Callable[[Node, Target, int], int] | None = None
    always_pack: bool = False  # the kernel reads its constants only packed (also with build's pack=False)
    reads_values: bool = False  # the code depends on a constant operand's values (not only its type): never shared

    @property
    def is_view(self) -> bool:
        return self.emit is None


VIEW = Lowering(None, ALL)


def _map(emit: Callable, dtypes: frozenset[DType]) -> Lowering:
    """An elementwise map (emit_elementwise.map_elements): no scratch, split by elementwise_parts."""
    return Lowering(emit, dtypes, parts=elementwise_parts)

EMIT: dict[str, Lowering] = {
    # elementwise (ops/elementwise.py)
    "add": _map(emit_binary, ALL),
    "sub": _map(emit_binary, NUMERIC),
    "mul": _map(emit_binary, ALL),
    "div": _map(emit_binary, FLOAT),
    "neg": _map(emit_neg, NUMERIC),
    "relu": _map(emit_relu, ALL),
    "exp": _map(emit_float_unary, FLOAT),
    "log": _map(emit_float_unary, FLOAT),
    "sqrt": _map(emit_float_unary, FLOAT),
    "abs": _map(emit_float_unary, FLOAT),
    "tanh": _map(emit_float_unary, FLOAT),
    "sigmoid": _map(emit_float_unary, FLOAT),
    "gelu": _map(emit_gelu, FLOAT),
    "cast": _map(emit_cast, ALL),
    "fused_elementwise": _map(emit_fused_elementwise, ALL),  # ops/fused.py: a chain in one loop
    # reductions (ops/reduce.py)
    "reduce_sum": Lowering(emit_reduce, ALL, parts=reduce_parts),
    "reduce_mean": Lowering(emit_reduce, FLOAT, parts=reduce_parts),
    "reduce_max": Lowering(emit_reduce, ALL, parts=reduce_parts),
    "fused_reduce": Lowering(emit_reduce, ALL, parts=reduce_parts),  # fuse-reduce: a program's values reduced
    "softmax": Lowering(emit_softmax, FLOAT, parts=softmax_parts),
    # data movement (ops/shape.py)
    "reshape": VIEW,
    "flatten": VIEW,
    "transpose": Lowering(emit_transpose, ALL),
    "concat": Lowering(emit_concat, ALL),
    "slice": Lowering(emit_slice, ALL),
    # contractions (ops/matmul.py)
    "matmul": Lowering(emit_matmul, ALL, gemm_node_scratch_bytes, pack_gemm_constant, gemm_parts),
    "linear": Lowering(emit_linear, ALL, gemm_node_scratch_bytes, pack_gemm_constant, gemm_parts),
    # sparse (ops/sparse/linear.py): a linear with a CSR weight
    "sparse_linear": Lowering(emit_sparse_linear, FLOAT, sparse_scratch_bytes, pack_sparse_constant, sparse_parts,
                              reads_values=True),  # its loops follow the weight's sparsity pattern
    # NCHW (ops/conv/conv.py)
    "conv2d": Lowering(emit_conv2d, ALL, conv2d_scratch_bytes, pack_conv2d_weight, conv2d_parts),
    "max_pool2d": Lowering(emit_pool, NUMERIC, padded_bytes, parts=pool_parts),
    "avg_pool2d": Lowering(emit_pool, FLOAT, padded_bytes, parts=pool_parts),
    "batch_norm": Lowering(emit_batch_norm, FLOAT),
    # quantization (ops/quant.py)
    "quantize": _map(emit_quantize, FLOAT),
    "dequantize": _map(emit_dequantize, frozenset({DType.i8, DType.u8, DType.i32})),
    "matmul_integer": Lowering(emit_matmul_integer, frozenset({DType.i8, DType.u8})),
    "qlinear": Lowering(emit_qlinear, frozenset({DType.i8, DType.u8}), qlinear_scratch_bytes, pack_qlinear_constant,
                        qlinear_parts, always_pack=True),  # gemm/qgemm.py: the int8 GEMM
    "qconv2d": Lowering(emit_qconv2d, frozenset({DType.i8, DType.u8}), qconv_scratch_bytes, pack_qconv_constant,
                        qconv_parts, always_pack=True),
    "dynamic_qlinear": Lowering(emit_dynamic_qlinear, FLOAT, dynamic_scratch_bytes, pack_qlinear_constant,
                                qlinear_parts, always_pack=True),  # split like qlinear
    # transformers (ops/transformer.py)
    "gather": Lowering(emit_gather, ALL),  # any table dtype; the ids are checked by type inference
    "layer_norm": Lowering(emit_layer_norm, FLOAT),
    "causal_mask": Lowering(emit_causal_mask, FLOAT),
    "argmax": Lowering(emit_argmax, NUMERIC),
    # KV cache (ops/kv_cache.py)
    "cache_write": Lowering(emit_cache_write, ALL),
    "position_mask": Lowering(emit_position_mask, FLOAT),
    "cached_attention": Lowering(emit_cached_attention, FLOAT, cached_attention_scratch_bytes,
                                 parts=cached_attention_parts),
}


def lowering_for(node: Node, target: Target) -> Lowering:
    """The lowering of an op node; CodegenError if its op or dtype cannot be compiled."""
    dtype = node.inputs[0].dtype if node.inputs else node.dtype
    lowering = EMIT.get(node.op)
    if lowering is None:
        raise CodegenError(f"cannot compile %{node.name} = {node.op}(...) : {node.type} for target {target.name}: "
                           f"op '{node.op}' has no lowering (ops with one: {', '.join(sorted(EMIT))})")
    if dtype not in lowering.dtypes:
        supported = ", ".join(sorted(d.name for d in lowering.dtypes))
        raise CodegenError(f"cannot compile %{node.name} = {node.op}(...) : {node.type} for target {target.name}: "
                           f"op '{node.op}' does not support dtype {dtype.name} (supported: {supported})")
    return lowering
