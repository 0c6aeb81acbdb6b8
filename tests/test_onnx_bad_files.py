"""Bad ONNX files and bad inputs get a clear Python exception naming the problem, in a child process
that exits normally: no crash, no hang, and nothing read outside the model's folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, external_data_helper, helper, numpy_helper  # noqa: E402

F = TensorProto.FLOAT


def _model(weight: np.ndarray | None = None, nodes=None, inputs=None):
    weight = np.arange(12, dtype=np.float32).reshape(3, 4) if weight is None else weight
    nodes = nodes or [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", inputs or [helper.make_tensor_value_info("x", F, ["batch", 3])],
                              [helper.make_tensor_value_info("y", F, None)], [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(tmp_path: Path, path: Path, inputs: str = "np.ones((2, 3), np.float32)") -> subprocess.CompletedProcess:
    """tfg.compile(path, inputs) in a child process; prints the exception's type and message."""
    script = (f"import numpy as np, tensorforge as tfg\n"
              f"try:\n    tfg.compile({str(path)!r}, {inputs})\n    print('OK')\n"
              "except Exception as error:\n"
              "    print(type(error).__name__ + ': ' + str(error))\n    raise SystemExit(1)\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def _refused(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr[-2000:])  # not a signal
    assert message in result.stdout, result.stdout


def _save(model, folder: Path, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def test_a_good_file_with_external_data_compiles(tmp_path):
    model = _model()
    external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin",
                                                        size_threshold=0)
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(model, str(folder / "model.onnx"))
    assert _run(tmp_path, folder / "model.onnx").stdout.strip() == "OK"


def test_truncated_and_corrupt_files(tmp_path):
    data = _model().SerializeToString()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    _refused(_run(tmp_path, truncated), "truncated.onnx is not a valid ONNX model")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    _refused(_run(tmp_path, corrupt), "corrupt.onnx is not a valid ONNX model")
    _refused(_run(tmp_path, tmp_path / "absent.onnx"), "absent.onnx: no such ONNX file")


def _external(model, location: str, length: int = 48):
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return model


def test_external_data_missing_or_outside_the_folder(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(12, np.float32).tobytes())
    folder = tmp_path / "model"
    _refused(_run(tmp_path, _save(_external(_model(), "weights.bin"), folder)),
             "initializer 'w': its external data file 'weights.bin' is missing")
    _refused(_run(tmp_path, _save(_external(_model(), "../secret.bin"), folder, "up.onnx")),
             "external data location '../secret.bin' is not a relative path inside the model's folder")
    _refused(_run(tmp_path, _save(_external(_model(), str(secret)), folder, "absolute.onnx")),
             "is not a relative path inside the model's folder")
    (folder / "link.bin").symlink_to(secret)
    _refused(_run(tmp_path, _save(_external(_model(), "link.bin"), folder, "link.onnx")),
             "external data 'link.bin' leads outside the model's folder")
    (folder / "short.bin").write_bytes(b"\0" * 20)
    _refused(_run(tmp_path, _save(_external(_model(), "short.bin"), folder, "short.onnx")),
             "external file 'short.bin' has 20 bytes, the tensor asks for 48 at offset 0")


def test_an_initializer_whose_data_does_not_fill_its_dims(tmp_path):
    model = _model()
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:20]
    _refused(_run(tmp_path, _save(model, tmp_path)), "initializer 'w': its data does not match its dims [3, 4]")


def test_inputs_of_the_wrong_name_rank_shape_or_dtype(tmp_path):
    path = _save(_model(), tmp_path)
    _refused(_run(tmp_path, path, "{'input': np.ones((2, 3), np.float32)}"),
             "example input 'input' is not an input of the model (its inputs: x)")
    _refused(_run(tmp_path, path, "np.ones((2, 3, 1), np.float32)"), "input 'x' has rank 2 ([batch, 3])")
    _refused(_run(tmp_path, path, "np.ones((2, 4), np.float32)"), "input 'x' axis 1 has size 3, the example input 4")
    _refused(_run(tmp_path, path, "np.ones((2, 3), np.int32)"), "input 'x' is f32, the example input is int32")


def test_cycles_undefined_values_and_unsupported_ops(tmp_path):
    cycle = [helper.make_node("Relu", ["b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second"), helper.make_node("MatMul", ["x", "w"], ["y"])]
    _refused(_run(tmp_path, _save(_model(nodes=cycle), tmp_path, "cycle.onnx")),
             "the ONNX graph has a cycle: nodes 'first', 'second'")
    undefined = [helper.make_node("Add", ["x", "nowhere"], ["z"], name="adder"),
                 helper.make_node("MatMul", ["z", "w"], ["y"])]
    _refused(_run(tmp_path, _save(_model(nodes=undefined), tmp_path, "undefined.onnx")),
             "ONNX node 'adder' reads value 'nowhere', which no input, initializer or node defines")
    unsupported = [helper.make_node("Det", ["x"], ["d"], name="determinant"),
                   helper.make_node("MatMul", ["x", "w"], ["y"])]
    _refused(_run(tmp_path, _save(_model(nodes=unsupported), tmp_path, "unsupported.onnx")),
             "UnsupportedOnnxOp: ONNX op Det (domain ai.onnx, opset 17) is not supported: node 'determinant'")
