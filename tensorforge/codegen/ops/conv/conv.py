"""Emission of the NCHW ops: conv2d, max_pool2d, avg_pool2d and batch_norm (inference).

f32 conv2d runs on the GEMM micro-kernel (ops/conv/conv_gemm.py); the loop nests here compute integer
and bool convolutions exactly, the pools and batch norm.

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
from ...gemm.packing import PackedConstant
from ...kernel import Kernel
from ...llvm import float_math, scalar
from ...llvm.layout import contiguous_strides
from ...llvm.utils import (
    affine_offset,
    alloca_once,
    element_pointer,
    fill_elements,
    for_range,
    i64,
    load_element,
    store_element,
    strided_loops,
)
from ...target import Target
from ...threads import parallel
from ...threads.parallel import split_parts
from ..matmul import activate_output, contraction_operands
from ..shape import copy_elements
from .conv_gemm import conv_parts, emit_conv2d_tiled, pack_conv_weight, tiled_conv_scratch_bytes, uses_tiled_conv
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
    """The constant weight as micro-kernel A panels: Winograd's G g G^T, or the direct conv's taps."""
    if node.attrs.get("winograd") and index == 1 and uses_tiled_conv(node) and node.inputs[1].op == "constant":
        return pack_winograd_weight(node, target)
    return pack_conv_weight(node, index, target)


def conv2d_parts(node: Node, target: Target, threads: int) -> int:
    """Parts for a team of `threads`: Winograd's (image, block of tile rows) units, or the direct
    conv's images or rows (a weight convolved directly after all is split the same way)."""
    return (winograd_parts if node.attrs.get("winograd") else conv_parts)(node, target, threads)


def conv2d_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """The tiled f32 convolution's scratch (ops/conv/conv_gemm.py, ops/conv/winograd.py), or the padded
    input of the exact one."""
    if _by_winograd(node, packed):
        return winograd_scratch_bytes(node, target)
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
    through the GEMM micro-kernel (ops/conv/conv_gemm.py), other dtypes exactly by the loop nest below."""
    if _by_winograd(kernel.node, kernel.packed):
        emit_conv2d_winograd(kernel)
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


UNROLLED_TAPS = 16  # pool windows up to 4x4 are unrolled into straight-line code


def pool_parts(node: Node, target: Target, threads: int) -> int:
    """Parts of a pool for a team of `threads`: blocks of output rows; one part when it pads (the padded
    copy is shared) or when the work is small."""
    if node.attrs["padding"] != (0, 0) or node.type.size == 0:
        return 1
    kh, kw = node.attrs["kernel"]
    if node.type.size * kh * kw < parallel.MIN_PARALLEL_FLOPS // 4:  # a compare or add per tap, memory-bound
        return 1
    n, c, oh, _ = node.shape
    return split_parts(n * c * oh, threads * parallel.PARTS_PER_THREAD)[0]


def emit_pool(kernel: Kernel) -> None:
    """max_pool2d (padding is the lowest value) and avg_pool2d (padding counts as zeros).

    One pass over the output: for each output row, for each x, the kh x kw taps (unrolled) combined
    in a register; LLVM vectorizes along x (strided loads for stride > 1). The x loop stays rolled:
    fully unrolled (ow is a constant), it left the row loop innermost, which LLVM vectorized with
    gathers and scatters on AVX-512 (a 2x2 pool of [64,32,32,32] took 943 us instead of 172).
    """
    node, builder, dtype, element = kernel.node, kernel.builder, kernel.dtype, kernel.element
    is_max = node.op == "max_pool2d"
    n, c = node.shape[:2]
    oh, ow = node.shape[2:]
    (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    if node.type.size == 0:
        return
    identity = scalar.lowest(dtype) if is_max else scalar.constant(dtype, 0)
    source, hp, wp = padded_input(kernel, identity)
    first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, n * c * oh, "row")
    with for_range(builder, count, "row", unroll=False) as index:
        row = builder.add(first, index, name="row")
        plane, y = builder.udiv(row, i64(oh), name="plane"), builder.urem(row, i64(oh), name="y")
        source_row = affine_offset(builder, [(plane, hp * wp), (y, sh * wp)], name="source_row")
        with for_range(builder, ow, "x", unroll=False) as x:  # see the docstring
            start = affine_offset(builder, [(x, sw)], source_row, "start")

            def combine(combined: ir.Value | None, value: ir.Value) -> ir.Value:
                if combined is None:
                    return value
                if is_max:
                    return scalar.maximum(builder, dtype, combined, value, "max")
                return scalar.add(builder, dtype, combined, value, "sum")

            if kh * kw <= UNROLLED_TAPS:
                combined = None
                for i in range(kh):
                    for j in range(kw):
                        combined = combine(combined, load_element(builder, source, builder.add(start, i64(i * wp + j)),
                                                                  element, "x"))
            else:  # a big window (a global pool): loops, the running value in a stack slot
                slot = alloca_once(builder, element, "combined")
                builder.store(identity, slot)
                with for_range(builder, kh, "i") as i, for_range(builder, kw, "j") as j:
                    at = affine_offset(builder, [(i, wp), (j, 1)], start)
                    builder.store(combine(builder.load(slot), load_element(builder, source, at, element, "x")), slot)
                combined = builder.load(slot)
            if not is_max:
                combined = builder.fdiv(combined, scalar.constant(dtype, kh * kw), name="average")
            store_element(builder, combined, kernel.output, affine_offset(builder, [(row, ow)], x))


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
