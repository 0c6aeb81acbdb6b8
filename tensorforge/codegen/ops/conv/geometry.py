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
from ....ir.ops_nn import unpooled_conv2d_type
from ...gemm.tiling import FLOAT_BYTES
from ...kernel import Kernel
from ...llvm.utils import F32, affine_offset, copy_bytes, element_pointer, for_range, i64
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
    pooled: bool = False  # pool="max_2x2": the node's result is the 2 x 2 max pool of the convolution's

    @classmethod
    def of(cls, node: Node) -> ConvGeometry:
        n, c, h, w = node.inputs[0].shape
        o, cg, kh, kw = node.inputs[1].shape
        attrs = node.attrs
        pooled = attrs.get("pool") is not None
        out_height, out_width = (unpooled_conv2d_type(node) if pooled else node.type).shape[2:]
        return cls(n, c, h, w, o, attrs["groups"], cg, kh, kw, attrs["stride"], attrs["padding"], attrs["dilation"],
                   out_height, out_width, pooled)

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
        """(height, width) of the pooled result: floor halves of the convolution's."""
        return self.out_height // 2, self.out_width // 2


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
    return _offset_range(builder, *parallel.part_bounds(builder, kernel.part, kernel.parts, units, name), name)


@contextmanager
def _offset_range(builder: ir.IRBuilder, first: ir.Value, count, name: str):
    with for_range(builder, count, f"{name}.i") as index:
        yield builder.add(first, index, name=name)


def padded_image(kernel: Kernel, shape: ConvGeometry, n: ir.Value) -> ir.Value:
    """Image n of the input, copied into the zero-bordered scratch image when there is padding."""
    builder = kernel.builder
    source = element_pointer(builder, kernel.inputs[0], builder.mul(n, i64(shape.channels * shape.height *
                                                                            shape.width)), F32, "image")
    if not shape.is_padded:
        return source
    (ph, pw), wp = shape.padding, shape.padded_width
    with for_range(builder, shape.channels * shape.height, "interior", unroll=False) as row:
        channel, y = builder.udiv(row, i64(shape.height)), builder.urem(row, i64(shape.height))
        target = affine_offset(builder, [(channel, shape.padded_plane), (y, wp)], ph * wp + pw)
        copy_bytes(builder, element_pointer(builder, kernel.scratch, target, F32),
                   element_pointer(builder, source, builder.mul(row, i64(shape.width)), F32),
                   shape.width * FLOAT_BYTES, may_overlap=False)
    return kernel.scratch
