"""check() names the node a broken rewrite got wrong, with sane errors, and minimize=True shrinks the graph
to a standalone repro. The broken passes are planted by tests/planted_pass.py, only inside each test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from planted_pass import planted

import tensorforge as tfg
from tensorforge import ir, models
from tensorforge.ir import DType, TensorType
from tensorforge.minimize import ddmin
from tensorforge.passes import PASSES, PIPELINE

TESTS = Path(__file__).resolve().parent


def residual_tanh_model(nodes: int, width: int = 8, seed: int = 0) -> tuple[ir.Graph, np.ndarray, str]:
    """Blocks of a linear and an elementwise chain (x * c, tanh, three times: one fused kernel) until
    the graph has `nodes` nodes; the block three quarters down adds a skip connection and ends in a
    relu instead: (graph, input, the name of that relu)."""
    rng = np.random.default_rng(seed)
    graph = ir.Graph()
    h = graph.add_input("x", TensorType((4, width), DType.f32))
    skip_at, index, relu = nodes // 9 * 3 // 4, 0, None
    while len(graph) < nodes:
        weight = graph.constant((rng.standard_normal((width, width)) * np.sqrt(2 / width)).astype(np.float32),
                                f"fc{index}.weight")
        bias = graph.constant((rng.standard_normal(width) * 0.1).astype(np.float32), f"fc{index}.bias")
        y = graph.call("linear", [h, weight, bias], name=f"fc{index}")
        if index == skip_at:
            y = graph.call("add", [y, h], name=f"res{index}")
            h = relu = graph.call("relu", [y], name=f"act{index}")
        else:
            for step in range(3):
                if len(graph) + 2 > nodes and step:
                    break
                scale = graph.constant(rng.uniform(0.8, 1.5, width).astype(np.float32), f"scale{index}_{step}")
                y = graph.call("tanh", [graph.call("mul", [y, scale])], name=f"act{index}_{step}")
            h = y
        index += 1
    graph.outputs = [h]
    return graph, rng.standard_normal((4, width)).astype(np.float32), relu.name


def test_planted_passes_are_gone_after_the_block():
    with planted("sum") as name:
        assert name in PASSES and name in PIPELINE
    assert name not in PASSES and name not in PIPELINE


def test_check_names_the_rewritten_node_not_the_next_one():
    """relu(a + b) -> clip(a + b){min=-0.01}: the clip (a new node, no same-named one before) is named,
    with the relu it stands for; the errors are where the reference is 0: absolute only."""
    graph, x, relu = residual_tanh_model(14)
    with planted("relu-of-sum") as name, pytest.raises(tfg.CheckError) as caught:
        tfg.check(graph, x)
    error = caught.value
    divergence = error.divergence
    assert error.stage == name and divergence.stage == name
    assert divergence.op == "clip" and divergence.attrs["min"] == -0.01
    assert divergence.origin.values == (relu,) and divergence.before[0].startswith(f"%{relu} = relu(")
    assert divergence.input_types == ["f32[4,8]"] and divergence.before_inputs == [["f32[4,8]"]]
    assert divergence.errors.max_abs == pytest.approx(0.01)
    assert divergence.errors.expected == 0 and divergence.errors.max_rel is None  # the reference is 0 there
    message = str(error)
    assert re.search(r"\n  first diverging node: %\S+ = clip\(%res\d+\) \{min=-0.01\}", message), message
    assert f"stands for, before the pass: %{relu} = relu(" in message
    assert "no element differs where the reference is not near zero" in message


def _headline_rel(message: str) -> float:
    return float(re.search(r"max rel error ([-+.e0-9]+)", message).group(1))


def test_check_gives_no_relative_error_where_the_reference_is_zero():
    """x + y -> x + 1.001 y with x = -y at one element: the old report divided by 1e-30 there."""
    graph = ir.Graph()
    x = graph.add_input("x", TensorType((3, 5), DType.f32))
    y = graph.add_input("y", TensorType((3, 5), DType.f32))
    graph.outputs = [graph.call("tanh", [graph.call("add", [x, y], name="sum")], name="out")]
    rng = np.random.default_rng(1)
    a, b = rng.uniform(1, 2, (3, 5)).astype(np.float32), rng.uniform(1, 2, (3, 5)).astype(np.float32)
    a[1, 2] = -b[1, 2]
    with planted("sum"), pytest.raises(tfg.CheckError) as caught:
        tfg.check(graph, (a, b))
    errors = caught.value.divergence.errors
    assert caught.value.divergence.origin.values == ("sum",) and caught.value.divergence.op == "sub"
    assert 1e-4 < errors.max_rel < 1e-3 and errors.near_zero == 1       # 0.001 * b / (a + b), a, b in [1, 2]
    assert 1e-5 < _headline_rel(str(caught.value)) < 1e-3


def test_ddmin_finds_the_two_items_that_matter():
    calls = set()

    def fails(items):
        calls.add(tuple(items))
        return {3, 11} <= set(items)

    assert ddmin(list(range(100)), fails) == [3, 11]
    assert len(calls) < 40  # distinct candidates (minimize caches them): about 2 * log2(100) per item kept


REPRO_CHILD = """
import runpy, sys
sys.path.insert(0, {tests!r})
from planted_pass import planted
runpy.run_path({script!r}, run_name="__main__")   # without the wrong pass, the graph checks fine
print("--- with the wrong pass planted ---", flush=True)
with planted("relu-of-sum"):
    runpy.run_path({script!r}, run_name="__main__")  # raises CheckError
