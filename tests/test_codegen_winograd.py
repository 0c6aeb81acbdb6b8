"""Winograd's F(2x2, 3x3) convolution (codegen/ops/conv/winograd.py, conv2d winograd=true) and the
select-winograd pass: the kernel against the reference over random shapes (odd sizes, padding,
bias, relu, the fused pool, threads) on the host and on armv8; the transforms' algebra in numpy;
where the pass fires; the errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from codegen_harness import compile_and_run
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorforge as tf
from tensorforge import ir, models
from tensorforge.codegen.ops.conv.winograd import G, winograd_weight
from tensorforge.ir import DType, OpError, TensorType
from tensorforge.ir.registry import infer_type
from tensorforge.passes import PassContext, run_pipeline

F32_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


@st.composite
def winograd_convs(draw):
    """(graph with winograd=true, graph without, inputs): a 3 x 3 conv of random sizes, padding 0-2,
    with or without bias, relu, and either the fused 2 x 2 pool or a residual (a second input)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    batch, channels, outputs = draw(st.integers(1, 3)), draw(st.integers(1, 20)), draw(st.integers(1, 20))
    padding = draw(st.integers(0, 2))
    height, width = (draw(st.integers(max(1, 3 - 2 * padding), 13)) for _ in range(2))
    pooled = draw(st.booleans()) and min(height, width) + 2 * padding - 2 >= 2
    residual = not pooled and draw(st.booleans())
    attrs = {"padding": padding, "activation": draw(st.sampled_from([None, "relu"])),
             "pool": "max_2x2" if pooled else None, "residual": residual}
    weight = (rng.standard_normal((outputs, channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
    bias = rng.standard_normal(outputs).astype(np.float32) if draw(st.booleans()) else None
    x = rng.standard_normal((batch, channels, height, width)).astype(np.float32)
    inputs = [x]
    if residual:
        out_shape = (batch, outputs, height + 2 * padding - 2, width + 2 * padding - 2)
        inputs.append(rng.standard_normal(out_shape).astype(np.float32))
    graphs = []
    for winograd in (True, False):
        graph = ir.Graph()
        operands = [graph.add_input("x", TensorType.of(x)), graph.constant(weight, "w")]
        operands += [] if bias is None else [graph.constant(bias, "b")]
        operands += [graph.add_input("r", TensorType.of(inputs[1]))] if residual else []
        graph.outputs = [graph.call("conv2d", operands, {**attrs, "winograd": winograd})]
        graphs.append(graph)
    return graphs[0], graphs[1], inputs


@given(winograd_convs(), st.sampled_from([1, 3]))
def test_winograd_equals_the_reference_host(case, threads):
    winograd, direct, inputs = case
    (actual,) = compile_and_run(winograd, *inputs, threads=threads)
    np.testing.assert_allclose(actual, ir.interpret(direct, *inputs), **F32_TOLERANCE)


@settings(max_examples=min(6, settings.default.max_examples))
@given(winograd_convs())
def test_winograd_equals_the_reference_armv8(case):
    winograd, direct, inputs = case
    (actual,) = compile_and_run(winograd, *inputs, target="armv8", threads=2)
    np.testing.assert_allclose(actual, ir.interpret(direct, *inputs), **F32_TOLERANCE)


@pytest.mark.parametrize("threads", [1, 3])
def test_big_images_take_several_blocks(threads):
    """A 63 x 61 image (32 x 31 tiles) with 80 channels in and out of the GEMMs is several blocks of
    whole panels: parts start inside an image (each copies it first), blocks inside rows of tiles, and
    the remainder leaves a short block 0."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 63, 61)).astype(np.float32)
    weight = (rng.standard_normal((64, 16, 3, 3)) / 12).astype(np.float32)
    graphs = []
    for winograd in (True, False):
        graph = ir.Graph()
        graph.outputs = [graph.call("conv2d", [graph.add_input("x", TensorType.of(x)), graph.constant(weight, "w")],
                                    {"padding": 1, "activation": "relu", "winograd": winograd})]
        graphs.append(graph)
    node = graphs[0].outputs[0]
    from tensorforge.codegen.ops.conv.winograd import WinogradGeometry

    assert WinogradGeometry.of(node, tf.codegen.Target.parse("host")).blocks > 4
    (actual,) = compile_and_run(graphs[0], x, threads=threads)
    np.testing.assert_allclose(actual, ir.interpret(graphs[1], x), **F32_TOLERANCE)


@pytest.mark.parametrize("target", ["host", "armv8"])
@pytest.mark.parametrize("epilogue", ["residual", "pool"])
def test_blocks_of_one_panel_cut_rows_of_tiles(monkeypatch, target, epilogue):
    """With BLOCK_BYTES so small that a block is one NR panel of tiles, blocks begin and end inside rows of
    tiles (27 x 25 outputs: rows of 13 tiles, so a vector of tiles spans two or three rows), block 0 of
    each image is the short one, and parts of three threads start inside images."""
    from tensorforge.codegen.ops.conv import winograd

    monkeypatch.setattr(winograd, "BLOCK_BYTES", 1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 27, 25)).astype(np.float32)
    weight = (rng.standard_normal((7, 5, 3, 3)) / 6).astype(np.float32)
    bias = rng.standard_normal(7).astype(np.float32)
    inputs = [x] + ([rng.standard_normal((2, 7, 27, 25)).astype(np.float32)] if epilogue == "residual" else [])
    attrs = {"padding": 1, "activation": "relu", "residual": epilogue == "residual",
             "pool": "max_2x2" if epilogue == "pool" else None}
    graphs = []
    for flag in (True, False):
        graph = ir.Graph()
        operands = [graph.add_input("x", TensorType.of(x)), graph.constant(weight, "w"), graph.constant(bias, "b")]
        operands += [graph.add_input("r", TensorType.of(inputs[1]))] if epilogue == "residual" else []
        graph.outputs = [graph.call("conv2d", operands, {**attrs, "winograd": flag})]
        graphs.append(graph)
    geometry = winograd.WinogradGeometry.of(graphs[0].outputs[0], tf.codegen.Target.parse(target))
    assert geometry.panels == 1 and geometry.blocks > 4 and geometry.first_tiles < geometry.block_tiles
    (actual,) = compile_and_run(graphs[0], *inputs, target=target, threads=3)
    np.testing.assert_allclose(actual, ir.interpret(graphs[1], *inputs), **F32_TOLERANCE)


def test_the_transforms_compute_the_convolution_in_numpy():
    """U = G g G^T, V = B^T d B, Y = A^T (U * V) A on one 4 x 4 block: Y is the 2 x 2 direct
    convolution of that block (independent of the emitted code)."""
    rng = np.random.default_rng(0)
    g, d = rng.standard_normal((1, 1, 3, 3)), rng.standard_normal((4, 4))
    u = winograd_weight(g.astype(np.float32)).astype(np.float64).reshape(4, 4)
    np.testing.assert_allclose(u, G @ g[0, 0] @ G.T, rtol=1e-6)
    b_t = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
    a_t = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
    y = a_t @ (u * (b_t @ d @ b_t.T)) @ a_t.T
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g[0, 0]) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(y, direct, rtol=1e-6, atol=1e-6)


def test_the_pass_picks_the_cnns_second_conv():
    def chosen(batch: int, disabled=()):
        x = np.zeros((batch, 3, 32, 32), np.float32)
        graph = run_pipeline(tf.trace(models.cifar_cnn(), x), PassContext(opt_level=2, disabled=disabled)).graph
        return [(node.inputs[0].shape[1], node.attrs["winograd"]) for node in graph.op_nodes() if node.op == "conv2d"]

    assert chosen(64) == [(3, False), (32, True)]  # 3 input channels: a GEMM of depth 3 would not pay
    assert chosen(1) == [(3, False), (32, True)]
    assert chosen(64, disabled=("select-winograd",)) == [(3, False), (32, False)]


@pytest.mark.parametrize("change", ["5x5", "stride", "dilation", "groups", "computed weight", "small plane"])
def test_the_pass_leaves_what_winograd_does_not_compute(change):
    """Also a plane of fewer than MIN_TILES 2 x 2 tiles (12 x 12: 36)."""
    graph = ir.Graph()
    size = 12 if change == "small plane" else 14
    x = graph.add_input("x", TensorType((2, 16, size, size), DType.f32))
    shape = (16, 16 // (2 if change == "groups" else 1), 5 if change == "5x5" else 3, 5 if change == "5x5" else 3)
    weight = (graph.add_input("w", TensorType(shape, DType.f32)) if change == "computed weight"
              else graph.constant(np.ones(shape, np.float32)))
    attrs = {"stride": 2 if change == "stride" else 1, "dilation": 2 if change == "dilation" else 1,
             "groups": 2 if change == "groups" else 1, "padding": 1}
    graph.outputs = [graph.call("conv2d", [x, weight], attrs)]
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert not any(node.attrs.get("winograd") for node in optimized.op_nodes())


@pytest.mark.parametrize("size, channels", [(14, 16), (14, 256), (13, 64)])
def test_the_pass_fires_from_min_tiles_whatever_the_weight(size, channels):
    """The same conv as above, unchanged: 14 x 14 or 13 x 13 with padding 1 is 7 x 7 = 49 tiles, and it
    fires with a small or a big transformed weight (16 x 256 x 256 floats: 4 MiB)."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((1, channels, size, size), DType.f32))
    weight = graph.constant(np.ones((channels, channels, 3, 3), np.float32))
    graph.outputs = [graph.call("conv2d", [x, weight], {"padding": 1})]
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert [node.attrs["winograd"] for node in optimized.op_nodes() if node.op == "conv2d"] == [True]


def test_bad_winograd_attributes_are_refused_by_name():
    x, w = TensorType((2, 4, 8, 8), DType.f32), TensorType((4, 4, 3, 3), DType.f32)
    with pytest.raises(OpError, match="winograd=true needs an f32 3 x 3 kernel"):
        infer_type("conv2d", [x, TensorType((4, 4, 5, 5), DType.f32)], {"winograd": True})
    with pytest.raises(OpError, match="winograd=true needs"):
        infer_type("conv2d", [x, w], {"winograd": True, "stride": 2})
    with pytest.raises(OpError, match="winograd must be a bool"):
        infer_type("conv2d", [x, w], {"winograd": "yes"})



@pytest.mark.parametrize("change", ["computed weight", "pack=False"])
def test_a_weight_not_transformed_at_compile_time_is_convolved_directly(change):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 4, 6, 6)).astype(np.float32), rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    graph = ir.Graph()
    weight = graph.add_input("w", TensorType.of(w)) if change == "computed weight" else graph.constant(w, "w")
    graph.outputs = [graph.call("conv2d", [graph.add_input("x", TensorType.of(x)), weight], {"winograd": True})]
    inputs = [w, x] if change == "computed weight" else [x]
    with tf.compile(graph, opt_level=0, pack=change != "pack=False") as compiled:
        np.testing.assert_allclose(compiled(*inputs), ir.interpret(graph, *inputs), **F32_TOLERANCE)


def test_the_pass_picks_a_conv_with_a_residual():
    """relu(conv(x) + x), ResNet-18's basic block: fuse-residual folds the add into the conv, and
    select-winograd then computes it by Winograd (the residual added in the output transform)."""
    rng = np.random.default_rng(4)
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((2, 16, 16, 16), DType.f32))
    weight = graph.constant((rng.standard_normal((16, 16, 3, 3)) / 12).astype(np.float32), "w")
    conv = graph.call("conv2d", [x, weight], {"padding": 1})
    graph.outputs = [graph.call("relu", [graph.call("add", [conv, x])])]
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    convs = [node for node in optimized.op_nodes() if node.op == "conv2d"]
    assert [(node.attrs["residual"], node.attrs["winograd"], node.attrs["activation"]) for node in convs] == [
        (True, True, "relu")]
    inputs = rng.standard_normal((2, 16, 16, 16)).astype(np.float32)
    (actual,) = compile_and_run(optimized, inputs, threads=2)
    np.testing.assert_allclose(actual, ir.interpret(graph, inputs), **F32_TOLERANCE)
