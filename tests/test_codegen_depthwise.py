"""The depthwise conv2d kernel (codegen/ops/conv/depthwise.py: f32, groups == channels == outputs):
against the reference over random shapes (kernel sizes 1-5, strides, padding, dilation, batch,
bias, activation, residual, threads) on the host and on armv8; where it is taken; its vector code.
"""

from __future__ import annotations

import re
from unittest import mock

import numpy as np
import pytest
from codegen_harness import compile_and_run
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.codegen import Target, build
from tensorforge.codegen.ops.conv import conv, depthwise
from tensorforge.codegen.ops.conv.depthwise import MAX_REGISTER_TAPS, is_depthwise
from tensorforge.codegen.ops.conv.geometry import ConvGeometry
from tensorforge.ir import TensorType

F32_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def depthwise_graph(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, attrs: dict,
                    residual: bool = False) -> ir.Graph:
    graph = ir.Graph()
    operands = [graph.add_input("x", TensorType.of(x)), graph.constant(weight, "w")]
    operands += [] if bias is None else [graph.constant(bias, "b")]
    if residual:
        probe = ir.Graph()
        shape = probe.call("conv2d", [probe.add_input("x", TensorType.of(x)), probe.constant(weight, "w")],
                           {**attrs, "groups": x.shape[1]}).shape
        operands.append(graph.add_input("skip", TensorType(shape, ir.DType.f32)))
    graph.outputs = [graph.call("conv2d", operands, {**attrs, "groups": x.shape[1], "residual": residual})]
    return graph


@st.composite
def depthwise_convs(draw):
    """(graph, inputs): a depthwise conv of random kernel (1-5 per axis), stride (1-2), padding
    (0-2), dilation (1-2), channels, batch and image size (rows up to 40 past the window, or 64 to 80 past it),
    with or without bias, residual and an activation; values scaled so that relu6 clips at both ends."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    batch, channels = draw(st.integers(1, 3)), draw(st.integers(1, 20))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    height = draw(st.integers(max(1, spans[0] - 2 * padding[0]), spans[0] + 14))
    # rows of one to three vectors: x86 reads rows of two vectors or more in place, and of more than one
    # at column stride 2
    narrowest = max(1, spans[1] - 2 * padding[1])
    width = draw(st.one_of(st.integers(narrowest, spans[1] + 40), st.integers(max(narrowest, 64), spans[1] + 80)))
    attrs = {"stride": stride, "padding": padding, "dilation": dilation,
             "activation": draw(st.sampled_from([None, "relu", "relu6"]))}
    weight = (rng.standard_normal((channels, 1, *kernel)) * 3 / np.sqrt(kernel[0] * kernel[1])).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32) if draw(st.booleans()) else None
    x = (rng.standard_normal((batch, channels, height, width)) * 2).astype(np.float32)
    residual = draw(st.booleans()) and draw(st.booleans())
    graph = depthwise_graph(x, weight, bias, attrs, residual)
    inputs = [x] + ([rng.standard_normal(graph.outputs[0].shape).astype(np.float32)] if residual else [])
    return graph, inputs


@given(depthwise_convs(), st.sampled_from([1, 2]))
def test_depthwise_equals_the_reference_host(case, threads):
    graph, inputs = case
    assert is_depthwise(graph.outputs[0])
    (actual,) = compile_and_run(graph, *inputs, threads=threads)
    np.testing.assert_allclose(actual, ir.interpret(graph, *inputs), **F32_TOLERANCE)


@settings(max_examples=min(8, settings.default.max_examples))
@given(depthwise_convs(), st.sampled_from([1, 2]))
def test_depthwise_equals_the_reference_armv8(case, threads):
    graph, inputs = case
    (actual,) = compile_and_run(graph, *inputs, target="armv8", threads=threads)
    np.testing.assert_allclose(actual, ir.interpret(graph, *inputs), **F32_TOLERANCE)


@pytest.mark.parametrize("arch", ["host", "armv8"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_window_too_big_for_registers_accumulates_in_the_output(arch, threads):
    """A 9 x 9 window (81 taps > MAX_REGISTER_TAPS) adds a row of taps at a time into the output row."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 13, 12)).astype(np.float32)
    weight = (rng.standard_normal((5, 1, 9, 9)) / 9).astype(np.float32)
    assert 81 > MAX_REGISTER_TAPS
    graph = depthwise_graph(x, weight, rng.standard_normal(5).astype(np.float32),
                            {"stride": (2, 1), "padding": (4, 3), "activation": "relu6"})
    (actual,) = compile_and_run(graph, x, target=arch, threads=threads)
    np.testing.assert_allclose(actual, ir.interpret(graph, x), **F32_TOLERANCE)


