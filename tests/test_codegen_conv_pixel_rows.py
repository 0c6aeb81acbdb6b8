"""conv2d's pixel form (codegen/ops/conv/pixel_rows.py): out^T = im2col^T @ w^T, the output pixels as the
GEMM's rows and the output channels in its vectors, copied out through register transposes with the
bias, the residual and the activation. Checked against the reference interpreter with every shape's
tails (pixels past whole row panels, channels past whole column panels and past whole vectors), several
pixel blocks and depth blocks, strides, padding and dilation, pointwise convolutions read in place,
parts by images, by pixels and by output channels, and a weight packed at run time; on host and armv8.

The cases are small: the form's threshold is lowered here (PIXEL_ROWS_MIN_GAIN -inf) so that every
eligible convolution takes it on any target; the last tests check the real threshold.
"""

from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
from codegen_harness import compile_and_run, conv_graph

import tensorforge as tfg
from tensorforge import ir
from tensorforge.codegen.gemm.tiling import gemm_tiling
from tensorforge.codegen.ops.conv import pixel_rows
from tensorforge.codegen.ops.conv.conv_gemm import ConvGeometry
from tensorforge.codegen.threads import parallel
from tensorforge.ir import DType, TensorType

# f32 sums of up to a few hundred products of normalized weights: the interpreter adds in another order
F32_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}
# (channels, outputs, height, width, kernel, stride, padding, dilation)
CASES = [
    (24, 73, 7, 7, 3, 1, 1, 1),     # 49 pixels: 3 panels of 14 and 7; 73 channels: a panel of 9, a vector of 9
    (16, 64, 14, 14, 1, 2, 0, 1),   # strided pointwise: a panel's pixels span output rows
    (20, 40, 9, 11, 3, 1, 2, 2),    # dilated, padded by 2, not square
    (32, 48, 6, 6, 1, 1, 0, 1),     # pointwise read in place: masked loads of 14 pixels
    (3, 32, 23, 23, 7, 2, 3, 1),    # a stem: 147 taps, stride 2
    (40, 33, 30, 30, 3, 1, 1, 1),   # 900 pixels: several pixel blocks; 360 taps: two depth blocks
]


@contextmanager
def pixel_form():
    """Every eligible convolution takes the pixel form, whatever its lanes or depth."""
    with mock.patch.object(pixel_rows, "PIXEL_ROWS_MIN_GAIN", -np.inf):
        yield


def _graph(case, rng, batch: int, residual: bool, bias: bool = True) -> tuple[ir.Graph, list[np.ndarray]]:
    channels, outputs, height, width, kernel, stride, padding, dilation = case
    return conv_graph(rng, channels, outputs, height, width, kernel, stride, padding, dilation, batch, residual, bias)


def _conv(graph: ir.Graph) -> ir.Node:
    return next(node for node in graph.nodes if node.op == "conv2d")


def _check(graph: ir.Graph, inputs: list[np.ndarray], target: str = "host", **options) -> None:
    with pixel_form():
        assert pixel_rows.prefers_pixel_rows(_conv(graph), tfg.Target.parse(target))
        (actual,) = compile_and_run(graph, *inputs, target=target, **options)
    np.testing.assert_allclose(actual, ir.interpret(graph, *inputs), **F32_TOLERANCE)


@pytest.mark.parametrize("case", CASES, ids=lambda case: "x".join(map(str, case)))
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("residual", [False, True])
def test_pixel_form_matches_the_interpreter_on_host(case, threads, residual):
    graph, inputs = _graph(case, np.random.default_rng(sum(case) + threads), 1, residual)
    _check(graph, inputs, threads=threads)


@pytest.mark.parametrize("case", CASES[:3], ids=lambda case: "x".join(map(str, case)))
def test_pixel_form_by_images_without_bias(case):
    graph, inputs = _graph(case, np.random.default_rng(5), 3, residual=True, bias=False)
    _check(graph, inputs, threads=2)


def test_pixel_form_split_by_output_channels():
    """25 pixels are 2 panels of 14 and 300 channels 10 panels of 32 on AVX-512: one image's parts take
    blocks of channels (the last with the panel of 12) and each gathers every pixel."""
    case = (16, 300, 5, 5, 3, 1, 1, 1)
    graph, inputs = _graph(case, np.random.default_rng(11), 1, residual=True)
    node, target = _conv(graph), tfg.Target.parse("x86-64-v4")
    with pixel_form(), mock.patch.object(parallel, "MIN_PARALLEL_FLOPS", 0):
        assert pixel_rows._splits_channels(ConvGeometry.of(node), gemm_tiling(target))
        assert pixel_rows.pixel_rows_parts(node, target, 3) == 3
    for threads in (2, 3):
        _check(graph, inputs, threads=threads)


