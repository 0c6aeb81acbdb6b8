"""The `tensorforge` command line, each subcommand run as `python -m tensorforge` in a child process.

The models are made here with onnx.helper (a conv, batch norm, relu, global pool, Gemm network with
a symbolic batch and two outputs; an embedding over int64 token ids). Every child runs in an
empty working directory, which must stay empty: files appear only where an option names them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import tensorforge as tfg  # noqa: E402

F, I64 = TensorProto.FLOAT, TensorProto.INT64
ROOT = Path(__file__).resolve().parent.parent


# --- models and a runner ----------------------------------------------------------------------------------

def _cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def tensor(name, array):
        return numpy_helper.from_array(np.asarray(array, np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1], name="/conv/Conv"),
             helper.make_node("BatchNormalization", ["c", "bn.s", "bn.b", "bn.m", "bn.v"], ["n"], name="/bn"),
             helper.make_node("Relu", ["n"], ["r"], name="/relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="/pool"),
             helper.make_node("Flatten", ["p"], ["features"], name="/flatten"),
             helper.make_node("Gemm", ["features", "fc.w", "fc.b"], ["logits"], transB=1, name="/fc/Gemm")]
    weights = [tensor("conv.w", rng.standard_normal((8, 3, 3, 3)) * 0.3), tensor("conv.b", rng.normal(0, .1, 8)),
               tensor("bn.s", rng.uniform(0.5, 1.5, 8)), tensor("bn.b", rng.normal(0, 0.1, 8)),
               tensor("bn.m", rng.normal(0, 0.1, 8)), tensor("bn.v", rng.uniform(0.5, 1.5, 8)),
               tensor("fc.w", rng.standard_normal((5, 8)) * 0.3), tensor("fc.b", rng.normal(0, 0.1, 5))]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", F, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", F, ["batch", 5]),
                               helper.make_tensor_value_info("features", F, ["batch", 8])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _embedding() -> onnx.ModelProto:
    table = numpy_helper.from_array(np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32), "table")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="/embed"),
             helper.make_node("ReduceMean", ["e"], ["y"], axes=[1], keepdims=0, name="/mean")]
    graph = helper.make_graph(nodes, "embedding", [helper.make_tensor_value_info("ids", I64, ["batch", "sequence"])],
                              [helper.make_tensor_value_info("y", F, ["batch", 4])], [table])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _unsupported() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Round", ["x"], ["y"], name="/round")], "round",
                              [helper.make_tensor_value_info("x", F, [2, 3])],
                              [helper.make_tensor_value_info("y", F, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder with the models, an input x.npy (batch 2) and calibration samples; nothing else is written there."""
    folder = tmp_path_factory.mktemp("models")
    onnx.save_model(_cnn(), str(folder / "cnn.onnx"))
    onnx.save_model(_embedding(), str(folder / "embedding.onnx"))
    onnx.save_model(_unsupported(), str(folder / "round.onnx"))
    (folder / "garbage.onnx").write_bytes(b"not a protobuf \xff\xfe\x00 at all")
    rng = np.random.default_rng(2)
    np.save(folder / "x.npy", rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    np.save(folder / "x_wrong.npy", rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    np.save(folder / "calibration.npy", rng.standard_normal((8, 3, 8, 8)).astype(np.float32))
    return folder


def tensorforge(*arguments, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m tensorforge ARGUMENTS` in `cwd` (made if missing), with this checkout first on the path."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]), "TENSORFORGE_CACHE": "0"}
    return subprocess.run([sys.executable, "-m", "tensorforge", *map(str, arguments)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr[-3000:])
    return result.stdout


def _error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The one-line error of a failed run (exit 1, no traceback), which must contain each fragment."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tensorforge: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _reference(model_path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


# --- version, help -------------------------------------------------------------------------------------------

def test_version_and_help_of_every_subcommand(tmp_path, capsys):
    assert _ok(tensorforge("--version", cwd=tmp_path)).startswith("tensorforge ")
    assert "usage: tensorforge compile" in _ok(tensorforge("compile", "--help", cwd=tmp_path))
    assert tensorforge(cwd=tmp_path).returncode == 2  # no subcommand: a usage error
    from tensorforge.cli import main

    for command in ("compile", "run", "check", "viz", "profile", "bench"):  # in process: the same parser
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert f"usage: tensorforge {command}" in text and "--quiet" in text and "--debug" in text
        assert command == "run" or "random" in text  # how example inputs are made
    assert _listing(tmp_path) == []


# --- compile and run -----------------------------------------------------------------------------------------

def test_compile_writes_the_saved_model_and_run_gives_its_outputs(files, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    printed = _ok(tensorforge("compile", files / "cnn.onnx", "--input", files / "x.npy", "-o", out, cwd=work))
    assert "compiled for" in printed and _listing(out) == ["model.tfm"]
    result = _ok(tensorforge("run", out / "model.tfm", "--input", files / "x.npy", "--output", tmp_path / "y.npy",
                             "--output", tmp_path / "f.npy", cwd=work))
    assert "wrote" in result
    x = np.load(files / "x.npy")
    logits, features = np.load(tmp_path / "y.npy"), np.load(tmp_path / "f.npy")
    with tfg.compile(str(files / "cnn.onnx"), x) as cm:
        expected = cm(x)
    np.testing.assert_array_equal(logits, expected[0])  # the same code: the same bits
    np.testing.assert_array_equal(features, expected[1])
    onnx_runtime = _reference(files / "cnn.onnx", x)
    np.testing.assert_allclose(logits, onnx_runtime[0], rtol=1e-4, atol=1e-5)
    # a saved model is profiled without compiling again; bench needs the .onnx to run ONNX Runtime
    assert "conv2d" in _ok(tensorforge("profile", out / "model.tfm", "--input", files / "x.npy", "--repeat", "2", "-q",
                                       cwd=work))
    _error(tensorforge("bench", out / "model.tfm", "--against", "onnxruntime", "-q", cwd=work),
           "give the model as .onnx")
    _error(tensorforge("run", out / "model.tfm", "-q", cwd=work), "missing: x: f32[2,3,8,8]")
    assert _listing(work) == []


def test_compile_for_armv8_and_run_under_qemu(files, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    _ok(tensorforge("compile", files / "cnn.onnx", "--input", files / "x.npy", "--target", "armv8", "-o", out,
                    cwd=work))
    _ok(tensorforge("run", out / "model.tfm", "--input", f"x={files / 'x.npy'}", "--output", tmp_path / "outputs",
                    cwd=work))
    # a saved model names its outputs after the compiled graph's nodes (here the Gemm and the Flatten
    # nodes', not the ONNX outputs' names: the importer names a node after the ONNX node)
    with tfg.load(out / "model.tfm") as cm:
        names = [node.name for node in cm.graph.outputs]
    assert _listing(tmp_path / "outputs") == sorted(f"{name}.npy" for name in names)
    expected = _reference(files / "cnn.onnx", np.load(files / "x.npy"))
    for name, want in zip(names, expected):
        np.testing.assert_allclose(np.load(tmp_path / "outputs" / f"{name}.npy"), want, rtol=1e-4, atol=1e-5)
    assert _listing(work) == []


def test_compile_export_writes_the_c_package_beside_the_saved_model(files, tmp_path):
    import shutil

    if shutil.which("gcc") is None:
        pytest.skip("the C package is built with gcc")
    out, work = tmp_path / "out", tmp_path / "work"
    _ok(tensorforge("compile", files / "cnn.onnx", "--input", files / "x.npy", "-o", out, "--export", "--weights",
                    "file", "-q", cwd=work))
    written = _listing(out)
    for name in ("model.tfm", "model.h", "libmodel.a", "libmodel.so", "main.c", "Makefile", "README.md",
                 "model.weights"):
        assert name in written, written
    assert _listing(work) == []
    _error(tensorforge("compile", files / "cnn.onnx", "--input", files / "x.npy", "--export", "-q", cwd=work), "-o DIR")


def test_run_an_onnx_file_writes_each_output_into_a_directory(files, tmp_path):
    work = tmp_path / "work"
    printed = _ok(tensorforge("run", files / "cnn.onnx", "--input", files / "x.npy", "-o", tmp_path / "y", cwd=work))
    assert printed.count("wrote") == 2
    expected = _reference(files / "cnn.onnx", np.load(files / "x.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "y" / "logits.npy"), expected[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "y" / "features.npy"), expected[1], rtol=1e-4, atol=1e-5)
    np.savez(tmp_path / "inputs.npz", x=np.load(files / "x.npy"))  # inputs by name in one archive
    printed = _ok(tensorforge("run", files / "cnn.onnx", "--input", tmp_path / "inputs.npz", cwd=work))  # printed
    assert "logits: float32[2, 5]" in printed and "features: float32[2, 8]" in printed
    assert _listing(work) == []


def test_compile_without_output_writes_nothing_and_sizes_symbolic_axes(files, tmp_path):
    printed = _ok(tensorforge("compile", files / "cnn.onnx", "--input-shape", "batch=3", cwd=tmp_path))
    assert "x f32[3,3,8,8]" in printed and "nothing written" in printed
    # token ids are random in [0, 2): valid for any table; both symbolic axes sized by one input's shape
    printed = _ok(tensorforge("compile", files / "embedding.onnx", "--input-shape", "ids=1,6", cwd=tmp_path))
    assert "ids i64[1,6]" in printed
    assert _listing(tmp_path) == []


def test_compile_int8_with_calibration_prints_the_quant_report(files, tmp_path):
    printed = _ok(tensorforge("compile", files / "cnn.onnx", "--input", files / "x.npy", "--int8", "--calibration",
                              files / "calibration.npy", "-q", cwd=tmp_path))
    assert "int8" in printed
    _error(tensorforge("compile", files / "cnn.onnx", "--input", files / "x.npy", "--int8", "-q", cwd=tmp_path),
           "--calibration")


# --- check, viz, profile, bench ----------------------------------------------------------------------------

def test_check_on_armv8_agrees_and_names_the_first_diverging_pass(files, tmp_path):
    printed = _ok(tensorforge("check", files / "cnn.onnx", "--input", files / "x.npy", "--target", "armv8",
                              cwd=tmp_path))
    assert "all stages agree" in printed and "codegen (armv8)" in printed
    assert _listing(tmp_path) == []
    # at zero tolerance folding the batch norm into the conv changes the last bits: exit 1, naming it,
    # and --repro writes the shrunk graph where it says
    work, repro = tmp_path / "work", tmp_path / "repro"
    result = tensorforge("check", files / "cnn.onnx", "--input", files / "x.npy", "--rtol", "0", "--atol", "0",
                         "--repro", repro, "-q", cwd=work)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "check failed: fold-batch-norm changes output" in result.stderr
    assert "first diverging node" in result.stderr and "Traceback" not in result.stderr
    assert "repro.py" in _listing(repro) and "graph.tfir" in _listing(repro)
    assert _listing(work) == []


def test_check_int8_reports_the_distance_to_fp32(files, tmp_path):
    # the int8 conv's float epilogue differs from the QDQ graph's by ~3e-5 here, beyond check's default
    # fp32 tolerances (tfg.check(..., quantize="int8") itself fails on these inputs: reported)
    printed = _ok(tensorforge("check", files / "cnn.onnx", "--input", files / "x.npy", "--int8", "--calibration",
                              files / "calibration.npy", "--rtol", "1e-3", "--atol", "1e-4", "-q", cwd=tmp_path))
    assert "all stages agree" in printed and "distance of the compiled outputs to the fp32 model's" in printed


def test_viz_writes_the_pictures_and_index_only_in_its_directory(files, tmp_path):
    import shutil

    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed")
    work, pictures = tmp_path / "work", tmp_path / "pictures"
    printed = _ok(tensorforge("viz", files / "cnn.onnx", "--input-shape", "batch=1", "-o", pictures, cwd=work))
    assert "index.html" in printed
    written = _listing(pictures)
    assert "index.html" in written and "00_input.svg" in written and len(written) > 5
    assert _listing(work) == []


def test_profile_prints_the_kernel_table(files, tmp_path):
    printed = _ok(tensorforge("profile", files / "cnn.onnx", "--input", files / "x.npy", "--repeat", "3", "-q",
                              cwd=tmp_path))
    assert "GFLOP/s" in printed and "conv2d" in printed and "linear" in printed
    assert _listing(tmp_path) == []


def test_bench_against_onnxruntime(files, tmp_path):
    printed = _ok(tensorforge("bench", files / "cnn.onnx", "--input", files / "x.npy", "--against", "onnxruntime",
                              "--repeat", "2", "-q", cwd=tmp_path))
    assert "max abs difference from onnxruntime's outputs" in printed
    for engine in ("tensorforge", "onnxruntime 1 thread", "onnxruntime 2 threads"):
        assert engine in printed
    assert "tensorforge is " in printed and "x onnxruntime" in printed
    difference = float(printed.split("outputs: ")[1].split()[0])
    assert difference < 1e-4
    assert _listing(tmp_path) == []


def test_onnxruntime_session_profiles_per_node_at_the_given_prefix(files, tmp_path):
    """profile_prefix turns on ONNX Runtime's own profiling (benchmarks/profile_model.py --onnxruntime):
    its JSON lands at that prefix and names the model's nodes; without it nothing is written."""
    import json

    from tensorforge.cli.bench import onnxruntime_session

    x = np.load(files / "x.npy")
    plain = onnxruntime_session(str(files / "cnn.onnx"), threads=1)
    plain.run(None, {plain.get_inputs()[0].name: x})
    assert _listing(tmp_path) == []
    session = onnxruntime_session(str(files / "cnn.onnx"), threads=1, profile_prefix=str(tmp_path / "ort"))
    session.run(None, {session.get_inputs()[0].name: x})
    written = Path(session.end_profiling())
    assert written.parent == tmp_path and written.name.startswith("ort")
    ops = {event["args"].get("op_name") for event in json.loads(written.read_text()) if event.get("cat") == "Node"}
    assert "Conv" in ops


# --- bad input: one line, exit 1, the traceback only with --debug ------------------------------------------

def test_bad_input_gives_one_line_and_exit_status_1(files, tmp_path):
    model, x = files / "cnn.onnx", files / "x.npy"
    _error(tensorforge("compile", tmp_path / "missing.onnx", "-q", cwd=tmp_path), "missing.onnx", "no such file")
    _error(tensorforge("check", files / "garbage.onnx", "-q", cwd=tmp_path), "garbage.onnx", "not a valid ONNX model")
    _error(tensorforge("compile", files / "x.npy", "-q", cwd=tmp_path), "not an .onnx file")
    _error(tensorforge("compile", files / "round.onnx", "-q", cwd=tmp_path), "Round", "not supported")
    _error(tensorforge("compile", model, "--input", files / "x_wrong.npy", "-q", cwd=tmp_path), "input 'x'", "axis 1")
    _error(tensorforge("compile", model, "-q", cwd=tmp_path), "symbolic", "--input-shape x=")
    _error(tensorforge("compile", model, "--input", tmp_path / "nothing.npy", "-q", cwd=tmp_path), "nothing.npy",
           "no such file")
    _error(tensorforge("run", model, "-q", cwd=tmp_path), "give every input as a file")
    _error(tensorforge("run", model, "--input", x, "-o", tmp_path / "a.npy", "-q", cwd=tmp_path), "2 output(s)")
    _error(tensorforge("check", model, "--input", x, "--target", "sparc", "-q", cwd=tmp_path), "unknown target")
    _error(tensorforge("run", x, "--input", x, "-q", cwd=tmp_path), "not a tensorforge saved model")
    assert _listing(tmp_path) == []


def test_debug_shows_the_traceback(files, tmp_path):
    result = tensorforge("compile", files / "round.onnx", "--debug", "-q", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("tensorforge: error: ")
    result = tensorforge("--debug", "compile", files / "round.onnx", "-q", cwd=tmp_path)  # before the subcommand too
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_progress_goes_to_stderr_unless_quiet(files, tmp_path):
    loud = tensorforge("compile", files / "cnn.onnx", "--input", files / "x.npy", cwd=tmp_path)
    assert "compiling for host" in loud.stderr and "compiled for host" in loud.stdout
    quiet = tensorforge("compile", files / "cnn.onnx", "--input", files / "x.npy", "-q", cwd=tmp_path)
    assert quiet.stderr == "" and "compiled for host" in quiet.stdout
