"""Post-training INT8 (quant/quantize.py, quant/insert_quant.py, passes/lower_quant.py).

The QDQ graph stays close to f32; lower-quant's integer graph is within one code of the QDQ graph
it came from; the compiled integer graph equals the interpreted one exactly (host, armv8, armv8.2
with dotprod); chains of layers stay int8; the guard keeps bad layers in f32; bad calls are named.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorforge as tf
from tensorforge import ir, nn
from tensorforge.models import mlp
from tensorforge.passes import PassContext, run_pipeline
from tensorforge.passes.lower_quant import lower_quant

ARMV8_EXAMPLES = min(4, settings.default.max_examples)


def random_mlp(seed: int, widths: tuple[int, ...], batch: int):
    rng = np.random.default_rng(seed)
    model = mlp(widths, seed=seed)
    x = rng.standard_normal((batch, widths[0])).astype(np.float32)
    calibration = rng.standard_normal((4 * batch, widths[0])).astype(np.float32)
    return model, x, calibration


def lowered(graph: ir.Graph) -> ir.Graph:
    graph = graph.copy()
    lower_quant(graph)
    ir.verify(graph)
    return graph


def ops(graph: ir.Graph) -> list[str]:
    return [node.op for node in graph.nodes if node.op not in ("input", "constant")]


widths_strategy = st.lists(st.integers(1, 40), min_size=2, max_size=4).map(tuple)


@given(st.integers(0, 2**16), widths_strategy, st.integers(1, 9),
       st.sampled_from(["minmax", "percentile", "entropy"]), st.booleans(), st.sampled_from(["i8", "u8"]))
def test_lowered_graph_is_within_one_code_of_the_qdq_graph(seed, widths, batch, method, per_channel, dtype):
    model, x, calibration = random_mlp(seed, widths, batch)
    config = tf.QuantConfig(method=method, per_channel=per_channel, activation_dtype=dtype, sqnr_budget=None)
    qdq, report = tf.quantize(tf.trace(model, x), calibration, config)
    assert len(report.quantized) == len(widths) - 1
    integer = lowered(qdq)
    assert ops(integer).count("qlinear") == len(widths) - 1 and "linear" not in ops(integer)
    expected, actual = ir.interpret(qdq, x), ir.interpret(integer, x)
    # the last layer returns f32: acc * sx * sw; the QDQ graph rounds its inputs the same way but the
    # int8 path rounds every hidden value once (to its code) where QDQ rounds the f32 sum: one code
    # of the hidden layers' scale, carried through the next layer's weights.
    tolerance = 2.5 * np.abs(expected).max() / 127 + 1e-6 if len(widths) > 2 else 1e-4 * np.abs(expected).max() + 1e-5
    np.testing.assert_allclose(actual, expected, atol=tolerance, rtol=0)


def test_an_int8_chain_has_no_f32_between_its_layers():
    model, x, calibration = random_mlp(0, (16, 32, 24, 8), 4)
    integer = lowered(tf.quantize(tf.trace(model, x), calibration)[0])
    assert ops(integer) == ["quantize", "qlinear", "qlinear", "qlinear"]
    layers = [node for node in integer.nodes if node.op == "qlinear"]
    assert [node.dtype for node in layers] == [ir.DType.i8, ir.DType.i8, ir.DType.f32]
    assert [node.attrs["activation"] for node in layers] == ["relu", "relu", None]


def test_a_hidden_value_with_another_user_is_not_requantized_away():
    rng = np.random.default_rng(1)
    first, second, relu = nn.Linear(8, 8, rng=rng), nn.Linear(8, 4, rng=rng), nn.ReLU()

    def model(x):
        hidden = relu(first(x))
        return second(hidden), hidden  # the relu's value is also an output

    x = rng.standard_normal((3, 8)).astype(np.float32)
    qdq, _ = tf.quantize(tf.trace(model, x), rng.standard_normal((12, 8)).astype(np.float32),
                         tf.QuantConfig(sqnr_budget=None))
    integer = lowered(qdq)
    layers = [node for node in integer.nodes if node.op == "qlinear"]
    assert [node.dtype for node in layers] == [ir.DType.f32, ir.DType.f32]  # the first feeds an f32 relu
    assert "relu" in ops(integer) and "quantize" in ops(integer)
    for actual, expected in zip(ir.interpret(integer, x), ir.interpret(qdq, x)):
        np.testing.assert_allclose(actual, expected, atol=0.05 * np.abs(expected).max() + 1e-6)


def compiled_equals_interpreted(graph: ir.Graph, x: np.ndarray, target: str, threads: int = 1) -> None:
    with tf.compile(graph, target=target, threads=threads) as compiled:
        actual = compiled(x)
        final = compiled.snapshots[-1][1]
    assert "qlinear" in ops(final)
    np.testing.assert_array_equal(actual, ir.interpret(final, x))  # integer path: bit for bit, f32 end too


@given(st.integers(0, 2**16), widths_strategy, st.integers(1, 9))
def test_compiled_int8_model_equals_its_interpreted_graph_on_the_host(seed, widths, batch):
    model, x, calibration = random_mlp(seed, widths, batch)
    qdq, _ = tf.quantize(tf.trace(model, x), calibration, tf.QuantConfig(sqnr_budget=None))
    compiled_equals_interpreted(qdq, x, "host", threads=2)


@pytest.mark.parametrize("target", ["armv8", "armv8.2-a+dotprod"])
@given(seed=st.integers(0, 2**16), widths=widths_strategy, batch=st.integers(1, 5))
@settings(max_examples=ARMV8_EXAMPLES, deadline=None)
def test_compiled_int8_model_equals_its_interpreted_graph_on_armv8(target, seed, widths, batch):
    model, x, calibration = random_mlp(seed, widths, batch)
    qdq, _ = tf.quantize(tf.trace(model, x), calibration, tf.QuantConfig(sqnr_budget=None))
    compiled_equals_interpreted(qdq, x, target)


def test_the_guard_judges_the_worst_output_channel():
    """One weight of 1000 among weights of ~0.1, per-tensor scales: 31 of 32 output columns round to exact
    zeros. The layer's SQNR over its whole output is 40.7 dB (it was kept int8); its worst channel's ~0 dB."""
    rng = np.random.default_rng(0)
    layer = nn.Linear(64, 32, rng=rng)
    layer.weight[...] = rng.standard_normal(layer.weight.shape).astype(np.float32) * 0.1
    layer.weight[3, 5] = 1000.0
    x = rng.standard_normal((16, 64)).astype(np.float32)
    calibration = rng.standard_normal((256, 64)).astype(np.float32)
    cm = tf.compile(layer, x, quantize=tf.QuantConfig(per_channel=False), calibration=calibration)
    (_, _, sqnr, decision, worst), = cm.quant_report().rows
    assert sqnr > 30.0 and worst < 1.0 and decision == "fp32 (a channel below 20 dB)"
    assert "a channel below 20 dB" in str(cm.quant_report())
    reference = tf.interpret(tf.trace(layer, x), x)
    np.testing.assert_allclose(cm(x), reference, rtol=1e-4, atol=1e-3)  # f32: no column of zeros
    # per output channel weight scales handle the outlier: that layer stays int8
    _, report = tf.quantize(tf.trace(layer, x), calibration, tf.QuantConfig(per_channel=True))
    (_, _, sqnr, decision, worst), = report.rows
    assert sqnr >= 30.0 and worst >= 20.0 and decision == "int8"


def test_worst_channel_sqnr_by_hand():
    reference = np.array([[1.0, 10.0, 0.0], [1.0, 10.0, 0.0]])
    approximation = np.array([[1.1, 10.0, 0.0], [0.9, 10.1, 0.0]])
    # channel 0: signal 2, noise 0.02 -> 20 dB; channel 1: 200 / 0.01 -> 43 dB; channel 2: exact, not judged
    assert tf.quant.worst_channel_sqnr_db(reference, approximation, axis=1) == pytest.approx(20.0)
    assert tf.quant.worst_channel_sqnr_db(reference, reference, axis=1) == float("inf")
    assert tf.quant.worst_channel_sqnr_db(reference, approximation + [0, 0, 1e-3], axis=1) == float("-inf")


def test_the_guard_keeps_a_layer_with_an_outlier_input_in_f32():
    rng = np.random.default_rng(3)
    model = mlp((32, 32, 8), seed=3)
    calibration = rng.standard_normal((256, 32)).astype(np.float32)
    calibration[:, 0] *= 1000.0  # one input a thousand times the others, which the layer ignores:
    model.layers[0].weight[0] = 0.0  # its range sets the per-tensor scale, and the signal drowns in its steps
    x = calibration[:4]
    config = tf.QuantConfig(method="minmax")
    _, report = tf.quantize(tf.trace(model, x), calibration, config)
    (first, sqnr, decision), (_, sqnr_2, decision_2) = [(row[0], row[2], row[3]) for row in report.rows]
    assert sqnr < 30.0 and decision.startswith("fp32")
    assert sqnr_2 >= 30.0 and decision_2 == "int8"
    assert report.weight_bytes == (32 * 32 * 4 + 32 * 8 * 4, 32 * 32 * 4 + 32 * 8)
    _, everything = tf.quantize(tf.trace(model, x), calibration, tf.QuantConfig(method="minmax", sqnr_budget=None))
    assert len(everything.quantized) == 2
    assert "fp32 (below 30 dB)" in str(report) and "SQNR" in str(report)


def test_tinytorch_scheme_keeps_asymmetric_weights_in_qdq_form():
    model, x, calibration = random_mlp(4, (12, 10, 6), 2)
    qdq, report = tf.quantize(tf.trace(model, x), calibration, tf.QuantConfig(method="tinytorch", sqnr_budget=None))
    codes = [node for node in qdq.nodes if node.op == "constant" and node.dtype is ir.DType.i8]
    weight = model.layers[0].weight
    low, high = float(weight.min()), float(weight.max())
    scale = np.float32((high - low) / 255.0)
    zero_point = int(np.clip(np.round(-128.0 - low / scale), -128, 127))
    expected = np.clip(np.round(weight / scale) + zero_point, -128, 127)  # TinyTorch's formula, ties aside
    assert np.mean(codes[0].value == expected) > 0.99
    assert "qlinear" not in ops(lowered(qdq))
    assert all(row[3] == "int8 weights, f32 compute" for row in report.rows)
    result = run_pipeline(qdq.copy(), PassContext(opt_level=2))
    np.testing.assert_allclose(ir.interpret(result.graph, x), ir.interpret(qdq, x), rtol=1e-4, atol=1e-5)


def test_bad_quantize_calls_are_named():
    model, x, calibration = random_mlp(5, (6, 4), 2)
    with pytest.raises(TypeError, match="needs calibration"):
        tf.compile(model, x, quantize="int8")
    with pytest.raises(ValueError, match="must be 'int8' or a tf.QuantConfig"):
        tf.compile(model, x, quantize="int4", calibration=calibration)
    with pytest.raises(ValueError, match=r"samples of shape \[5\], the model takes \[6\]"):
        tf.compile(model, x, quantize="int8", calibration=calibration[:, :5])
    with pytest.raises(ValueError, match="QuantConfig.method"):
        tf.QuantConfig(method="kmeans")
    with tf.compile(model, x) as compiled, pytest.raises(ValueError, match="without quantize"):
        compiled.quant_report()


def test_dynamic_quantization_needs_no_calibration_and_stays_close_to_f32():
    model, x, calibration = random_mlp(6, (30, 20, 10), 8)
    with tf.compile(model, x, quantize=tf.QuantConfig(dynamic=True)) as compiled:
        final = compiled.snapshots[-1][1]
        assert ops(final).count("dynamic_qlinear") == 2 and "relu" not in ops(final)  # relu fused into the first
        actual = compiled(x)
        np.testing.assert_array_equal(actual, ir.interpret(final, x))
        assert [row[3] for row in compiled.quant_report().rows] == ["int8", "int8"]
    expected = ir.interpret(tf.trace(model, x), x)
    assert np.abs(actual - expected).max() < 0.05 * np.abs(expected).max()
    _, report = tf.quantize(tf.trace(model, x), calibration, tf.QuantConfig(dynamic=True))
    assert all(row[2] > 30.0 for row in report.rows)  # measured when calibration is given
    with pytest.raises(TypeError, match="needs calibration"):
        tf.quantize(tf.trace(model, x))


def test_dynamic_quantization_keeps_a_linear_s_fused_gelu():
    """A graph optimized before quantization has its gelus in the linears' epilogues (fuse-activation);
    dynamic quantization carries the activation into dynamic_qlinear, which computes it after + bias."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    graph = tf.Graph()
    value = graph.add_input("x", ir.TensorType.of(x))
    weight = graph.constant((rng.standard_normal((16, 8)) / 4).astype(np.float32), "w")
    graph.outputs = [graph.call("linear", [value, weight], {"activation": "gelu_tanh"})]
    quantized, _ = tf.quantize(graph, None, tf.QuantConfig(dynamic=True, sqnr_budget=None))
    [layer] = [node for node in quantized.nodes if node.op == "dynamic_qlinear"]
    assert layer.attrs["activation"] == "gelu_tanh"
    expected = ir.interpret(graph, x)
    assert np.abs(ir.interpret(quantized, x) - expected).max() < 0.05 * np.abs(expected).max()
    np.testing.assert_allclose(tf.compile(quantized)(x), ir.interpret(quantized, x), rtol=1e-4, atol=1e-5)


