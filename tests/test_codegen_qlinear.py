"""qlinear (ir/ops_quant.py) on the int8 GEMM (codegen/gemm/qgemm.py): the compiled kernel equals the
numpy reference exactly on the host (pmaddwd or VNNI), on plain armv8 (widening) and on armv8.2-a
with dotprod (sdot, run under qemu), over random shapes (primes, sizes below one vector), i8 and
u8 inputs, i8 / u8 / f32 results, relu, per-channel and per-tensor multipliers, saturating
requantization and zero points at the edges of their ranges; threads split it the same."""

from __future__ import annotations

import re

import numpy as np
import pytest
from codegen_harness import compile_and_run, single_op_graph
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge import ir
from tensorforge.codegen import Target, build
from tensorforge.codegen.errors import CodegenError
from tensorforge.codegen.gemm.qgemm import int8_scheme, pack_qweight, qgemm_tiling
from tensorforge.ir import DType, OpError, TensorType

ARMV8_EXAMPLES = min(6, settings.default.max_examples)
LIMITS = {"i8": (-128, 127), "u8": (0, 255)}


@st.composite
def qlinear_cases(draw, max_size: int = 40):
    rows = draw(st.integers(1, 2 * max_size))
    depth = draw(st.integers(1, 3 * max_size))
    columns = draw(st.integers(1, max_size))
    x_dtype = draw(st.sampled_from(["i8", "u8"]))
    out = draw(st.sampled_from(["i8", "u8", "f32"]))
    relu = draw(st.sampled_from([None, "relu"]))
    per_column = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    low, high = LIMITS[x_dtype]
    x = rng.integers(low, high + 1, (rows, depth)).astype(DType[x_dtype].numpy)
    weight = rng.integers(-127, 128, (depth, columns)).astype(np.int8)
    if draw(st.booleans()):  # extreme weights: -128 and 127 everywhere
        weight = np.where(rng.random(weight.shape) < 0.5, -128, 127).astype(np.int8)
    bias = rng.integers(-2**16, 2**16, columns).astype(np.int32)
    # multipliers from "everything saturates" down to "a few codes wide"
    typical = 1.0 / (depth * 128.0)
    shape = (columns,) if per_column else ()
    multiplier = (typical * np.exp(rng.uniform(np.log(0.1), np.log(1000.0), shape))).astype(np.float32)
    edge_zero = draw(st.sampled_from(["random", "low", "high"]))
    x_zero = {"random": rng.integers(low, high + 1), "low": low, "high": high}[edge_zero]
    y_limits = LIMITS.get(out, (-128, 127))
    y_zero = draw(st.sampled_from([y_limits[0], y_limits[1], int(rng.integers(*y_limits))]))
    operands = [x, weight, bias, multiplier, np.int32(x_zero), np.int32(y_zero)]
    return operands, {"dtype": out, "activation": relu}


def check(case, target: str, threads: int = 1) -> None:
    operands, attrs = case
    graph, inputs = single_op_graph("qlinear", operands, attrs, constants=(1, 2, 3, 4, 5))
    (actual,) = compile_and_run(graph, *inputs, target=target, threads=threads)
    expected = ir.interpret(graph, *inputs)
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)


@given(qlinear_cases())
def test_qlinear_is_exact_on_the_host(case):
    check(case, "host")


@given(qlinear_cases(max_size=24))
@settings(max_examples=ARMV8_EXAMPLES)
def test_qlinear_is_exact_on_the_host_in_parts(case):
    check(case, "host", threads=3)


@pytest.mark.parametrize("target", ["armv8", "armv8.2-a+dotprod"])
@given(case=qlinear_cases(max_size=24))
@settings(max_examples=ARMV8_EXAMPLES, deadline=None)
def test_qlinear_is_exact_on_armv8(target, case):
    check(case, target)


