"""The tiled f32 GEMM (codegen/gemm/gemm.py) and the convolution on it, against the numpy reference.

Property tests over random sizes (primes, sizes below one vector, more than one cache block),
batched, with constant (packed at compile time) and run-time operands, with and without bias and
fused relu or gelu (the `activation` attribute), on the host and on armv8 under qemu-user (fewer examples
there); every epilogue through the gemm helper itself;
the weights layout; and the machine code: vector FMAs on every target.
"""

from __future__ import annotations

import ctypes
import re
import time

import llvmlite.binding as llvm
import numpy as np
import pytest
from codegen_harness import aligned_buffer, compile_and_run, single_op_graph
from hypothesis import given, settings
from hypothesis import strategies as st
from llvmlite import ir as llvm_ir

from tensorforge import ir
from tensorforge.codegen import Target, build
from tensorforge.codegen.build import optimize
from tensorforge.codegen.gemm.gemm import GemmOperand, emit_gemm, gemm_scratch_bytes
from tensorforge.codegen.gemm.micro_kernel import Epilogue
from tensorforge.codegen.gemm.packing import pack_a_panels, pack_b_panels
from tensorforge.codegen.gemm.tiling import gemm_tiling
from tensorforge.codegen.llvm.utils import PTR, VOID
from tensorforge.codegen.target import initialize_llvm
from tensorforge.ir import DType, TensorType

HOST = Target.parse("host")
ARMV8_EXAMPLES = min(8, settings.default.max_examples)
SIZES = st.integers(1, 70) | st.sampled_from([1, 2, 3, 5, 7, 13, 17, 31, 61, 67])


def sample(rng: np.random.Generator, shape, scale: float = 1.0) -> np.ndarray:
    """Normal f32 values times `scale` (kept in f32: no float64 promotion)."""
    values = rng.standard_normal(shape).astype(np.float32) * np.float32(scale)
    assert values.dtype == np.float32
    return values


def run_op(target: str, op: str, operands: list[np.ndarray], constants, attrs=None, threads: int = 1) -> None:
    """Compile op(operands) for `target` (operands at `constants` become weights) and compare with the reference.

    With `threads` > 1 the kernel's work is split for that many threads whatever its size."""
    graph, inputs = single_op_graph(op, operands, attrs, constants)
    (actual,) = compile_and_run(graph, *inputs, target=target, threads=threads)
    expected = ir.interpret(graph, *inputs)
    assert actual.dtype == expected.dtype == np.float32 and actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@st.composite
def matmul_cases(draw):
    m, k, n = draw(SIZES), draw(SIZES), draw(SIZES)
    batch_a, batch_b = draw(st.sampled_from([((), ()), ((2,), ()), ((), (3,)), ((2, 1), (3,)), ((1,), (2,))]))
    constants = draw(st.sampled_from([(), (1,), (0,), (0, 1)]))
    seed = draw(st.integers(0, 2**16))
    return (*batch_a, m, k), (*batch_b, k, n), constants, seed


def check_matmul(target: str, case, threads: int = 1) -> None:
    a_shape, b_shape, constants, seed = case
    rng = np.random.default_rng(seed)
    depth = a_shape[-1]
    run_op(target, "matmul", [sample(rng, a_shape), sample(rng, b_shape, 1 / np.sqrt(depth))], constants,
           threads=threads)


@given(matmul_cases())
def test_matmul_host(case):
    check_matmul("host", case)


@settings(max_examples=ARMV8_EXAMPLES)
@given(matmul_cases())
def test_matmul_armv8(case):
    check_matmul("armv8", case)


@st.composite
def linear_cases(draw):
    lead = draw(st.sampled_from([(), (1,), (3,), (2, 3)]))
    k, n = draw(SIZES), draw(SIZES)
    constants = draw(st.sampled_from([(1, 2), (), (2,), (0,), (0, 1, 2)]))
    attrs = {"activation": draw(st.sampled_from([None, "relu", "gelu_tanh", "gelu_sigmoid", "gelu_exact"]))}
    return lead, k, n, draw(st.booleans()), constants, attrs, draw(st.integers(0, 2**16))


