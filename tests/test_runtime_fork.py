"""Compiled models in forked children (multiprocessing's "fork"): right answers, no hang, and the
parent's runner and files untouched. An armv8 child once shared its parent's qemu runner (203 of 400
results silently wrong), deadlocked on a lock another thread held at the fork, and deleted its
parent's build directory when it exited."""

from __future__ import annotations

import multiprocessing
import os
import threading

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge import nn

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

MODEL = None  # the model the children call (inherited through the fork)


def _model_and_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(32, 64, rng=rng), nn.ReLU(), nn.Linear(64, 8, rng=rng))
    inputs = [rng.standard_normal((4, 32)).astype(np.float32) for _ in range(24)]
    return model, inputs


def _call(x: np.ndarray) -> np.ndarray:
    return MODEL(x)


def _in_child(function, timeout: float = 120.0):
    """Run `function()` in a forked child; its return value (a bool) or a failure if it hangs or dies."""
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def main():
        try:
            writer.send(bool(function()))
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            writer.send(repr(err))

    child = context.Process(target=main)
    child.start()
    if not reader.poll(timeout):
        child.kill()
        child.join()
        pytest.fail(f"the forked child did not answer within {timeout} s (a hang)")
    result = reader.recv()
    child.join(timeout)
    return result


@pytest.mark.parametrize("target", ["armv8", "host"])
def test_a_pool_of_forked_children_computes_right_answers(target):
    global MODEL
    model, inputs = _model_and_inputs()
    expected = [tfg.interpret(tfg.trace(model, inputs[0]), x) for x in inputs]
    with tfg.compile(model, inputs[0], target=target, threads=2 if target == "host" else 1) as cm:
        MODEL = cm
        cm(inputs[0])  # the parent's runner (armv8) or pool (host) is running before the fork
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.map(_call, inputs, chunksize=3)
        for got, want in zip(results, expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        # the children exited: the parent's model (runner, directory) still works
        directory = getattr(cm._executor, "directory", None)
        assert directory is None or directory.exists()
        np.testing.assert_allclose(cm(inputs[1]), expected[1], rtol=1e-5, atol=1e-5)
    MODEL = None


def test_a_fork_while_another_thread_is_inside_a_call_does_not_deadlock():
    model, inputs = _model_and_inputs(1)
    expected = tfg.interpret(tfg.trace(model, inputs[0]), inputs[0])
    with tfg.compile(model, inputs[0], target="armv8") as cm:
        stop = threading.Event()

        def busy():
            while not stop.is_set():
                cm(inputs[2])

        worker = threading.Thread(target=busy)
        worker.start()
        try:
            results = [_in_child(lambda: np.allclose(cm(inputs[0]), expected, rtol=1e-5, atol=1e-5))
                       for _ in range(3)]
        finally:
            stop.set()
            worker.join()
        assert results == [True, True, True]
        np.testing.assert_allclose(cm(inputs[0]), expected, rtol=1e-5, atol=1e-5)


def test_a_child_that_closes_its_copy_leaves_the_parents_model_alone():
    model, inputs = _model_and_inputs(2)
    expected = tfg.interpret(tfg.trace(model, inputs[0]), inputs[0])
    for target in ("armv8", "host"):
        with tfg.compile(model, inputs[0], target=target, threads=2 if target == "host" else 1) as cm:
            cm(inputs[0])

            def child(cm=cm):
                right = np.allclose(cm(inputs[0]), expected, rtol=1e-5, atol=1e-5)
                cm.close()  # the child's own runner and directory go; the parent's stay
                return right

            assert _in_child(child) is True
            np.testing.assert_allclose(cm(inputs[0]), expected, rtol=1e-5, atol=1e-5)