def small_cnn(seed: int, channels: int = 6):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Conv2d(2, channels, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(channels, 5, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(5 * 2 * 2, 3, rng=rng))
    x = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    return model, x, rng.standard_normal((16, 2, 8, 8)).astype(np.float32)


@given(st.integers(0, 2**16), st.integers(1, 8))
@settings(max_examples=min(10, settings.default.max_examples))
def test_a_cnn_runs_int8_through_its_pools_and_flatten(seed, channels):
    model, x, calibration = small_cnn(seed, channels)
    qdq, report = tf.quantize(tf.trace(model, x), calibration, tf.QuantConfig(sqnr_budget=None))
    integer = lowered(qdq)
    assert ops(integer) == ["quantize", "qconv2d", "max_pool2d", "qconv2d", "max_pool2d", "flatten", "qlinear"]
    assert [n.dtype for n in integer.nodes if n.op in ("max_pool2d", "flatten")] == [ir.DType.i8] * 3
    expected, actual = ir.interpret(qdq, x), ir.interpret(integer, x)
    np.testing.assert_allclose(actual, expected, atol=0.1 * np.abs(expected).max() + 1e-6)
    compiled_equals_interpreted(qdq, x, "host", threads=2)


def test_a_pool_with_another_user_keeps_the_conv_result_in_f32():
    model, x, calibration = small_cnn(7)
    graph = tf.trace(model, x)
    pool = next(node for node in graph.nodes if node.op == "max_pool2d")
    graph.outputs = [graph.outputs[0], pool]  # the pooled value is also an output: it must stay f32
    qdq, _ = tf.quantize(graph, calibration, tf.QuantConfig(sqnr_budget=None))
    integer = lowered(qdq)
    first = next(node for node in integer.nodes if node.op == "qconv2d")
    assert first.dtype is ir.DType.f32
    for actual, expected in zip(ir.interpret(integer, x), ir.interpret(qdq, x)):
        np.testing.assert_allclose(actual, expected, atol=0.1 * np.abs(expected).max() + 1e-6)


def unnamed_mlp() -> tuple[ir.Graph, np.ndarray]:
    """x -> linear -> relu -> linear with constants named by the graph's counter ("0", "1", ...)."""
    rng = np.random.default_rng(3)
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((4, 12), ir.DType.f32))
    hidden = graph.call("relu", [graph.call("linear", [x, graph.constant(rng.standard_normal((12, 16)).astype(
        np.float32)), graph.constant(rng.standard_normal(16).astype(np.float32))])])
    graph.outputs = [graph.call("linear", [hidden, graph.constant(rng.standard_normal((16, 5)).astype(np.float32))])]
    return graph, rng.standard_normal((4, 12)).astype(np.float32)


