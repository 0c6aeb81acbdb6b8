"""The op lowerings: one module per family of ops, each registering its ops' lowerings (lowering.py).

    elementwise.py  add, mul, exp, gelu, cast...: one map per op, from its element function table
    fused.py        fused_elementwise: a chain of element functions in one loop nest
    reduce.py       reduce_sum, reduce_mean, reduce_max, fused_reduce, softmax
    shape.py        reshape and flatten (views), transpose, slice, concat
    matmul.py       matmul and linear, on the f32 GEMM (gemm/)
    conv/           conv2d, the pools, batch_norm
    sparse/         sparse_linear
    quant.py        quantize, dequantize, matmul_integer
    qlayers.py      qlinear, dynamic_qlinear, qconv2d on the int8 GEMM (gemm/qgemm.py)
    transformer.py  gather, layer_norm, causal_mask, argmax
    kv_cache.py     cache_write, position_mask, cached_attention

Importing this package registers every lowering, as importing tensorforge.ir registers every op.
"""

# importing each module registers its lowerings
from . import (  # noqa: F401
    conv,
    elementwise,
    fused,
    kv_cache,
    matmul,
    qlayers,
    quant,
    reduce,
    shape,
    sparse,
    transformer,
)