@pytest.mark.parametrize("arch", ["host", "armv8"])
def test_nan_and_infinities_propagate_through_relu6(arch):
    """NaN stays NaN through the fused relu6 (as through the clip op); +-inf clip to 6 and 0."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, 6, 7)).astype(np.float32)
    x[0, 0, 2, 3], x[0, 1, 0, 0], x[0, 2, 5, 6] = np.nan, np.inf, -np.inf
    weight = np.abs(rng.standard_normal((3, 1, 3, 3))).astype(np.float32)
    graph = depthwise_graph(x, weight, None, {"padding": 1, "activation": "relu6"})
    (actual,) = compile_and_run(graph, x, target=arch)
    expected = ir.interpret(graph, x)
    assert np.isnan(expected).any() and (expected == 6).any()
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, **F32_TOLERANCE)


def test_the_depthwise_kernel_is_the_one_taken():
    """groups == channels == outputs in f32 goes to the depthwise kernel (its weight stays as stored,
    not packed into GEMM panels); a grouped conv with two channels per group, a channel
    multiplier of 2, integers or a fused pool keep their paths."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    graph = depthwise_graph(x, rng.standard_normal((4, 1, 3, 3)).astype(np.float32), None, {"padding": 1})
    with mock.patch.object(conv, "emit_conv2d_depthwise", wraps=conv.emit_conv2d_depthwise) as spy:
        artifact = build(graph, "host")
    assert spy.call_count == 1 and not any("@" in key for key in artifact.weight_offsets)

    def conv_node(x_shape, w_shape, groups, dtype=np.float32, **attrs) -> ir.Node:
        g = ir.Graph()
        return g.call("conv2d", [g.add_input("x", TensorType(x_shape, ir.DType.from_numpy(dtype))),
                                 g.constant(np.ones(w_shape, dtype), "w")], {"groups": groups, **attrs})

    assert is_depthwise(conv_node((1, 4, 8, 8), (4, 1, 3, 3), 4))
    assert is_depthwise(conv_node((1, 1, 8, 8), (1, 1, 3, 3), 1))
    assert not is_depthwise(conv_node((1, 4, 8, 8), (2, 2, 3, 3), 2))
    assert not is_depthwise(conv_node((1, 4, 8, 8), (8, 1, 3, 3), 4))
    assert not is_depthwise(conv_node((1, 4, 8, 8), (4, 1, 3, 3), 4, np.int32))
    assert not is_depthwise(conv_node((1, 4, 8, 8), (4, 1, 3, 3), 4, pool="max_2x2"))
    assert not is_depthwise(conv_node((1, 16, 8, 8), (16, 16, 3, 3), 1))


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_vectorizes_without_gathers(stride):
    """The x loop vectorizes with plain loads (stride 1) or wide loads and shuffles (stride 2), never
    gathers or scatters; rows of 64 floats take whole vectors. Built for x86-64-v4 whatever the host, run on
    the host."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 8, 10, 64)).astype(np.float32)
    graph = depthwise_graph(x, rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
                            rng.standard_normal(8).astype(np.float32),
                            {"stride": stride, "padding": 1, "activation": "relu6"})
    llvm_ir = build(graph, "x86-64-v4").llvm_ir
    assert re.search(r"fmul[^\n]*<(8|16) x float>", llvm_ir)
    assert "masked.gather" not in llvm_ir and "masked.scatter" not in llvm_ir
    (actual,) = compile_and_run(graph, x)
    np.testing.assert_allclose(actual, ir.interpret(graph, x), **F32_TOLERANCE)


@pytest.mark.parametrize("width, stride", [(7, 1), (14, 2), (14, 1), (28, 1), (34, 2), (40, 1), (81, 2)])
@pytest.mark.parametrize("residual", [False, True])
def test_whole_vectors_with_masked_stores(width, stride, residual):
    """On AVX-512 the outputs are whole vectors with masked stores. A copied plane: rows of at most 16
    outputs share a vector (7 x 7: 2 rows of 9 copied columns; 14 wide at stride 2: 7 outputs in
    sub-planes 8 wide), longer rows end in one masked vector (28 = 16 + 12). A row of two vectors or
    more is read in place, the padding by masked loads (40 = 2 x 16 + 8 lanes; 81 at stride 2: 41 =
    2 x 16 + 9, the even lanes of two vectors), and at column stride 2 a row of more than one (34: 17 =
    16 + 1). Built for x86-64-v4 (its IR has the masked stores), run on the host."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((2, 5, width - 1, width)) * 2).astype(np.float32)
    graph = depthwise_graph(x, rng.standard_normal((5, 1, 3, 3)).astype(np.float32),
                            rng.standard_normal(5).astype(np.float32),
                            {"stride": stride, "padding": 1, "activation": "relu6"}, residual)
    layout = depthwise._Layout.of(ConvGeometry.of(graph.outputs[0]), Target.parse("x86-64-v4"))
    out_width = graph.outputs[0].shape[3]
    in_place = out_width >= 32 or stride == 2 and out_width > 16  # the padding's zeros by masked loads, no copy
    assert layout.masked and layout.copies != in_place
    assert in_place or (layout.group(ConvGeometry.of(graph.outputs[0]), 16) > 0) == (out_width <= 16)
    llvm_ir = build(graph, "x86-64-v4").llvm_ir
    assert "llvm.masked.store.v16f32" in llvm_ir
    assert ("llvm.masked.load.v16f32" in llvm_ir) == (residual or in_place)
    inputs = [x] + ([rng.standard_normal(graph.outputs[0].shape).astype(np.float32)] if residual else [])
    for threads in (1, 3):
        (actual,) = compile_and_run(graph, *inputs, threads=threads)
        np.testing.assert_allclose(actual, ir.interpret(graph, *inputs), **F32_TOLERANCE)


def test_planes_of_few_taps_are_shared_by_their_bytes():
    """MobileNetV2's last depthwise conv (960 planes of 7 x 7: under a MFLOP, but 376 KB read and
    written) is split among threads; a small one stays on the caller."""
    def node(channels: int, size: int) -> ir.Node:
        x = np.zeros((1, channels, size, size), np.float32)
        return depthwise_graph(x, np.ones((channels, 1, 3, 3), np.float32), None, {"padding": 1}).outputs[0]

    host = Target.parse("host")
    assert depthwise.depthwise_parts(node(960, 7), host, 2) > 1
    assert depthwise.depthwise_parts(node(960, 7), host, 1) == 1
    assert depthwise.depthwise_parts(node(16, 7), host, 2) == 1
