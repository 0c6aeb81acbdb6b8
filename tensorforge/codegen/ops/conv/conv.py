"""Emission of conv2d and batch_norm (inference), NCHW; the pools are in ops/conv/pool.py.

f32 conv2d runs on the GEMM micro-kernel (ops/conv/conv_gemm.py, or ops/conv/winograd.py), a
depthwise one (groups == channels == outputs) on its own loop nest (ops/conv/depthwise.py); the loop
nests here compute integer and bool convolutions exactly, and batch norm.

Padding is done as the numpy reference does it: the input is first copied into a padded buffer
(the node's scratch), filled with 0 for conv2d and avg_pool2d and with the lowest value for
max_pool2d; the window loops then need no bounds checks. Each kernel tap (i, j) is one loop nest
over the output plane whose inner loop runs along a row (contiguous when the stride is 1):

    for n, o:  out[n, o] = 0
      for c in o's group, i < kh, j < kw:
        for y, x:  out[n, o, y, x] += w[o, c, i, j] * padded[n, c, y*sh + i*dh, x*sw + j*dw]
"""

from __future__ import annotations

import math

from llvmlite import ir

from ....ir import Node
from ...errors import CodegenError
from ...kernel import Kernel
from ...llvm import float_math, scalar
from ...llvm.layout import contiguous_strides
from ...llvm.utils import (
    affine_offset,
    element_pointer,
    fill_elements,
    for_range,
    load_element,
    store_element,
    strided_loops,
)
from ...lowering import ALL, FLOAT, Lowering, PackedConstant, register_lowering
from ...target import Target
from ..matmul import activate_output, contraction_operands
from ..shape import copy_elements
from .conv_gemm import conv_parts, emit_conv2d_tiled, pack_conv_weight, tiled_conv_scratch_bytes
from .depthwise import depthwise_parts, depthwise_scratch_bytes, emit_conv2d_depthwise, is_depthwise
from .geometry import uses_tiled_conv
from .pixel_rows import (
    emit_conv2d_pixel_rows,
    pixel_rows_parts,
    pixel_rows_scratch_bytes,
    pixel_weight,
    prefers_pixel_rows,
)
from .winograd import emit_conv2d_winograd, pack_winograd_weight, winograd_parts, winograd_scratch_bytes

CONTRACT = ("contract",)


def padded_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """The scratch a conv2d or pooling node needs for its padded input (0 without padding), on any target."""
    n, c, h, w = node.inputs[0].shape
    ph, pw = node.attrs["padding"]
    if ph == 0 and pw == 0:
        return 0
    return n * c * (h + 2 * ph) * (w + 2 * pw) * node.inputs[0].dtype.itemsize


def _by_winograd(node: Node, packed: frozenset[int]) -> bool:
    """winograd=true (select-winograd) with the weight transformed at compile time; a weight that
    is not (pack=False, a computed weight) is convolved directly."""
    return node.attrs.get("winograd") and 1 in packed


def pack_conv2d_weight(node: Node, index: int, target: Target) -> PackedConstant | None:
    """The constant weight as micro-kernel A panels: Winograd's G g G^T, or the direct conv's taps
    (a depthwise conv reads it as stored)."""
    if is_depthwise(node):
        return None
    if node.attrs.get("winograd") and index == 1 and uses_tiled_conv(node) and node.inputs[1].op == "constant":
        return pack_winograd_weight(node, target)
    if index == 1 and prefers_pixel_rows(node, target):
        return pixel_weight(node, target)
    return pack_conv_weight(node, index, target)


def conv2d_parts(node: Node, target: Target, threads: int) -> int:
    """Parts for a team of `threads`: Winograd's (image, block of tile rows) units, or the direct
    conv's images or rows (a weight convolved directly after all is split the same way), or the
    depthwise conv's blocks of planes."""
    if is_depthwise(node):
        return depthwise_parts(node, target, threads)
    if prefers_pixel_rows(node, target):
        return pixel_rows_parts(node, target, threads)
    return (winograd_parts if node.attrs.get("winograd") else conv_parts)(node, target, threads)


def conv2d_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """The tiled f32 convolution's scratch (ops/conv/conv_gemm.py, ops/conv/winograd.py), or the padded
    input of the exact one, or the depthwise conv's padded plane."""
    if is_depthwise(node):
        return depthwise_scratch_bytes(node, target, packed)
    if _by_winograd(node, packed):
        return winograd_scratch_bytes(node, target)
    if prefers_pixel_rows(node, target):
        return pixel_rows_scratch_bytes(node, target, packed)
    return tiled_conv_scratch_bytes(node, target, packed) if uses_tiled_conv(node) else padded_bytes(node, target)


def padded_input(kernel: Kernel, fill: ir.Value) -> tuple[ir.Value, int, int]:
    """The input with `fill` around each plane (in the scratch buffer), and its padded height and width."""
    n, c, h, w = kernel.operand_type(0).shape
    ph, pw = kernel.node.attrs["padding"]
    if ph == 0 and pw == 0:
        return kernel.inputs[0], h, w
    hp, wp = h + 2 * ph, w + 2 * pw
    fill_elements(kernel.builder, kernel.scratch, n * c * hp * wp, fill, "pad")
    copy_elements(kernel, kernel.inputs[0], (contiguous_strides((n * c, h, w)), 0), kernel.scratch,
                  ((hp * wp, wp, 1), ph * wp + pw), (n * c, h, w), "interior")
    return kernel.scratch, hp, wp


