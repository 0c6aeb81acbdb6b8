"""The host runtime: CompiledModel on a JIT-compiled stand-in artifact, in this process."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from runtime_standin import FAIL, affine_artifact, affine_reference, pair_artifact

from tensorforge.ir import InputError
from tensorforge.runtime import CompiledModel, NativeError
from tensorforge.runtime.array_entry import data_offset
from tensorforge.runtime.host import aligned_copy, aligned_empty, data_address


@pytest.fixture(scope="module")
def affine():
    with CompiledModel(affine_artifact("host", (4, 8))) as cm:
        yield cm


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 8), dtype=np.float32)


def test_call_matches_reference(affine, x):
    y = affine(x)
    assert y.dtype == np.float32 and y.shape == (4, 8)
    np.testing.assert_array_equal(y, affine_reference(x))


def test_each_call_returns_new_arrays(affine, x):
    first = affine(x)
    second = affine(x + 1)
    assert first is not second and not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, affine_reference(x))


def test_exact_arrays_are_passed_without_a_copy(affine, x):
    seen = []
    executor = affine._executor
    original = executor.run
    executor.run = lambda inputs, outputs: (seen.extend(inputs), original(inputs, outputs))
    try:
        affine(x)
    finally:
        del executor.run
    assert seen[0] is x


@pytest.mark.parametrize("convert", [
    lambda a: a.tolist(),
    lambda a: a.astype(np.float64),
    lambda a: np.asfortranarray(a),
    lambda a: np.repeat(a, 2, axis=1)[:, ::2],  # not contiguous
    lambda a: a.astype(">f4"),  # big-endian
    lambda a: np.frombuffer(a.tobytes(), np.float32).reshape(4, 8),  # read-only
    lambda a: np.frombuffer(b"\0" + a.tobytes(), np.float32, offset=1).reshape(4, 8),  # misaligned, read-only
], ids=["list", "float64", "fortran", "strided", "big-endian", "read-only", "misaligned"])
def test_safe_conversions(affine, x, convert):
    np.testing.assert_array_equal(affine(convert(x)), affine_reference(x))


def test_several_inputs_and_outputs():
    with CompiledModel(pair_artifact("host", 16)) as cm:
        x = np.linspace(-1, 1, 16, dtype=np.float32)
        c = np.arange(16, dtype=np.int32) - 8
        y, z = cm(x, c)
        np.testing.assert_array_equal(y, x + np.arange(16, dtype=np.float32) * np.float32(0.5))
        assert z.dtype == np.int32
        np.testing.assert_array_equal(z, c * 3)
        assert [str(t) for t in cm.input_types] == ["f32[16]", "i32[16]"]


def test_nonzero_status_raises_native_error(affine, x):
    x[0, 0] = FAIL
    with pytest.raises(NativeError, match="status 3") as info:
        affine(x)
    assert info.value.status == 3


def test_generated_code_is_visible(affine):
    assert "define i32 @tf_run" in affine.llvm_ir()
    assert "tf_run:" in affine.assembly()
    assert affine.shared_library is None
    assert repr(affine) == "<CompiledModel host: (f32[4,8]) -> (f32[4,8])>"


def test_closed_model_refuses_calls(x):
    cm = CompiledModel(affine_artifact("host", (4, 8)))
    cm.close()
    cm.close()
    with pytest.raises(RuntimeError, match="closed"):
        cm(x)


def test_concurrent_calls_from_eight_threads():
    """Each thread has its own input; a shared workspace would mix them up."""
    shape = (256, 256)
    with CompiledModel(affine_artifact("host", shape)) as cm:
        inputs = [np.full(shape, float(i), dtype=np.float32) for i in range(8)]
        expected = [affine_reference(x) for x in inputs]
        wrong: list[int] = []
        barrier = threading.Barrier(8)

        def work(index: int) -> None:
            barrier.wait()
            for _ in range(200):
                if not np.array_equal(cm(inputs[index]), expected[index]):
                    wrong.append(index)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert wrong == []


@pytest.mark.parametrize("nbytes", [0, 1, 63, 64, 1000])
def test_aligned_buffers(nbytes):
    buffer = aligned_empty(nbytes)
    assert buffer.ctypes.data % 64 == 0 and buffer.size >= nbytes
    data = np.arange(nbytes, dtype=np.uint8)
    copy = aligned_copy(data[1:])
    assert copy.ctypes.data % 64 == 0
    np.testing.assert_array_equal(copy[:max(nbytes - 1, 0)], data[1:])


@pytest.mark.parametrize("array", [
    np.ones((4, 8), np.float32), np.frombuffer(b"abcd", np.uint8), np.empty(0, np.float32),
    np.empty((), np.int64), np.zeros((3, 0)),
], ids=["writable", "read-only", "empty", "0-d", "zero-size"])
def test_data_address(array):
    assert data_address(array) == array.ctypes.data


def test_array_objects_are_read_at_the_data_offset():
    """run() passes the array objects; the entry reads each one's data pointer at data_offset()."""
    import ctypes

    offset = data_offset()
    assert offset is not None  # CPython: the fast path is taken (the tests run on CPython)
    base = np.arange(40, dtype=np.float32)
    for array in (np.ones((4, 8), np.float32), base[8:], base[8:].reshape(4, 8), np.frombuffer(b"abcdefgh", np.uint8),
                  np.empty((), np.int64), np.asfortranarray(np.ones((3, 5)))):
        assert ctypes.c_void_p.from_address(id(array) + offset).value == array.ctypes.data


