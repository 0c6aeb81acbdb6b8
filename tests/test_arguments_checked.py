"""Every argument is checked, with a message that names it (issue 21's findings, each failing before):
generation prompts as [1, S] arrays, sampling settings, cache lengths, layer sizes, prune=, threads=,
and calibration samples or a guard threshold the int8 guard could not judge by."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge import models, nn


@pytest.fixture(scope="module")
def generator():
    gpt = nn.GPT(50, 16, 2, 2, 32, rng=np.random.default_rng(0))
    with tfg.compile_generator(gpt, max_len=32, prompt_len=8) as gen:
        yield gen


def test_a_prompt_may_be_the_models_own_shape(generator):
    prompt = [3, 1, 4, 1, 5]
    expected = generator.generate(prompt, 4)
    assert generator.generate(np.array([prompt]), 4) == expected  # [1, S], as Hugging Face passes it
    assert generator.generate(np.array(prompt, np.int32), 4) == expected
    with pytest.raises(ValueError, match=r"token ids \[S\] or \[1, S\] \(batch 1\), got shape \[2, 5\]"):
        generator.generate(np.array([prompt, prompt]), 4)
    with pytest.raises(ValueError, match="integer token ids, got float64 values"):
        generator.generate(np.array(prompt, np.float64), 4)


@pytest.mark.parametrize("settings, message", [
    ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
    ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
    ({"top_k": 0}, "top_k must be None or an int >= 1"),
])
def test_sampling_settings_are_checked(generator, settings, message):
    with pytest.raises(ValueError, match=message):
        generator.generate([1, 2], 3, **settings)


@pytest.mark.parametrize("lengths, message", [
    ({"max_len": -4}, "max_len must be an int >= 1, got -4"),
    ({"max_len": 8, "prompt_len": 16}, r"prompt_len \(16\) must be at most max_len \(8\)"),
    ({"max_len": 8, "prompt_len": 0}, "prompt_len must be an int >= 1, got 0"),
])
def test_generator_lengths_are_checked(lengths, message):
    gpt = nn.GPT(50, 16, 1, 2, 32, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=message):
        tfg.compile_generator(gpt, **lengths)


def test_layer_sizes_are_checked():
    with pytest.raises(ValueError, match="Linear: in_features must be an int >= 1, got 0"):
        nn.Linear(0, 4)


def test_prune_takes_a_config():
    x = np.zeros((2, 784), np.float32)
    with pytest.raises(TypeError, match=r"prune= takes a tfg.PruneConfig.*got 0.5 \(float\)"):
        tfg.compile(models.mlp(), x, prune=0.5)


def test_threads_are_checked_and_more_than_the_cores_warn():
    x = np.zeros((2, 784), np.float32)
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        tfg.compile(models.mlp(), x, threads=0)
    cores = tfg.api.default_threads(tfg.Target.parse("host"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = models.mlp()
        with tfg.compile(model, x, threads=cores + 62) as compiled:
            np.testing.assert_allclose(compiled(x), tfg.interpret(tfg.trace(model, x), x), atol=1e-5)
    assert any(f"threads={cores + 62} but this process may run on {cores} cores" in str(w.message) for w in caught)


def test_calibration_the_guard_cannot_judge_is_refused():
    x = np.zeros((2, 784), np.float32)
    samples = np.random.default_rng(0).standard_normal((64, 784)).astype(np.float32)
    samples[3, 7] = np.nan
    with pytest.raises(ValueError, match=r"calibration input for 'x' holds 1 NaN or infinite value\(s\)"):
        tfg.compile(models.mlp(), x, quantize="int8", calibration=samples)
    with pytest.raises(ValueError, match="calibration input for 'x' is all zeros"):
        tfg.compile(models.mlp(), x, quantize="int8", calibration=np.zeros((64, 784), np.float32))
    with pytest.raises(ValueError, match="sqnr_budget must be a finite number of dB"):
        tfg.QuantConfig(sqnr_budget=float("nan"))