def test_the_reference_saturates_and_clips_at_the_zero_point_with_relu():
    x = np.array([[100, -100]], np.int8)
    weight = np.array([[127, -127, 1], [-127, 127, 1]], np.int8)
    bias = np.zeros(3, np.int32)
    multiplier = np.float32(1.0)
    y = ir.evaluate("qlinear", [x, weight, bias, multiplier, np.int32(0), np.int32(5)],
                    {"dtype": DType.i8, "activation": "relu"})
    np.testing.assert_array_equal(y, [[127, 5, 5]])  # 25400 saturates; -25400 and 0 clip to the zero point
    y = ir.evaluate("qlinear", [x, weight, bias, multiplier, np.int32(0), np.int32(5)], {"dtype": DType.i8})
    np.testing.assert_array_equal(y, [[127, -128, 5]])


def test_packed_weight_holds_panels_and_column_sums():
    tiling = qgemm_tiling(Target.parse("armv8.2-a+dotprod"))  # G = 4, NR = 12
    weight = np.arange(-30, 30).reshape(6, 10).astype(np.int8)
    packed = pack_qweight(weight, tiling)
    panels = packed[:2 * 12 * 1 * 4 * 1].reshape(1, 2, 12, 4)  # Kp = 8: two groups
    np.testing.assert_array_equal(panels[0, 0, 3], weight[0:4, 3])
    np.testing.assert_array_equal(panels[0, 1, 3], [weight[4, 3], weight[5, 3], 0, 0])
    np.testing.assert_array_equal(panels[0, :, 10:], 0)
    sums = packed[2 * 12 * 4:].view(np.int32)
    np.testing.assert_array_equal(sums[:10], weight.astype(np.int32).sum(axis=0))


VNNI = Target("x86-64-vnni", "x86_64-unknown-linux-gnu", "x86-64-v3", "+avx,+avx2,+fma,+avxvnni", 8)


def qlinear_graph(columns: int = 64, rows: int = 8) -> ir.Graph:
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((rows, 64), DType.u8))
    constants = [np.ones((64, columns), np.int8), np.zeros(columns, np.int32), np.float32(0.01), np.int32(128),
                 np.int32(0)]
    graph.outputs = [graph.call("qlinear", [x, *[graph.constant(c, f"c{i}") for i, c in enumerate(constants)]],
                                {"dtype": "i8"})]
    return graph


@pytest.mark.parametrize("target, scheme, pattern", [
    ("armv8.2-a+dotprod", "sdot", r"sdot\s+v\d+\.4s"),
    ("armv8", "widen", r"s(ml|mu)al\d?\s+v\d+\.4s|mla\s+v\d+\.4s"),
    ("x86-64-v3", "pmaddwd", r"vpmaddwd\s.*ymm"),
    (VNNI, "vnni", r"vpdpbusd\s.*ymm"),
])
def test_the_int8_instructions_are_in_the_machine_code(target, scheme, pattern):
    assert int8_scheme(Target.parse(target)).name == scheme
    assembly = build(qlinear_graph(), target).assembly()
    assert len(re.findall(pattern, assembly)) >= qgemm_tiling(Target.parse(target)).rows


@pytest.mark.parametrize("target, pattern", [("armv8.2-a+dotprod", r"prfm\s+pldl2keep"), (VNNI, r"prefetcht1\s")])
def test_the_weight_s_next_panel_is_prefetched_with_several_row_panels(target, pattern):
    """With several row panels, the first call for each weight panel fetches the next panel into L2;
    a matrix-vector product's stream of panels is left to the hardware."""
    tall = 3 * qgemm_tiling(Target.parse(target) if isinstance(target, str) else target).rows
    assert re.search(pattern, build(qlinear_graph(rows=tall), target).assembly())
    assert not re.search(pattern, build(qlinear_graph(rows=1), target).assembly())


VNNI_512 = Target("x86-64-v4-vnni", "x86_64-unknown-linux-gnu", "x86-64-v4",
                  "+avx,+avx2,+fma,+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512vnni", 16, 32)


