"""Fuzzing through the public API: compiled outputs against the reference interpreter (issue 21, item 5).

Three generators feed `tfg.check` (every pass and the native code against `tfg.interpret`, float
tolerances rtol 1e-4 / atol 1e-5, one int8 code with quantize=):
    graphs     random ir.Graphs from tensorforge.testing.random_graphs
    modules    random tensorforge.nn stacks (Linear/ReLU/GELU/LayerNorm/Softmax..., Conv2d/BatchNorm2d/
               MaxPool2d/AvgPool2d/Flatten) with random sizes, strides and padding
    numpy      random numpy functions (+ - * /, np.exp/tanh/maximum, @, reshape, transpose, sum/mean
               over axes, broadcasting) traced by tfg.compile(lambda ...)
each on host at threads 1 and 2 and on armv8 (qemu), module stacks quantized to int8, and every
generator with NaN/inf planted in its inputs: the compiled outputs must then equal the
interpreter's, NaN where it has NaN. Any exception fails: a generated model is always valid.

    HYPOTHESIS_PROFILE=ci pytest tests/test_fuzz.py -q          # CI: a few examples each (~20 s)
    TF_FUZZ_EXAMPLES=2000 TF_FUZZ_ARMV8_EXAMPLES=300 TF_FUZZ_COUNT=/tmp/fuzz-host.count \\
        nice -n 10 pytest tests/test_fuzz.py -k "not armv8" -p no:cacheprovider --hypothesis-show-statistics

TF_FUZZ_EXAMPLES / TF_FUZZ_ARMV8_EXAMPLES set max_examples per test (host / armv8; default: the
profile's, armv8 a fifth of it); TF_FUZZ_COUNT names a file that gets one line per example run
("generator target threads"), to count a campaign.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import tensorforge as tfg
from tensorforge import nn
from tensorforge.testing import random_graphs


def _examples(variable: str, default: int) -> int:
    value = os.environ.get(variable)
    return int(value) if value else default


HOST = _examples("TF_FUZZ_EXAMPLES", settings().max_examples)
ARMV8 = _examples("TF_FUZZ_ARMV8_EXAMPLES", max(2, HOST // 5))
if os.environ.get("HYPOTHESIS_PROFILE") == "ci" and not os.environ.get("TF_FUZZ_EXAMPLES"):
    HOST, ARMV8 = 10, 3  # 12 properties x a few examples: about 20 s on 2 shared cores


def _fuzz(examples: int):
    """settings + a pytest-timeout for the whole test (a hang fails instead of blocking the run)."""
    def decorate(test):
        test = settings(max_examples=examples, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                               HealthCheck.filter_too_much])(test)
        return pytest.mark.timeout(60 + 10 * examples)(test)
    return decorate


def _count(generator: str, target: str, threads: int) -> None:
    path = os.environ.get("TF_FUZZ_COUNT")
    if path:
        with open(path, "a") as file:
            file.write(f"{generator} {target} {threads}\n")


def _check(model, inputs, target: str, threads: int, **options) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # threads=2 on a 1-core process warns; that is not a finding
        tfg.check(model, inputs, target=target, threads=threads, **options)


# --- random tensorforge.nn stacks ------------------------------------------------------------------

DENSE = ["linear", "relu", "gelu", "tanh", "sigmoid", "layernorm", "softmax"]
SPATIAL = ["conv", "batchnorm", "relu", "maxpool", "avgpool"]


def _describe(layers) -> str:
    """The stack as code-like text, for the failing example's notes."""
    def one(layer) -> str:
        fields = {name: value for name, value in vars(layer).items() if not isinstance(value, np.ndarray)
                  and value is not None}
        return f"{type(layer).__name__}({', '.join(f'{k}={v}' for k, v in fields.items())})"
    return "Sequential(" + ", ".join(one(layer) for layer in layers) + ")"


