"""The ONNX importer against ONNX Runtime: ONNX's semantics converted onto the IR, op by op and model by model.

Each model is built here with onnx.helper (or exported by PyTorch into a temporary folder) and run
by ONNX Runtime on the same inputs; the imported graph must give the same outputs in the reference
interpreter and compiled for the host. Tolerances: fp32 rtol 1e-4 / atol 1e-5 (the engines sum in
different orders; integer and bool outputs are exact).
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import tensorforge as tfg  # noqa: E402
from tensorforge.frontend.onnx import OnnxImportError, UnsupportedOnnxOp, load_onnx  # noqa: E402
from tensorforge.ir import InputError  # noqa: E402

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT
I64 = TensorProto.INT64


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def model_of(nodes, inputs, outputs, initializers=(), opset=17):
    """A checked ModelProto of `nodes`; inputs/outputs as (name, element type, shape) triples."""
    graph = helper.make_graph(nodes, "test", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs],
                              [numpy_helper.from_array(value, name) for name, value in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def onnx_runtime(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_matches_onnx_runtime(model, feeds, compile_too=True):
    expected = onnx_runtime(model, feeds)
    graph = load_onnx(model, feeds)
    interpreted = tfg.interpret(graph, *feeds.values())
    interpreted = list(interpreted) if isinstance(interpreted, tuple) else [interpreted]
    results = [("interpreter", interpreted)]
    if compile_too:
        with tfg.compile(model, feeds) as compiled:
            outputs = compiled(*feeds.values())
            results.append(("host", list(outputs) if isinstance(outputs, tuple) else [outputs]))
    for label, actual in results:
        assert len(actual) == len(expected), label
        for want, got in zip(expected, actual):
            assert got.shape == want.shape and got.dtype == want.dtype, (label, got.shape, want.shape, got.dtype)
            if want.dtype.kind == "f":
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=label)
            else:
                np.testing.assert_array_equal(got, want, err_msg=label)
    return graph


def single(op, inputs, output_shape, attrs=None, initializers=(), opset=17, output_type=F, **feeds_override):
    """A one-node model of `op` over f32 inputs of the given shapes (names a, b, c...), and its feeds."""
    names = [chr(ord("a") + i) for i in range(len(inputs))]
    input_names = names + [name for name, _ in initializers]
    node = helper.make_node(op, input_names, ["y"], name=f"the_{op.lower()}", **(attrs or {}))
    model = model_of([node], [(n, F, s) for n, s in zip(names, inputs)], [("y", output_type, output_shape)],
                     initializers, opset)
    feeds = {n: feeds_override.get(n, rand(*s)) for n, s in zip(names, inputs)}
    return model, feeds


# --- ONNX's conventions the IR does not share -----------------------------------------------------

CONVS = {
    "symmetric pads": {"pads": [1, 1, 1, 1]},
    "asymmetric pads": {"pads": [0, 1, 2, 1], "strides": [2, 2]},
    "same_upper": {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    "same_lower": {"auto_pad": "SAME_LOWER", "strides": [2, 2]},
    "valid": {"auto_pad": "VALID"},
    "dilated": {"dilations": [2, 2], "pads": [2, 2, 2, 2]},
    "grouped": {"group": 2, "pads": [1, 1, 1, 1]},
}


@pytest.mark.parametrize("label", list(CONVS))
def test_conv_padding_forms(label):
    attrs = CONVS[label]
    groups = attrs.get("group", 1)
    weight = rand(6, 4 // groups, 3, 3)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", **attrs)
    model = model_of([node], [("x", F, [2, 4, 9, 8])], [("y", F, None)], [("w", weight), ("b", rand(6))])
    assert_matches_onnx_runtime(model, {"x": rand(2, 4, 9, 8)})


def test_depthwise_and_one_dimensional_convolutions():
    depthwise = helper.make_node("Conv", ["x", "w"], ["y"], group=8, pads=[1, 1, 1, 1])
    model = model_of([depthwise], [("x", F, [1, 8, 7, 7])], [("y", F, None)], [("w", rand(8, 1, 3, 3))])
    assert_matches_onnx_runtime(model, {"x": rand(1, 8, 7, 7)})
    one_d = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[2, 1], strides=[2])
    model = model_of([one_d], [("x", F, [2, 3, 20])], [("y", F, None)], [("w", rand(5, 3, 4)), ("b", rand(5))])
    assert_matches_onnx_runtime(model, {"x": rand(2, 3, 20)})


POOLS = [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 1, 1]}),
    ("MaxPool", {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 1, 1, 1],
                     "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
]


@pytest.mark.parametrize("op, attrs", POOLS, ids=[f"{op}-{i}" for i, (op, _) in enumerate(POOLS)])
def test_pools_with_ceil_mode_and_padding_counts(op, attrs):
    model, feeds = single(op, [(2, 3, 10, 9)], None, attrs)
    assert_matches_onnx_runtime(model, feeds)


GEMMS = [
    {}, {"transB": 1}, {"transA": 1}, {"alpha": 0.5, "beta": 2.0}, {"transA": 1, "transB": 1, "alpha": 3.0},
]


@pytest.mark.parametrize("attrs", GEMMS, ids=str)
@pytest.mark.parametrize("bias_shape", [(5,), (1, 5), (4, 5), None], ids=str)
def test_gemm_layouts_and_scalars(attrs, bias_shape):
    a = rand(3, 4) if attrs.get("transA") else rand(4, 3)
    b = rand(5, 3) if attrs.get("transB") else rand(3, 5)
    initializers = [("b", b)] + ([("c", rand(*bias_shape))] if bias_shape else [])
    node = helper.make_node("Gemm", ["a", "b"] + (["c"] if bias_shape else []), ["y"], **attrs)
    model = model_of([node], [("a", F, list(a.shape))], [("y", F, [4, 5])], initializers)
    assert_matches_onnx_runtime(model, {"a": a})


@pytest.mark.parametrize("a_shape, b_shape", [((4, 3), (3, 5)), ((2, 4, 3), (3, 5)), ((3,), (3, 5)), ((2, 4, 3), (3,)),
                                              ((2, 1, 4, 3), (3, 3, 6))], ids=str)
def test_matmul_ranks(a_shape, b_shape):
    model, feeds = single("MatMul", [a_shape, b_shape], None)
    assert_matches_onnx_runtime(model, feeds)


@pytest.mark.parametrize("opset, axis", [(11, 1), (11, 2), (13, 1), (13, -1)])
def test_softmax_before_and_after_opset_13(opset, axis):
    model, feeds = single("Softmax", [(2, 3, 4)], [2, 3, 4], {"axis": axis}, opset=opset)
    assert_matches_onnx_runtime(model, feeds)
    model, feeds = single("LogSoftmax", [(2, 3, 4)], [2, 3, 4], {"axis": axis}, opset=opset)
    assert_matches_onnx_runtime(model, feeds)


def test_attributes_that_became_inputs():
    """Split, Squeeze, Unsqueeze, ReduceSum, Clip and Slice take these as attributes before and inputs after."""
    x = rand(2, 6, 1)
    cases = [
        (10, [helper.make_node("Split", ["x"], ["s0", "s1"], axis=1, split=[2, 4]),
              helper.make_node("Squeeze", ["s1"], ["q"], axes=[2]),
              helper.make_node("Unsqueeze", ["q"], ["y"], axes=[0]),
              helper.make_node("Clip", ["s0"], ["c"], min=-0.5, max=0.5),
              helper.make_node("ReduceSum", ["c"], ["r"], axes=[1], keepdims=0)], []),
        (13, [helper.make_node("Split", ["x", "sizes"], ["s0", "s1"], axis=1),
              helper.make_node("Squeeze", ["s1", "two"], ["q"]), helper.make_node("Unsqueeze", ["q", "zero"], ["y"]),
              helper.make_node("Clip", ["s0", "low", "high"], ["c"]),
              helper.make_node("ReduceSum", ["c", "one"], ["r"], keepdims=0)],
         [("sizes", np.array([2, 4], np.int64)), ("two", np.array([2], np.int64)), ("zero", np.array([0], np.int64)),
          ("one", np.array([1], np.int64)), ("low", np.float32(-0.5)), ("high", np.float32(0.5))]),
        (18, [helper.make_node("Split", ["x"], ["s0", "s1"], axis=1, num_outputs=2),
              helper.make_node("Squeeze", ["s1", "two"], ["q"]), helper.make_node("Unsqueeze", ["q", "zero"], ["y"]),
              helper.make_node("Clip", ["s0", "", "high"], ["c"]),
              helper.make_node("ReduceSum", ["c", "one"], ["r"], keepdims=0)],
         [("two", np.array([2], np.int64)), ("zero", np.array([0], np.int64)), ("one", np.array([1], np.int64)),
          ("high", np.float32(0.5))]),
    ]
    for opset, nodes, initializers in cases:
        model = model_of(nodes, [("x", F, [2, 6, 1])], [("y", F, None), ("r", F, None)], initializers, opset)
        assert_matches_onnx_runtime(model, {"x": x})


def test_slices_gathers_and_shape_arithmetic_of_a_dynamic_axis():
    """The shape of x flows through Shape, Gather, Concat, Range and Expand into Reshape and Slice:
    all of it is folded at import for the example's sizes."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Gather", ["shape", "minus1"], ["last"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus1_1d"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Range", ["zero", "last", "one"], ["positions"]),
        helper.make_node("Cast", ["positions"], ["positions_f"], to=F),
        helper.make_node("Expand", ["positions_f", "shape"], ["grid"]),
        helper.make_node("Add", ["x", "grid"], ["shifted"]),
        helper.make_node("Slice", ["shifted", "starts", "ends", "slice_axes", "steps"], ["sliced"]),
        helper.make_node("Gather", ["sliced", "index"], ["column"], axis=2),
        helper.make_node("ConstantOfShape", ["shape"], ["ones"], value=numpy_helper.from_array(np.ones(1, np.float32))),
        helper.make_node("Mul", ["x", "ones"], ["y"]),
    ]
    initializers = [("zero", np.int64(0)), ("minus1", np.int64(-1)), ("axes0", np.array([0], np.int64)),
                    ("minus1_1d", np.array([-1], np.int64)), ("one", np.int64(1)),
                    ("starts", np.array([1, -100], np.int64)), ("ends", np.array([100, -1], np.int64)),
                    ("slice_axes", np.array([1, 2], np.int64)), ("steps", np.array([1, 2], np.int64)),
                    ("index", np.array([0, -1], np.int64))]
    model = model_of(nodes, [("x", F, ["batch", 3, "n"])], [("flat", F, None), ("column", F, None), ("y", F, None)],
                     initializers)
    for batch, n in ((2, 7), (1, 5)):
        graph = assert_matches_onnx_runtime(model, {"x": rand(batch, 3, n)})
        assert not [node for node in graph.nodes if node.op in ("gather", "concat") and node.dtype is tfg.ir.DType.i64]


