"""fuse-pool (passes/fuse_pool.py): a max pool after an f32 conv2d becomes the conv's `pool` epilogue
("max_2x2", "max_3x3_s2x2_p1x1", ...), only where that is legal (and the 2 x 2 one alone into a conv
Winograd could compute or a grouped conv); the op's reference is the pool of the convolution, and the
tiled conv's pooled code (codegen/ops/conv/conv_gemm.py: a ring of the convolution's rows, pooled along
columns then rows) computes the same on the host and on armv8, split for threads or not.
"""

from __future__ import annotations

import numpy as np
import pytest
from codegen_harness import assert_matches_reference, compile_and_run, reference_outputs
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.codegen import CodegenError, build
from tensorforge.ir import OpError
from tensorforge.ir.registry import infer_type
from tensorforge.passes import PassContext, run_pipeline
from tensorforge.passes.fuse_pool import fuse_pool
from tensorforge.runtime.profile import kernel_flops


@st.composite
def conv_pool_graphs(draw):
    """(graph, inputs, should_fuse): [pool](relu?(conv2d(x, w[, b]))) over random geometry (odd sizes,
    stride, padding, dilation, groups), with a pool that fuse-pool takes or one it must leave (another
    pool's kind, a 2 x 2 pool's other windows into a conv Winograd could compute or a grouped one, a
    second user of the conv, the conv as an output); the expected `pool` names are written out here."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    groups = draw(st.sampled_from([1, 1, 2]))
    channels, outputs = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 20))
    kernel, stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    span = dilation * (kernel - 1) + 1
    height, width = (draw(st.integers(span + 2 * stride, span + 2 * stride + 13)) for _ in range(2))
    batch = draw(st.sampled_from([1, 2, 3]))
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((batch, channels, height, width), ir.DType.f32))
    inputs = [rng.standard_normal(x.shape).astype(np.float32)]
    weight_shape = (outputs, channels // groups, kernel, kernel)
    weight_value = (rng.standard_normal(weight_shape) / kernel).astype(np.float32)
    if draw(st.booleans()):
        weight = graph.constant(weight_value, "w")
    else:  # a weight computed at run time: packed by the kernel itself
        weight = graph.add_input("w", ir.TensorType(weight_shape, ir.DType.f32))
        inputs.append(weight_value)
    operands = [x, weight] + ([graph.constant(rng.standard_normal(outputs).astype(np.float32), "b")]
                              if draw(st.booleans()) else [])
    conv = graph.call("conv2d", operands, {"stride": stride, "padding": draw(st.integers(0, 1)),
                                           "dilation": dilation, "groups": groups})
    activated = graph.call("relu", [conv]) if draw(st.booleans()) else conv
    pool = draw(st.sampled_from(list(FUSED_NAMES) + ["max 2", "avg 2"]))
    op = "avg_pool2d" if pool.startswith("avg") else "max_pool2d"
    attrs = {"kernel": 3 if pool.startswith("max 3") else 2,
             "stride": 1 if "stride 1" in pool else 2 if "stride 2" in pool else None,
             "padding": 1 if pool.endswith("padded") else 0}
    pooled = graph.call(op, [activated], attrs)
    extra = draw(st.sampled_from([None, None, "second user", "output"]))
    graph.outputs = [pooled] + ([graph.call("neg", [activated])] if extra == "second user" else
                                [activated] if extra == "output" else [])
    winograd_could = kernel == 3 and stride == 1 and dilation == 1 and groups == 1
    takes = pool == "max 2" or pool in FUSED_NAMES and groups == 1 and not winograd_could
    return graph, inputs, FUSED_NAMES[pool] if takes and extra is None else None


FUSED_NAMES = {"max 2": "max_2x2", "max 3": "max_3x3_s3x3_p0x0", "max 2 stride 1": "max_2x2_s1x1_p0x0",
               "max 2 padded": "max_2x2_s2x2_p1x1", "max 3 stride 2": "max_3x3_s2x2_p0x0",
               "max 3 stride 2 padded": "max_3x3_s2x2_p1x1", "max 3 stride 1 padded": "max_3x3_s1x1_p1x1"}


@given(conv_pool_graphs())
def test_fuses_exactly_where_legal_and_keeps_the_outputs(case):
    graph, inputs, fused = case
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    convolutions = [node for node in optimized.op_nodes() if node.op == "conv2d"]
    assert [node.attrs["pool"] for node in convolutions] == [fused]
    assert any(node.op.endswith("pool2d") for node in optimized.op_nodes()) != (fused is not None)
    assert_matches_reference(reference_outputs(optimized, inputs), graph, inputs, rtol=1e-5, atol=1e-5)


@settings(max_examples=min(30, settings.default.max_examples))
@given(conv_pool_graphs(), st.sampled_from([1, 3]))
def test_the_pooled_conv_compiles_to_the_reference_host(case, threads):
    graph, inputs, _ = case
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert_matches_reference(compile_and_run(optimized, *inputs, threads=threads), graph, inputs,
                             rtol=1e-4, atol=1e-5)


@settings(max_examples=min(6, settings.default.max_examples))
@given(conv_pool_graphs(), st.sampled_from([1, 2]))
def test_the_pooled_conv_compiles_to_the_reference_armv8(case, threads):
    graph, inputs, _ = case
    optimized = run_pipeline(graph, PassContext(opt_level=2)).graph
    assert_matches_reference(compile_and_run(optimized, *inputs, target="armv8", threads=threads), graph, inputs,
                             rtol=1e-4, atol=1e-5)


def pooled_conv(channels: int, outputs: int, size: tuple[int, int], batch: int = 1, dtype=ir.DType.f32,
                seed: int = 0, pool: str = "max_2x2", stride: int = 1):
    rng = np.random.default_rng(seed)
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((batch, channels, *size), dtype))
    weight = (rng.standard_normal((outputs, channels, 3, 3)) / 8).astype(dtype.numpy)
    bias = rng.standard_normal(outputs).astype(dtype.numpy)
    graph.outputs = [graph.call("conv2d", [x, graph.constant(weight, "w"), graph.constant(bias, "b")],
                                {"padding": 1, "activation": "relu", "pool": pool, "stride": stride})]
    return graph, rng.standard_normal(x.shape).astype(dtype.numpy)


@pytest.mark.parametrize("pool, stride", [("max_2x2", 1), ("max_3x3_s2x2_p1x1", 1), ("max_3x3_s2x2_p0x0", 2),
                                          ("max_3x3_s1x1_p1x1", 1), ("max_2x2_s1x1_p0x0", 2)])
@pytest.mark.parametrize("batch", [1, 2])
def test_a_deep_pooled_conv_accumulates_its_depth_blocks_before_the_pool(pool, stride, batch):
    """40 channels x 3 x 3 = 360 taps: two depth blocks add up in the ring before it is pooled. The windows
    of ResNet's and SqueezeNet's stems (3 x 3, stride 2, padded or not) and of stride 1 overlap: a row is
    pooled by two pooled rows, and three parts (one pooled row or two each) each compute their own."""
    graph, x = pooled_conv(40, 17, (13, 19), batch, pool=pool, stride=stride)
    for target, threads in (("host", 1), ("host", 3), ("armv8", 2)):
        assert_matches_reference(compile_and_run(graph, x, target=target, threads=threads), graph, [x],
                                 rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pool, window, shape", [("max_2x2", {"kernel": 2}, (3, 3)),
                                                 ("max_3x3_s2x2_p1x1", {"kernel": 3, "stride": 2, "padding": 1},
                                                  (4, 3))])
def test_the_reference_is_the_pool_of_the_convolution_and_nan_stays(pool, window, shape):
    graph, x = pooled_conv(3, 5, (7, 6), pool=pool)
    x[0, 0, 2, 2] = np.nan
    conv = graph.outputs[0]
    attrs = {**conv.attrs, "pool": None}
    unpooled = ir.evaluate("conv2d", [x, conv.inputs[1].value, conv.inputs[2].value], attrs)
    expected = ir.evaluate("max_pool2d", [unpooled], window)
    pooled = ir.interpret(graph, x)
    assert pooled.shape == (1, 5, *shape) and np.isnan(pooled).any() and not np.isnan(pooled).all()
    np.testing.assert_array_equal(pooled, expected)
    for target in ("host", "armv8"):  # NaN where the reference has NaN (assert_allclose compares them)
        np.testing.assert_allclose(compile_and_run(graph, x, target=target)[0], expected, rtol=1e-4, atol=1e-5)


def test_type_inference_and_errors_name_the_problem():
    x = ir.TensorType((1, 2, 5, 5), ir.DType.f32)
    w = ir.TensorType((3, 2, 3, 3), ir.DType.f32)
    assert infer_type("conv2d", [x, w], {"pool": "max_2x2"})[0].shape == (1, 3, 1, 1)
    assert infer_type("conv2d", [x, w], {"pool": "max_3x3_s2x2_p1x1"})[0].shape == (1, 3, 2, 2)
    assert infer_type("conv2d", [x, w], {"pool": "max_2x2_s1x1_p0x0", "padding": 1})[0].shape == (1, 3, 4, 4)
    with pytest.raises(OpError, match="pool must be None or a max pool window"):
        infer_type("conv2d", [x, w], {"pool": "avg"})
    with pytest.raises(OpError, match="not a canonical max pool window"):
        infer_type("conv2d", [x, w], {"pool": "max_2x2_s2x2_p0x0"})
    with pytest.raises(OpError, match="at most half the kernel"):
        infer_type("conv2d", [x, w], {"pool": "max_2x2_s2x2_p2x2", "padding": 1})
    with pytest.raises(OpError, match="winograd=true needs"):
        infer_type("conv2d", [x, w], {"pool": "max_3x3_s2x2_p1x1", "padding": 1, "winograd": True})
    with pytest.raises(OpError, match="pool and a residual"):
        infer_type("conv2d", [x, w, ir.TensorType((1, 3, 3, 3), ir.DType.f32)], {"pool": "max_2x2",
                                                                                     "residual": True})
    with pytest.raises(OpError, match="window 2 is larger"):
        infer_type("conv2d", [ir.TensorType((1, 2, 3, 9), ir.DType.f32), w], {"pool": "max_2x2"})


def test_an_integer_conv_with_a_pool_is_refused_by_codegen_and_left_alone_by_the_pass():
    graph, _ = pooled_conv(2, 3, (4, 4), dtype=ir.DType.i32)
    with pytest.raises(CodegenError, match="fused pool needs the tiled f32 convolution"):
        build(graph, "host")
    unfused = ir.Graph()
    x = unfused.add_input("x", ir.TensorType((1, 2, 4, 4), ir.DType.i32))
    conv = unfused.call("conv2d", [x, unfused.constant(np.ones((3, 2, 3, 3), np.int32), "w")], {"padding": 1})
    unfused.outputs = [unfused.call("max_pool2d", [conv], {"kernel": 2})]
    assert [node.op for node in fuse_pool(unfused).op_nodes()] == ["conv2d", "max_pool2d"]


def test_the_profile_counts_the_convolution_of_a_pooled_conv():
    graph, _ = pooled_conv(3, 8, (8, 8))
    conv = graph.outputs[0]
    unpooled = ir.Graph()
    x = unpooled.add_input("x", conv.inputs[0].type)
    plain = unpooled.call("conv2d", [x, unpooled.constant(conv.inputs[1].value, "w"),
                                     unpooled.constant(conv.inputs[2].value, "b")],
                          {"padding": 1, "activation": "relu"})
    unpooled.outputs = [plain]
    assert kernel_flops(conv) == kernel_flops(plain) + 3 * conv.type.size
    resnet_like = pooled_conv(3, 8, (8, 8), pool="max_3x3_s2x2_p1x1")[0].outputs[0]
    assert kernel_flops(resnet_like) == kernel_flops(plain) + 8 * resnet_like.type.size  # 9 - 1 compares