@pytest.mark.parametrize("x_dtype", ["i8", "u8"])
def test_packing_x_copies_whole_k_groups_without_lane_by_lane_vectors(x_dtype):
    """x's packing copies a k group of 4 codes as one 32-bit word (xor 0x80808080 for i8 x), in a
    scalar loop: LLVM had vectorized the byte loop for AVX-512 into an extract and a store per
    byte with 64-bit vector multiplies for the addresses (the MLP's first int8 layer took 93 us, 33
    us after). Built for an AVX512-VNNI target whatever the host."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((20, 102), DType[x_dtype]))
    constants = [np.ones((102, 64), np.int8), np.zeros(64, np.int32), np.float32(0.01), np.int32(3), np.int32(0)]
    graph.outputs = [graph.call("qlinear", [x, *[graph.constant(c, f"c{i}") for i, c in enumerate(constants)]],
                                {"dtype": "i8"})]
    assembly = build(graph, VNNI_512).assembly()
    assert re.search(r"vpdpbusd\s.*zmm", assembly)
    assert not re.search(r"vpextrb|vpinsrb|vpmullq|scatter", assembly)


AMX = Target("x86-64-amx", "x86_64-unknown-linux-gnu", "sapphirerapids",
             "+avx,+avx2,+fma,+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512vnni,+amx-tile,+amx-int8", 16, 32)
AMX_HOST = AMX.runs_in_process


def test_amx_tiles_are_in_the_machine_code_and_tf_run_asks_for_them():
    """On a target with AMX the int8 GEMM multiplies tiles (tdpbusd for u8 x, tdpbssd for i8, the
    dynamic layer's codes), configured and released by each kernel; tf_run first asks Linux for
    the tile state (arch_prctl 158, ARCH_REQ_XCOMP_PERM 0x1023). Fewer than 16 rows take VNNI on
    the same panels. Built whatever the host."""
    assembly = build(qlinear_graph(rows=64), AMX).assembly()
    assert re.search(r"tdpbusd\s", assembly) and not re.search(r"tdpbssd\s|vpdpbusd", assembly)
    assert "ldtilecfg" in assembly and "tilerelease" in assembly
    assert re.search(r"\$4131,", assembly) and re.search(r"\$158,", assembly)
    graph, _ = single_op_graph("dynamic_qlinear", [np.ones((40, 100), np.float32), np.ones((100, 24), np.int8),
                                                   np.ones(24, np.float32), np.zeros(24, np.float32)],
                               {"activation": None}, constants=(1, 2, 3))
    assert re.search(r"tdpbssd\s", build(graph, AMX).assembly())
    assert not re.search(r"tdpb|tilecfg|\$4131,", build(qlinear_graph(rows=64), VNNI_512).assembly())
    few_rows = build(qlinear_graph(rows=15), AMX).assembly()  # a tile would cost as much for 1 row as for 16
    assert re.search(r"vpdpbusd\s.*zmm", few_rows) and not re.search(r"tdpb|tilecfg|\$4131,", few_rows)


AMX_SHAPES = [(1, 64, 16), (16, 64, 32), (17, 100, 33), (33, 128, 17), (70, 200, 70), (5, 1, 1), (64, 192, 96),
              (15, 70, 40), (40, 1, 3)]  # below 16 rows (a part's, with 3 threads too): VNNI on the AMX panels


@pytest.mark.skipif(not AMX_HOST, reason="needs a host with AMX int8 tiles (Sapphire Rapids or later)")
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("rows, depth, columns", AMX_SHAPES)
@pytest.mark.parametrize("x_dtype, out", [("u8", "i8"), ("i8", "f32"), ("i8", "u8")])
def test_qlinear_on_amx_tiles_is_exact(rows, depth, columns, x_dtype, out, threads):
    """Tails of rows (a tile of fewer than 16 or 32 rows), of columns (within a 16-column tile and
    past it) and of depth (x's rows copied with zeros to a multiple of 64 bytes; none when it is one)."""
    rng = np.random.default_rng(rows * depth + columns)
    low, high = LIMITS[x_dtype]
    operands = [rng.integers(low, high + 1, (rows, depth)).astype(DType[x_dtype].numpy),
                rng.integers(-128, 128, (depth, columns)).astype(np.int8),
                rng.integers(-2**16, 2**16, columns).astype(np.int32),
                (rng.uniform(0.1, 10, columns) / (depth * 128)).astype(np.float32), np.int32(low + 3), np.int32(1)]
    check((operands, {"dtype": out, "activation": None}), AMX, threads=threads)


def test_bad_operands_are_named():
    x, weight = np.zeros((2, 4), np.int8), np.zeros((4, 3), np.int8)
    good = [x, weight, np.zeros(3, np.int32), np.float32(1), np.int32(0), np.int32(0)]
    with pytest.raises(OpError, match="bias must be i32\\[3\\]"):
        ir.evaluate("qlinear", [*good[:2], np.zeros(4, np.int32), *good[3:]], {"dtype": DType.i8})
    with pytest.raises(OpError, match="i8 weight"):
        ir.evaluate("qlinear", [x, weight.astype(np.uint8), *good[2:]], {"dtype": DType.i8})
    with pytest.raises(OpError, match="dtype must be i8, u8 or f32"):
        ir.evaluate("qlinear", good, {"dtype": DType.i32})
    graph = ir.Graph()  # a weight that is not a constant cannot be packed
    nodes = [graph.add_input(name, TensorType.of(value)) for name, value in zip(("x", "w"), good)]
    nodes += [graph.constant(value, f"c{i}") for i, value in enumerate(good[2:])]
    graph.outputs = [graph.call("qlinear", nodes, {"dtype": "i8"})]
    with pytest.raises(CodegenError, match="must be a constant"):
        build(graph, "host")


@st.composite
def dynamic_cases(draw, max_size: int = 40):
    rows, depth, columns = (draw(st.integers(1, limit)) for limit in (2 * max_size, 3 * max_size, max_size))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["normal", "positive", "negative", "zeros", "nan"]))
    x = (rng.standard_normal((rows, depth)) * rng.uniform(0.01, 100)).astype(np.float32)
    x = {"positive": np.abs(x), "negative": -np.abs(x), "zeros": np.zeros_like(x)}.get(kind, x)
    if kind == "nan":
        x.reshape(-1)[rng.integers(x.size)] = np.nan
    weight = rng.integers(-127, 128, (depth, columns)).astype(np.int8)
    scale = rng.uniform(1e-4, 1e-1, columns).astype(np.float32)
    bias = rng.standard_normal(columns).astype(np.float32)
    activation = draw(st.sampled_from([None, "relu", "relu6", "gelu_tanh", "gelu_sigmoid", "gelu_exact"]))
    if draw(st.booleans()):  # fuse-residual's skip connection, added in the GEMM's epilogue
        skip = (rng.standard_normal((rows, columns)) * 10).astype(np.float32)
        return [x, weight, scale, bias, skip], {"activation": activation, "residual": True}
    return [x, weight, scale, bias], {"activation": activation}


