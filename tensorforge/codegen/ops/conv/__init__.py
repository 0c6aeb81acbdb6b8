"""The NCHW ops: conv2d (exact loops, the tiled GEMM conv, Winograd), the pools and batch_norm.

    conv.py       conv2d: chooses depthwise.py, winograd.py, conv_gemm.py (f32) or its exact loop nest; batch_norm
    depthwise.py  f32 depthwise conv2d (groups == channels == outputs): taps in registers, per plane
    conv_gemm.py  f32 conv2d as GEMMs on the micro-kernel, im2col one panel at a time (fused pools too)
    winograd.py   conv2d with winograd=true: F(2x2, 3x3) on the micro-kernel
    pool.py       max_pool2d, avg_pool2d
"""

from . import conv, pool  # noqa: F401  (register the lowerings)