@pytest.mark.parametrize("case", CASES[::2], ids=lambda case: "x".join(map(str, case)))
def test_pixel_form_with_a_weight_packed_at_run_time(case):
    graph, inputs = _graph(case, np.random.default_rng(7), 1, residual=True)
    _check(graph, inputs, threads=2, pack=False)


@pytest.mark.parametrize("case", CASES[:3], ids=lambda case: "x".join(map(str, case)))
def test_pixel_form_matches_the_interpreter_on_armv8(case):
    graph, inputs = _graph(case, np.random.default_rng(3), 1, residual=True)
    _check(graph, inputs, target="armv8", threads=2)


def _resnet_conv(channels: int, outputs: int, size: int, kernel: int, stride: int = 1, groups: int = 1) -> ir.Node:
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((1, channels, size, size), DType.f32))
    weight = np.ones((outputs, channels // groups, kernel, kernel), np.float32)
    graph.outputs = [graph.call("conv2d", [x, graph.constant(weight)],
                                {"stride": stride, "padding": kernel // 2, "groups": groups})]
    return _conv(graph)


def test_the_real_threshold_picks_deep_convolutions_whose_lanes_favour_pixels():
    """On AVX-512 (panels of 14 x 32), the pixel form saves taps x (1 / channel-form use - 1 / pixel-form
    use) multiply-adds per output, and is taken from PIXEL_ROWS_MIN_GAIN (90). ResNet-50's 3 x 3 convs at
    14 x 14 (196 pixels on 7 panels of 32, 256 channels on 19 rows of 14: gain 432) and 7 x 7 (823), its
    deep 1 x 1 convs (192, 366) and MobileNetV2's from 576 taps at 7 x 7 and 14 x 14 (165, 96) take it.
    Shallower ones do not, though their lanes favour pixels as much: ResNet-50's 256 -> 1024 (40) and
    64 -> 256 (2.5), ResNet-18's stride-2 3 x 3 64 -> 128 (67), MobileNetV2's 320 -> 1280 at 7 x 7 (55).
    Nor channels and pixels that fill the channel-major panels exactly (70 = 5 x 14 channels, 32 x 32
    pixels), a grouped conv or a weight that is not a constant."""
    target = tfg.Target.parse("x86-64-v4")
    assert pixel_rows.prefers_pixel_rows(_resnet_conv(256, 256, 14, 3), target)
    assert pixel_rows.prefers_pixel_rows(_resnet_conv(512, 512, 7, 3), target)
    assert pixel_rows.prefers_pixel_rows(_resnet_conv(1024, 256, 14, 1), target)
    assert pixel_rows.prefers_pixel_rows(_resnet_conv(2048, 512, 7, 1), target)
    assert pixel_rows.prefers_pixel_rows(_resnet_conv(960, 320, 7, 1), target)
    assert pixel_rows.prefers_pixel_rows(_resnet_conv(576, 96, 14, 1), target)
    assert not pixel_rows.prefers_pixel_rows(_resnet_conv(256, 1024, 14, 1), target)
    assert not pixel_rows.prefers_pixel_rows(_resnet_conv(64, 256, 56, 1), target)
    assert not pixel_rows.prefers_pixel_rows(_resnet_conv(64, 128, 56, 3, stride=2), target)
    assert not pixel_rows.prefers_pixel_rows(_resnet_conv(320, 1280, 7, 1), target)
    assert not pixel_rows.prefers_pixel_rows(_resnet_conv(1024, 70, 32, 1), target)
    assert not pixel_rows.prefers_pixel_rows(_resnet_conv(512, 512, 7, 3, groups=2), target)
    graph = ir.Graph()
    x, w = graph.add_input("x", TensorType((1, 256, 14, 14), DType.f32)), graph.add_input(
        "w", TensorType((256, 256, 3, 3), DType.f32))
    graph.outputs = [graph.call("conv2d", [x, w], {"padding": 1})]
    assert not pixel_rows.prefers_pixel_rows(_conv(graph), target)