def check_dynamic(case, target: str, threads: int = 1) -> None:
    """Bit for bit (the same f32 steps) up to the activation; a gelu (float_math's) within f32
    tolerance of numpy's."""
    operands, attrs = case
    graph, inputs = single_op_graph("dynamic_qlinear", operands, attrs, constants=(1, 2, 3))
    (actual,) = compile_and_run(graph, *inputs, target=target, threads=threads)
    expected = ir.interpret(graph, *inputs)
    if attrs["activation"] in (None, "relu", "relu6"):
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@given(dynamic_cases())
def test_dynamic_qlinear_is_exact_on_the_host(case):
    check_dynamic(case, "host")


@given(dynamic_cases(max_size=24))
@settings(max_examples=ARMV8_EXAMPLES)
def test_dynamic_qlinear_is_exact_on_the_host_in_parts(case):
    """Each part quantizes x with the whole tensor's range, codes its own rows, multiplies its own
    block (by rows or by columns, as GemmSplit picks) and adds its columns' bias."""
    check_dynamic(case, "host", threads=3)


@pytest.mark.parametrize("rows, depth, columns", [(1, 64, 200), (3, 50, 130), (40, 30, 20)])
def test_dynamic_qlinear_in_parts_by_rows_and_by_columns(rows, depth, columns):
    """A matrix-vector product splits by columns (each part its multipliers and bias), tall x by rows."""
    rng = np.random.default_rng(rows)
    operands = [rng.standard_normal((rows, depth)).astype(np.float32),
                rng.integers(-127, 128, (depth, columns)).astype(np.int8),
                rng.uniform(1e-3, 1e-1, columns).astype(np.float32), rng.standard_normal(columns).astype(np.float32)]
    check_dynamic((operands, {"activation": "relu"}), "host", threads=2)


