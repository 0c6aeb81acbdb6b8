"""The Artifact codegen produces: entry signature, weights layout, outputs, errors, armv8 objects."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from codegen_harness import compile_and_run, run_artifact

from tensorforge import ir
from tensorforge.codegen import Artifact, build
from tensorforge.codegen.gemm.packing import pack_b_panels
from tensorforge.codegen.gemm.tiling import gemm_tiling
from tensorforge.ir import DType, TensorType

RNG = np.random.default_rng(1)
EM_AARCH64, EM_X86_64, ET_REL = 183, 62, 1


def mlp_graph(batch: int = 3) -> ir.Graph:
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((batch, 20), DType.f32))
    w1 = graph.constant(RNG.standard_normal((20, 17)).astype(np.float32), "fc1.weight")
    b1 = graph.constant(RNG.standard_normal(17).astype(np.float32), "fc1.bias")
    w2 = graph.constant(RNG.standard_normal((17, 5)).astype(np.float32), "fc2.weight")
    hidden = graph.call("relu", [graph.call("linear", [x, w1, b1])])
    graph.outputs = [graph.call("softmax", [graph.call("linear", [hidden, w2])])]
    return graph


def elf_header(data: bytes) -> tuple[int, int, int]:
    """(ELF class, object type, machine) of an ELF file."""
    assert data[:4] == b"\x7fELF"
    object_type, machine = struct.unpack_from("<HH", data, 16)
    return data[4], object_type, machine


def test_artifact_fields_and_mlp_result():
    graph = mlp_graph()
    artifact = build(graph, "host")
    assert isinstance(artifact, Artifact) and artifact.graph is graph and artifact.entry == "tf_run"
    assert artifact.input_types == [TensorType((3, 20), DType.f32)]
    assert artifact.output_types == [TensorType((3, 5), DType.f32)]
    assert artifact.compile_seconds > 0 and artifact.workspace_bytes % 64 == 0
    assert re.search(r"define .*i32 @tf_run\(ptr [^%]*%inputs, ptr [^%]*%outputs, ptr [^%]*%weights, "
                     r"ptr [^%]*%workspace\)", artifact.llvm_ir)
    x = RNG.standard_normal((3, 20)).astype(np.float32)
    (y,) = run_artifact(artifact, x)
    np.testing.assert_allclose(y, ir.interpret(graph, x), rtol=1e-4, atol=1e-5)


def test_weights_are_stored_at_aligned_offsets_not_in_the_ir():
    """Linear weights are stored once, already in GEMM panels (`<name>@<layout>`); the bias as it is."""
    graph = mlp_graph()
    artifact = build(graph, "host")
    columns = gemm_tiling(artifact.target).columns
    assert artifact.weights.dtype == np.uint8
    assert set(artifact.weight_offsets) == {f"fc1.weight@gemm.b{columns}", "fc1.bias", f"fc2.weight@gemm.b{columns}"}
    for name, offset in artifact.weight_offsets.items():
        constant, _, layout = name.partition("@")
        value = graph.node(constant).value
        expected = pack_b_panels(value, columns) if layout else value
        assert offset % 64 == 0
        stored = artifact.weights[offset:offset + expected.nbytes].view(value.dtype).reshape(expected.shape)
        np.testing.assert_array_equal(stored, expected)
    assert "x float]" not in artifact.llvm_ir and "x float] [" not in artifact.llvm_ir


def test_outputs_that_are_inputs_constants_or_repeated():
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((3, 4), DType.f32))
    c = graph.constant(np.arange(6, dtype=np.int32).reshape(2, 3), "c")
    y = graph.call("exp", [x])
    flat = graph.call("reshape", [x], {"shape": (12,)})
    graph.outputs = [y, x, c, y, flat, graph.call("flatten", [y], {"start_axis": 0})]
    value = RNG.standard_normal((3, 4)).astype(np.float32)
    outputs = compile_and_run(graph, value)
    for actual, expected in zip(outputs, ir.interpret(graph, value), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-6)


def test_dead_nodes_are_not_compiled():
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((3,), DType.f32))
    graph.call("mul", [graph.constant(np.ones(3, np.int64), "unused"), graph.constant(np.ones(3, np.int64))])
    graph.outputs = [graph.call("neg", [x])]
    artifact = build(graph, "host")
    assert artifact.weight_offsets == {}
    (y,) = run_artifact(artifact, np.arange(3, dtype=np.float32))
    np.testing.assert_array_equal(y, -np.arange(3, dtype=np.float32))


def test_zero_sized_values():
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((0, 4), DType.f32))
    total = graph.call("reduce_sum", [x], {"axes": (0,)})
    graph.outputs = [graph.call("relu", [x]), total, graph.call("matmul", [graph.call("transpose", [x]), x])]
    value = np.zeros((0, 4), np.float32)
    for actual, expected in zip(compile_and_run(graph, value), ir.interpret(graph, value), strict=True):
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("opt_level", [0, 1, 2])
def test_every_opt_level(opt_level):
    graph = mlp_graph()
    x = RNG.standard_normal((3, 20)).astype(np.float32)
    (y,) = compile_and_run(graph, x, opt_level=opt_level)
    np.testing.assert_allclose(y, ir.interpret(graph, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["sub", "neg", "max_pool2d"])
def test_ops_undefined_on_bool_are_refused_at_graph_build(op):
    """numpy refuses these ops on bool; type inference says so, naming the op, before codegen sees them."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((1, 1, 4, 4), DType.bool))
    operands = [x, x] if op == "sub" else [x]
    attrs = {"kernel": 2} if op == "max_pool2d" else {}
    with pytest.raises(ir.OpError, match=f"op '{op}' is not defined on (a )?bool"):
        graph.call(op, operands, attrs, name="bad")


