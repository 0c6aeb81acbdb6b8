"""Every op compiled for the host and for armv8 (run under qemu-user), against the numpy reference (ir.interpret).

One short test per op, over odd sizes and broadcasting; f32 within rtol 1e-4 / atol 1e-5,
integer and bool results exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from codegen_harness import compile_and_run, single_op_graph

from tensorforge import ir
from tensorforge.codegen.ops.conv.pool import clamps_taps, pool_scratch_bytes
from tensorforge.codegen.target import Target
from tensorforge.ir import DType, TensorType

RNG = np.random.default_rng(0)
SIZES = [1, 3, 17, 31, 64, 100]
INTS = [DType.i8, DType.u8, DType.i32, DType.i64]
F32 = DType.f32


def sample(shape, dtype: DType = F32, positive: bool = False) -> np.ndarray:
    """Random values of `dtype`: normal floats (scaled by 2), integers over their whole range."""
    if dtype is F32:
        values = RNG.standard_normal(shape).astype(np.float32) * np.float32(2)
        return np.abs(values) + np.float32(1e-3) if positive else values
    if dtype is DType.bool:
        return RNG.random(shape) < 0.5
    info = np.iinfo(dtype.numpy)
    return RNG.integers(info.min, info.max, size=shape, dtype=dtype.numpy, endpoint=True)


def assert_matches(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5, equal_nan=True)
    else:
        np.testing.assert_array_equal(actual, expected)


@pytest.fixture(params=["host", "armv8"])
def arch(request) -> str:
    """Every op test runs twice: JIT on the host, and the AArch64 build under qemu-user."""
    return request.param


def check_op(arch: str, op: str, operands: list[np.ndarray], attrs: dict | None = None,
             constants: tuple[int, ...] = ()) -> None:
    """Build `op(operands) {attrs}` (operands at positions `constants` become weights), compile for `arch`,
    run and compare with the reference."""
    graph, inputs = single_op_graph(op, operands, attrs, constants)
    (actual,) = compile_and_run(graph, *inputs, target=arch)
    assert_matches(actual, ir.interpret(graph, *inputs))


# --- elementwise ------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("size", SIZES)
def test_binary_f32(op, size, arch):
    check_op(arch, op, [sample((size,)), sample((size,), positive=op == "div")])


BROADCASTS = [((4, 1), (1, 5)), ((3, 17), (17,)), ((2, 3, 4), (3, 1)), ((), (5,)), ((31,), ()), ((1,), (31,)),
              ((2, 1, 3), (4, 1)), ((2, 3, 1, 5), (3, 7, 1))]


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
def test_binary_broadcasting(op, shapes, arch):
    check_op(arch, op, [sample(shapes[0]), sample(shapes[1])])


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
@pytest.mark.parametrize("dtype", INTS, ids=str)
@pytest.mark.parametrize("shapes", [((17,), (17,)), ((3, 1), (1, 31))], ids=str)
def test_binary_integers_wrap(op, dtype, shapes, arch):
    check_op(arch, op, [sample(shapes[0], dtype), sample(shapes[1], dtype)])


@pytest.mark.parametrize("op", ["add", "mul"])
def test_binary_bool(op, arch):
    check_op(arch, op, [sample((5, 7), DType.bool), sample((7,), DType.bool)])


def test_binary_with_constant_operand(arch):
    check_op(arch, "add", [sample((3, 17)), sample((17,))], constants=(1,))


@pytest.mark.parametrize("op", ["exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "neg"])
@pytest.mark.parametrize("size", [1, 17, 100])
def test_unary_f32(op, size, arch):
    check_op(arch, op, [sample((size,), positive=op in ("log", "sqrt"))])


SPECIAL = np.array([0.0, -0.0, 1e-8, -1e-8, 0.1, -0.1, 0.124, 0.126, 1.0, -3.0, 9.0, -9.0, 20.0, -20.0, 88.0,
                    -88.0, 100.0, -100.0, 1e30, -1e30, np.inf, -np.inf, np.nan], dtype=np.float32)


@pytest.mark.parametrize("op", ["exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "neg"])
def test_unary_special_values(op, arch):
    check_op(arch, op, [SPECIAL])


@pytest.mark.parametrize("approximation", ["tanh", "sigmoid", "exact"])
def test_gelu(approximation, arch):
    x = np.concatenate([np.linspace(-12, 12, 241, dtype=np.float32), SPECIAL])
    check_op(arch, "gelu", [x], {"approximation": approximation})


def test_gelu_exact_is_accurate_in_the_tails(arch):
    """Relative accuracy, also where 0.5 x (1 + erf) would cancel (the reference itself is only abs-accurate)."""
    from math import erfc, sqrt

    x = np.linspace(-9, 9, 1001, dtype=np.float32)
    graph = ir.Graph()
    graph.outputs = [graph.call("gelu", [graph.add_input("x", TensorType.of(x))], {"approximation": "exact"})]
    (actual,) = compile_and_run(graph, x, target=arch)
    exact = np.array([0.5 * v * erfc(-v / sqrt(2)) for v in x.astype(np.float64)])
    np.testing.assert_allclose(actual, exact, rtol=1e-5, atol=1e-37)
    small = np.abs(x) < 3
    np.testing.assert_allclose(actual[small], exact[small], rtol=1e-6, atol=1e-37)


def test_exp_is_accurate_to_about_one_ulp(arch):
    """exp is inline code (a polynomial), so it gets its own accuracy test, subnormal results included."""
    x = np.linspace(-110, 95, 200_001, dtype=np.float32)
    graph = ir.Graph()
    graph.outputs = [graph.call("exp", [graph.add_input("x", TensorType.of(x))])]
    (actual,) = compile_and_run(graph, x, target=arch)
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(np.float64))
    info = np.finfo(np.float32)
    normal = (exact >= info.tiny) & (exact <= info.max)
    subnormal = exact < info.tiny
    np.testing.assert_allclose(actual[normal], exact[normal], rtol=1.2e-7)
    np.testing.assert_allclose(actual[subnormal], exact[subnormal], rtol=0, atol=1.5e-45)
    assert np.all(actual[exact > info.max] == np.inf)


@pytest.mark.parametrize("op", ["relu", "neg"])
@pytest.mark.parametrize("dtype", INTS, ids=str)
def test_unary_integers(op, dtype, arch):
    check_op(arch, op, [sample((31,), dtype)])


def test_relu_bool(arch):
    check_op(arch, "relu", [sample((17,), DType.bool)])


# --- cast -------------------------------------------------------------------------------------

def cast_source(dtype: DType) -> np.ndarray:
    """Values every conversion handles: floats beyond the i8/u8 ranges, fractions, NaN and infinities."""
    if dtype is F32:
        return np.array([0, -0.5, 0.5, 1.7, -1.7, 127.9, 128.5, -128.5, -129, 255.5, 256, 300, -300, 1e6, -1e6,
                         3e8, -3e8, np.nan, np.inf, -np.inf], dtype=np.float32)
    return sample((31,), dtype)


@pytest.mark.parametrize("source", list(DType), ids=str)
@pytest.mark.parametrize("target", list(DType), ids=str)
def test_cast(source, target, arch):
    x = cast_source(source)
    check_op(arch, "cast", [x], {"dtype": target})


@pytest.mark.parametrize("target", [DType.i32, DType.i64], ids=str)
def test_cast_saturates_at_the_i32_i64_range(target, arch):
    """float -> int saturates and NaN -> 0, as the cast docstring says, at the edges of the wide ranges."""
    x = np.array([3e9, -3e9, 2.2e9, 1e20, -1e20, np.inf, -np.inf, np.nan, 5.9, -5.9], dtype=np.float32)
    graph = ir.Graph()
    graph.outputs = [graph.call("cast", [graph.add_input("x", TensorType.of(x))], {"dtype": target})]
    (actual,) = compile_and_run(graph, x, target=arch)
    info = np.iinfo(target.numpy)
    expected = np.array([info.max if v >= info.max else info.min if v <= info.min else 0 if np.isnan(v) else int(v)
                         for v in x.astype(np.float64)], dtype=target.numpy)
    np.testing.assert_array_equal(actual, expected)


# --- reductions and softmax -------------------------------------------------------------------

REDUCTIONS = [((100,), None), ((17,), (0,)), ((3, 31), (1,)), ((3, 31), (0,)), ((4, 5, 6), (0, 2)),
              ((4, 5, 6), (1,)), ((2, 3, 4, 5), (1, 2)), ((64, 3), None), ((3, 0), (1,))]


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
@pytest.mark.parametrize("op", ["reduce_sum", "reduce_mean", "reduce_max"])
@pytest.mark.parametrize("shape, axes", REDUCTIONS, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduce_f32(op, shape, axes, keepdims, arch):
    if op == "reduce_max" and 0 in shape:
        return  # type inference refuses to take the max of an empty axis
    check_op(arch, op, [sample(shape)], {"axes": axes, "keepdims": keepdims})


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_max"])
@pytest.mark.parametrize("dtype", [*INTS, DType.bool], ids=str)
def test_reduce_integers(op, dtype, arch):
    check_op(arch, op, [sample((5, 17), dtype)], {"axes": (1,)})
    check_op(arch, op, [sample((5, 17), dtype)], {"axes": (0,), "keepdims": True})


def test_reduce_max_propagates_nan(arch):
    x = sample((3, 17))
    x[1, 5] = np.nan
    check_op(arch, "reduce_max", [x], {"axes": (1,)})


@pytest.mark.parametrize("shape, axis", [((100,), 0), ((3, 17), -1), ((3, 17), 0), ((2, 31, 3), 1), ((1, 1), 1)],
                         ids=str)
def test_softmax(shape, axis, arch):
    check_op(arch, "softmax", [sample(shape) * np.float32(10)], {"axis": axis})


def test_softmax_large_values_do_not_overflow(arch):
    check_op(arch, "softmax", [np.array([[1000, 999, -1000], [-1e30, 0, 1e30]], dtype=np.float32)], {"axis": 1})


# --- data movement ----------------------------------------------------------------------------

ALL_DTYPES = list(DType)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_reshape_and_flatten(dtype, arch):
    check_op(arch, "reshape", [sample((3, 4, 5), dtype)], {"shape": (5, -1)})
    check_op(arch, "flatten", [sample((3, 4, 5), dtype)], {"start_axis": 1})


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("shape, perm", [((3, 17), (1, 0)), ((2, 3, 4), (2, 0, 1)), ((2, 3, 4, 5), (0, 2, 1, 3)),
                                         ((1, 31, 1), None)], ids=str)
def test_transpose(dtype, shape, perm, arch):
    check_op(arch, "transpose", [sample(shape, dtype)], {"perm": perm})


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(dtype, axis, arch):
    shapes = [(3, 4, 5), (3, 4, 5), (3, 4, 5)]
    shapes[1] = tuple(2 if a == axis % 3 else d for a, d in enumerate(shapes[1]))
    check_op(arch, "concat", [sample(shape, dtype) for shape in shapes], {"axis": axis})


def test_concat_with_a_constant_and_an_empty_part(arch):
    check_op(arch, "concat", [sample((2, 3)), sample((0, 3)), sample((1, 3))], {"axis": 0}, constants=(2,))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("starts, stops, steps", [((1,), (17,), (3,)), ((0, 2), (3, 100), (2, 5)),
                                                  ((-5, 0), (100, -1), (1, 1)), ((2, 2), (2, 5), (1, 1))], ids=str)
def test_slice(dtype, starts, stops, steps, arch):
    check_op(arch, "slice", [sample((17, 31), dtype)], {"starts": starts, "stops": stops, "steps": steps})


COPIES_IN_PARTS = [
    ("transpose", [(2, 3, 4, 5)], {"perm": (0, 2, 1, 3)}),  # 2 outer units: a third part copies nothing
    ("transpose", [(3, 17)], {"perm": (1, 0)}),
    ("transpose", [(1, 31, 7)], {"perm": (2, 0, 1)}),
    ("concat", [(3, 4, 5), (3, 2, 5), (3, 1, 5)], {"axis": 1}),
    ("concat", [(2, 3), (0, 3), (5, 3)], {"axis": 0}),
    ("slice", [(17, 31)], {"starts": (0, 2), "stops": (3, 100), "steps": (2, 5)}),
    ("slice", [(17, 31)], {"starts": (1,), "stops": (17,), "steps": (3,)}),
]


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("op, shapes, attrs", COPIES_IN_PARTS, ids=str)
def test_copies_in_parts(op, shapes, attrs, threads, arch):
    """A copy split among threads (each part its share of the outermost coalesced axis) equals the
    reference, also with more parts than that axis has units."""
    from unittest import mock

    from tensorforge.codegen.threads import parallel

    graph, inputs = single_op_graph(op, [sample(each, DType.i32) for each in shapes], attrs)
    with mock.patch.object(parallel, "PARALLEL_BYTES", 0):
        (actual,) = compile_and_run(graph, *inputs, target=arch, threads=threads)
    assert_matches(actual, ir.interpret(graph, *inputs))


# --- matmul and linear ------------------------------------------------------------------------

@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (3, 17, 31), (17, 64, 100), (5, 0, 3), (100, 3, 1)], ids=str)
def test_matmul(m, k, n, arch):
    check_op(arch, "matmul", [sample((m, k)), sample((k, n))])


@pytest.mark.parametrize("a, b", [((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 6)),
                                  ((1, 3, 4), (2, 4, 5))], ids=str)
def test_matmul_batch_broadcasting(a, b, arch):
    check_op(arch, "matmul", [sample(a), sample(b)])


@pytest.mark.parametrize("dtype", [*INTS, DType.bool], ids=str)
def test_matmul_integers_wrap(dtype, arch):
    check_op(arch, "matmul", [sample((3, 17), dtype), sample((17, 5), dtype)])


@pytest.mark.parametrize("x_shape", [(17,), (1, 17), (4, 64), (2, 3, 31)], ids=str)
@pytest.mark.parametrize("bias", [False, True])
def test_linear(x_shape, bias, arch):
    operands = [sample(x_shape), sample((x_shape[-1], 10))] + ([sample((10,))] if bias else [])
    check_op(arch, "linear", operands, constants=(1, 2))


def with_specials(values: np.ndarray) -> np.ndarray:
    """`values` (scaled by 4, so that relu6 clips at both ends) with a NaN, +inf and -inf."""
    values = values * np.float32(4)
    flat = values.reshape(-1)
    flat[0], flat[flat.size // 2], flat[-1] = np.nan, np.inf, -np.inf
    return values


@pytest.mark.parametrize("x_shape, depth", [((17,), 17), ((4, 64), 64), ((3, 5), 0)], ids=str)
def test_linear_relu6(x_shape, depth, arch):
    """activation="relu6" (fuse-activation's clip{min=0, max=6}) in the GEMM epilogue, and in the
    loop after a linear of depth 0; NaN stays NaN as through the clip op."""
    x = with_specials(sample((*x_shape[:-1], depth))) if depth else sample((*x_shape[:-1], 0))
    check_op(arch, "linear", [x, np.abs(sample((depth, 10))), sample((10,))], {"activation": "relu6"},
             constants=(1, 2))


@pytest.mark.parametrize("x, w, attrs", [((2, 3, 9, 8), (4, 3, 3, 3), {"padding": 1}),
                                         ((1, 16, 8, 8), (16, 16, 3, 3), {"padding": 1, "winograd": True}),
                                         ((1, 4, 7, 7), (4, 1, 3, 3), {"groups": 4, "padding": 1, "stride": 2})],
                         ids=["tiled", "winograd", "depthwise"])
def test_conv2d_relu6(x, w, attrs, arch):
    """conv2d's relu6 on each f32 path: the tiled GEMM conv, Winograd, depthwise; NaN stays NaN
    (not given to Winograd, whose transforms make an infinite input NaN: select-winograd's caveat)."""
    if attrs.get("winograd"):  # outputs of about 4 (Winograd's rounding is relative to its terms')
        x, w = sample(x), sample(w) / np.float32(12)
    else:
        x, w = with_specials(sample(x)), np.abs(sample(w))
    check_op(arch, "conv2d", [x, w, sample((w.shape[0],))],
             {**attrs, "activation": "relu6"}, constants=(1, 2))


@pytest.mark.parametrize("dtype", INTS, ids=str)
def test_linear_integers(dtype, arch):
    check_op(arch, "linear", [sample((3, 17), dtype), sample((17, 5), dtype), sample((5,), dtype)])


# --- conv2d, pooling, batch norm --------------------------------------------------------------

CONVOLUTIONS = [
    ((1, 1, 5, 5), (1, 1, 3, 3), {}),
    ((2, 3, 9, 8), (4, 3, 3, 3), {"padding": 1}),
    ((1, 4, 11, 10), (6, 2, 3, 2), {"stride": (2, 1), "padding": (1, 2), "groups": 2}),
    ((2, 3, 12, 12), (5, 3, 3, 3), {"dilation": 2, "padding": 2, "stride": 3}),
    ((1, 4, 7, 7), (4, 1, 3, 3), {"groups": 4, "padding": 1}),
    ((1, 2, 6, 6), (3, 2, 1, 1), {}),
]


@pytest.mark.parametrize("x, w, attrs", CONVOLUTIONS, ids=str)
@pytest.mark.parametrize("bias", [False, True])
def test_conv2d(x, w, attrs, bias, arch):
    operands = [sample(x), sample(w)] + ([sample((w[0],))] if bias else [])
    check_op(arch, "conv2d", operands, attrs, constants=(1, 2))


@pytest.mark.parametrize("dtype", [*INTS, DType.bool], ids=str)
def test_conv2d_integers(dtype, arch):
    check_op(arch, "conv2d", [sample((1, 2, 6, 5), dtype), sample((3, 2, 3, 3), dtype), sample((3,), dtype)],
             {"padding": 1})


POOLS = [((1, 1, 4, 4), {"kernel": 2}), ((2, 3, 9, 7), {"kernel": 3, "stride": 2, "padding": 1}),
         ((1, 2, 8, 11), {"kernel": (2, 3), "stride": (1, 2), "padding": (1, 1)}), ((1, 1, 5, 5), {"kernel": 5})]


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("shape, attrs", POOLS, ids=str)
def test_pool(op, shape, attrs, arch):
    check_op(arch, op, [sample(shape)], attrs)


# Padded max pools read their taps in place, clamped into the image (ops/conv/pool.py: clamps_taps).
CLAMPED_POOLS = [((1, 3, 40, 37), {"kernel": 3, "stride": 2, "padding": 1}),     # ResNet's, both edges
                 ((2, 2, 9, 13), {"kernel": 4, "stride": 1, "padding": 2}),      # corner windows: 2 x 2 taps
                 ((1, 2, 6, 35), {"kernel": (2, 4), "stride": (3, 1), "padding": (1, 2)})]


@pytest.mark.parametrize("shape, attrs", CLAMPED_POOLS, ids=str)
@pytest.mark.parametrize("threads", [1, 3])
def test_padded_max_pool_reads_clamped_taps(shape, attrs, threads):
    """Against the reference, with NaN and -inf in the input, split among threads (a padded copy
    would have kept one part), and with no scratch for a copy."""
    x = sample(shape)
    x.flat[::7], x.flat[3::11] = -np.inf, np.nan
    graph, inputs = single_op_graph("max_pool2d", [x], attrs, ())
    node = next(node for node in graph.nodes if node.op == "max_pool2d")
    assert clamps_taps(node) and pool_scratch_bytes(node, Target.parse("host")) == 0
    (actual,) = compile_and_run(graph, *inputs, threads=threads)
    assert_matches(actual, ir.interpret(graph, *inputs))


def test_padded_max_pool_reads_clamped_taps_on_armv8():
    graph, inputs = single_op_graph("max_pool2d", [sample(CLAMPED_POOLS[0][0])], CLAMPED_POOLS[0][1], ())
    (actual,) = compile_and_run(graph, *inputs, target="armv8", threads=2)
    assert_matches(actual, ir.interpret(graph, *inputs))


@pytest.mark.parametrize("dtype", INTS, ids=str)
def test_max_pool_integers(dtype, arch):
    check_op(arch, "max_pool2d", [sample((1, 2, 7, 7), dtype)], {"kernel": 3, "stride": 2, "padding": 1})


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 17), (2, 4, 5, 6)], ids=str)
def test_batch_norm(shape, arch):
    channels = shape[1]
    var = sample((channels,), positive=True)
    check_op(arch, "batch_norm", [sample(shape), sample((channels,)), sample((channels,)), sample((channels,)), var],
             {"eps": 1e-3}, constants=(1, 2, 3, 4))


def test_rank_zero_values(arch):
    """Scalars (shape ()) through several ops, compared with values worked out by hand."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((), F32))
    total = graph.call("reduce_sum", [x])
    moved = graph.call("transpose", [graph.call("add", [total, graph.constant(np.float32(0.5))])])
    biggest = graph.call("reduce_max", [graph.call("mul", [x, graph.constant(np.ones(3, np.float32))])])
    graph.outputs = [moved, biggest, graph.call("cast", [x], {"dtype": DType.i32})]
    moved_value, biggest_value, cast_value = compile_and_run(graph, np.array(-2.75, dtype=np.float32), target=arch)
    assert moved_value.shape == biggest_value.shape == cast_value.shape == ()
    assert (float(moved_value), float(biggest_value), int(cast_value)) == (-2.25, -2.75, -2)