ELEMENTWISE = [
    ("Erf", 1, {}), ("Pow", 2, {}), ("Min", 3, {}), ("Max", 2, {}), ("Sum", 3, {}), ("Mean", 2, {}),
    ("HardSigmoid", 1, {"alpha": 0.3, "beta": 0.4}), ("HardSwish", 1, {}), ("LeakyRelu", 1, {"alpha": 0.2}),
    ("Reciprocal", 1, {}), ("Sqrt", 1, {}), ("Tanh", 1, {}), ("Sigmoid", 1, {}), ("Neg", 1, {}), ("Abs", 1, {}),
    ("Gelu", 1, {}), ("Gelu", 1, {"approximate": "tanh"}),
]


@pytest.mark.parametrize("op, count, attrs", ELEMENTWISE, ids=[f"{op}{attrs or ''}" for op, _, attrs in ELEMENTWISE])
def test_elementwise_ops(op, count, attrs):
    shapes = [(2, 3, 4), (3, 4), (1, 4)][:count]
    opset = 20 if op == "Gelu" else 17
    model, feeds = single(op, shapes, [2, 3, 4], attrs, opset=opset)
    if op in ("Pow", "Sqrt", "Reciprocal"):
        feeds = {name: np.abs(value) + np.float32(0.5) for name, value in feeds.items()}
    assert_matches_onnx_runtime(model, feeds)