def check_linear(target: str, case, threads: int = 1) -> None:
    lead, k, n, bias, constants, attrs, seed = case
    rng = np.random.default_rng(seed)
    operands = [sample(rng, (*lead, k)), sample(rng, (k, n), 1 / np.sqrt(k))] + ([sample(rng, (n,))] if bias else [])
    run_op(target, "linear", operands, constants, attrs, threads)


@given(linear_cases())
def test_linear_host(case):
    check_linear("host", case)


@settings(max_examples=ARMV8_EXAMPLES)
@given(linear_cases())
def test_linear_armv8(case):
    check_linear("armv8", case)


@pytest.mark.parametrize("m, k, n", [(200, 600, 40), (7, 1100, 5000), (150, 300, 4200), (5, 1100, 700)], ids=str)
def test_matmul_with_several_cache_blocks(m, k, n):
    """More than one block of mc rows, kc depth (c accumulated across blocks) and nc columns."""
    rng = np.random.default_rng(0)
    for constants in [(1,), ()]:
        run_op("host", "matmul", [sample(rng, (m, k)), sample(rng, (k, n), 1 / np.sqrt(k))], constants)


def streamed_weight_cases() -> list[tuple[str, int, int]]:
    """(target, rows, threads) of a linear whose constant weight is read in depth blocks (BlockStep's
    prefetch="b": the block's first call fetches the next panel): per block, whole row panels and a
    tail; a last row block of a tail only (mc + 3 rows); parts of fewer rows than a panel."""
    cases = []
    for target in ("host", "armv8"):
        tiling = gemm_tiling(Target.parse(target))
        mr, mc = tiling.rows, tiling.mc
        cases += [(target, 2 * mr + 5, 1), (target, 3 * mr, 1), (target, mc + 3, 1), (target, 2 * (mr - 2), 2),
                  (target, 3 * mr + 1, 3)]
    return cases


