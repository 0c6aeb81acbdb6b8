"""cm.export / gen.export (tensorforge/deploy/export.py): the C package's `main`, built with its Makefile
by the target's compiler, run as a plain program (armv8 under qemu-aarch64, x86-64 natively), writes
the bits of cm(x); its generate program gives gen.generate's tokens; weights files of another
model, of another target, truncated or damaged, and inputs of another dtype or shape are refused
with their message; several threads running separate tf_models give the same bits."""

from __future__ import annotations

import platform
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

import tensorforge as tf
from tensorforge import nn
from tensorforge.deploy import export
from tensorforge.ir import InputError
from tensorforge.models import cifar_cnn, mlp
from tensorforge.runtime.cross import find_cross_tools
from tensorforge.runtime.errors import ToolMissingError

try:
    TOOLS = find_cross_tools("aarch64")
except (ToolMissingError, NotImplementedError):
    TOOLS = None
CROSS = pytest.mark.skipif(TOOLS is None, reason="needs gcc-aarch64-linux-gnu and qemu-user")
HOST = pytest.mark.skipif(platform.machine() != "x86_64" or shutil.which("gcc") is None,
                          reason="the host tests build x86-64 packages with gcc")
THREADS_PROGRAM = Path(__file__).with_name("export_threads.c")
RNG = np.random.default_rng(0)


def runner(package: Path) -> list[str]:
    """How to start a program of `package`: under qemu for aarch64 code, directly on the host."""
    if any("aarch64" in header.read_text() for header in package.glob("*_io.h")):
        return [TOOLS.qemu, *(["-L", TOOLS.sysroot] if TOOLS.sysroot else [])]
    return []


def make(package: Path) -> None:
    compiler = TOOLS.compiler if runner(package) else "gcc"
    subprocess.run(["make", f"CC={compiler}"], cwd=package, check=True, capture_output=True, timeout=120)