def test_views_and_read_only_inputs_run_through_the_array_entry(affine, x):
    """A view starts inside its base's memory: the entry must read the view's own data pointer."""
    assert affine._executor._arrays_function is not None
    stacked = np.concatenate([np.zeros((4, 8), np.float32), x])
    view = stacked[4:]
    assert view.base is not None and view.flags.c_contiguous
    np.testing.assert_array_equal(affine(view), affine_reference(x))
    frozen = x.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(affine(frozen), affine_reference(x))
    out = np.zeros((8, 8), np.float32)
    affine(x, out=[out[4:]])
    np.testing.assert_array_equal(out[4:], affine_reference(x))
    assert not out[:4].any()


def test_without_the_data_offset_calls_take_the_pointer_path(x, monkeypatch):
    """Off CPython (or where no offset matches) data_offset() is None: the executor has no array
    entry and fills the pointer arrays in Python, with the same results, in place too."""
    import tensorforge.runtime.host as host

    monkeypatch.setattr(host, "data_offset", lambda: None)
    with CompiledModel(affine_artifact("host", (4, 8))) as cm:
        assert cm._executor._arrays_function is None
        np.testing.assert_array_equal(cm(x), affine_reference(x))
        inplace = x.copy()
        cm(inplace, out=[inplace])
        np.testing.assert_array_equal(inplace, affine_reference(x))


def test_out_writes_into_given_arrays_and_may_be_an_input(affine, x):
    expected = affine_reference(x)
    out = np.empty((4, 8), np.float32)
    assert affine(x, out=[out]) is out
    np.testing.assert_array_equal(out, expected)
    state = x.copy()
    affine(state, out=[state])  # in place: the input is read before the output is written
    np.testing.assert_array_equal(state, expected)
    with pytest.raises(InputError, match=r"out\[0\] must be a writeable C-contiguous aligned ndarray f32\[4,8\]"):
        affine(x, out=[np.empty((4, 8), np.float64)])
    read_only = np.empty((4, 8), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(InputError, match="writeable"):
        affine(x, out=[read_only])
    with pytest.raises(InputError, match="one per output"):
        affine(x, out=[])


def test_bind_runs_on_the_bound_arrays_and_sees_new_values(affine, x):
    data = x.copy()
    call = affine.bind(data)
    first = call()
    np.testing.assert_array_equal(first, affine_reference(x))
    data[:] = x + 1  # new values in the same array
    assert call() is first  # the bound output array, overwritten
    np.testing.assert_array_equal(first, affine_reference(x + 1))
    out = np.empty((4, 8), np.float32)
    assert affine.bind(data, out=[out])() is out
    np.testing.assert_array_equal(out, affine_reference(x + 1))
    data[0, 0] = FAIL
    with pytest.raises(NativeError, match="status 3"):
        call()


@pytest.mark.parametrize("convert", [
    lambda a: a.astype(np.float64), lambda a: np.asfortranarray(a), lambda a: a.tolist(), lambda a: a[:2]],
    ids=["float64", "fortran", "list", "shape"])
def test_bind_refuses_arrays_it_would_have_to_convert(affine, x, convert):
    with pytest.raises(InputError, match=r"bind: input '\w+' must be an aligned C-contiguous ndarray f32\[4,8\]"):
        affine.bind(convert(x))
    with pytest.raises(InputError, match="takes 1 input"):
        affine.bind(x, x)


def test_bound_call_of_a_closed_model_raises(x):
    cm = CompiledModel(affine_artifact("host", (4, 8)))
    call = cm.bind(x)
    cm.close()
    with pytest.raises(RuntimeError, match="closed"):
        call()
    with pytest.raises(RuntimeError, match="closed"):
        cm.bind(x)
