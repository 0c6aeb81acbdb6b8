"""The armv8 runtime on this x86 host: object code linked by the cross gcc, run under qemu-user."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_standin import CRASH, FAIL, HANG, affine_artifact, affine_reference, pair_artifact

from tensorforge.runtime import (
    CompiledModel,
    NativeError,
    RunnerError,
    RunnerTimeoutError,
    ToolMissingError,
    find_cross_tools,
)


def _tools():
    try:
        return find_cross_tools("aarch64")
    except ToolMissingError:
        return None


TOOLS = _tools()
pytestmark = pytest.mark.skipif(TOOLS is None, reason="needs gcc-aarch64-linux-gnu and qemu-user")

EM_AARCH64, ET_DYN = 183, 3


@pytest.fixture(scope="module")
def affine():
    with CompiledModel(affine_artifact("armv8", (4, 8))) as cm:
        yield cm


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((4, 8), dtype=np.float32)


def test_call_matches_reference(affine, x):
    assert not affine.target.runs_in_process
    for _ in range(3):  # the runner stays alive across calls
        np.testing.assert_array_equal(affine(x), affine_reference(x))
        x = x * 2


def test_several_inputs_and_outputs():
    with CompiledModel(pair_artifact("armv8", 1000)) as cm:
        x = np.linspace(-1, 1, 1000, dtype=np.float32)
        c = np.arange(1000, dtype=np.int32) - 500
        y, z = cm(x, c)
        np.testing.assert_array_equal(y, x + np.arange(1000, dtype=np.float32) * np.float32(0.5))
        np.testing.assert_array_equal(z, c * 3)


def test_shared_library_is_an_aarch64_shared_object(affine):
    header = affine.shared_library.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[16:18], "little") == ET_DYN
    assert int.from_bytes(header[18:20], "little") == EM_AARCH64


def test_shared_library_can_be_linked_and_run(affine, tmp_path):
    program = tmp_path / "main.c"
    program.write_text(
        "#include <stdint.h>\n#include <stdio.h>\n"
        "int32_t tf_run(void **, void **, void *, void *);\n"
        "int main(void) { float x[32] = {1}, y[32], w[32] = {0.25f}, ws[32]; void *in[] = {x}, *out[] = {y};\n"
        "  int s = tf_run(in, out, w, ws); printf(\"%d %g\\n\", s, y[0]); return s; }\n")
    library = affine.shared_library.parent
    subprocess.run([TOOLS.compiler, "-o", str(tmp_path / "main"), str(program), f"-L{library}", "-lmodel"],
                   check=True, capture_output=True)
    sysroot = ["-L", TOOLS.sysroot] if TOOLS.sysroot else []
    done = subprocess.run([TOOLS.qemu, *sysroot, "-E", f"LD_LIBRARY_PATH={library}", str(tmp_path / "main")],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "0 2.5\n"), done.stderr


def test_nonzero_status_raises_native_error(affine, x):
    x[0, 0] = FAIL
    with pytest.raises(NativeError, match="status 3") as info:
        affine(x)
    assert info.value.status == 3


def test_runner_crash_raises_and_the_next_call_restarts(affine, x):
    bad = x.copy()
    bad[0, 0] = CRASH
    with pytest.raises(RunnerError, match="crashed") as info:
        affine(bad)
    assert "SIGSEGV" in str(info.value) and "qemu: uncaught target signal 11" in str(info.value)
    np.testing.assert_array_equal(affine(x), affine_reference(x))


def test_hung_runner_times_out_and_the_next_call_restarts(x):
    with CompiledModel(affine_artifact("armv8", (4, 8)), timeout_seconds=1.0) as cm:
        bad = x.copy()
        bad[0, 0] = HANG
        start = time.monotonic()
        with pytest.raises(RunnerTimeoutError, match="did not answer within 1.0 s"):
            cm(bad)
        assert time.monotonic() - start < 5
        np.testing.assert_array_equal(cm(x), affine_reference(x))


def test_runner_that_cannot_start_raises_with_its_stderr(x):
    with CompiledModel(affine_artifact("armv8", (4, 8))) as cm:
        (cm.shared_library.parent / "weights.bin").unlink()  # the runner starts on the first call
        with pytest.raises(RunnerError, match="failed to start .exit status 2.") as info:
            cm(x)
        assert "opening the weights file" in str(info.value)


def test_link_failure_names_the_step_and_removes_the_directory(monkeypatch):
    artifact = affine_artifact("armv8", (4, 8))
    artifact.llvm_ir = artifact.llvm_ir.replace("store volatile i32 1, ptr null", "call void @not_defined()") + \
        "declare void @not_defined()\n"
    made = []
    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: made.append(real_mkdtemp(**kw)) or made[-1])
    with pytest.raises(RunnerError, match="linking the runner for armv8 failed(.|\n)*not_defined"):
        CompiledModel(artifact)
    assert len(made) == 1 and not Path(made[0]).exists()


def test_concurrent_calls_from_eight_threads(affine):
    inputs = [np.full((4, 8), float(i), dtype=np.float32) for i in range(8)]
    wrong: list[int] = []

    def work(index: int) -> None:
        for _ in range(10):
            if not np.array_equal(affine(inputs[index]), affine_reference(inputs[index])):
                wrong.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_close_stops_the_runner_and_removes_the_directory(x):
    cm = CompiledModel(affine_artifact("armv8", (4, 8)))
    cm(x)
    directory = cm.shared_library.parent
    process = cm._executor._resources.process
    assert directory.is_dir() and process.poll() is None
    cm.close()
    assert not directory.exists()
    assert process.poll() is not None
    with pytest.raises(RuntimeError, match="closed"):
        cm(x)


def test_garbage_collection_removes_the_directory(x):
    cm = CompiledModel(affine_artifact("armv8", (4, 8)))
    cm(x)
    directory = cm.shared_library.parent
    del cm
    gc.collect()
    assert not directory.exists()


def test_interpreter_exit_removes_the_directory():
    script = ("import sys, numpy as np; sys.path.insert(0, 'tests')\n"
              "from runtime_standin import affine_artifact\n"
              "from tensorforge.runtime import CompiledModel\n"
              "cm = CompiledModel(affine_artifact('armv8', (4, 8))); cm(np.ones((4, 8), np.float32))\n"
              "print(cm.shared_library.parent)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert not Path(done.stdout.strip()).exists()


def test_missing_cross_compiler_names_the_debian_package():
    with pytest.raises(ToolMissingError, match="gcc-aarch64-linux-gnu"):
        find_cross_tools("aarch64", path=os.devnull)


def test_missing_qemu_names_the_debian_package(tmp_path):
    (tmp_path / "aarch64-linux-gnu-gcc").symlink_to(TOOLS.compiler)
    with pytest.raises(ToolMissingError, match="qemu-user"):
        find_cross_tools("aarch64", path=str(tmp_path))


def test_unsupported_foreign_architecture():
    with pytest.raises(NotImplementedError, match="riscv64"):
        find_cross_tools("riscv64")


def test_bind_runs_the_runner_on_the_bound_arrays(affine, x):
    """CompiledModel.bind on armv8: each call sends the arrays' current values to the runner."""
    data = x.copy()
    step = affine.bind(data)
    np.testing.assert_array_equal(step(), affine_reference(x))
    data[:] = x * 2
    np.testing.assert_array_equal(step(), affine_reference(x * 2))
    data[0, 0] = FAIL
    with pytest.raises(NativeError, match="status 3"):
        step()