def emit_conv2d(kernel: Kernel) -> None:
    """conv2d with stride, padding, dilation, groups, an optional bias and the fused activation: f32
    through the GEMM micro-kernel (ops/conv/conv_gemm.py) or, depthwise, directly (ops/conv/depthwise.py),
    other dtypes exactly by the loop nest below."""
    if is_depthwise(kernel.node):
        emit_conv2d_depthwise(kernel)
        return
    if _by_winograd(kernel.node, kernel.packed):
        emit_conv2d_winograd(kernel)
        return
    if prefers_pixel_rows(kernel.node, kernel.target):
        emit_conv2d_pixel_rows(kernel)
        return
    if uses_tiled_conv(kernel.node):
        emit_conv2d_tiled(kernel)
        return
    if kernel.node.attrs.get("pool") is not None:  # fuse-pool fuses f32 convolutions only
        raise CodegenError(f"cannot compile %{kernel.node.name} = conv2d(...) {{pool={kernel.node.attrs['pool']!r}}}: "
                           f"a fused pool needs the tiled f32 convolution, got {kernel.dtype.name}")
    node, builder, dtype, element = kernel.node, kernel.builder, kernel.dtype, kernel.element
    batch, channels = kernel.operand_type(0).shape[:2]
    out_channels, group_channels, kh, kw = kernel.operand_type(1).shape
    groups = node.attrs["groups"]
    group_outputs = out_channels // groups
    (sh, sw), (dh, dw) = node.attrs["stride"], node.attrs["dilation"]
    oh, ow = node.shape[2:]
    plane = oh * ow
    if node.type.size == 0:
        return
    source, hp, wp = padded_input(kernel, scalar.constant(dtype, 0))

    with (for_range(builder, batch, "n") as b, for_range(builder, groups, "g") as g,
          for_range(builder, group_outputs, "oc") as oc):
        o = affine_offset(builder, [(g, group_outputs)], oc, "o")
        out_plane = element_pointer(builder, kernel.output, affine_offset(builder, [(b, out_channels * plane),
                                                                                    (o, plane)]), element, "out_plane")
        fill_elements(builder, out_plane, plane, scalar.constant(dtype, 0), "zero")
        with (for_range(builder, group_channels, "c") as c, for_range(builder, kh, "kh") as i,
              for_range(builder, kw, "kw") as j):
            weight_at = affine_offset(builder, [(o, group_channels * kh * kw), (c, kh * kw), (i, kw), (j, 1)])
            weight = load_element(builder, kernel.inputs[1], weight_at, element, "weight")
            window = affine_offset(builder, [(b, channels * hp * wp), (g, group_channels * hp * wp), (c, hp * wp),
                                             (i, dh * wp), (j, dw)], name="window")
            accesses = [((ow, 1), 0), ((sh * wp, sw), window)]
            with strided_loops(builder, (oh, ow), accesses, "y") as (write_at, read_at):
                product = scalar.mul(builder, dtype, weight, load_element(builder, source, read_at, element, "x"),
                                     name="product", flags=CONTRACT)
                total = scalar.add(builder, dtype, load_element(builder, out_plane, write_at, element, "acc"),
                                   product, name="acc", flags=CONTRACT)
                store_element(builder, total, out_plane, write_at)
        bias_pointer = contraction_operands(kernel)[0]
        if bias_pointer is not None:
            bias = load_element(builder, bias_pointer, o, element, "bias")
            with for_range(builder, plane, "bias") as p:
                total = scalar.add(builder, dtype, load_element(builder, out_plane, p, element, "acc"), bias,
                                   name="biased")
                store_element(builder, total, out_plane, p)
    activate_output(kernel)


def conv2d_image_strided(node: Node, target: Target) -> bool:
    """The tiled f32 convolutions (direct, Winograd, pixel form) write their output's images
    kernel.output_image elements apart; the depthwise and exact ones only contiguously."""
    return uses_tiled_conv(node) and not is_depthwise(node)


register_lowering("conv2d", Lowering(emit_conv2d, ALL, conv2d_scratch_bytes, pack_conv2d_weight, conv2d_parts,
                                     image_strided=conv2d_image_strided))


def emit_batch_norm(kernel: Kernel) -> None:
    """y = (x - mean) * scale + beta with scale = gamma / sqrt(var + eps), per channel (axis 1)."""
    node, builder, element = kernel.node, kernel.builder, kernel.element
    batch, channels = node.shape[:2]
    spatial = math.prod(node.shape[2:])
    if node.type.size == 0:
        return
    x, gamma, beta, mean, var = kernel.inputs
    eps = float_math.f32(node.attrs["eps"])
    with for_range(builder, channels, "c") as c:
        deviation = float_math.sqrt(builder, builder.fadd(load_element(builder, var, c, element, "var"), eps), "std")
        scale = builder.fdiv(load_element(builder, gamma, c, element, "gamma"), deviation, name="scale")
        shift = load_element(builder, beta, c, element, "beta")
        centre = load_element(builder, mean, c, element, "mean")
        with for_range(builder, batch, "n") as b, for_range(builder, spatial, "p") as p:
            at = affine_offset(builder, [(b, channels * spatial), (c, spatial)], p, "at")
            centred = builder.fsub(load_element(builder, x, at, element, "x"), centre, name="centred")
            y = builder.fadd(builder.fmul(centred, scale, name="scaled"), shift, name="y")
            store_element(builder, y, kernel.output, at)


register_lowering("batch_norm", Lowering(emit_batch_norm, FLOAT))