@pytest.mark.parametrize("target, rows, threads", streamed_weight_cases(), ids=str)
def test_linear_row_panels_with_a_streamed_weight(target, rows, threads):
    """Each row panel once, whichever call fetches the weight's next panel (a depth of 3 blocks)."""
    rng = np.random.default_rng(rows)
    depth, columns = 700, 2 * gemm_tiling(Target.parse(target)).columns + 3
    run_op(target, "linear", [sample(rng, (rows, depth)), sample(rng, (depth, columns), 1 / np.sqrt(depth))], (1,),
           threads=threads)


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    channels = groups * draw(st.integers(1, 4))
    outputs = groups * draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    height = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 14))
    width = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 40))
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
             "activation": draw(st.sampled_from([None, "relu"]))}
    x_shape = (draw(st.integers(1, 2)), channels, height, width)
    w_shape = (outputs, channels // groups, kh, kw)
    return x_shape, w_shape, attrs, draw(st.booleans()), draw(st.sampled_from([(1, 2), (), (2,)])), draw(
        st.integers(0, 2**16))


def check_conv(target: str, case, threads: int = 1) -> None:
    x_shape, w_shape, attrs, bias, constants, seed = case
    rng = np.random.default_rng(seed)
    taps = int(np.prod(w_shape[1:]))
    operands = [sample(rng, x_shape), sample(rng, w_shape, 1 / np.sqrt(taps))]
    operands += [sample(rng, (w_shape[0],))] if bias else []
    run_op(target, "conv2d", operands, constants, attrs, threads)


@given(conv_cases())
def test_conv2d_host(case):
    check_conv("host", case)


@settings(max_examples=ARMV8_EXAMPLES)
@given(conv_cases())
def test_conv2d_armv8(case):
    check_conv("armv8", case)


THREADS = st.integers(2, 4)
THREADED_ARMV8_EXAMPLES = min(4, settings.default.max_examples)


@given(matmul_cases(), THREADS)
def test_matmul_split_for_threads_host(case, threads):
    """Each GEMM cut in parts by columns or rows (threads/parallel.py, emit_gemm_part), any size, 2-4 threads."""
    check_matmul("host", case, threads)


@given(linear_cases(), THREADS)
def test_linear_split_for_threads_host(case, threads):
    check_linear("host", case, threads)


@given(conv_cases(), THREADS)
def test_conv2d_split_for_threads_host(case, threads):
    """Convolutions cut by images (batch 2) or by output rows (batch 1)."""
    check_conv("host", case, threads)


@settings(max_examples=THREADED_ARMV8_EXAMPLES)
@given(matmul_cases(), linear_cases(), conv_cases(), THREADS)
def test_split_for_threads_armv8(matmul, linear, conv, threads):
    """The same, the pool's pthreads running under qemu-user."""
    check_matmul("armv8", matmul, threads)
    check_linear("armv8", linear, threads)
    check_conv("armv8", conv, threads)


@pytest.mark.parametrize("x, w", [((2, 32, 16, 16), (64, 32, 3, 3)), ((1, 300, 6, 5), (7, 300, 3, 3))], ids=str)
def test_conv2d_common_and_deep(x, w):
    """The CNN's 3x3 pad 1 convolution; and one whose taps take several depth blocks."""
    rng = np.random.default_rng(1)
    taps = int(np.prod(w[1:]))
    run_op("host", "conv2d", [sample(rng, x), sample(rng, w, 1 / np.sqrt(taps)), sample(rng, (w[0],))], (1, 2),
           {"padding": 1})


@pytest.mark.parametrize("dtype", [DType.i32, DType.i8], ids=str)
def test_fused_relu_on_the_exact_integer_paths(dtype):
    rng = np.random.default_rng(3)
    x, w, b = (rng.integers(-50, 50, shape).astype(dtype.numpy) for shape in ((3, 7), (7, 5), (5,)))
    run_exact(dtype, "linear", [x, w, b], {"activation": "relu"})
    image, kernel = rng.integers(-9, 9, (1, 2, 5, 5)).astype(dtype.numpy), rng.integers(-9, 9, (3, 2, 3, 3))
    run_exact(dtype, "conv2d", [image, kernel.astype(dtype.numpy)], {"padding": 1, "activation": "relu"})


@pytest.mark.parametrize("activation", ["relu", "gelu_exact"])
def test_linear_without_depth_still_adds_bias_and_the_activation(activation):
    rng = np.random.default_rng(4)
    run_op("host", "linear", [sample(rng, (3, 0)), sample(rng, (0, 5)), sample(rng, (5,))], (1, 2),
           {"activation": activation})


@pytest.mark.parametrize("approximation", ["tanh", "sigmoid", "exact"])
def test_a_gelu_in_the_epilogue_equals_the_gelu_kernel(approximation):
    """The epilogue computes the gelu on whole vectors with the elementwise kernel's own steps: the
    fused linear equals linear-then-gelu compiled unfused, over the gelu's tails and saturation."""
    rng = np.random.default_rng(5)
    x, w, b = sample(rng, (3, 40), 4.0), sample(rng, (40, 37), 1 / np.sqrt(40)), sample(rng, (37,))
    fused, _ = single_op_graph("linear", [x, w, b], {"activation": f"gelu_{approximation}"}, (1, 2))
    unfused = ir.Graph()
    unfused.outputs = [unfused.call("gelu", [unfused.call("linear", [unfused.add_input("x0", TensorType.of(x)),
                                                                     unfused.constant(w), unfused.constant(b)])],
                                    {"approximation": approximation})]
    np.testing.assert_array_equal(ir.interpret(fused, x), ir.interpret(unfused, x))
    (got,) = compile_and_run(fused, x)
    (wanted,) = compile_and_run(unfused, x)
    np.testing.assert_allclose(got, wanted, rtol=1e-6, atol=1e-6)  # the GEMM's sums are the same code
    np.testing.assert_allclose(got, ir.interpret(unfused, x), rtol=1e-4, atol=1e-5)


def test_only_f32_linears_take_a_gelu():
    with pytest.raises(ir.OpError, match="activation 'gelu_tanh' needs f32"):
        ir.registry.infer_type("linear", [TensorType((2, 3), DType.i32), TensorType((3, 4), DType.i32)],
                               {"activation": "gelu_tanh"})
    with pytest.raises(ir.OpError, match="activation must be one of"):
        ir.registry.infer_type("conv2d", [TensorType((1, 2, 5, 5), DType.f32), TensorType((3, 2, 3, 3), DType.f32)],
                               {"activation": "gelu_tanh"})


def run_exact(dtype: DType, op: str, operands: list[np.ndarray], attrs: dict) -> None:
    graph = ir.Graph()
    nodes = [graph.add_input(f"x{index}", TensorType.of(array)) for index, array in enumerate(operands)]
    graph.outputs = [graph.call(op, nodes, attrs)]
    (actual,) = compile_and_run(graph, *operands)
    np.testing.assert_array_equal(actual, ir.interpret(graph, *operands))


# --- the gemm helper itself: epilogues a lowering does not use yet ---------------------------------

def gemm_with_epilogue(shape, epilogue: Epilogue, a, b, bias) -> np.ndarray:
    """Emit `void gemm(a, b, c, bias, scratch)` with emit_gemm alone, JIT it on the host and run it once."""
    initialize_llvm()
    rows, depth, columns = shape
    tiling = gemm_tiling(HOST)
    module = llvm_ir.Module("gemm")
    module.triple = HOST.triple
    function = llvm_ir.Function(module, llvm_ir.FunctionType(VOID, [PTR] * 5), "gemm")
    builder = llvm_ir.IRBuilder(function.append_basic_block("entry"))
    a_arg, b_arg, c_arg, bias_arg, scratch_arg = function.args
    emit_gemm(builder, tiling, GemmOperand(a_arg, False), GemmOperand(b_arg, False), c_arg, shape, scratch_arg,
              bias_arg, epilogue)
    builder.ret_void()
    machine = HOST.target_machine()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(optimize(str(module), HOST, 3)), machine)
    c = np.full((rows, columns), np.nan, np.float32)
    scratch = aligned_buffer(gemm_scratch_bytes(tiling, shape, False, False))
    try:
        engine.finalize_object()
        entry = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 5)(engine.get_function_address("gemm"))
        entry(a.ctypes.data, b.ctypes.data, c.ctypes.data, bias.ctypes.data, scratch.ctypes.data)
    finally:
        engine.close()
    return c


