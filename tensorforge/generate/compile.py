"""compile_generator: a decoder traced (or imported from PyTorch) once, rewritten into its prefill
and one-token decode graphs (generate/kv_cache.py), optionally quantized with the int8 guard, and
compiled into one weights pool; generator.py runs them (Generator).

    gen = tf.compile_generator(model, max_len=128, prompt_len=16, target="host", quantize="int8")

The first-token prefill (first_token_graph) is the prefill whose output layer reads only the last
prompt position; the full prefill is compiled when first asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np
from tqdm import tqdm

from ..codegen.memory import WeightsPool
from ..codegen.target import Target
from ..frontend.modules import Module
from ..ir import DType, Graph, TensorType
from ..ir.arrays import sharing_derived_arrays
from ..quant import QuantConfig
from ..quant import quantize as quantize_graph
from ..runtime import CompiledModel
from .generator import PAD_ID, Generator
from .kv_cache import KVCacheGraphs, rewrite_for_kv_cache


def _check_lengths(max_len, prompt_len) -> None:
    for name, value in (("max_len", max_len), ("prompt_len", prompt_len)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if prompt_len is not None and prompt_len > max_len:
        raise ValueError(f"prompt_len ({prompt_len}) must be at most max_len ({max_len})")


def compile_generator(model, max_len: int, prompt_len: int | None = None, target: str | Target = "host",
                      opt_level: int = 2, *, threads: int | None = None, quantize=None, calibration=None,
                      kv_cache: str = "f32", cache=True, verbose: bool = False) -> Generator:
    """Trace `model` (a GPT, or any model of tokens[1, S] -> logits[1, S, V] with causal attention;
    a torch.nn.Module decoder in eval mode, such as a Hugging Face GPT2LMHeadModel, whose cache-free
    forward is imported (frontend/torch/decoder.py); or a Graph traced so) on tokens[1, prompt_len],
    rewrite it for a KV cache of `max_len` positions and compile prefill and decode for `target`.
    prompt_len defaults to min(16, max_len).

    `quantize="int8"` (or a tf.QuantConfig with dynamic=True) turns every linear layer with a
    constant weight, in both graphs, into dynamic_qlinear: int8 weights (per output channel unless
    the config says per-tensor), each call's activations quantized with their own range at run
    time, int32 accumulation (tensorforge/quant/quantize.py). Embeddings, layer norms, attention and the
    cache stay f32. The int8 guard measures each layer on prefills of `calibration` (token ids
    [N, prompt_len], or a list of prompts, padded or cut to prompt_len; default: 8 prompts of random
    ids, seed 0) and keeps in f32 the layers below the config's budgets (30 dB over the layer, 20 dB
    on its worst output channel), in both graphs; gen.quant_report() lists the layers, their SQNR
    and decision. `kv_cache="int8"` stores the caches as int8
    codes with a scale per row (see the module docstring), independently of `quantize`. `verbose`
    shows a progress bar over the stages (a GPT-2-size model takes some 10 s).
    A tensorforge.nn model's weights are not copied (the compiled models hold theirs in one buffer):
    the generator's graphs read the model's arrays, so compile again after changing them (gen.logits()
    compiles the full prefill from those graphs on its first call, and gen.save() writes them). `cache` as for
    tf.compile: the whole generator is one entry of the compile cache (tensorforge/deploy/cache.py),
    found again after tracing (gen.cache_status == "hit").
    """
    from ..api import compile, default_threads, trace
    from ..deploy.cache import cache_directory, config_record, entry_for
    from ..deploy.saved import read_generator, save_generator

    _check_lengths(max_len, prompt_len)
    config = _generator_quant_config(quantize)
    target = Target.parse(target)
    cache_directory(cache)  # a bad value is refused before any work
    stages = 4 + (config is not None)  # trace, rewrite, [int8,] compile prefill, compile decode
    start = time.perf_counter()
    # sharing_derived_arrays: the graphs' passes make one fused q, k, v weight per layer (one set of int8
    # codes), not one per graph; and the weights pool packs each constant array once
    with tqdm(total=stages, desc="compile_generator", unit="stage", disable=not verbose) as progress, \
            sharing_derived_arrays():
        if isinstance(model, Graph):
            graph = model
        else:
            prompt_len = min(16, max_len) if prompt_len is None else prompt_len
            graph = _trace_decoder(model, prompt_len, trace)
        seconds = {"trace": time.perf_counter() - start}
        progress.update()
        entry = None if cache is False else entry_for(cache, "generator", graph, target, {
            "max_len": max_len, "prompt_len": prompt_len, "kv_cache": kv_cache, "quantize": config_record(config),
            "opt_level": opt_level, "threads": default_threads(target) if threads is None else threads,
            "calibration": None if config is None or calibration is None else
            [np.asarray(prompt).reshape(-1).tolist() for prompt in calibration]})
        found = None if entry is None else entry.load(functools.partial(read_generator, cache=cache))
        if found is not None:
            for compiled in (found, found.first_model, found.decode_model, found._prefill_model):
                if isinstance(compiled, (Generator, CompiledModel)):
                    compiled.cache_status = "hit"
            found.compile_seconds = {**seconds, "cache key": entry.seconds["key"], "load": entry.seconds["load"],
                                     "total": time.perf_counter() - start}
            progress.update(stages - 1)
            return found
        graphs = rewrite_for_kv_cache(graph, max_len, kv_cache=kv_cache)
        progress.update()
        report = None
        if config is not None:
            samples = _calibration_prompts(calibration, graphs.prefill)
            prefill_graph, report = quantize_graph(graphs.prefill, samples, config)
            decode_graph = quantize_graph(graphs.decode, None, config, decided=report)[0]
            graphs = dataclasses.replace(graphs, prefill=prefill_graph, decode=decode_graph)
            progress.update()
        first_graph = first_token_graph(graphs.prefill)
        # one weights buffer for the models: the decode graph's constants are the prefill's (a few bytes
        # of its own), and every copy of a GPT-2-size model's weights is 0.5 GB
        pool = _weights_pool(graphs)
        # the generator is the cache entry: its models are not entries of their own (but a full
        # prefill compiled later, by logits(), is)
        # the graphs share their weights: q, k and v fuse in all of them (fuse-sibling-linears would
        # leave a long prefill's apart), else both the separate and the fused weights are kept
        config = {"sibling_rows": None}
        first = None if first_graph is None else compile(first_graph, target=target, opt_level=opt_level,
                                                         threads=threads, cache=False, weights_pool=pool,
                                                         config=config)

        def prefill() -> CompiledModel:
            if first is None:
                return compile(graphs.prefill, target=target, opt_level=opt_level, threads=threads, cache=False,
                               weights_pool=pool, config=config)
            return compile(graphs.prefill, target=target, opt_level=opt_level, threads=threads, cache=cache,
                           config=config)

        progress.update()
        decode = compile(graphs.decode, target=target, opt_level=opt_level, threads=threads, cache=False,
                         weights_pool=pool, config=config)
        progress.update()
    decode.quantization = report
    generator = Generator(graphs, prefill if first is not None else prefill(), decode, first)
    generator.options = {"opt_level": opt_level, "threads": threads}
    if entry is not None:
        entry.store(functools.partial(save_generator, generator))
        generator.cache_status = "miss"
        seconds.update({"cache key": entry.seconds["key"], "cache store": entry.seconds["store"]})
    generator.compile_seconds = {**seconds, "total": time.perf_counter() - start}
    return generator


def _weights_pool(graphs: KVCacheGraphs) -> WeightsPool:
    """A weights pool for the generator's models, with room for both graphs' constants in their packed
    layouts (reserved, not allocated: only the bytes placed are memory)."""
    constants = sum(node.value.nbytes for graph in (graphs.prefill, graphs.decode) for node in graph.nodes
                    if node.op == "constant")
    return WeightsPool(constants * 5 // 4 + (4 << 20))


def _trace_decoder(model, prompt_len: int, trace) -> Graph:
    """The graph of `model` on tokens[1, prompt_len]: a torch.nn.Module through its cache-free forward
    (logits only), anything else through tf.trace."""
    from ..frontend.torch import is_torch_model

    if is_torch_model(model):
        import torch

        if isinstance(model, torch.nn.Module):
            from ..frontend.torch.decoder import load_decoder

            return load_decoder(model, prompt_len)
    if isinstance(model, Module):  # its weights read in place: a GPT-2's are 0.5 GB (see compile_generator)
        from ..frontend.tracing import trace as trace_module

        return trace_module(model, np.zeros((1, prompt_len), np.int64), copy_constants=False)
    return trace(model, np.zeros((1, prompt_len), np.int64))


def _output_layer(graph: Graph):
    """(linear, hidden [S, D] or [1, S, D]) when the graph's first output is a linear or dynamic_qlinear
    on the hidden states of the S positions, directly or reshaped from [S, V] to [1, S, V] (as PyTorch's
    exports write it); None otherwise."""
    head, length = graph.outputs[0], graph.inputs[0].shape[-1]
    if head.op == "reshape" and head.type.rank == 3 and head.shape[:2] == (1, length) \
            and head.inputs[0].type.rank == 2 and head.inputs[0].shape[0] == length:
        head = head.inputs[0]
    if head.op not in ("linear", "dynamic_qlinear") or head.attrs.get("residual"):
        return None
    hidden = head.inputs[0]
    if hidden.shape[:-1] not in ((1, length), (length,)):
        return None
    return head, hidden


def first_token_graph(prefill: Graph) -> Graph | None:
    """The prefill graph with its logits computed at one position: a second input `last` (i64[1])
    picks the row of the hidden states [1, S, D] (or [S, D]) that the output layer (a linear or
    dynamic_qlinear on them) reads, so the logits are [1, 1, V] instead of [1, S, V]: for GPT-2's
    50257-word vocabulary that is a third of a 32-token prefill's work. None when the logits are not
    such a layer. (Generation needs only the last prompt position's logits; logits() needs them all.)"""
    graph = prefill.copy()
    found = _output_layer(graph)
    if found is None:
        return None
    head, hidden = found
    length, width = hidden.shape[-2:] if hidden.type.rank == 3 else hidden.shape
    last = graph.add_input("last", TensorType((1,), DType.i64))
    rows = hidden if hidden.type.rank == 2 else graph.call("reshape", [hidden], {"shape": (length, width)})
    row = graph.call("gather", [rows, last])
    logits = graph.call(head.op, [row, *head.inputs[1:]], head.attrs)
    graph.outputs = [graph.call("reshape", [logits], {"shape": (1, 1, logits.shape[-1])}), *graph.outputs[1:]]
    return graph


def _calibration_prompts(calibration, prefill: Graph) -> np.ndarray:
    """The int8 guard's prompts as ids[N, prompt_len] for the prefill graph: `calibration` (an array
    [N, prompt_len], or prompts of up to prompt_len ids, padded with PAD_ID), or 8 of random ids."""
    tokens = prefill.inputs[0]
    prompt_len = tokens.shape[-1]
    vocab = _vocab_size(prefill)
    if calibration is None:
        return np.random.default_rng(0).integers(0, vocab, (8, prompt_len)).astype(tokens.dtype.numpy)
    prompts = [np.asarray(prompt).reshape(-1) for prompt in calibration]
    if not prompts or any(prompt.size == 0 or prompt.size > prompt_len for prompt in prompts):
        raise ValueError(f"calibration= takes prompts of 1 to prompt_len ({prompt_len}) token ids each "
                         f"(an array [N, {prompt_len}] or a list of id lists)")
    ids = np.full((len(prompts), prompt_len), PAD_ID, np.int64)
    for row, prompt in zip(ids, prompts):
        if prompt.dtype.kind not in "iu" or prompt.min() < 0 or prompt.max() >= vocab:
            raise ValueError(f"calibration prompts must hold integer token ids in [0, {vocab})")
        row[:prompt.size] = prompt
    return ids.astype(tokens.dtype.numpy)


def _vocab_size(prefill: Graph) -> int:
    """The vocabulary: the last axis of the prefill's logits (its first output)."""
    return prefill.outputs[0].shape[-1]


def _generator_quant_config(quantize) -> QuantConfig | None:
    """The dynamic int8 config `quantize` asks for (None: f32); static int8 is refused: its activation
    scales would differ between a prefill's rows and a decode step's one row."""
    if quantize is None:
        return None
    if quantize == "int8":
        return QuantConfig(dynamic=True)
    config = QuantConfig.of(quantize)
    if not config.dynamic:
        raise ValueError("compile_generator quantizes dynamically (activation scales at run time): pass "
                         "quantize='int8' or tf.QuantConfig(dynamic=True, ...), not a static config")
    return config