@pytest.mark.parametrize("dynamic", [True, False])
def test_constants_without_names_quantize(dynamic):
    """Names derived from a numbered constant ("7" -> "int8_7") stay valid value names."""
    graph, x = unnamed_mlp()
    assert graph.outputs[0].inputs[1].name.isdigit()
    calibration = None if dynamic else np.random.default_rng(4).standard_normal((32, 12)).astype(np.float32)
    quantized, report = tf.quantize(graph, calibration, tf.QuantConfig(dynamic=dynamic, sqnr_budget=None))
    quantized.verify()
    assert len(report.rows) == 2
    with tf.compile(quantized, x) as compiled:
        np.testing.assert_allclose(compiled(x), ir.interpret(graph, x), rtol=0.1, atol=0.1)


@pytest.mark.parametrize("dynamic", [True, False])
def test_a_transposed_constant_weight_quantizes(dynamic):
    """torch.export gives every nn.Linear as linear(x, transpose(W)) (ONNX's Gemm with transB too): such a
    layer is quantized like one with a constant weight (none of them were)."""
    rng = np.random.default_rng(5)
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((4, 12), ir.DType.f32))
    layers = []
    value = x
    for index, (fan_in, fan_out) in enumerate([(12, 16), (16, 5)]):
        weight = graph.constant(rng.standard_normal((fan_out, fan_in)).astype(np.float32), f"fc{index}.weight")
        transposed = graph.call("transpose", [weight], {"perm": (1, 0)})
        value = graph.call("linear", [value, transposed, graph.constant(np.zeros(fan_out, np.float32))])
        layers.append(value)
    graph.outputs = [value]
    inputs = rng.standard_normal((4, 12)).astype(np.float32)
    calibration = None if dynamic else rng.standard_normal((32, 12)).astype(np.float32)
    quantized, report = tf.quantize(graph, calibration, tf.QuantConfig(dynamic=dynamic, sqnr_budget=None))
    assert report.quantized == ["fc0", "fc1"]
    assert not any(node.op == "transpose" for node in quantized.nodes)
    expected = ir.interpret(graph, inputs)
    np.testing.assert_allclose(ir.interpret(quantized, inputs), expected, rtol=0.05, atol=0.05 * np.abs(expected).max())
    assert [node.op for node in graph.nodes].count("transpose") == 2  # the caller's graph is left as it was