@st.composite
def module_stacks(draw, int8: bool = False):
    """(Sequential, x): an optional conv/pool head over [N, C, H, W], flattened, then a dense tail."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batch = draw(st.integers(1, 4))
    layers: list = []
    if draw(st.booleans()):
        shape = [batch, draw(st.integers(1, 4)), draw(st.integers(1, 9)), draw(st.integers(1, 9))]
        x = rng.standard_normal(shape).astype(np.float32)
        for kind in draw(st.lists(st.sampled_from(SPATIAL), min_size=1, max_size=4)):
            _, c, h, w = shape
            if kind == "conv":
                k = draw(st.integers(1, min(3, h + 2, w + 2)))
                pad = draw(st.integers(0, k // 2 + (k > 1)))
                stride = draw(st.integers(1, 2))
                if h + 2 * pad < k or w + 2 * pad < k:
                    continue
                groups = draw(st.sampled_from([g for g in (1, 2, c) if c % g == 0]))
                out = groups * draw(st.integers(1, 3))
                layers.append(nn.Conv2d(c, out, k, stride=stride, padding=pad, bias=draw(st.booleans()),
                                        groups=groups, rng=rng))
                if layers[-1].bias is not None:
                    layers[-1].bias[...] = rng.normal(0, 0.3, out)
                shape = [batch, out, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1]
            elif kind == "batchnorm":
                norm = nn.BatchNorm2d(c)
                norm.gamma[...], norm.beta[...] = rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c)
                norm.running_mean[...], norm.running_var[...] = rng.normal(0, 0.2, c), rng.uniform(0.5, 2, c)
                layers.append(norm)
            elif kind == "relu":
                layers.append(nn.ReLU())
            else:
                k = draw(st.integers(1, min(3, h, w)))
                stride = draw(st.integers(1, k))
                pad = draw(st.integers(0, k // 2))
                layers.append((nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)(k, stride, pad))
                shape = [batch, c, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1]
        layers.append(nn.Flatten())
        features = math.prod(shape[1:])
    else:
        features = draw(st.integers(1, 24))
        x = rng.standard_normal((batch, features)).astype(np.float32)
    kinds = draw(st.lists(st.sampled_from(DENSE), min_size=1, max_size=5))
    if int8 and "linear" not in kinds:
        kinds.insert(0, "linear")
    for kind in kinds:
        if kind == "linear":
            out = draw(st.integers(1, 24))
            layers.append(nn.Linear(features, out, bias=draw(st.booleans()), rng=rng))
            if layers[-1].bias is not None:
                layers[-1].bias[...] = rng.normal(0, 0.3, out)
            features = out
        elif kind == "layernorm" and layers and not isinstance(layers[-1], nn.Linear):
            continue  # after squashing layers the rows barely vary: normalizing them magnifies f32 rounding
        elif kind == "layernorm":
            norm = nn.LayerNorm(features)
            norm.gamma[...], norm.beta[...] = rng.uniform(0.5, 1.5, features), rng.normal(0, 0.2, features)
            layers.append(norm)
        else:
            layers.append({"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
                           "softmax": nn.Softmax}[kind]())
    model = nn.Sequential(*layers)
    note(f"model: {_describe(layers)}\nx: {x.shape}")
    return model, x


# --- random numpy functions ------------------------------------------------------------------------

NUMPY_STEPS = ["add", "sub", "mul", "div", "exp", "tanh", "maximum", "matmul", "gram", "reshape", "transpose",
               "sum", "mean", "center", "scale_rows", "scalar"]


def _step(draw, x: np.ndarray, b: np.ndarray | None, rng) -> tuple[str, object] | None:
    """One step (a description and a function of (value, b)) that fits the shape of `x`, or None."""
    kind = draw(st.sampled_from(NUMPY_STEPS))
    rank = x.ndim
    other = "b" if b is not None and b.shape == x.shape and draw(st.booleans()) else None
    const = (rng.standard_normal(x.shape[draw(st.integers(0, rank)):]) * 0.5).astype(np.float32)
    if kind in ("add", "sub", "mul", "maximum"):
        fn = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum}[kind]
        if other:
            return f"{kind}(v, b)", lambda v, b: fn(v, b)
        if kind == "maximum" and draw(st.booleans()):
            return "maximum(v, 0)", lambda v, b: np.maximum(v, 0.0)
        if draw(st.booleans()):
            return f"{kind}(c{const.shape}, v)", lambda v, b: fn(const, v)
        return f"{kind}(v, c{const.shape})", lambda v, b: fn(v, const)
    if kind == "div":  # a denominator bounded away from zero
        if other:
            return "v / (1 + b*b)", lambda v, b: v / (1 + b * b)
        return "v / (1.5 + tanh(c))", lambda v, b: v / (1.5 + np.tanh(const))
    if kind == "exp":
        return "exp(v)", lambda v, b: np.exp(v)
    if kind == "tanh":
        return "tanh(v)", lambda v, b: np.tanh(v)
    if kind == "matmul" and rank >= 1:
        w = (rng.standard_normal((x.shape[-1], draw(st.integers(1, 6)))) / math.sqrt(x.shape[-1])).astype(np.float32)
        return f"v @ w{w.shape}", lambda v, b: v @ w
    if kind == "gram" and rank == 2:
        return "v @ v.T / n", lambda v, b: (v @ v.T) / np.float32(x.shape[1])
    if kind == "reshape" and x.size > 0:
        sides = [d for d in range(1, x.size + 1) if x.size % d == 0]
        first = draw(st.sampled_from(sides))
        shape = draw(st.sampled_from([(-1,), (first, -1), (-1, first, 1)]))
        return f"v.reshape{shape}", lambda v, b: v.reshape(shape)
    if kind == "transpose" and rank >= 2:
        if rank == 2 and draw(st.booleans()):
            return "v.T", lambda v, b: v.T
        perm = tuple(draw(st.permutations(range(rank))))
        return f"v.transpose{perm}", lambda v, b: v.transpose(perm)
    if kind in ("sum", "mean") and rank >= 1:
        axis = draw(st.one_of(st.integers(-rank, rank - 1), st.just(None)))
        keepdims = draw(st.booleans())
        fn = np.sum if kind == "sum" else np.mean
        if draw(st.booleans()):
            return f"v.{kind}(axis={axis}, keepdims={keepdims})", \
                lambda v, b: getattr(v, kind)(axis=axis, keepdims=keepdims)
        return f"np.{kind}(v, axis={axis}, keepdims={keepdims})", lambda v, b: fn(v, axis=axis, keepdims=keepdims)
    if kind == "center" and rank >= 1:
        return "v - v.mean(axis=-1, keepdims=True)", lambda v, b: v - v.mean(axis=-1, keepdims=True)
    if kind == "scale_rows" and rank >= 2:
        c = rng.uniform(0.5, 2, x.shape[0]).astype(np.float32)
        return "v * c[:, None]", lambda v, b: v * c.reshape((-1,) + (1,) * (rank - 1))
    if kind == "scalar":
        value = float(np.float32(draw(st.floats(-3, 3, allow_nan=False, width=32))))
        op = draw(st.sampled_from(["+", "*", "-r", "**2"]))
        fns = {"+": lambda v, b: v + value, "*": lambda v, b: v * value, "-r": lambda v, b: value - v,
               "**2": lambda v, b: v ** 2}
        return f"v {op} {value}", fns[op]
    return None


@st.composite
def numpy_functions(draw):
    """(function, inputs, description): 1 to 6 steps over an f32 `a` (and maybe a `b` of its shape).
    Values larger than 8 pass through tanh, so f32 tolerances test the compiler, not the conditioning."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape).astype(np.float32) if draw(st.booleans()) else None
    steps, value, lines = [], a, []
    for _ in range(draw(st.integers(1, 6))):
        step = _step(draw, value, b, rng)
        if step is None:
            continue
        text, fn = step
        with np.errstate(all="ignore"):
            new = np.asarray(fn(value, b), np.float32)
        if new.ndim == 0:  # keep an array output of rank >= 1 to compose further
            continue
        if not np.all(np.isfinite(new)) or np.abs(new).max(initial=0) > 8:
            text, fn = f"tanh({text})", (lambda f: lambda v, b: np.tanh(f(v, b)))(fn)
            new = np.tanh(new)
        steps.append(fn)
        lines.append(text)
        value = new

    def function(*args):
        v, second = args[0], (args[1] if len(args) > 1 else None)
        for fn in steps:
            v = fn(v, second)
        return v

    inputs = (a,) if b is None else (a, b)
    note("numpy function: " + " ; ".join(lines) + f"\ninputs: {[i.shape for i in inputs]}")
    return function, inputs