def run(package: Path, program: str, *args, expect_failure: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run([*runner(package), f"./{program}", *map(str, args)], cwd=package, capture_output=True,
                            text=True, timeout=120)
    if expect_failure:
        assert result.returncode == 1, result
    else:
        assert result.returncode == 0, result.stderr
    return result


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def exported(cm, directory: Path, **options) -> Path:
    package = cm.export(directory, **options)
    make(package)
    return package


def tiny_gpt() -> nn.GPT:
    """A GPT whose greedy tokens vary (embeddings and head scaled up from the init's)."""
    model = nn.GPT(50, 32, 2, 2, 24, rng=np.random.default_rng(1))
    for name, array in model.state_dict().items():
        if "embedding" in name or "lm_head" in name:
            array *= np.float32(8)
    return model


# --- armv8 under qemu ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_armv8(tmp_path_factory):
    """The MLP on armv8 with two threads, its weights linked into the libraries."""
    x = RNG.standard_normal((1, 784)).astype(np.float32)
    cm = tf.compile(mlp(), x, target="armv8", threads=2)
    assert cm.artifact.threads == 2
    package = exported(cm, tmp_path_factory.mktemp("mlp_armv8"))
    yield cm, x, package
    cm.close()


@pytest.fixture(scope="module")
def cnn_armv8(tmp_path_factory):
    """The CIFAR CNN on armv8, its weights in model.weights."""
    x = RNG.standard_normal((1, 3, 32, 32)).astype(np.float32)
    cm = tf.compile(cifar_cnn(), x, target="armv8")
    package = exported(cm, tmp_path_factory.mktemp("cnn_armv8"), weights="file")
    yield cm, x, package
    cm.close()


@pytest.fixture(scope="module")
def gpt_armv8(tmp_path_factory):
    """A tiny GPT generator on armv8: its package (linked), and its decode step's (weights in a file)."""
    generator = tf.compile_generator(tiny_gpt(), 24, prompt_len=4, target="armv8")
    package = generator.export(tmp_path_factory.mktemp("gpt_armv8"))
    make(package)
    decode = exported(generator.decode_model, tmp_path_factory.mktemp("decode_armv8"), weights="file")
    yield generator, package, decode
    generator.close()


@CROSS
def test_the_mlp_on_armv8_gives_the_bits_of_cm_as_npy_and_raw(mlp_armv8):
    cm, x, package = mlp_armv8
    np.save(package / "x.npy", x)
    x.tofile(package / "x.raw")
    run(package, "main", "x.npy", "y.npy")
    run(package, "main", "x.raw", "y.raw")
    expected = cm(x)
    assert same_bits(np.load(package / "y.npy"), expected)
    assert (package / "y.raw").read_bytes() == expected.tobytes()
    timing = run(package, "main", "-n", "5", "x.npy", "y.npy").stdout
    assert "5 calls:" in timing and "ms per call" in timing


@CROSS
def test_separate_models_in_threads_on_armv8_give_the_same_bits(mlp_armv8, tmp_path):
    cm, x, package = mlp_armv8
    compiled = tmp_path / "export_threads"
    subprocess.run([TOOLS.compiler, "-O2", f"-I{package}", "-o", compiled, THREADS_PROGRAM, package / "libmodel.a",
                    "-lm", "-lpthread"], check=True, capture_output=True, timeout=120)
    x.tofile(tmp_path / "x.raw")
    result = subprocess.run([*runner(package), compiled, "3", "20", tmp_path / "x.raw", tmp_path / "y.raw"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "y.raw").read_bytes() == cm(x).tobytes()


@CROSS
def test_the_cnn_on_armv8_reads_its_weights_file_and_gives_the_bits_of_cm(cnn_armv8):
    cm, x, package = cnn_armv8
    assert (package / "model.weights").exists()
    np.save(package / "x.npy", x)
    run(package, "main", "x.npy", "y.npy")  # ./model.weights by default
    assert same_bits(np.load(package / "y.npy"), cm(x))


@CROSS
def test_a_gpt_decode_step_on_armv8_gives_the_bits_of_cm(gpt_armv8):
    generator, _, package = gpt_armv8
    cm = generator.decode_model
    inputs = [np.array([[7]], np.int64), np.array([5], np.int64)]
    inputs += [RNG.standard_normal(t.shape).astype(t.dtype.numpy) for t in cm.input_types[2:]]
    names = []
    for index, array in enumerate(inputs):
        name = f"in{index}.npy" if index != 1 else "pos.raw"  # one raw input among the .npy ones
        np.save(package / name, array) if name.endswith(".npy") else array.tofile(package / name)
        names.append(name)
    outputs = [f"out{index}.npy" for index in range(len(cm.output_types))]
    run(package, "main", *names, *outputs)
    for name, expected in zip(outputs, cm(*inputs), strict=True):
        assert same_bits(np.load(package / name), expected), name


@CROSS
def test_the_generators_c_loop_gives_the_tokens_of_generate_on_armv8(gpt_armv8):
    generator, package, _ = gpt_armv8
    for prompt in ([5, 1, 7], [3], [1, 2, 3, 4, 5, 6, 7]):  # shorter than prompt_len, and longer
        expected = generator.generate(prompt, 12, temperature=0)[len(prompt):]
        assert len(set(expected)) > 2  # the model does not repeat one token: the comparison means something
        printed = run(package, "generate", "-n", "12", *prompt).stdout.split()
        assert [int(token) for token in printed] == expected


@CROSS
def test_weights_files_of_another_model_another_target_truncated_or_damaged_are_refused(cnn_armv8, gpt_armv8,
                                                                                       mlp_armv8, tmp_path):
    _, x, package = cnn_armv8
    np.save(package / "x.npy", x)
    weights = (package / "model.weights").read_bytes()
    (tmp_path / "truncated.weights").write_bytes(weights[:-100])
    damaged = bytearray(weights)
    damaged[len(damaged) // 2] ^= 1
    (tmp_path / "damaged.weights").write_bytes(bytes(damaged))
    (tmp_path / "not.weights").write_bytes(b"hello" * 100)
    mlp_cm = mlp_armv8[0]
    host = tf.compile(mlp(), mlp_armv8[1], target="x86-64")
    export.write_weights(host.artifact, tmp_path / "host.weights")
    cases = {
        gpt_armv8[2] / "model.weights": "is for another model",
        tmp_path / "truncated.weights": "is truncated",
        tmp_path / "damaged.weights": "is damaged: its CRC-32",
        tmp_path / "host.weights": "is for the target 'x86_64 x86-64', this library was compiled for 'aarch64 armv8'",
        tmp_path / "not.weights": "is not a tensorforge weights file",
        tmp_path / "missing.weights": "cannot open the weights file",
    }
    for path, message in cases.items():
        result = run(package, "main", "-w", path, "x.npy", "y.npy", expect_failure=True)
        assert message in result.stderr and str(path) in result.stderr, (path, result.stderr)
    # a linked library refuses a file of another model too (tf_model_open(path) on it)
    mlp_package = mlp_armv8[2]
    np.save(mlp_package / "x.npy", mlp_armv8[1])
    result = run(mlp_package, "main", "-w", package / "model.weights", "x.npy", "y.npy", expect_failure=True)
    assert "is for another model" in result.stderr
    export.write_weights(mlp_cm.artifact, tmp_path / "mlp.weights")  # the model's own file is read
    run(mlp_package, "main", "-w", tmp_path / "mlp.weights", "x.npy", "y.npy")
    assert same_bits(np.load(mlp_package / "y.npy"), mlp_cm(mlp_armv8[1]))


# --- x86-64 natively ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_host(tmp_path_factory):
    x = RNG.standard_normal((1, 784)).astype(np.float32)
    cm = tf.compile(mlp(), x, target="host", threads=2)
    assert cm.artifact.threads == 2
    package = exported(cm, tmp_path_factory.mktemp("mlp_host"), weights="file")
    yield cm, x, package
    cm.close()


@HOST
def test_the_mlp_on_the_host_gives_the_bits_of_cm(mlp_host):
    cm, x, package = mlp_host
    np.save(package / "x.npy", x)
    run(package, "main", "x.npy", "y.npy")
    assert same_bits(np.load(package / "y.npy"), cm(x))
    described = run(package, "main", "-i").stdout
    assert "input 0: 'x' f32[1,784], 3136 bytes" in described and "2 thread(s)" in described


@HOST
def test_separate_models_in_threads_on_the_host_give_the_same_bits(mlp_host, tmp_path):
    cm, x, package = mlp_host
    compiled = tmp_path / "export_threads"
    subprocess.run(["gcc", "-O2", f"-I{package}", "-o", compiled, THREADS_PROGRAM, package / "libmodel.a", "-lm",
                    "-lpthread"], check=True, capture_output=True, timeout=120)
    x.tofile(tmp_path / "x.raw")
    result = subprocess.run([compiled, "4", "200", tmp_path / "x.raw", tmp_path / "y.raw"], cwd=package,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "y.raw").read_bytes() == cm(x).tobytes()


@HOST
def test_inputs_of_another_dtype_shape_order_or_size_are_refused_with_a_message(mlp_host):
    _, x, package = mlp_host
    cases = {
        "f64.npy": (x.astype(np.float64), "holds dtype '<f8', the input 'x' f32[1,784] needs '<f4'"),
        "shape.npy": (x.reshape(784), "holds an array of shape (784), the input 'x' f32[1,784] needs its shape"),
        "fortran.npy": (np.asfortranarray(np.ones((784, 1), np.float32)).T, "needs C order"),
    }
    for name, (array, message) in cases.items():
        np.save(package / name, array)
        if name == "fortran.npy":  # numpy saves a transposed Fortran array as C order: write the flag itself
            raw = (package / name).read_bytes().replace(b"'fortran_order': False", b"'fortran_order': True ")
            (package / name).write_bytes(raw)
        result = run(package, "main", name, "y.npy", expect_failure=True)
        assert message in result.stderr, (name, result.stderr)
    (package / "short.raw").write_bytes(b"\0" * 100)
    result = run(package, "main", "short.raw", "y.npy", expect_failure=True)
    assert "short.raw has 100 bytes, the raw input 'x' f32[1,784] needs 3136" in result.stderr
    result = run(package, "main", "-w", package / "model.weights", "too", "many", "files", expect_failure=True)
    assert "usage: main" in result.stderr


@HOST
def test_the_generator_on_the_host_gives_the_tokens_of_generate_and_refuses_bad_prompts(tmp_path):
    with tf.compile_generator(tiny_gpt(), 24, prompt_len=4, target="host", threads=2) as generator:
        package = generator.export(tmp_path / "gpt", weights="file")
        make(package)
        assert (package / "prefill.weights").exists() and (package / "decode.weights").exists()
        for prompt in ([5, 1, 7], [1, 2, 3, 4, 5, 6, 7]):
            expected = generator.generate(prompt, 12, temperature=0)[len(prompt):]
            assert [int(t) for t in run(package, "generate", "-n", "12", *prompt).stdout.split()] == expected
    result = run(package, "generate", "-n", "3", "1", "50", expect_failure=True)
    assert "input 'tokens' holds the id 50" in result.stderr and "outside [0, 50)" in result.stderr
    result = run(package, "generate", "-n", "30", "1", expect_failure=True)
    assert "do not fit in max_len=24" in result.stderr
    result = run(package, "generate", "-w", package / "decode.weights", package / "prefill.weights", "1",
                 expect_failure=True)
    assert "is for another model" in result.stderr


@HOST
def test_an_int8_generator_with_an_int8_cache_gives_the_tokens_of_generate(tmp_path):
    with tf.compile_generator(tiny_gpt(), 24, prompt_len=4, target="host", quantize="int8",
                              kv_cache="int8") as generator:
        package = generator.export(tmp_path / "gpt")
        make(package)
        for prompt in ([5, 1, 7], [1, 2, 3, 4, 5, 6, 7]):
            expected = generator.generate(prompt, 12, temperature=0)[len(prompt):]
            assert [int(t) for t in run(package, "generate", "-n", "12", *prompt).stdout.split()] == expected


@HOST
def test_the_id_inputs_of_a_model_are_checked_as_cm_checks_them(tmp_path):
    with tf.compile_generator(tiny_gpt(), 24, prompt_len=4, target="host") as generator:
        package = exported(generator.decode_model, tmp_path / "decode")
        cm = generator.decode_model
        caches = [np.zeros(t.shape, t.dtype.numpy) for t in cm.input_types[2:]]
        names = []
        for index, array in enumerate([np.array([[-3]], np.int64), np.array([0], np.int64), *caches]):
            np.save(package / f"in{index}.npy", array)
            names.append(f"in{index}.npy")
        with pytest.raises(InputError, match="holds the id -3"):
            cm(*[np.load(package / name) for name in names])
        result = run(package, "main", *names, *[f"out{i}.npy" for i in range(len(cm.output_types))],
                     expect_failure=True)
        assert "holds the id -3 at flat index 0, outside [0, 50)" in result.stderr


# --- Python side --------------------------------------------------------------------------------


def test_a_bad_weights_mode_or_a_missing_compiler_is_refused(tmp_path, monkeypatch):
    cm = tf.compile(mlp((8, 4)), np.zeros((1, 8), np.float32), target="x86-64")
    with pytest.raises(ValueError, match="weights must be 'linked'"):
        cm.export(tmp_path / "out", weights="inline")
    monkeypatch.setattr(export.shutil, "which", lambda name: None)
    with pytest.raises(ToolMissingError, match="gcc"):
        cm.export(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_weights_header_holds_what_the_c_side_checks():
    cm = tf.compile(mlp((8, 4)), np.zeros((1, 8), np.float32), target="armv8")
    header = export.weights_header(cm.artifact)
    weights = cm.artifact.weights.tobytes()
    assert header[:8] == b"TFWEIGHT" and len(header) == 128
    assert int.from_bytes(header[16:24], "little") == len(weights)
    assert int.from_bytes(header[32:36], "little") == zlib.crc32(weights)
    assert header[64:].rstrip(b"\0") == b"aarch64 armv8"
    other = tf.compile(mlp((8, 5)), np.zeros((1, 8), np.float32), target="armv8")
    assert export.layout_id(other.artifact) != export.layout_id(cm.artifact)