@pytest.mark.parametrize("dynamic", [True, False])
def test_a_bias_added_after_a_linear_is_the_int8_layer_s_bias(dynamic):
    """ONNX's MatMul + Add(bias) imports as a bias-less linear and an add; quantization runs before the
    pipeline's fuse-bias, so it takes the bias first: the int8 layer adds it in its epilogue, no add is left."""
    rng = np.random.default_rng(8)
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((6, 12), ir.DType.f32))
    weight = graph.constant(rng.standard_normal((12, 10)).astype(np.float32) / 3, "fc.weight")
    bias = rng.standard_normal(10).astype(np.float32)
    graph.outputs = [graph.call("add", [graph.constant(bias, "fc.bias"), graph.call("linear", [x, weight])])]
    inputs = rng.standard_normal((6, 12)).astype(np.float32)
    calibration = None if dynamic else rng.standard_normal((32, 12)).astype(np.float32)
    quantized, report = tf.quantize(graph, calibration, tf.QuantConfig(dynamic=dynamic, sqnr_budget=None))
    assert report.quantized == ["fc"] and "add" not in ops(quantized)
    if dynamic:
        [layer] = [node for node in quantized.nodes if node.op == "dynamic_qlinear"]
        np.testing.assert_array_equal(layer.inputs[3].value, bias)  # (x, codes, scales, bias)
    expected = ir.interpret(graph, inputs)
    np.testing.assert_allclose(ir.interpret(quantized, inputs), expected, rtol=0.05, atol=0.05 * np.abs(expected).max())
    with tf.compile(quantized, inputs) as compiled:
        np.testing.assert_allclose(compiled(inputs), expected, rtol=0.05, atol=0.05 * np.abs(expected).max())