# --- non-finite inputs -----------------------------------------------------------------------------

def _poison(draw, inputs: tuple) -> tuple:
    """The same inputs with NaN, +inf or -inf planted at a few drawn positions of the float ones."""
    poisoned = []
    for array in inputs:
        array = np.array(array, copy=True)
        if array.dtype.kind == "f" and array.size:
            for _ in range(draw(st.integers(1, 3))):
                index = draw(st.integers(0, array.size - 1))
                array.flat[index] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        poisoned.append(array)
    return tuple(poisoned)


def _check_nonfinite(model, inputs: tuple, target: str) -> None:
    """Compiled outputs equal the interpreter's on non-finite inputs (NaN where it has NaN; tfg.check
    compares with equal_nan), or the compile refuses them with a clear ValueError."""
    try:
        _check(model, inputs, target, 1)
    except tfg.CheckError:
        raise
    except ValueError as error:  # an InputError naming the input, e.g.
        assert str(error), "a ValueError without a message"


# --- properties ------------------------------------------------------------------------------------

ANY_MODEL = st.one_of(random_graphs().map(lambda c: ("graphs", c)),
                      module_stacks().map(lambda c: ("modules", (c[0], (c[1],)))),
                      numpy_functions().map(lambda c: ("numpy", c)))
THREADS = [pytest.param("host", 1, id="host-t1"), pytest.param("host", 2, id="host-t2")]