"""


def _run_repro(script: Path) -> subprocess.CompletedProcess:
    """repro.py in a child process, once as it is, then with the same wrong pass planted first."""
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    return subprocess.run([sys.executable, "-c", REPRO_CHILD.format(tests=str(TESTS), script=str(script))],
                          capture_output=True, text=True, env=env, timeout=300, cwd=script.parent)


@pytest.mark.parametrize("nodes", [10, 100, 400])
def test_minimize_shrinks_a_planted_bug_to_a_repro(nodes, tmp_path, capsys):
    graph, x, relu = residual_tanh_model(nodes)
    assert abs(len(graph) - nodes) <= 4
    directory = tmp_path / "repro"
    with planted("relu-of-sum") as name, pytest.raises(tfg.CheckError) as caught:
        tfg.check(graph, x, minimize=True, repro_dir=directory)
    error = caught.value
    assert error.stage == name and error.repro_dir == str(directory)
    small = error.minimized
    assert len(small) <= 5, str(small)
    assert relu in [node.name for node in small.op_nodes()]
    assert "reproduces it" in str(error)
    seconds = float(re.search(r"minimized from \d+ to \d+ nodes in ([.0-9]+) s", str(error)).group(1))
    with capsys.disabled():
        print(f"\n  minimize: {len(graph)} -> {len(small)} nodes in {seconds:.2f} s")
    files = sorted(path.name for path in directory.iterdir())
    assert files == ["constants", "graph.tfir", "input_0.npy", "input_1.npy", "repro.py"]
    assert len((directory / "repro.py").read_text().splitlines()) <= 20
    child = _run_repro(directory / "repro.py")
    assert "all stages agree" in child.stdout.split("--- with the wrong pass planted ---")[0], child.stderr
    assert child.returncode != 0 and f"CheckError: {name} changes output 0" in child.stderr, child.stderr


def test_minimize_writes_to_a_new_temporary_directory_by_default():
    graph, x, _ = residual_tanh_model(10)
    with planted("relu-of-sum"), pytest.raises(tfg.CheckError) as caught:
        tfg.check(graph, x, minimize=True)
    directory = Path(caught.value.repro_dir)
    try:
        assert directory.parent == Path(tempfile.gettempdir()) and directory.name.startswith("tensorforge-repro-")
        assert str(directory / "repro.py") in str(caught.value)
    finally:
        shutil.rmtree(directory)


def test_minimize_changes_nothing_for_a_correct_model(tmp_path):
    model = models.mlp((8, 6, 3))
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    plain = tfg.check(model, x)
    minimized = tfg.check(model, x, minimize=True, repro_dir=tmp_path / "never")
    assert str(minimized) == str(plain)
    assert not (tmp_path / "never").exists()


def test_minimize_a_codegen_divergence_compiles_each_candidate(monkeypatch, tmp_path):
    """sigmoid compiled as tanh (a planted codegen bug): no pass diverges, the native code does; the
    minimizer compiles its candidates and keeps the sigmoid alone."""
    from tensorforge.codegen.ops import elementwise

    graph, x, _ = residual_tanh_model(12)
    chain = next(node for node in graph.op_nodes() if node.op == "tanh" and node.name.endswith("_0"))
    with graph.inserting_before(chain):
        squashed = graph.call("sigmoid", [chain.inputs[0]], name="squash")
    chain.replace_input(chain.inputs[0], squashed)
    monkeypatch.setitem(elementwise.ELEMENT, "sigmoid", elementwise.ELEMENT["tanh"])
    with pytest.raises(tfg.CheckError) as caught:
        tfg.check(graph, x, minimize=True, repro_dir=tmp_path / "repro")
    assert caught.value.stage == "codegen (host)" and caught.value.divergence is None
    assert [node.op for node in caught.value.minimized.op_nodes()] == ["sigmoid"]
    assert "reproduces it" in str(caught.value)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"minimize": "yes"}, TypeError, "minimize= takes True or False"),
    ({"minimize": True, "repro_dir": 3}, TypeError, "repro_dir= takes a directory path"),
    ({"repro_dir": "somewhere"}, ValueError, "pass minimize=True with it"),
])
def test_minimize_arguments_are_checked(kwargs, error, message):
    with pytest.raises(error, match=message):
        tfg.check(models.mlp((4, 2)), np.zeros((1, 4), np.float32), **kwargs)