def test_a_written_out_gelu_after_a_dynamic_int8_layer_is_its_epilogue():
    """BERT's feed-forward as ONNX has it: MatMul, Add(bias), then x * 0.5 * (1 + erf(x / sqrt 2)). With
    dynamic int8 the layer takes the bias (quantize) and the gelu (the pipeline) in its epilogue."""
    rng = np.random.default_rng(9)
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((2, 5, 12), ir.DType.f32))
    weight = graph.constant(rng.standard_normal((12, 20)).astype(np.float32) / 3, "ff.weight")
    hidden = graph.call("add", [graph.constant(rng.standard_normal(20).astype(np.float32), "ff.bias"),
                                graph.call("linear", [x, weight])])
    erf = graph.call("erf", [graph.call("div", [hidden, graph.constant(np.float32(np.sqrt(2.0)))])])
    one_plus = graph.call("add", [erf, graph.constant(np.float32(1.0))])
    graph.outputs = [graph.call("mul", [graph.call("mul", [hidden, one_plus]), graph.constant(np.float32(0.5))])]
    inputs = rng.standard_normal((2, 5, 12)).astype(np.float32)
    with tf.compile(graph, inputs, quantize=tf.QuantConfig(dynamic=True, sqnr_budget=None)) as compiled:
        final = compiled.snapshots[-1][1]
        assert ops(final) == ["value_range", "dynamic_qlinear"]  # split-range: x has 8 rows or more
        assert final.outputs[0].attrs["activation"] == "gelu_exact"
        actual = compiled(inputs)
        np.testing.assert_allclose(actual, ir.interpret(final, inputs), rtol=1e-5, atol=1e-5)
    expected = ir.interpret(graph, inputs)
    assert np.abs(actual - expected).max() < 0.05 * np.abs(expected).max()