@pytest.mark.parametrize("target", ["host", "armv8"])
@pytest.mark.parametrize("rows, depth", [(1, 120), (2, 60), (1, 121), (1, 136)])
def test_dynamic_qlinear_compiles_for_every_size_of_x(target, rows, depth):
    """x's range was a scalar loop of minnum/maxnum left to LLVM's loop vectorizer, whose cost models
    disagreed at these sizes of x: an assertion that aborted the process (now written in vectors)."""
    rng = np.random.default_rng(depth)
    operands = [rng.standard_normal((rows, depth)).astype(np.float32),
                rng.integers(-127, 128, (depth, 8)).astype(np.int8),
                rng.uniform(1e-3, 1e-1, 8).astype(np.float32), rng.standard_normal(8).astype(np.float32)]
    check_dynamic((operands, {"activation": None}), target)


@pytest.mark.parametrize("target", ["armv8", "armv8.2-a+dotprod"])
@given(case=dynamic_cases(max_size=24))
@settings(max_examples=ARMV8_EXAMPLES, deadline=None)
def test_dynamic_qlinear_is_exact_on_armv8(target, case):
    check_dynamic(case, target, threads=2)


@pytest.mark.skipif(not AMX_HOST, reason="needs a host with AMX int8 tiles (Sapphire Rapids or later)")
@given(dynamic_cases(max_size=48))
def test_dynamic_qlinear_on_amx_tiles_is_exact(case):
    check_dynamic(case, AMX, threads=2)


def test_dynamic_parameters_cover_zero_and_the_range():
    from tensorforge.ir.ops_quant import dynamic_parameters

    scale, zero = dynamic_parameters(np.array([[-1.0, 3.0]], np.float32))
    assert scale == np.float32(4.0 / 255) and zero == np.int32(np.rint(-128 + 1.0 / scale))
    scale, zero = dynamic_parameters(np.array([[2.0, 3.0]], np.float32))  # the range widens to include 0
    assert scale == np.float32(3.0 / 255) and zero == -128
    assert dynamic_parameters(np.zeros((2, 2), np.float32)) == (np.float32(1), np.int32(-128))


