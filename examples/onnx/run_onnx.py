"""Compile an ONNX model for the host and for armv8, check it, picture it, and time it.

    python examples/onnx/run_onnx.py model.onnx                       # inputs: random, symbolic axes 1
    python examples/onnx/run_onnx.py model.onnx --input x.npy --shape batch=8
    python examples/onnx/run_onnx.py --demo                           # a small ResNet-style model made here

For each target the compiled model is checked against ONNX Runtime and the reference interpreter
(max abs error of each output), the graph after every pass is written as pictures to
out/onnx/<target>/index.html, and the median time of a call is printed beside ONNX Runtime's (the
armv8 build runs under qemu-user on an x86 machine: its time says nothing about an ARM board).
Needs the onnx extra: pip install 'tensorforge[onnx]'.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg


def demo_model(path: Path) -> Path:
    """A small ResNet-style network (conv, batch norm, relu, a residual, global pool, Gemm), batch symbolic."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32),
                                       name)

    def bn(name, channels):
        return [numpy_helper.from_array(value.astype(np.float32), f"{name}.{part}") for part, value in
                (("scale", rng.uniform(0.5, 1.5, channels)), ("bias", rng.normal(0, 0.1, channels)),
                 ("mean", rng.normal(0, 0.1, channels)), ("var", rng.uniform(0.5, 2, channels)))]

    def conv_bn(x, out, name, **attrs):
        return [helper.make_node("Conv", [x, f"{name}.weight"], [f"{name}.conv"], name=f"/{name}/Conv", **attrs),
                helper.make_node("BatchNormalization", [f"{name}.conv", *[f"{name}.bn.{p}" for p in
                                                                          ("scale", "bias", "mean", "var")]],
                                 [out], name=f"/{name}/BatchNormalization")]

    nodes = [*conv_bn("input", "stem", "stem", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["stem"], ["stem.relu"], name="/stem/Relu"),
             *conv_bn("stem.relu", "block.a", "block.conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["block.a"], ["block.a.relu"], name="/block/Relu"),
             *conv_bn("block.a.relu", "block.b", "block.conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["block.b", "stem.relu"], ["block.sum"], name="/block/Add"),
             helper.make_node("Relu", ["block.sum"], ["block.out"], name="/block/Relu_1"),
             helper.make_node("GlobalAveragePool", ["block.out"], ["pooled"], name="/pool/GlobalAveragePool"),
             helper.make_node("Flatten", ["pooled"], ["features"], name="/Flatten"),
             helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1)]
    initializers = [weight("stem.weight", 32, 3, 3, 3), *bn("stem.bn", 32), weight("block.conv1.weight", 32, 32, 3, 3),
                    *bn("block.conv1.bn", 32), weight("block.conv2.weight", 32, 32, 3, 3), *bn("block.conv2.bn", 32),
                    weight("fc.weight", 10, 32), numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias")]
    graph = helper.make_graph(nodes, "demo", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def example_inputs(model, sizes: dict[str, int], arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Inputs by name: the given arrays in order, then random values of each declared type."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    rng = np.random.default_rng(0)
    inputs = {}
    for index, value in enumerate(v for v in model.graph.input if v.name not in initializers):
        if index < len(arrays):
            inputs[value.name] = arrays[index]
            continue
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = [d.dim_value if d.HasField("dim_value") else sizes.get(d.dim_param, 1)
                 for d in value.type.tensor_type.shape.dim]
        inputs[value.name] = (rng.standard_normal(shape).astype(dtype) if np.dtype(dtype).kind == "f"
                              else rng.integers(0, 2, shape).astype(dtype))
    return inputs


def median_seconds(call, repeats: int) -> float:
    call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="an .onnx file")
    parser.add_argument("--demo", action="store_true", help="make and run a small ResNet-style model")
    parser.add_argument("--input", action="append", default=[], help="an .npy file per input, in order")
    parser.add_argument("--shape", action="append", default=[], help="a symbolic axis' size, e.g. batch=8")
    parser.add_argument("--out", default="out/onnx", help="where the pass pictures go")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per engine")
    args = parser.parse_args()
    if not args.model and not args.demo:
        parser.error("give an .onnx file, or --demo")
    path = demo_model(Path(args.out) / "demo.onnx") if args.demo else Path(args.model)
    model = onnx.load(str(path))
    sizes = {key: int(value) for key, value in (item.split("=") for item in args.shape)}
    inputs = example_inputs(model, sizes, [np.load(file) for file in args.input])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, inputs)
    reference = tfg.interpret(tfg.trace(str(path), inputs), *inputs.values())
    reference = list(reference) if isinstance(reference, tuple) else [reference]
    print(f"{path}: {len(model.graph.node)} ONNX nodes, inputs " +
          ", ".join(f"{name} {list(value.shape)}" for name, value in inputs.items()))
    print(f"  reference interpreter vs ONNX Runtime: max abs error "
          f"{max(float(np.abs(r - e).max()) for r, e in zip(reference, expected)):.2g}")
    ort_seconds = median_seconds(lambda: session.run(None, inputs), args.repeats)
    print(f"  ONNX Runtime: {ort_seconds * 1e3:.3f} ms a call")
    for target in ("host", "armv8"):
        with tfg.compile(str(path), inputs, target=target) as compiled:
            outputs = compiled(*inputs.values())
            outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
            error = max(float(np.abs(o - e).max()) for o, e in zip(outputs, expected))
            compiled.save_pictures(Path(args.out) / target)
            seconds = median_seconds(lambda: compiled(*inputs.values()), args.repeats)
            note = " (under qemu-user: not an ARM board's speed)" if target == "armv8" else \
                f" ({ort_seconds / seconds:.2f}x ONNX Runtime)"
            print(f"  {target:5}: max abs error {error:.2g} vs ONNX Runtime; {seconds * 1e3:.3f} ms a call{note}; "
                  f"compiled in {compiled.compile_seconds['total']:.1f} s; pictures in "
                  f"{Path(args.out) / target / 'index.html'}")


if __name__ == "__main__":
    main()