@pytest.mark.parametrize("bias", [None, "row", "column"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (13, 300, 37), (6, 5, 16)], ids=str)
def test_gemm_epilogue_bias_and_relu(shape, bias):
    rows, depth, columns = shape
    rng = np.random.default_rng(2)
    a, b = sample(rng, (rows, depth)), sample(rng, (depth, columns), 1 / np.sqrt(depth))
    bias_values = sample(rng, (rows if bias == "row" else columns,))
    actual = gemm_with_epilogue(shape, Epilogue(bias=bias, activation="relu"), a, b, bias_values)
    expected = a @ b
    if bias == "row":
        expected = expected + bias_values[:, None]
    elif bias == "column":
        expected = expected + bias_values
    np.testing.assert_allclose(actual, np.maximum(expected, np.float32(0)), rtol=1e-4, atol=1e-5)


def test_epilogue_names_what_it_does():
    assert Epilogue().suffix == "" and Epilogue("column", "relu").suffix == ".columnbias.relu"
    with pytest.raises(ValueError):
        Epilogue(activation="tanh")


# --- layouts --------------------------------------------------------------------------------------

def test_panels_are_zero_padded_and_k_major():
    w = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    b = pack_b_panels(w, 4)
    assert b.shape == (2, 5, 4)
    np.testing.assert_array_equal(b[1, 2], [w[2, 4], w[2, 5], w[2, 6], 0])
    a = pack_a_panels(w, 3)
    assert a.shape == (2, 7, 3)
    np.testing.assert_array_equal(a[1, 6], [w[3, 6], w[4, 6], 0])
    assert pack_b_panels(np.ones((2, 3, 5), np.float32), 4).shape == (2, 2, 3, 4)


