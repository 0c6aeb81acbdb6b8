"""The benchmark models for ONNX Runtime: a tensorforge graph written out as an ONNX model.

    session = onnx_session(graph, threads=2)     # an onnxruntime.InferenceSession, all optimizations on
    session.run(None, {"x": x})

Covers the ops of the benchmark models (linear, matmul, add, relu, conv2d, max/avg pool, flatten,
reshape, softmax) and of the traced GPT (gather, layer_norm, transpose, matmul with transposed
operands, causal_mask, gelu; and cached_attention of the KV-cache decode graph, see to_onnx);
anything else raises NotImplementedError naming the op.
"""

from __future__ import annotations

import numpy as np

from tensorforge import ir


def _pads(padding: tuple[int, int]) -> list[int]:
    return [padding[0], padding[1], padding[0], padding[1]]


GELU_TANH = float(np.sqrt(2.0 / np.pi))


def to_onnx(graph: ir.Graph, dynamic_sequence: bool = False, past_sequence: bool = False):
    """An onnx.ModelProto computing the same function as `graph` (f32 and int64 tensors).

    dynamic_sequence: the inputs' axis 1 (tokens[1, S]) is a symbolic `seq` and the model runs on any
    S (the constant `positions` arange becomes a Range, reshapes copy their leading axes, the causal
    mask is built from the scores' shape): a traced GPT exported once runs on a growing context.

    past_sequence: for the KV-cache decode graph (generate/kv_cache.py): each cache input is a `past`
    [1, H, P, D] of any P (the rows before pos), cached_attention becomes Concat(past, new row) and
    plain attention over it (one query sees every row), and the graph outputs that were the new k and
    v rows become the concatenated `present` [1, H, P + 1, D], to be fed back as the next step's past.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def name(node: ir.Node) -> str:
        return f"v_{node.name}"

    nodes, initializers = [], []
    renamed: dict[str, str] = {}  # past_sequence: a new k/v row's output name -> its present's name
    sequence = None  # dynamic_sequence: the name of a [1] int64 tensor holding S
    if dynamic_sequence:
        sequence = "seq_len"
        nodes.append(helper.make_node("Shape", [name(graph.inputs[0])], [sequence], start=1, end=2))
    constant_count = 0

    def constant(value: np.ndarray) -> str:
        nonlocal constant_count
        constant_count += 1
        tensor = numpy_helper.from_array(np.asarray(value), f"c_{constant_count}")
        initializers.append(tensor)
        return tensor.name

    for node in graph.nodes:
        inputs, out = [name(n) for n in node.inputs], name(node)
        if node.op == "input":
            continue
        if node.op == "constant":
            value = np.asarray(node.value)
            if sequence and value.dtype.kind in "iu" and value.ndim == 1 and \
                    np.array_equal(value, np.arange(len(value))):
                # positions 0..S-1 of a trace: 0..seq_len-1 of the run
                scalar = out + "_n"
                nodes.append(helper.make_node("Squeeze", [sequence, constant(np.array([0], np.int64))], [scalar]))
                nodes.append(helper.make_node("Range", [constant(np.array(0, value.dtype)), scalar,
                                                        constant(np.array(1, value.dtype))], [out]))
            else:
                initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), out))
        elif node.op == "gather":
            nodes.append(helper.make_node("Gather", inputs, [out], axis=0))
        elif node.op == "layer_norm":
            nodes.append(helper.make_node("LayerNormalization", inputs, [out], axis=-1,
                                          epsilon=float(node.attrs["eps"])))
        elif node.op == "transpose":
            nodes.append(helper.make_node("Transpose", inputs, [out], perm=list(node.attrs["perm"])))
        elif node.op == "matmul" and (node.attrs.get("transpose_a") or node.attrs.get("transpose_b")):
            operands = []
            for operand, flag in zip(node.inputs, ("transpose_a", "transpose_b"), strict=True):
                if node.attrs.get(flag):
                    perm = list(range(len(operand.shape)))
                    perm[-2:] = perm[-1], perm[-2]
                    nodes.append(helper.make_node("Transpose", [name(operand)], [f"{out}_{flag}"], perm=perm))
                    operands.append(f"{out}_{flag}")
                else:
                    operands.append(name(operand))
            nodes.append(helper.make_node("MatMul", operands, [out]))
        elif node.op == "causal_mask":
            # -inf above the diagonal of the last two axes, 0 on and below it, added
            rows = out + "_rows"
            nodes.append(helper.make_node("Shape", inputs, [rows], start=-2))
            nodes.append(helper.make_node("ConstantOfShape", [rows], [out + "_inf"],
                                          value=numpy_helper.from_array(np.array([-np.inf], np.float32))))
            nodes.append(helper.make_node("Trilu", [out + "_inf", constant(np.array(1, np.int64))], [out + "_mask"],
                                          upper=1))
            nodes.append(helper.make_node("Add", [inputs[0], out + "_mask"], [out]))
        elif node.op == "gelu":
            approximation = node.attrs.get("approximation", "tanh")
            if approximation == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
                x = inputs[0]
                nodes += [helper.make_node("Mul", [x, x], [out + "_x2"]),
                          helper.make_node("Mul", [out + "_x2", x], [out + "_x3"]),
                          helper.make_node("Mul", [out + "_x3", constant(np.float32(0.044715))], [out + "_c"]),
                          helper.make_node("Add", [x, out + "_c"], [out + "_in"]),
                          helper.make_node("Mul", [out + "_in", constant(np.float32(GELU_TANH))], [out + "_s"]),
                          helper.make_node("Tanh", [out + "_s"], [out + "_t"]),
                          helper.make_node("Add", [out + "_t", constant(np.float32(1))], [out + "_1t"]),
                          helper.make_node("Mul", [x, out + "_1t"], [out + "_x1t"]),
                          helper.make_node("Mul", [out + "_x1t", constant(np.float32(0.5))], [out])]
            elif approximation == "exact":  # 0.5 x (1 + erf(x / sqrt 2))
                x = inputs[0]
                nodes += [helper.make_node("Mul", [x, constant(np.float32(1 / np.sqrt(2)))], [out + "_s"]),
                          helper.make_node("Erf", [out + "_s"], [out + "_e"]),
                          helper.make_node("Add", [out + "_e", constant(np.float32(1))], [out + "_1e"]),
                          helper.make_node("Mul", [x, out + "_1e"], [out + "_x1e"]),
                          helper.make_node("Mul", [out + "_x1e", constant(np.float32(0.5))], [out])]
            else:
                raise NotImplementedError(f"no ONNX export written for gelu approximation {approximation!r}")
        elif node.op == "cached_attention" and past_sequence and len(inputs) == 6:  # f32 caches
            q, k_past, v_past, k, v, _ = inputs
            keys, values = out + "_present_k", out + "_present_v"
            nodes += [helper.make_node("Concat", [k_past, k], [keys], axis=-2),
                      helper.make_node("Concat", [v_past, v], [values], axis=-2),
                      helper.make_node("Transpose", [keys], [out + "_kt"], perm=[0, 1, 3, 2]),
                      helper.make_node("MatMul", [q, out + "_kt"], [out + "_qk"]),
                      helper.make_node("Mul", [out + "_qk", constant(np.float32(node.attrs["scale"]))],
                                       [out + "_scores"]),
                      helper.make_node("Softmax", [out + "_scores"], [out + "_p"], axis=-1),
                      helper.make_node("MatMul", [out + "_p", values], [out])]
            renamed[k], renamed[v] = keys, values
        elif node.op == "linear":
            product = out + "_mm" if len(inputs) == 3 else out
            nodes.append(helper.make_node("MatMul", inputs[:2], [product]))
            if len(inputs) == 3:
                nodes.append(helper.make_node("Add", [product, inputs[2]], [out]))
        elif node.op in ("add", "sub", "mul", "div", "relu", "matmul", "tanh", "sigmoid", "exp"):
            onnx_op = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "relu": "Relu", "matmul": "MatMul",
                       "tanh": "Tanh", "sigmoid": "Sigmoid", "exp": "Exp"}[node.op]
            nodes.append(helper.make_node(onnx_op, inputs, [out]))
        elif node.op == "conv2d":
            kh, kw = node.inputs[1].shape[2:]
            nodes.append(helper.make_node("Conv", inputs, [out], kernel_shape=[kh, kw],
                                          strides=list(node.attrs["stride"]), pads=_pads(node.attrs["padding"]),
                                          dilations=list(node.attrs["dilation"]), group=node.attrs["groups"]))
        elif node.op in ("max_pool2d", "avg_pool2d"):
            onnx_op = "MaxPool" if node.op == "max_pool2d" else "AveragePool"
            extra = {"count_include_pad": 1} if node.op == "avg_pool2d" else {}
            nodes.append(helper.make_node(onnx_op, inputs, [out], kernel_shape=list(node.attrs["kernel"]),
                                          strides=list(node.attrs["stride"]), pads=_pads(node.attrs["padding"]),
                                          **extra))
        elif node.op in ("reshape", "flatten"):
            target = list(node.shape)
            for axis, (before, after) in enumerate(zip(node.inputs[0].shape, node.shape)):
                if before != after:
                    break
                target[axis] = 0  # copy the input's axis (so a symbolic sequence axis passes through)
            shape = numpy_helper.from_array(np.array(target, np.int64), out + "_shape")
            initializers.append(shape)
            nodes.append(helper.make_node("Reshape", [inputs[0], shape.name], [out]))
        elif node.op == "softmax":
            if node.attrs["scale"] is not None or node.attrs["causal"]:
                raise NotImplementedError(f"no ONNX export written for a fused softmax (%{node.name}): export "
                                          "the graph before the pipeline")
            nodes.append(helper.make_node("Softmax", inputs, [out], axis=node.attrs["axis"]))
        else:
            raise NotImplementedError(f"no ONNX export written for op '{node.op}' (%{node.name})")

    def value_info(node: ir.Node, graph_input: bool):
        element = TensorProto.INT64 if node.dtype.numpy == np.int64 else TensorProto.FLOAT
        shape = list(node.shape)
        if past_sequence and graph_input and len(shape) == 4 and node.dtype.numpy == np.float32:
            shape[2] = "past"
        elif dynamic_sequence and graph_input:
            shape[1] = "seq"
        elif dynamic_sequence or past_sequence:
            shape = [None] * len(shape)
        return helper.make_tensor_value_info(renamed.get(name(node), name(node)), element, shape)

    onnx_graph = helper.make_graph(nodes, "tensorforge", [value_info(n, True) for n in graph.inputs],
                                   [value_info(n, False) for n in graph.outputs], initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def onnx_session(graph: ir.Graph, threads: int = 2, **export):
    """An ONNX Runtime session for `graph` (to_onnx(graph, **export)) on the CPU, every graph optimization on."""
    from tensorforge.cli.bench import onnxruntime_session

    return onnxruntime_session(to_onnx(graph, **export).SerializeToString(), threads)


def onnx_engine(graph: ir.Graph, x: np.ndarray, threads: int = 2):
    """A no-argument callable running the session on `x` (None if onnxruntime is not installed)."""
    try:
        session = onnx_session(graph, threads)
    except ImportError:
        return None
    feed = {f"v_{graph.inputs[0].name}": x}

    def run():
        return session.run(None, feed)[0]

    return run
