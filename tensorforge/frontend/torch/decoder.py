"""A PyTorch decoder as the generator needs it: its cache-free forward, tokens[1, S] -> logits[1, S, V].

    graph = load_decoder(GPT2LMHeadModel(config).eval(), prompt_len=16)
    graph(%input_ids: i64[1,16]) {
      %transformer.wte.weight = constant() : f32[1000,128]       parameters named as in the model
      ...
      return %view_29 : f32[1,16,1000]                           the logits alone

`tfg.compile_generator(module, ...)` starts here, then rewrites the graph for a KV cache
(tensorforge/generate/kv_cache.py). The module is called with the token ids alone and, when its
forward takes them, `use_cache=False` and `return_dict=True` (a Hugging Face model then computes no
past_key_values and returns a ModelOutput): the logits are the output's `logits`, the first item of
a tuple, or the tensor it returns. The export sees the module's own parameters and submodules, so
constants keep their module paths (`transformer.h.0.attn.c_attn.weight`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from ... import ir
from .context import TorchImportError, _torch
from .importer import load_torch


def _logits(output):
    """The logits among what a decoder's forward returns (see the module docstring)."""
    torch = _torch()
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and "logits" in output:  # a ModelOutput is a Mapping
        return output["logits"]
    if getattr(output, "logits", None) is not None:
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TorchImportError(f"the decoder's forward returned {type(output).__name__}; compile_generator needs its "
                           "logits [1, S, vocab]: a tensor, a tuple whose first item is the logits, or an output "
                           "with .logits")


def _forward_options(model) -> dict:
    """The keyword arguments that make a Hugging Face-style forward cache-free and return a ModelOutput."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    options = {"use_cache": False, "return_dict": True}
    return {key: value for key, value in options.items() if key in parameters}


def logits_only(model):
    """A torch.nn.Module computing `model`'s logits from input_ids alone (see the module docstring). It
    holds the model's own submodules, parameters and buffers, so the export names them as the model does."""
    torch = _torch()
    options = _forward_options(model)

    class LogitsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, child in model.named_children():
                self.add_module(name, child)
            for name, parameter in model.named_parameters(recurse=False):
                self.register_parameter(name, parameter)
            for name, buffer in model.named_buffers(recurse=False):
                self.register_buffer(name, buffer, persistent=name not in model._non_persistent_buffers_set)
            object.__setattr__(self, "decoder", model)  # called, not registered: no "decoder." in the names
            self.train(model.training)

        def forward(self, input_ids):
            return _logits(self.decoder(input_ids, **options))

    LogitsOnly.__name__ = LogitsOnly.__qualname__ = type(model).__name__  # messages name the user's class
    return LogitsOnly()


def load_decoder(model, prompt_len: int) -> ir.Graph:
    """The cache-free forward of `model` (a torch.nn.Module in eval mode) on tokens[1, prompt_len], as a
    graph of one input (`input_ids`, i64) and one output, the logits."""
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"load_decoder takes a torch.nn.Module, got {type(model).__name__}")
    tokens = torch.zeros((1, prompt_len), dtype=torch.int64)
    return load_torch(logits_only(model), (tokens,))