def test_a_weight_is_packed_once_and_kept_as_is_only_when_read_as_is():
    w = np.ones((8, 8), np.float32)
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((8, 8), DType.f32))
    weight = graph.constant(w, "w")
    first = graph.call("linear", [x, weight])
    second = graph.call("linear", [first, weight])
    graph.outputs = [second]
    columns = gemm_tiling(HOST).columns
    assert set(build(graph, "host").weight_offsets) == {f"w@gemm.b{columns}"}
    graph.outputs = [graph.call("add", [second, weight])]
    assert set(build(graph, "host").weight_offsets) == {"w", f"w@gemm.b{columns}"}


def _padded_panels(array: np.ndarray, columns: int) -> np.ndarray:
    """B panels the plain way (zero-padded copy, split, transposed): the reference for pack_b_panels."""
    *batch, depth, width = array.shape
    panels = -(-width // columns)
    padded = np.zeros((*batch, depth, panels * columns), array.dtype)
    padded[..., :width] = array
    return np.moveaxis(padded.reshape(*batch, depth, panels, columns), -2, -3)


@pytest.mark.parametrize("shape", [(5, 7), (3, 32), (3, 33), (2, 4, 70), (0, 5), (4, 0), (1, 1), (6, 100)])
def test_panels_are_written_straight_from_any_layout(shape):
    """pack_b_panels writes the panels with one allocation, from contiguous and transposed operands."""
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for columns in (1, 8, 16):
        for array in (a, np.swapaxes(np.swapaxes(a, -1, -2).copy(), -1, -2)):
            packed = pack_b_panels(array, columns)
            assert packed.flags.c_contiguous
            np.testing.assert_array_equal(packed, _padded_panels(array, columns))


def test_a_constant_read_plain_and_transposed_gets_two_packed_copies():
    """A weight that one matmul reads as B and another as B transposed (or A and A transposed) is
    packed once per layout: both used to get the first one's panels (a wrong result, silently)."""
    rng = np.random.default_rng(0)
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((4, 16), DType.f32))
    w = graph.constant(rng.standard_normal((16, 16)).astype(np.float32), "w")
    a = graph.constant(rng.standard_normal((16, 4)).astype(np.float32), "a")
    plain, flags = {"transpose_a": False, "transpose_b": False}, {"transpose_a": False, "transpose_b": True}
    graph.outputs = [graph.call("matmul", [x, w], plain), graph.call("matmul", [x, w], flags),
                     graph.call("matmul", [a, x], plain),
                     graph.call("matmul", [a, graph.call("transpose", [x], {"perm": (1, 0)})],
                                {"transpose_a": True, "transpose_b": False})]
    inputs = [rng.standard_normal((4, 16)).astype(np.float32)]
    expected = ir.interpret(graph, *inputs)
    artifact = build(graph, "host", opt_level=0)
    assert len([name for name in artifact.weight_offsets if name.startswith("w@")]) == 2
    assert len([name for name in artifact.weight_offsets if name.startswith("a@")]) == 2
    for got, want in zip(compile_and_run(graph, *inputs), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3, 17])
def test_a_is_packed_only_as_wide_as_its_rows(rows):
    """One row of A is read in place (no packing loop); a tail panel of r < MR rows is packed r wide
    (its k steps r floats apart, micro-kernel variant `.a<r>_1`), full panels MR wide."""
    mr = gemm_tiling(HOST).rows
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((rows, 300), DType.f32))
    graph.outputs = [graph.call("linear", [x, graph.constant(np.ones((300, 40), np.float32), "w")])]
    module = build(graph, "host", opt_level=0).llvm_ir
    kernels = re.findall(r'define internal void @"?tf\.gemm\.f32\.\d+x\d+\.(\d+)x\d+((?:\.a\d+_\d+)?)', module)
    assert ("pack_a" in module) == (rows > 1)
    assert {int(tile_rows) for tile_rows, _ in kernels} == {mr, rows % mr}
    for tile_rows, layout in kernels:
        assert layout == ("" if int(tile_rows) == mr else f".a{tile_rows}_1"), (tile_rows, layout)


