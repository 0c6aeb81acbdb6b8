"""Findings of issue 21's fuzzing, each reproduced: out= arrays that overlap the inputs (a history
shift, a swap) on host and armv8, an armv8 runner started from a thread that exits, and one Generator
used by two threads at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge import ir, nn


def _graph(outputs: str) -> ir.Graph:
    """Inputs x, a, b (f32[4]); outputs picked by name from x, a, b and a + 1."""
    graph = ir.Graph()
    values = {name: graph.add_input(name, ir.TensorType((4,), ir.DType.f32)) for name in "xab"}
    values["a1"] = graph.call("add", [values["a"], graph.constant(np.ones(4, np.float32))])
    graph.outputs = [values[name] for name in outputs.split(",")]
    return graph


@pytest.mark.parametrize("target", ["host", "armv8"])
def test_out_arrays_that_overlap_the_inputs(target):
    x, a, b = (np.full(4, value, np.float32) for value in (1.0, 2.0, 3.0))
    with tfg.compile(_graph("x,a"), target=target) as history:   # a history shift: a <- x, b <- a
        history(x, a, b, out=[a, b])
        np.testing.assert_array_equal(a, 1.0)
        np.testing.assert_array_equal(b, 2.0)                      # the old a, not the new one
    a, b = np.full(4, 2.0, np.float32), np.full(4, 3.0, np.float32)
    with tfg.compile(_graph("b,a"), target=target) as swap:
        swap(x, a, b, out=[a, b])
        assert a.tolist() == [3.0] * 4 and b.tolist() == [2.0] * 4
        call = swap.bind(x, a, b, out=[a, b])
        call()
        assert a.tolist() == [2.0] * 4 and b.tolist() == [3.0] * 4  # swapped back
    a = np.full(4, 2.0, np.float32)
    with tfg.compile(_graph("a1"), target=target) as step:          # in place: a <- a + 1, twice
        step(x, a, b, out=[a])
        step(x, a, b, out=[a])
        np.testing.assert_array_equal(a, 4.0)


def test_an_armv8_runner_outlives_the_thread_that_started_it():
    x = np.full(4, 1.0, np.float32)
    with tfg.compile(_graph("a1"), target="armv8") as compiled:
        results = []
        worker = threading.Thread(target=lambda: results.append(compiled(x, x, x)))
        worker.start()
        worker.join()                                              # the thread that started qemu is gone
        np.testing.assert_array_equal(results[0], 2.0)
        for _ in range(3):
            np.testing.assert_array_equal(compiled(x, x, x), 2.0)


def test_a_generator_refuses_a_second_user_while_it_generates():
    gpt = nn.GPT(40, 16, 1, 2, 24, rng=np.random.default_rng(0))
    with tfg.compile_generator(gpt, max_len=24, prompt_len=4) as gen:
        expected = gen.generate([1, 2, 3], 5)
        stream = gen.stream([1, 2, 3], 5)
        first = next(stream)                                        # the stream holds the cache now
        errors = []

        def other() -> None:
            try:
                gen.generate([4, 5], 3)
            except RuntimeError as error:
                errors.append(str(error))

        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
        assert errors and "this Generator is in use: another thread is generating with it" in errors[0]
        assert [first, *stream] == expected[3:]                     # the first stream was not disturbed
        assert gen.generate([1, 2, 3], 5) == expected               # free again once the stream ended


def test_module_load_checks_the_archive_before_reading_it(tmp_path):
    import io
    import zipfile

    model = nn.Linear(3, 2, rng=np.random.default_rng(0))
    model.save(tmp_path / "good.npz")
    copy = nn.Linear(3, 2, rng=np.random.default_rng(1))
    copy.load(tmp_path / "good.npz")
    np.testing.assert_array_equal(copy.weight, model.weight)
    # a small archive whose member declares a gigabyte: refused from its header, before decompressing
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (3, 2)})
    header = buffer.getvalue()
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("weight.npy", header + bytes(2**24))
        archive.writestr("bias.npy", header)
    with pytest.raises(nn.StateDictError, match=r"weight.npy declares 16777344 bytes, its header needs 128"):
        copy.load(tmp_path / "bomb.npz")
    with zipfile.ZipFile(tmp_path / "names.npz", "w") as archive:
        archive.writestr("weights.npy", header)
    with pytest.raises(nn.StateDictError, match=r"missing \['weight', 'bias'\], unexpected \['weights'\]"):
        copy.load(tmp_path / "names.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(nn.StateDictError, match="is not an .npz archive"):
        copy.load(tmp_path / "text.npz")


def test_an_empty_batch_through_conv_and_max_pool_compiles():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=np.random.default_rng(0)), nn.ReLU(), nn.MaxPool2d(2))
    x = np.zeros((0, 3, 8, 8), np.float32)
    with tfg.compile(model, x) as compiled:
        assert compiled(x).shape == (0, 4, 4, 4) == tfg.interpret(tfg.trace(model, x), x).shape