def test_masks_comparisons_and_where():
    """BERT's and GPT-2's mask arithmetic: Equal, Less, Not, And, Cast, Where, Trilu."""
    nodes = [
        helper.make_node("Cast", ["mask"], ["mask_b"], to=TensorProto.BOOL),
        helper.make_node("Not", ["mask_b"], ["masked"]),
        helper.make_node("Less", ["x", "zero"], ["negative"]),
        helper.make_node("Equal", ["x", "x"], ["same"]),
        helper.make_node("And", ["same", "negative"], ["both"]),
        helper.make_node("Or", ["both", "masked"], ["any"]),
        helper.make_node("Where", ["any", "fill", "x"], ["filled"]),
        helper.make_node("Trilu", ["filled"], ["y"], upper=0),
        helper.make_node("Trilu", ["x", "k"], ["upper"], upper=1),
    ]
    model = model_of(nodes, [("x", F, [2, 5, 5]), ("mask", I64, [2, 1, 5])], [("y", F, None), ("upper", F, None)],
                     [("zero", np.float32(0)), ("fill", np.float32(-1e4)), ("k", np.int64(1))])
    mask = np.array([[[1, 1, 1, 0, 0]], [[1, 1, 1, 1, 1]]], np.int64)
    assert_matches_onnx_runtime(model, {"x": rand(2, 5, 5), "mask": mask})