def test_scratch_is_bounded_by_the_cache_blocks():
    tiling = gemm_tiling(HOST)
    biggest = tiling.mc * tiling.kc * 4 + tiling.kc * tiling.nc * 4 + 64
    assert gemm_scratch_bytes(tiling, (4096, 4096, 4096), False, False) <= biggest
    assert gemm_scratch_bytes(tiling, (4096, 4096, 4096), False, True) <= tiling.mc * tiling.kc * 4


# --- machine code and compile time -----------------------------------------------------------------

def matmul_graph(n: int) -> ir.Graph:
    graph = ir.Graph()
    x = graph.add_input("a", TensorType((n, n), DType.f32))
    graph.outputs = [graph.call("matmul", [x, graph.constant(np.ones((n, n), np.float32), "b")])]
    return graph


FMA = {16: r"vfmadd\d+ps\s.*zmm", 8: r"vfmadd\d+ps\s.*ymm"}


@pytest.mark.parametrize("target, pattern", [("x86-64-v4", FMA[16]), ("x86-64-v3", FMA[8]),
                                             ("armv8", r"fmla\s+v\d+\.4s"),
                                             ("host", FMA.get(HOST.vector_width, r"fmla\s+v\d+\.4s"))])
def test_micro_kernel_is_vector_fma(target, pattern):
    assembly = build(matmul_graph(64), target).assembly()
    assert len(re.findall(pattern, assembly)) >= gemm_tiling(Target.parse(target)).rows * 2


PREFETCH_L2 = {"x86-64-v4": r"prefetcht1\s", "x86-64-v3": r"prefetcht1\s", "armv8": r"prfm\s+pldl2keep"}


@pytest.mark.parametrize("target", sorted(PREFETCH_L2))
def test_a_weight_read_in_depth_blocks_is_prefetched(target):
    """The next panel of a linear's constant weight (B, read in depth blocks) and of a convolution's
    (A, 48 output channels: more row panels than conv_gemm interleaves) is fetched into L2 ahead of
    use; a weight of one depth block (a matrix-vector product's) is left to the hardware prefetcher."""
    def linear(rows: int) -> ir.Graph:
        graph = ir.Graph()
        x = graph.add_input("x", TensorType((rows, 700), DType.f32))
        graph.outputs = [graph.call("linear", [x, graph.constant(np.ones((700, 64), np.float32), "w")])]
        return graph

    conv = ir.Graph()
    x = conv.add_input("x", TensorType((1, 8, 10, 10), DType.f32))
    conv.outputs = [conv.call("conv2d", [x, conv.constant(np.ones((48, 8, 3, 3), np.float32), "w")], {"padding": 1})]
    for graph in (linear(64), conv):
        assert re.search(PREFETCH_L2[target], build(graph, target).assembly())
    assert not re.search(PREFETCH_L2[target], build(linear(1), target).assembly())


def test_conv2d_runs_on_neon_fma():
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((1, 8, 10, 10), DType.f32))
    graph.outputs = [graph.call("conv2d", [x, graph.constant(np.ones((16, 8, 3, 3), np.float32), "w")], {"padding": 1})]
    assert re.search(r"fmla\s+v\d+\.4s", build(graph, "armv8").assembly())


def test_a_big_matmul_compiles_fast_to_small_ir():
    artifact = build(matmul_graph(1024), "host")
    assert artifact.compile_seconds < 2.0
    assert len(artifact.llvm_ir.splitlines()) < 3000


def test_a_convolution_compiles_fast_to_small_ir():
    """The im2col gather and the padded copy stay loops: fully unrolled, they made one basic block
    so big that LLVM's schedulers took a third of a second on it."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((2, 3, 32, 32), DType.f32))
    graph.outputs = [graph.call("conv2d", [x, graph.constant(np.ones((32, 3, 3, 3), np.float32), "w")],
                                {"padding": 1})]
    artifact = build(graph, "host")
    assert len(artifact.llvm_ir.splitlines()) < 1500
    assembly_start = time.perf_counter()
    artifact.assembly()
    assert artifact.compile_seconds + time.perf_counter() - assembly_start < 1.0
