"""The benchmark models for ONNX Runtime: a tensorforge graph written out as an ONNX model.

    session = onnx_session(graph, threads=2)     # an onnxruntime.InferenceSession, all optimizations on
    session.run(None, {"x": x})

Covers the ops of the benchmark models (linear, matmul, add, relu, conv2d, max/avg pool, flatten,
reshape, softmax); anything else raises NotImplementedError naming the op.
"""

from __future__ import annotations

import numpy as np

from tensorforge import ir


def _pads(padding: tuple[int, int]) -> list[int]:
    return [padding[0], padding[1], padding[0], padding[1]]


def to_onnx(graph: ir.Graph):
    """An onnx.ModelProto computing the same function as `graph` (f32 only)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def name(node: ir.Node) -> str:
        return f"v_{node.name}"

    nodes, initializers = [], []
    for node in graph.nodes:
        inputs, out = [name(n) for n in node.inputs], name(node)
        if node.op == "input":
            continue
        if node.op == "constant":
            initializers.append(numpy_helper.from_array(np.ascontiguousarray(node.value), out))
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
            shape = numpy_helper.from_array(np.array(node.shape, np.int64), out + "_shape")
            initializers.append(shape)
            nodes.append(helper.make_node("Reshape", [inputs[0], shape.name], [out]))
        elif node.op == "softmax":
            nodes.append(helper.make_node("Softmax", inputs, [out], axis=node.attrs["axis"]))
        else:
            raise NotImplementedError(f"no ONNX export written for op '{node.op}' (%{node.name})")

    def value_info(node: ir.Node):
        return helper.make_tensor_value_info(name(node), TensorProto.FLOAT, list(node.shape))

    onnx_graph = helper.make_graph(nodes, "tensorforge", [value_info(n) for n in graph.inputs],
                                   [value_info(n) for n in graph.outputs], initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def onnx_session(graph: ir.Graph, threads: int = 2):
    """An ONNX Runtime session for `graph` on the CPU, with every graph optimization enabled."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(to_onnx(graph).SerializeToString(), options, providers=["CPUExecutionProvider"])


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