def test_layer_normalization_and_its_decomposed_form():
    x, scale, bias = rand(2, 4, 8), rand(8), rand(8)
    fused = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], epsilon=1e-5)
    model = model_of([fused], [("x", F, [2, 4, 8])], [("y", F, None)], [("scale", scale), ("bias", bias)])
    assert_matches_onnx_runtime(model, {"x": x})
    decomposed = [  # as PyTorch exported LayerNorm before opset 17
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]), helper.make_node("Sub", ["x", "mean"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]), helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["v"]), helper.make_node("Sqrt", ["v"], ["s"]),
        helper.make_node("Div", ["d", "s"], ["n"]), helper.make_node("Mul", ["n", "scale"], ["m"]),
        helper.make_node("Add", ["m", "bias"], ["y"])]
    model = model_of(decomposed, [("x", F, [2, 4, 8])], [("y", F, None)],
                     [("two", np.float32(2)), ("eps", np.float32(1e-5)), ("scale", scale), ("bias", bias)], opset=13)
    graph = assert_matches_onnx_runtime(model, {"x": x})
    assert "pow" not in {node.op for node in graph.nodes}  # x ** 2 is x * x, as numpy computes it


def test_lrn_and_dropout_at_inference():
    nodes = [helper.make_node("LRN", ["x"], ["n"], size=5, alpha=1e-3, beta=0.75, bias=2.0),
             helper.make_node("Dropout", ["n"], ["y"], ratio=0.5)]
    model = model_of(nodes, [("x", F, [2, 7, 5, 5])], [("y", F, None)], opset=11)
    assert_matches_onnx_runtime(model, {"x": rand(2, 7, 5, 5, scale=3.0)})


def test_quantize_dequantize_and_integer_matmul():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wf"], axis=1),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xf"]),
        helper.make_node("MatMul", ["xf", "wf"], ["y"]),
        helper.make_node("MatMulInteger", ["xq", "wq", "zx"], ["acc"]),
        helper.make_node("DynamicQuantizeLinear", ["x"], ["dq", "ds", "dz"]),
    ]
    w = RNG.integers(-127, 127, (6, 5)).astype(np.int8)
    initializers = [("sx", np.float32(0.02)), ("zx", np.uint8(128)), ("w", w), ("sw", rand(5, scale=0.01) ** 2 + 0.01),
                    ("zw", np.zeros(5, np.int8)), ("wq", RNG.integers(0, 255, (6, 4)).astype(np.uint8))]
    model = model_of(nodes, [("x", F, [3, 6])], [("y", F, None), ("acc", TensorProto.INT32, None),
                                                  ("dq", TensorProto.UINT8, None), ("ds", F, None),
                                                  ("dz", TensorProto.UINT8, None)], initializers)
    assert_matches_onnx_runtime(model, {"x": rand(3, 6)})


# --- names, determinism, inputs ----------------------------------------------------------------------

def test_names_survive_and_import_is_deterministic():
    model, feeds = single("Relu", [(2, 3)], [2, 3])
    model.graph.node[0].name = "/encoder/layer.0/act/Relu"
    first, second = load_onnx(model, feeds), load_onnx(model.SerializeToString(), feeds)
    assert str(first) == str(second)
    assert "%y = relu(%a)" in str(first)  # a graph output is named as the model names it, its node as a layer
    assert first.outputs[0].meta["layer"] == "encoder.layer.0.act.Relu"
    model.graph.node[0].output[0] = "hidden"  # an inner value keeps its node's name
    model.graph.node.append(helper.make_node("Neg", ["hidden"], ["y"], name="/head/Neg"))
    inner = load_onnx(model, feeds)
    assert "%encoder.layer.0.act.Relu = relu(%a)" in str(inner) and "%y = neg(" in str(inner)


