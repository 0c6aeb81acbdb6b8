"""The NCHW ops: conv2d (exact loops, the tiled GEMM conv, Winograd), the pools and batch_norm.

    conv.py       conv2d: picks depthwise, winograd, pixel_rows, conv_gemm (f32) or its exact loop nest; batch_norm
    depthwise.py  f32 depthwise conv2d (groups == channels == outputs): taps in registers, per plane
    geometry.py   what the f32 convs share: ConvGeometry, the part ranges, the zero-bordered image copy
    conv_gemm.py  f32 conv2d as GEMMs, output channels as rows, im2col a block of panels at a time (fused pools too)
    pixel_rows.py f32 conv2d as the GEMM with output pixels as rows, for deep convs
    winograd.py   conv2d with winograd=true: F(2x2, 3x3) on the micro-kernel
    pool.py       max_pool2d, avg_pool2d
"""

from . import conv, pool  # noqa: F401  (register the lowerings)
