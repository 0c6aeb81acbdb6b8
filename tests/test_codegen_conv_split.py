"""conv2d's channel split (codegen/ops/conv/conv_gemm.py: splits_channels): a one-image convolution whose
plane has few column panels gives each part a block of output channels (row panels of the GEMM) over
every pixel, instead of a block of pixels over every channel. Checked against the reference
interpreter with bias, relu and a residual, a last part holding the short row panel, a weight packed
at run time, rows and flat columns, on host (2 and 3 threads) and armv8."""

from unittest import mock

import numpy as np
import pytest
from codegen_harness import compile_and_run, conv_graph

import tensorforge as tfg
from tensorforge import ir
from tensorforge.codegen.gemm.tiling import gemm_tiling
from tensorforge.codegen.ops.conv.conv_gemm import ConvGeometry, conv_parts, flat_columns, splits_channels
from tensorforge.codegen.threads import parallel
from tensorforge.ir import DType, TensorType

F32_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}
# (channels, outputs, height, width, kernel, stride, padding); outputs not a multiple of a row panel
CASES = [
    (24, 73, 7, 7, 3, 1, 1),    # ResNet's layer4 shape, small: 49 pixels, flat columns
    (16, 61, 14, 14, 1, 2, 0),  # strided pointwise: lanes gather across output rows
    (8, 57, 2, 24, 3, 1, 1),    # 24-pixel rows fill 3/4 of a 32-lane panel, the 48-pixel plane no better: rows
]


def _graph(case, rng, residual: bool) -> tuple[ir.Graph, list[np.ndarray]]:
    channels, outputs, height, width, kernel, stride, padding = case
    return conv_graph(rng, channels, outputs, height, width, kernel, stride, padding, residual=residual)


def _conv(graph: ir.Graph) -> ir.Node:
    return next(node for node in graph.nodes if node.op == "conv2d")


@pytest.mark.parametrize("case", CASES, ids=lambda case: "x".join(map(str, case)))
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("residual", [False, True])
def test_channel_split_matches_the_interpreter_on_host(case, threads, residual):
    graph, inputs = _graph(case, np.random.default_rng(sum(case) + threads), residual)
    (actual,) = compile_and_run(graph, *inputs, threads=threads)
    np.testing.assert_allclose(actual, ir.interpret(graph, *inputs), **F32_TOLERANCE)


@pytest.mark.parametrize("case", CASES[::2], ids=lambda case: "x".join(map(str, case)))
def test_channel_split_with_a_weight_packed_at_run_time(case):
    graph, inputs = _graph(case, np.random.default_rng(7), residual=True)
    (actual,) = compile_and_run(graph, *inputs, threads=3, pack=False)
    np.testing.assert_allclose(actual, ir.interpret(graph, *inputs), **F32_TOLERANCE)


@pytest.mark.parametrize("case", CASES[:2], ids=lambda case: "x".join(map(str, case)))
def test_channel_split_matches_the_interpreter_on_armv8(case):
    graph, inputs = _graph(case, np.random.default_rng(3), residual=True)
    (actual,) = compile_and_run(graph, *inputs, target="armv8", threads=2)
    np.testing.assert_allclose(actual, ir.interpret(graph, *inputs), **F32_TOLERANCE)


def test_the_cases_split_channels_and_large_planes_do_not():
    """Each case splits its channels into 3 parts on AVX-512 (the last with the short row panel), and
    takes rows or flat columns as its comment says; a 56 x 56 plane, or a batch, splits otherwise."""
    target = tfg.Target.parse("x86-64-v4")
    tiling = gemm_tiling(target)
    for case, flat in zip(CASES, (True, True, False)):
        node = _conv(_graph(case, np.random.default_rng(0), residual=False)[0])
        shape = ConvGeometry.of(node)
        assert splits_channels(shape, tiling) and flat_columns(shape, tiling) == flat, case
        with mock.patch.object(parallel, "MIN_PARALLEL_FLOPS", 0):  # small as they are, split them
            assert case[1] % tiling.rows and conv_parts(node, target, 3) == 3, case
    large = _conv(_graph((8, 64, 56, 56, 3, 1, 1), np.random.default_rng(0), residual=False)[0])
    assert not splits_channels(ConvGeometry.of(large), tiling)
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((2, 24, 7, 7), DType.f32))
    graph.outputs = [graph.call("conv2d", [x, graph.constant(np.ones((73, 24, 3, 3), np.float32))], {"padding": 1})]
    assert not splits_channels(ConvGeometry.of(_conv(graph)), tiling)
