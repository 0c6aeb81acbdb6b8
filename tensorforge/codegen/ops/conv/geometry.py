"""What the f32 convolutions share (conv_gemm.py's channel-major GEMM, pixel_rows.py's pixel-major one,
winograd.py, depthwise.py): a conv2d node's static sizes (`ConvGeometry`), whether it takes the tiled
code and is worth a team of threads, a depth block's channels, a part's share of a range, and the
zero-bordered copy of an image that a padded convolution reads.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from llvmlite import ir

from ....ir import DType, Node
from ....ir.ops_nn import fused_pool_window, unpooled_conv2d_type
from ...gemm.tiling import FLOAT_BYTES
from ...kernel import Kernel
from ...llvm.utils import F32, affine_offset, copy_bytes, element_pointer, for_range, i64, zero_bytes
from ...threads import parallel


@dataclass(frozen=True)
class ConvGeometry:
    """The static sizes of one conv2d node, as the GEMM sees them."""

    batch: int
    channels: int
    height: int
    width: int
    outputs: int
    groups: int
    group_channels: int  # Cg
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out_height: int  # of the convolution (before a fused pool)
    out_width: int
    pool_window: tuple | None = None  # a fused max pool's (kernel, stride, padding) (ops_nn.fused_pool_window)

    @classmethod
    def of(cls, node: Node) -> ConvGeometry:
        n, c, h, w = node.inputs[0].shape
        o, cg, kh, kw = node.inputs[1].shape
        attrs = node.attrs
        pooled = attrs.get("pool") is not None
        out_height, out_width = (unpooled_conv2d_type(node) if pooled else node.type).shape[2:]
        return cls(n, c, h, w, o, attrs["groups"], cg, kh, kw, attrs["stride"], attrs["padding"], attrs["dilation"],
                   out_height, out_width, fused_pool_window(attrs["pool"]) if pooled else None)

    @property
    def pooled(self) -> bool:
        """Whether the node's result is a max pool of the convolution's (conv2d's `pool`)."""
        return self.pool_window is not None

    @property
    def group_outputs(self) -> int:
        """Og: the GEMM's rows."""
        return self.outputs // self.groups

    @property
    def window(self) -> int:
        """kh * kw: the taps of one input channel (depth blocks hold whole channels)."""
        return self.kh * self.kw

    @property
    def taps(self) -> int:
        """K = Cg * kh * kw: the GEMM's depth."""
        return self.group_channels * self.window

    @property
    def is_padded(self) -> bool:
        return self.padding != (0, 0)

    @property
    def padded_width(self) -> int:
        return self.width + 2 * self.padding[1]

    @property
    def padded_plane(self) -> int:
        return (self.height + 2 * self.padding[0]) * self.padded_width

    @property
    def pooled_shape(self) -> tuple[int, int]:
        """(height, width) of the node's result: the pooled one (floor division, as max_pool2d), or the
        convolution's without a pool."""
        if self.pool_window is None:
            return self.out_height, self.out_width
        (kh, kw), (sh, sw), (ph, pw) = self.pool_window
        return (self.out_height + 2 * ph - kh) // sh + 1, (self.out_width + 2 * pw - kw) // sw + 1


def uses_tiled_conv(node: Node) -> bool:
    """f32 convolutions with a non-empty output go through the GEMM; integers keep the exact loop nest."""
    return node.inputs[0].dtype is DType.f32 and node.type.size > 0


def worth_a_team(node: Node) -> bool:
    """Whether a tiled conv2d's work (its direct multiply-adds) is big enough to split among threads."""
    if not uses_tiled_conv(node):
        return False
    shape = ConvGeometry.of(node)
    return 2 * shape.batch * shape.outputs * shape.taps * shape.out_height * shape.out_width \
        >= parallel.MIN_PARALLEL_FLOPS


def depth_block(builder: ir.IRBuilder, shape: ConvGeometry, block: ir.Value, kc: int) -> tuple[ir.Value, ...]:
    """(first input channel, depth, first tap) of depth block `block` of a group: whole channels, kc taps
    (tiling.depth_blocks with the window as granule), the last block the channels left."""
    first_channel = builder.mul(block, i64(kc // shape.window), name="c0")
    block_taps = builder.mul(builder.sub(i64(shape.group_channels), first_channel), i64(shape.window))
    depth = builder.select(builder.icmp_signed("<", block_taps, i64(kc)), block_taps, i64(kc), name="kc")
    return first_channel, depth, builder.mul(first_channel, i64(shape.window), name="first_tap")


def part_range(builder: ir.IRBuilder, kernel: Kernel, units: int, name: str):
    """for_range over this part's share of `units` (all of them unless the kernel is split); yields the unit."""
    return offset_range(builder, *parallel.part_bounds(builder, kernel.part, kernel.parts, units, name), name)


@contextmanager
def offset_range(builder: ir.IRBuilder, first: ir.Value, count, name: str):
    """for_range over units [first, first + count); yields the unit."""
    with for_range(builder, count, f"{name}.i") as index:
        yield builder.add(first, index, name=name)


def input_image(kernel: Kernel, shape: ConvGeometry, n: ir.Value) -> ir.Value:
    """Image n of the conv's input."""
    builder = kernel.builder
    return element_pointer(builder, kernel.inputs[0], builder.mul(n, i64(shape.channels * shape.height * shape.width)),
                           F32, "image")


def padded_image(kernel: Kernel, shape: ConvGeometry, n: ir.Value,
                 pixels: tuple[ir.Value, ir.Value] | None = None) -> ir.Value:
    """Image n of the input, or (padding) its zero-bordered copy in scratch: every row of it, border
    included, or with `pixels` (first, count: a part's output pixels of the plane) only the rows their
    windows read. Each part used to zero and copy the whole image: ResNet-50's layer2 downsampling
    3 x 3 conv (128 channels of 56 x 56) spent 13% of its time so, and ran 1.07x faster on its part's
    rows; whole CNNs about 1.01x (in-process A/B, 2026-12-07)."""
    builder = kernel.builder
    source = input_image(kernel, shape, n)
    if not shape.is_padded:
        return source
    padded_height = shape.height + 2 * shape.padding[0]
    first_row, rows = i64(0), i64(padded_height)
    if pixels is not None:  # output rows y0..y1 read padded rows y0 * sh .. y1 * sh + (kh - 1) * dh
        first, count = pixels
        sh, reach = shape.stride[0], (shape.kh - 1) * shape.dilation[0] + 1
        first_row = builder.mul(builder.udiv(first, i64(shape.out_width)), i64(sh), name="pad.first_row")
        last_output = builder.udiv(builder.sub(builder.add(first, count), i64(1)), i64(shape.out_width))
        end = builder.add(builder.mul(last_output, i64(sh)), i64(reach))
        rows = builder.sub(builder.select(builder.icmp_signed("<", end, i64(padded_height)), end, i64(padded_height)),
                           first_row, name="pad.rows")
    bordered_rows(kernel, shape, source, first_row, rows, shape.padded_width, shape.padded_plane)
    return kernel.scratch


def bordered_rows(kernel: Kernel, shape: ConvGeometry, source: ir.Value, first_row: ir.Value, rows: ir.Value,
                  width: int, plane: int) -> None:
    """Rows [first_row, first_row + rows) of every channel of the zero-bordered image in scratch (rows
    `width` elements apart, at least the padded width; channels `plane` apart): the input's row under
    each (from `source`, one image) between zeros, or zeros in the padding above and below."""
    builder, (ph, pw) = kernel.builder, shape.padding
    with for_range(builder, shape.channels, "pad.c", unroll=False) as c, for_range(builder, rows, "pad.y") as r:
        padded_row = builder.add(first_row, r)
        y = builder.sub(padded_row, i64(ph), name="pad.input_row")
        row = element_pointer(builder, kernel.scratch, affine_offset(builder, [(c, plane), (padded_row, width)], 0),
                              F32, "pad.row")
        inside = builder.and_(builder.icmp_signed(">=", y, i64(0)), builder.icmp_signed("<", y, i64(shape.height)))
        with builder.if_else(inside) as (interior, border):
            with interior:
                zero_bytes(builder, row, pw * FLOAT_BYTES)
                input_row = builder.add(builder.mul(c, i64(shape.height)), y)
                copy_bytes(builder, element_pointer(builder, row, pw, F32),
                           element_pointer(builder, source, builder.mul(input_row, i64(shape.width)), F32),
                           shape.width * FLOAT_BYTES, may_overlap=False)
                zero_bytes(builder, element_pointer(builder, row, pw + shape.width, F32),
                           (width - pw - shape.width) * FLOAT_BYTES)
            with border:
                zero_bytes(builder, row, width * FLOAT_BYTES)