def test_armv8_object_is_an_aarch64_elf_relocatable():
    artifact = build(mlp_graph(), "armv8")
    assert artifact.target.triple.startswith("aarch64")
    assert elf_header(artifact.object_code()) == (2, ET_REL, EM_AARCH64)
    assert elf_header(build(mlp_graph(), "x86-64").object_code()) == (2, ET_REL, EM_X86_64)


def add_graph(n: int) -> ir.Graph:
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((n,), DType.f32))
    y = graph.add_input("y", TensorType((n,), DType.f32))
    graph.outputs = [graph.call("add", [x, y])]
    return graph


def test_armv8_add_uses_neon_vectors():
    assembly = build(add_graph(1000), "armv8").assembly()
    assert re.search(r"fadd\s+v\d+\.4s", assembly), "expected NEON vector adds in the armv8 assembly"


def test_host_add_is_vectorized():
    assembly = build(add_graph(1000), "x86-64-v3").assembly()
    assert re.search(r"vaddps\s+.*%ymm", assembly), "expected AVX2 vector adds for x86-64-v3"


def _aarch64_tools_missing() -> bool:
    from tensorforge.runtime import ToolMissingError, find_cross_tools

    try:
        find_cross_tools("aarch64")
    except ToolMissingError:
        return True
    return False