@st.composite
def qconv_cases(draw, max_channels: int = 12):
    images, channels, out = draw(st.integers(1, 3)), draw(st.integers(1, max_channels)), draw(st.integers(1, 20))
    kernel, stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(st.integers(0, kernel))
    span = dilation * (kernel - 1) + 1
    height, width = (draw(st.integers(max(1, span - 2 * padding), 9)) for _ in range(2))
    x_dtype, dtype = draw(st.sampled_from(["i8", "u8"])), draw(st.sampled_from(["i8", "u8", "f32"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    low, high = LIMITS[x_dtype]
    x = rng.integers(low, high + 1, (images, channels, height, width)).astype(DType[x_dtype].numpy)
    weight = rng.integers(-127, 128, (out, channels, kernel, kernel)).astype(np.int8)
    bias = rng.integers(-2**14, 2**14, out).astype(np.int32)
    multiplier = (np.exp(rng.uniform(np.log(0.1), np.log(100.0), (out,) if draw(st.booleans()) else ()))
                  / (channels * kernel * kernel * 128.0)).astype(np.float32)
    x_zero = draw(st.sampled_from([low, high, int(rng.integers(low, high + 1))]))
    y_zero = int(rng.integers(*LIMITS.get(dtype, (-128, 127))))
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "dtype": dtype,
             "activation": draw(st.sampled_from([None, "relu"]))}
    return [x, weight, bias, multiplier, np.int32(x_zero), np.int32(y_zero)], attrs


def check_conv(case, target: str, threads: int = 1) -> None:
    operands, attrs = case
    graph, inputs = single_op_graph("qconv2d", operands, attrs, constants=(1, 2, 3, 4, 5))
    (actual,) = compile_and_run(graph, *inputs, target=target, threads=threads)
    np.testing.assert_array_equal(actual, ir.interpret(graph, *inputs))


@given(qconv_cases(), st.sampled_from([1, 2]))
def test_qconv2d_is_exact_on_the_host(case, threads):
    check_conv(case, "host", threads)


@pytest.mark.parametrize("target", ["armv8", "armv8.2-a+dotprod"])
@given(case=qconv_cases(max_channels=6))
@settings(max_examples=ARMV8_EXAMPLES, deadline=None)
def test_qconv2d_is_exact_on_armv8(target, case):
    check_conv(case, target)


def test_qconv2d_reference_pads_with_the_zero_point():
    x = np.full((1, 1, 1, 1), 7, np.int8)  # the only pixel is the zero point: everything is 0.0
    weight = np.ones((1, 1, 3, 3), np.int8)
    y = ir.evaluate("qconv2d", [x, weight, np.zeros(1, np.int32), np.float32(1), np.int32(7), np.int32(0)],
                    {"padding": 1, "dtype": DType.f32})
    np.testing.assert_array_equal(y, [[[[0.0]]]])


@pytest.mark.parametrize("target", ["host", "armv8"])
@pytest.mark.parametrize("dtype", ["u8", "f32"])
def test_qconv2d_splits_each_images_pixels_among_threads(target, dtype):
    """Two images of 11 x 13 output pixels on 2 threads: each thread takes whole row panels of every image
    (the second part fewer of them), and together they write every pixel exactly; the copy into
    [O, pixels] takes 37 channels as whole transposed tiles and a tail, pixels as blocks and a tail."""
    from tensorforge.codegen.ops.qlayers import _pixel_split

    rows = qgemm_tiling(Target.parse(target)).rows
    parts, per_part, last = _pixel_split(11 * 13, rows, 2)
    assert parts == 2 and per_part % rows == 0 and 0 < last < per_part
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (2, 5, 11, 13)).astype(np.uint8)
    weight = rng.integers(-127, 128, (37, 5, 3, 3)).astype(np.int8)  # 37 channels: whole tiles and a tail
    bias = rng.integers(-2**12, 2**12, 37).astype(np.int32)
    multiplier = rng.uniform(1e-4, 1e-3, 37).astype(np.float32)
    operands = [x, weight, bias, multiplier, np.int32(3), np.int32(9)]
    attrs = {"stride": 1, "padding": 1, "dilation": 1, "dtype": dtype, "activation": "relu"}
    graph, inputs = single_op_graph("qconv2d", operands, attrs, constants=(1, 2, 3, 4, 5))
    (actual,) = compile_and_run(graph, *inputs, target=target, threads=2)
    np.testing.assert_array_equal(actual, ir.interpret(graph, *inputs))