@pytest.mark.parametrize("target, threads", THREADS)
@_fuzz(HOST)
@given(case=random_graphs())
def test_random_graphs_match_the_interpreter(case, target, threads):
    graph, inputs = case
    note(str(graph))
    _check(graph, inputs, target, threads)
    _count("graphs", target, threads)


@pytest.mark.parametrize("target, threads", THREADS)
@_fuzz(HOST)
@given(case=module_stacks())
def test_module_stacks_match_the_interpreter(case, target, threads):
    model, x = case
    _check(model, x, target, threads)
    _count("modules", target, threads)


@pytest.mark.parametrize("target, threads", THREADS)
@_fuzz(HOST)
@given(case=numpy_functions())
def test_numpy_functions_match_the_interpreter(case, target, threads):
    function, inputs = case
    _check(function, inputs, target, threads)
    _count("numpy", target, threads)


@_fuzz(ARMV8)
@given(case=ANY_MODEL)
def test_armv8_matches_the_interpreter(case):
    generator, (model, inputs) = case
    note(str(model) if isinstance(model, tfg.Graph) else "")
    _check(model, inputs if len(inputs) > 1 else inputs[0], "armv8", 1)
    _count(generator, "armv8", 1)


@pytest.mark.parametrize("threads", [1, 2])
@_fuzz(HOST)
@given(case=module_stacks(int8=True), data=st.data())
def test_int8_module_stacks_match_their_quantized_graph(case, threads, data):
    model, x = case
    calibration = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal(
        (16,) + x.shape[1:]).astype(np.float32)
    _check(model, x, "host", threads, quantize="int8", calibration=calibration)
    _count("modules-int8", "host", threads)


@_fuzz(max(2, ARMV8 // 2))
@given(case=module_stacks(int8=True), data=st.data())
def test_int8_module_stacks_on_armv8(case, data):
    model, x = case
    calibration = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal(
        (16,) + x.shape[1:]).astype(np.float32)
    _check(model, x, "armv8", 1, quantize="int8", calibration=calibration)
    _count("modules-int8", "armv8", 1)


def _nonfinite(case, data, target: str) -> None:
    generator, (model, inputs) = case
    note(str(model) if isinstance(model, tfg.Graph) else "")
    poisoned = _poison(data.draw, inputs)
    note(f"poisoned inputs: {poisoned}")
    _check_nonfinite(model, poisoned if len(poisoned) > 1 else poisoned[0], target)
    _count(f"{generator}-nonfinite", target, 1)


@_fuzz(HOST)
@given(case=ANY_MODEL, data=st.data())
def test_nonfinite_inputs_give_the_interpreters_nans(case, data):
    _nonfinite(case, data, "host")


@_fuzz(max(2, ARMV8 // 2))
@given(case=ANY_MODEL, data=st.data())
def test_nonfinite_inputs_on_armv8(case, data):
    _nonfinite(case, data, "armv8")
