"""The digits example (examples/digits): real data, trained weights loaded without pickle, and the
compiled models' held-out accuracy equal to the reference interpreter's, pruned or not."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits"
sys.path.insert(0, str(EXAMPLE))

from data import accuracy, load_split  # noqa: E402
from evaluate import evaluate, trained  # noqa: E402


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_the_split_is_fixed_stratified_and_scaled(kind):
    x_train, y_train, x_test, y_test = load_split(kind)
    assert len(y_train) + len(y_test) == 1797 and len(y_test) == 450
    assert x_test.dtype == np.float32 and 0.0 <= x_test.min() and x_test.max() <= 1.0
    assert x_test.shape[1:] == ((64,) if kind == "mlp" else (1, 8, 8))
    np.testing.assert_array_equal(y_test, load_split(kind)[3])  # the same split every time
    every = np.bincount(np.concatenate([y_train, y_test]))
    assert np.all(np.abs(np.bincount(y_test) - 0.25 * every) <= 1)  # stratified: a quarter of each digit


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_trained_weights_load_without_pickle_and_classify_held_out_digits(kind):
    result = evaluate(kind, "host")
    assert result["host"] == result["reference"]  # the same predictions on all 450 images
    assert result["host"] >= 0.95, result  # 0.98 / 0.987 when trained (examples/digits/train.py)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("config", ["int8", "dynamic"])
def test_int8_accuracy_is_within_half_a_point_of_fp32(kind, config):
    import tensorforge as tf

    x_train, _, x_test, y_test = load_split(kind)
    model = trained(kind)
    quantize = tf.QuantConfig(dynamic=True) if config == "dynamic" else "int8"
    with tf.compile(model, x_test) as real, tf.compile(model, x_test, quantize=quantize, calibration=x_train) as q:
        fp32, int8 = accuracy(real(x_test), y_test), accuracy(q(x_test), y_test)
        assert q.quant_report().quantized  # some layers really are int8
        assert any(node.op in ("qlinear", "dynamic_qlinear") for node in q.snapshots[-1][1].nodes)
    assert int8 >= fp32 - 0.005, (fp32, int8)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("structured", [0.25, 0.5])
def test_structurally_pruned_models_compile_and_still_classify(kind, structured):
    """Smaller layers (no retraining): the compiled code agrees with the interpreter on the pruned graph."""
    result = evaluate(kind, "host", structured)
    assert result["host"] == result["reference"]
    assert result["host"] >= 0.5, result  # 0.971 / 0.689 (MLP), 0.800 / 0.638 (CNN) at 25% / 50%


def test_the_weights_files_hold_no_pickles():
    for path in (EXAMPLE / "weights").glob("*.npz"):
        with np.load(path, allow_pickle=False) as archive:  # raises on an object array
            assert all(archive[name].dtype == np.float32 for name in archive.files)
        assert path.stat().st_size < 2_000_000


def test_an_untrained_model_is_far_from_the_trained_accuracy():
    """The accuracy test can fail: random weights do not classify the digits."""
    from tensorforge.models import digits_mlp

    _, _, x_test, y_test = load_split("mlp")
    assert accuracy(digits_mlp(seed=1)(x_test), y_test) < 0.5
    assert trained("mlp") is not None


def test_torch_bridge_round_trip():
    """to_torch then copy_from_torch: the same weights and outputs (runs where the torch extra is installed)."""
    torch = pytest.importorskip("torch")
    from tensorforge.frontend.torch_bridge import copy_from_torch, to_torch
    from tensorforge.models import digits_cnn

    model, copy = digits_cnn(seed=3), digits_cnn(seed=4)
    net = to_torch(model)
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), model(x), rtol=1e-4, atol=1e-5)
    copy_from_torch(copy, net)
    for (name, a), (_, b) in zip(model.state_dict().items(), copy.state_dict().items(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
