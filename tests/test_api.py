"""End to end through the public API: the issue's usage snippet, MLP and CNN on both targets, check()."""

import numpy as np
import pytest

import tensorforge as tf
from tensorforge import models, nn
from tensorforge.check import CheckError

TARGETS = ["host", "armv8"]


def test_usage_snippet(tmp_path):
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax())
    x = np.random.default_rng(0).standard_normal((4, 64), dtype=np.float32)

    graph = tf.trace(model, x)
    assert "linear" in str(graph) and "softmax" in str(graph)
    ref = tf.interpret(graph, x)
    np.testing.assert_allclose(ref, model(x), rtol=1e-6)
    cm = tf.compile(model, x, target="armv8")
    y = cm(x)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    result = tf.check(model, x, target="armv8")
    assert result.stages[-1][0].startswith("codegen")
    out = cm.save_pictures(tmp_path / "out")
    assert (out / "index.html").exists()
    assert len(list(out.glob("*.svg"))) == len(cm.snapshots)
    assert "fold-constants" in str(cm.report())
    cm.close()

    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 5), dtype=np.float32)
    b = rng.standard_normal((5, 2), dtype=np.float32)
    mm = tf.compile(lambda a, b: a @ b + 1.0, (a, b), target="host")
    np.testing.assert_allclose(mm(a, b), a @ b + np.float32(1.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("batch", [1, 3])
def test_mlp_end_to_end(target, batch):
    model = models.mlp((20, 17, 9, 4))
    x = np.random.default_rng(batch).standard_normal((batch, 20), dtype=np.float32)
    with tf.compile(model, x, target=target) as cm:
        np.testing.assert_allclose(cm(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_cnn_end_to_end(target):
    model = models.small_cnn(channels=3, size=12)
    x = np.random.default_rng(2).standard_normal((2, 3, 12, 12), dtype=np.float32)
    with tf.compile(model, x, target=target) as cm:
        assert "batch_norm" not in str(cm.snapshots[-1][1]), "fold-batch-norm should remove the batch norm"
        np.testing.assert_allclose(cm(x), model(x), rtol=1e-4, atol=1e-5)
    tf.check(model, x, target=target)


def test_check_names_the_pass_that_diverges(monkeypatch):
    """A deliberately broken pass is caught and named, with the node and the error."""
    from tensorforge.passes import registry as pass_registry

    def broken_simplify(graph, ctx):
        for node in graph.op_nodes():
            if node.op == "relu":
                with graph.inserting_before(node):
                    wrong = graph.call("relu", [graph.call("neg", [node.inputs[0]])])
                node.replace_all_uses_with(wrong)
        return graph

    monkeypatch.setitem(pass_registry.PASSES, "simplify", pass_registry.PASSES["simplify"].replace(
        function=broken_simplify))
    model = models.mlp((8, 6, 3))
    x = np.random.default_rng(0).standard_normal((2, 8), dtype=np.float32)
    with pytest.raises(CheckError, match=r"simplify changes output 0.*\n.*first diverging node: %"):
        tf.check(model, x, target="host")


def test_unknown_target_lists_known_ones():
    with pytest.raises(ValueError, match="known targets: host, x86-64"):
        tf.compile(models.mlp((4, 2)), np.zeros((1, 4), np.float32), target="riscv-mystery")


def test_compile_needs_example_inputs():
    with pytest.raises(TypeError, match="example_inputs"):
        tf.compile(models.mlp((4, 2)))


def test_check_takes_the_int8_and_pruned_builds_and_reports_the_distance_to_fp32():
    rng = np.random.default_rng(0)
    model = models.mlp()
    x = rng.standard_normal((8, 784)).astype(np.float32)
    calibration = rng.standard_normal((64, 784)).astype(np.float32)
    result = tf.check(model, x, quantize="int8", calibration=calibration)
    assert "lower-quant" in [stage for stage, _, _ in result.stages]
    assert result.fp32_distance is not None and len(result.fp32_distance) == 1
    abs_error, _ = result.fp32_distance[0]
    assert 0 < abs_error < 0.5                                   # int8 error, measured, not a tolerance
    assert "distance of the compiled outputs to the fp32 model's" in str(result)
    pruned = tf.check(model, x, prune=tf.PruneConfig(method="structured", sparsity=0.5))
    assert pruned.fp32_distance[0][0] > 0                         # half the neurons are gone
    assert tf.check(model, x).fp32_distance is None


def test_check_of_an_int8_build_allows_the_int32_bias_rounding():
    """lower-quant's qlinear adds its bias in int32 codes of x's scale times w's: outputs near zero are off
    by up to half such a step (5.2e-5 here), which failed atol 1e-5. With quantize=, atol is one int8 code."""
    rng = np.random.default_rng(0)
    layer = nn.Linear(16, 8, rng=rng)
    layer.bias[...] = rng.standard_normal(8).astype(np.float32)
    x = rng.standard_normal((256, 16)).astype(np.float32)
    calibration = rng.standard_normal((256, 16)).astype(np.float32)
    with pytest.raises(tf.CheckError, match="lower-quant"):
        tf.check(layer, x, quantize="int8", calibration=calibration, atol=1e-5)
    result = tf.check(layer, x, quantize="int8", calibration=calibration)
    assert result.fp32_distance[0][0] < 0.1 * np.abs(x @ layer.weight + layer.bias).max()  # int8 error, clipping