def test_inputs_by_name_and_symbolic_axes():
    model = model_of([helper.make_node("Add", ["a", "b"], ["y"])], [("a", F, ["batch", 3]), ("b", F, ["batch", 3])],
                     [("y", F, ["batch", 3])])
    a, b = rand(4, 3), rand(4, 3)
    by_name = tfg.compile(model, {"b": b, "a": a})
    np.testing.assert_array_equal(by_name(a, b), a + b)
    result = tfg.check(model, {"a": a, "b": b})
    assert result.stages
    with pytest.raises(OnnxImportError, match=r"input 'b' axis 0 is 'batch' = 5, but input 'a' axis 0 made it 4"):
        load_onnx(model, (a, rand(5, 3)))
    with pytest.raises(OnnxImportError, match=r"input 'a' has rank 2 \(\[batch, 3\]\), the example input has shape"):
        load_onnx(model, (rand(4, 3, 1), b))
    with pytest.raises(OnnxImportError, match=r"input 'a' axis 1 has size 3, the example input 4"):
        load_onnx(model, (rand(4, 4), b))
    with pytest.raises(OnnxImportError, match=r"input 'a' is f32, the example input is int64"):
        load_onnx(model, (np.ones((4, 3), np.int64), b))
    with pytest.raises(OnnxImportError, match=r"symbolic or unknown dims \(\[batch, 3\]\): pass example inputs"):
        load_onnx(model)
    with pytest.raises(OnnxImportError, match=r"example input 'c' is not an input of the model"):
        load_onnx(model, {"a": a, "c": b})


def test_compiled_model_takes_its_inputs_by_name():
    """The dict a model was compiled with works for calling it too: cm(dict), cm.bind(dict), cm.profile(dict),
    keyed by the ONNX names ('input.1') or their IR spelling; a missing or unknown name is named."""
    model = model_of([helper.make_node("Sub", ["input.1", "mask:0"], ["y"])], [("input.1", F, [2, 3]),
                                                                              ("mask:0", F, [2, 3])],
                     [("y", F, [2, 3])])
    a, b = rand(2, 3), rand(2, 3)
    with tfg.compile(model, {"mask:0": b, "input.1": a}) as cm:
        assert cm.input_names == ["input.1", "mask_0"]
        np.testing.assert_array_equal(cm({"mask:0": b, "input.1": a}), a - b)
        np.testing.assert_array_equal(cm({"mask_0": b, "input.1": a}), a - b)
        np.testing.assert_array_equal(cm.bind({"input.1": a, "mask:0": b})(), a - b)
        assert len(cm.profile({"input.1": a, "mask:0": b}, repeat=2, warmup=0).rows) == 1
        with pytest.raises(InputError, match=r"missing mask_0"):
            cm({"input.1": a})
        with pytest.raises(InputError, match=r"unknown mask; missing mask_0"):
            cm({"input.1": a, "mask": b})
        with pytest.raises(InputError, match=r"takes 2 input\(s\) \(input.1, mask_0\), got 1"):
            cm(a)


# --- refused before compiling -------------------------------------------------------------------------

def test_unsupported_ops_attributes_and_domains_are_named():
    model, feeds = single("Selu", [(2, 3)], [2, 3])
    with pytest.raises(UnsupportedOnnxOp, match=r"ONNX op Selu \(domain ai.onnx, opset 17\) is not supported: "
                                                r"node 'the_selu'"):
        load_onnx(model, feeds)
    model, feeds = single("MaxPool", [(1, 2, 6, 6)], None, {"kernel_shape": [2, 2], "storage_order": 1})
    with pytest.raises(UnsupportedOnnxOp, match=r"ONNX node 'the_maxpool' \(MaxPool, opset 17, op version 12\) "
                                                r"attribute 'storage_order'"):
        load_onnx(model, feeds)
    custom = helper.make_node("Frobnicate", ["a"], ["y"], name="mine", domain="com.example")
    graph = helper.make_graph([custom], "g", [helper.make_tensor_value_info("a", F, [2])],
                              [helper.make_tensor_value_info("y", F, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedOnnxOp, match=r"'mine' \(Frobnicate\) is in the custom domain 'com.example'"):
        load_onnx(model, {"a": rand(2)})