@pytest.mark.skipif(_aarch64_tools_missing(), reason="needs gcc-aarch64-linux-gnu and qemu-user")
def test_armv8_code_runs_under_qemu():
    """libm calls (expf, logf), NEON loops and saturating casts also agree on AArch64."""
    from tensorforge.runtime import CompiledModel

    graph = ir.Graph()
    x = graph.add_input("x", TensorType((2, 3, 9, 9), DType.f32))
    w = graph.constant(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    features = graph.call("flatten", [graph.call("max_pool2d", [graph.call("conv2d", [x, w], {"padding": 1})],
                                                 {"kernel": 2, "padding": 1})])
    gelu = graph.call("gelu", [features], {"approximation": "exact"})
    saturated = graph.call("cast", [graph.call("mul", [features, graph.constant(np.float32(1e9))])],
                           {"dtype": DType.i8})
    graph.outputs = [graph.call("softmax", [graph.call("tanh", [gelu])]), saturated,
                     graph.call("log", [graph.call("sigmoid", [features])])]
    value = RNG.standard_normal((2, 3, 9, 9)).astype(np.float32)
    with CompiledModel(build(graph, "armv8")) as model:
        outputs = model(value)
    for actual, expected in zip(outputs, ir.interpret(graph, value), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_layers_of_one_shape_share_one_kernel_and_keep_their_own_weights():
    """relu, then three linears of one shape (different weights) with relus between: the linears
    share one function, called three times (entry.kernel_key); the first relu reads the graph input,
    whose alignment is unknown, so it has a function of its own and the other two share one."""
    graph = ir.Graph()
    value = graph.call("relu", [graph.add_input("x", TensorType((4, 24), DType.f32))])
    for index in range(3):
        weight = graph.constant(RNG.standard_normal((24, 24)).astype(np.float32), f"fc{index}.weight")
        value = graph.call("linear", [value, weight])
        if index < 2:
            value = graph.call("relu", [value])
    graph.outputs = [value]
    artifact = build(graph, "host", opt_level=0)
    assert len(re.findall(r'define internal void @"?linear\.\d+"?\(', artifact.llvm_ir)) == 1
    assert len(re.findall(r'call void @"?linear\.\d+"?\(', artifact.llvm_ir)) == 3
    assert len(re.findall(r'define internal void @"?relu\.\d+"?\(', artifact.llvm_ir)) == 2
    x = RNG.standard_normal((4, 24)).astype(np.float32)
    (y,) = run_artifact(build(graph, "host"), x)
    np.testing.assert_allclose(y, ir.interpret(graph, x), rtol=1e-4, atol=1e-5)


def test_outer_copy_loops_stay_rolled():
    """A transpose of many short rows stays a loop: unrolled, it was one block of 384 row copies
    that took LLVM's schedulers seconds (llvm_utils.strided_loops)."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((32, 12, 64), DType.f32))
    graph.outputs = [graph.call("transpose", [x], {"perm": [1, 0, 2]})]
    artifact = build(graph, "host")
    assert artifact.llvm_ir.count("llvm.loop.unroll.disable") >= 1
    assert artifact.llvm_ir.count("call void @llvm.memcpy") < 12
    data = RNG.standard_normal((32, 12, 64)).astype(np.float32)
    (y,) = run_artifact(artifact, data)
    np.testing.assert_array_equal(y, data.transpose(1, 0, 2))


def _causal_mask_graph() -> ir.Graph:
    graph = ir.Graph()
    scores = graph.add_input("scores", TensorType((2, 32, 32), DType.f32))
    graph.outputs = [graph.call("causal_mask", [scores])]
    return graph


def _dynamic_linear_graph() -> ir.Graph:
    rng = np.random.default_rng(0)
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((64, 40), DType.f32))
    weight = graph.constant(rng.integers(-127, 128, (40, 10)).astype(np.int8), "w")
    operands = [x, weight, graph.constant(np.full(10, 0.01, np.float32), "sw"),
                graph.constant(rng.standard_normal(10).astype(np.float32), "b")]
    graph.outputs = [graph.call("dynamic_qlinear", operands)]
    return graph


@pytest.mark.parametrize("make_graph", [_causal_mask_graph, _dynamic_linear_graph])
def test_short_rows_vectorize_without_gathers(make_graph):
    """Loops over short rows (a causal mask's 32 keys; dynamic_qlinear's + bias over 10 columns): once
    LLVM unrolled the row, it vectorized the loop over rows with gathers and scatters on AVX-512;
    the row loops stay rolled. Built for x86-64-v4 whatever the host, run on the host."""
    graph = make_graph()
    llvm_ir = build(graph, "x86-64-v4").llvm_ir
    assert "masked.gather" not in llvm_ir and "masked.scatter" not in llvm_ir
    data = np.random.default_rng(1).standard_normal(graph.inputs[0].shape).astype(np.float32)
    (actual,) = compile_and_run(graph, data)
    np.testing.assert_allclose(actual, ir.interpret(graph, data), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pools_vectorize_along_x_without_gathers(op):
    """With the x loop fully unrolled LLVM vectorized the row loop with gathers and scatters for
    AVX-512 (5x slower); the x loop stays rolled and vectorizes with plain loads. Built for
    x86-64-v4 whatever the host, run on the host."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((2, 8, 16, 16), DType.f32))
    graph.outputs = [graph.call(op, [x], {"kernel": (2, 2), "stride": (2, 2)})]
    llvm_ir = build(graph, "x86-64-v4").llvm_ir
    assert re.search(r"<16 x float>", llvm_ir) and "masked.gather" not in llvm_ir and "masked.scatter" not in llvm_ir
    data = np.random.default_rng(0).standard_normal((2, 8, 16, 16)).astype(np.float32)
    (actual,) = compile_and_run(graph, data)
    np.testing.assert_allclose(actual, ir.interpret(graph, data), rtol=1e-6, atol=1e-6)