@pytest.mark.parametrize("skip_first", [False, True])
def test_a_skip_connection_after_a_dynamic_int8_layer_is_its_epilogue(skip_first):
    """BERT's attention output and feed-forward: the layer's result + the block's input. The residual
    is added after the bias and before the activation, as in linear; the op checks its operand."""
    rng = np.random.default_rng(10)
    graph = ir.Graph()
    x = graph.add_input("x", ir.TensorType((3, 4, 16), ir.DType.f32))
    skip = graph.add_input("skip", ir.TensorType((3, 4, 16), ir.DType.f32))
    weight = graph.constant(rng.standard_normal((16, 16)).astype(np.float32) / 4, "out.weight")
    layer = graph.call("linear", [x, weight, graph.constant(rng.standard_normal(16).astype(np.float32), "out.bias")])
    graph.outputs = [graph.call("relu", [graph.call("add", [skip, layer] if skip_first else [layer, skip])])]
    inputs = [rng.standard_normal((3, 4, 16)).astype(np.float32) for _ in range(2)]
    with tf.compile(graph, tuple(inputs), quantize=tf.QuantConfig(dynamic=True, sqnr_budget=None)) as compiled:
        final = compiled.snapshots[-1][1]
        assert ops(final) == ["value_range", "dynamic_qlinear"]  # split-range: x has 8 rows or more
        (layer,) = final.outputs
        assert layer.attrs["residual"] and layer.attrs["activation"] == "relu" and layer.inputs[4].name == "skip"
        actual = compiled(*inputs)
        np.testing.assert_allclose(actual, ir.interpret(final, *inputs), rtol=1e-5, atol=1e-5)
    with tf.compile(final, tuple(inputs), target="armv8") as cross:
        np.testing.assert_allclose(cross(*inputs), actual, rtol=1e-5, atol=1e-5)
    expected = ir.interpret(graph, *inputs)
    assert np.abs(actual - expected).max() < 0.05 * np.abs(expected).max()
    operand_types = [node.type for node in layer.inputs[:4]]
    with pytest.raises(ir.OpError, match="the residual must be f32"):
        ir.infer_type("dynamic_qlinear", [*operand_types, ir.TensorType((3, 16), ir.DType.f32)], {"residual": True})
