"""compile_generator: a GPT compiled for generation with a KV cache (generate/kv_cache.py).

    gen = tf.compile_generator(model, max_len=128, prompt_len=16, target="host")
    ids = gen.generate([5, 1, 7], max_new_tokens=20, temperature=0)     # prompt + 20 new ids
    for token in gen.stream([5, 1, 7], 20, temperature=0.8, top_k=10, seed=0): ...
    print(gen.stats)        # prefill seconds, decode tokens/s, cache bytes
    gen.export("gpt/")      # a C package: prefill, decode and a greedy loop (tensorforge/deploy/export.py)
    gen.save("gpt.tfm")     # one file; tf.load_generator("gpt.tfm") generates the same tokens (deploy/saved.py)
    gen = tf.compile_generator(GPT2LMHeadModel(config).eval(), max_len=128)   # a PyTorch decoder too

A torch.nn.Module is imported through its cache-free forward (frontend/torch/decoder.py: input_ids
only, use_cache=False, the logits of its output), then rewritten as a traced model is.

Two compiled graphs: prefill(tokens[1, prompt_len]) -> logits and each layer's k and v, copied into
the caches' first rows; decode(token[1,1], pos, caches...) -> logits[1,1,V] and the caches with row
`pos` written. A prompt of up to prompt_len tokens is one prefill call, padded at the end with
token 0: the model is causal, so the real positions' logits, k and v do not depend on the padding,
and the cache rows the padding fills are each overwritten by the decode step at that position
before any query reads them. A longer prompt is a prefill of its first prompt_len tokens and one
decode step per remaining token. Prompt and new tokens together must fit in max_len.

Generation (generate, stream, next_logits) starts from a third graph, the first-token prefill
(first_token_graph): the prefill whose output layer reads only the last prompt position's row, so
it computes logits[1, 1, V] instead of [1, prompt_len, V]. The full prefill, which logits() needs,
is compiled the first time logits() or prefill_model asks for it.

The caches are numpy arrays the generator owns: the compiled graphs only read them and return
each layer's new k and v rows, which the generator writes in (prefill: rows 0..prompt_len-1; decode:
row pos). Attention reads only the rows up to the position (cached_attention), so a decode step's
cost grows with the position, not with max_len.

With kv_cache="int8" every cache is int8 codes and an f32 scale per row (one position of one head,
generate/kv_cache.py): about a quarter of the f32 cache's bytes (3.8x fewer for 64-wide heads), read
so by every decode step's attention, and logits within int8 error of the f32 cache's. The graphs
quantize the rows they return.

With quantize="int8" the linear layers are dynamic_qlinear: each call quantizes its activations with
their own range (per tensor). A padded prefill's range then spans the padding's rows too, so a short
prompt's int8 logits differ, within int8 error, from those of an unpadded run; f32 is unaffected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..codegen.memory import WeightsPool
from ..codegen.target import Target
from ..frontend.modules import Module
from ..frontend.transformer import sample
from ..ir import DType, Graph, TensorType
from ..ir.arrays import sharing_derived_arrays
from ..quant import QuantConfig
from ..quant import quantize as quantize_graph
from ..runtime import CompiledModel
from .kv_cache import KVCacheGraphs, rewrite_for_kv_cache

PAD_ID = 0  # what a prompt shorter than prompt_len is padded with for the prefill (any valid id would do)


@dataclass
class GenerationStats:
    """What the last generate/stream call took: the prompt's time (the prefill call and, for a prompt
    longer than prompt_len, its decode steps), decode steps of new tokens and their time, cache size."""

    prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_steps: int = 0
    decode_seconds: float = 0.0
    cache_bytes: int = 0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.decode_steps / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"prefill {self.prompt_tokens} tokens: {self.prefill_seconds * 1e3:.2f} ms; decode "
                f"{self.decode_steps} steps: {self.decode_tokens_per_second:.1f} tokens/s; "
                f"cache {self.cache_bytes / 2**20:.2f} MiB")


def _top_k(logits: np.ndarray, top_k: int | None) -> np.ndarray:
    """The logits with all but the `top_k` largest set to -inf (ties at the boundary are kept)."""
    if top_k is None or top_k >= logits.size:
        return logits
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    threshold = np.partition(logits, -top_k)[-top_k]
    return np.where(logits >= threshold, logits, np.float32(-np.inf))


class Generator:
    """A compiled prefill and decode pair with the caches they share (see the module docstring)."""

    def __init__(self, graphs: KVCacheGraphs, prefill: CompiledModel | Callable[[], CompiledModel],
                 decode: CompiledModel, first: CompiledModel | None = None):
        """`prefill` may be a function compiling it, called when it is first needed (logits()); `first`
        is the prefill that computes the logits of one position (first_token_graph), for generation."""
        self.graphs, self.decode_model, self.first_model = graphs, decode, first
        self._prefill_model = prefill
        self._in_use = threading.Lock()  # one KV cache: one generation at a time (see _exclusive)
        self.max_len, self.prompt_len = graphs.max_len, graphs.prompt_len
        self.vocab_size = decode.output_types[0].shape[-1]
        # how it was compiled (compile_generator sets them; a loaded generator compiles its full prefill so)
        self.options = {"opt_level": 2, "threads": getattr(decode.artifact, "threads", 1)}
        self.loaded_from = None  # the file (gen.save / the compile cache) it was loaded from
        self.cache_status = "off"  # compile_generator's cache: "hit" (loaded from loaded_from), "miss" (stored)
        self.compile_seconds: dict[str, float] = {}  # compile_generator's: trace, cache key, load / store, total
        # decode's inputs: token, pos, then each of the 2 * layers caches' arrays (graphs.cache_types each)
        count = (len(decode.input_types) - 2) // len(graphs.cache_types)
        self.layers = count // 2
        # every cache is one slice of a block per array it has (f32 rows; or int8 codes and scales), and
        # so is every new row a decode step returns: a step writes its rows in with one assignment a block
        self._cache_blocks = [np.zeros((count, *t.shape), t.dtype.numpy) for t in graphs.cache_types]
        self.caches = [block[i] for i in range(count) for block in self._cache_blocks]  # decode's input order
        self.cache_bytes = sum(block.nbytes for block in self._cache_blocks)
        self.position = 0
        self.stats = GenerationStats(cache_bytes=self.cache_bytes)
        # a decode step on fixed arrays (CompiledModel.bind: checked once, not per token)
        self._token, self._position = np.zeros((1, 1), np.int64), np.zeros(1, np.int64)
        logits_type, row_types = decode.output_types[0], decode.output_types[1:1 + len(graphs.cache_types)]
        self._row_blocks = [np.empty((count, *t.shape), t.dtype.numpy) for t in row_types]
        rows = [block[i] for i in range(count) for block in self._row_blocks]
        self._logits = np.empty(logits_type.shape, logits_type.dtype.numpy)
        self._decode = decode.bind(self._token, self._position, *self.caches, out=[self._logits, *rows])

    @property
    def prefill_model(self) -> CompiledModel:
        """The prefill returning the logits of every position (compiled on first use when the
        generator has a first-token prefill)."""
        if not isinstance(self._prefill_model, CompiledModel):
            self._prefill_model = self._prefill_model()
        return self._prefill_model

    def reset(self) -> None:
        """Forget every cached position (the caches need no clearing: rows after `pos` are masked)."""
        self.position = 0

    def _step(self, token: int) -> np.ndarray:
        """Feed one token at the current position; its logits[V]."""
        if self.position >= self.max_len:
            raise ValueError(f"the cache is full: all max_len={self.max_len} positions are used")
        self._token[0, 0], self._position[0] = token, self.position
        self._decode()
        for cache, rows in zip(self._cache_blocks, self._row_blocks, strict=True):
            cache[:, :, :, self.position:self.position + 1] = rows
        self.position += 1
        return self._logits[0, 0].copy()  # the bound output array is overwritten by the next step

    def _fill(self, model: CompiledModel, tokens: list[int], *more: np.ndarray) -> tuple[np.ndarray, int]:
        """Reset and run `model` (a prefill) on the first prompt_len `tokens`, padded, and `more`
        inputs; write its k and v into the caches. Its logits output and how many tokens it took."""
        self.reset()
        head = tokens[:self.prompt_len]
        outputs = model(np.array([head + [PAD_ID] * (self.prompt_len - len(head))], np.int64), *more)
        for cache, written in zip(self.caches, outputs[1:], strict=True):
            cache[:, :, :self.prompt_len] = written
        self.position = len(head)
        return outputs[0], len(head)

    def _prefill(self, tokens: list[int]) -> np.ndarray:
        """Reset and feed `tokens`; the logits after each of them, [len(tokens), V]."""
        logits, taken = self._fill(self.prefill_model, tokens)
        rows = list(logits[0, :taken])
        rows.extend(self._step(token) for token in tokens[taken:])
        return np.stack(rows)

    def _start(self, tokens: list[int]) -> np.ndarray:
        """Reset and feed `tokens`; the logits after the last of them, [V]. The first-token prefill
        computes the vocabulary's logits at that position only."""
        if self.first_model is None:
            return self._prefill(tokens)[-1]
        last = np.array([min(len(tokens), self.prompt_len) - 1], np.int64)
        logits, taken = self._fill(self.first_model, tokens, last)
        logits = logits[0, 0]
        for token in tokens[taken:]:
            logits = self._step(token)
        return logits

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the generator's one KV cache for a call or a whole stream; a second user (another thread,
        or a new call while a stream is unfinished) is refused rather than given a cache it shares."""
        if not self._in_use.acquire(blocking=False):
            raise RuntimeError("this Generator is in use: another thread is generating with it, or a stream() "
                               "is unfinished (a Generator holds one KV cache; use one Generator per thread, "
                               "and finish or close a stream first)")
        try:
            yield
        finally:
            self._in_use.release()

    def next_logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """The logits after `token_ids` (their last position), [V]: what generation starts from."""
        tokens = self._check_tokens(token_ids, 0)
        with self._exclusive():
            return self._start(tokens)

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """The logits after every prefix of `token_ids`, [len, V], through prefill and the cache."""
        tokens = self._check_tokens(token_ids, 0)
        with self._exclusive():
            return self._prefill(tokens)

    def _check_tokens(self, token_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """The prompt as a list of ints: a list, or an integer array [S] or [1, S] (the shape the
        model takes, as Hugging Face passes prompts)."""
        array = np.asarray(token_ids)
        if array.ndim == 2 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 1:
            raise ValueError(f"the prompt must be token ids [S] or [1, S] (batch 1), got shape {list(array.shape)}")
        if array.size and array.dtype.kind not in "iu":
            raise ValueError(f"the prompt must be integer token ids, got {array.dtype} values")
        if not isinstance(max_new_tokens, (int, np.integer)) or isinstance(max_new_tokens, bool):
            raise ValueError(f"max_new_tokens must be an int, got {max_new_tokens!r}")
        tokens = [int(token) for token in array]
        if not tokens:
            raise ValueError("generation needs a prompt of at least one token")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be non-negative, got {max_new_tokens}")
        if len(tokens) + max_new_tokens > self.max_len:
            raise ValueError(f"a prompt of {len(tokens)} tokens and {max_new_tokens} new ones do not fit in "
                             f"max_len={self.max_len} cache positions")
        return tokens

    def stream(self, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0,
               top_k: int | None = None, seed: int | None = None) -> Iterator[int]:
        """Yield `max_new_tokens` new token ids one at a time; temperature 0 is greedy (argmax)."""
        tokens = self._check_tokens(prompt_ids, max_new_tokens)
        _check_sampling(temperature, top_k)
        rng = np.random.default_rng(seed)
        with self._exclusive():  # held until the stream ends or is closed (dropping it closes it)
            stats = GenerationStats(prompt_tokens=len(tokens), cache_bytes=self.cache_bytes)
            self.stats = stats
            start = time.perf_counter()
            logits = self._start(tokens)
            stats.prefill_seconds = time.perf_counter() - start
            for index in range(max_new_tokens):
                token = sample(_top_k(logits, top_k), temperature, rng)
                yield token
                if index + 1 < max_new_tokens:
                    start = time.perf_counter()
                    logits = self._step(token)
                    stats.decode_seconds += time.perf_counter() - start
                    stats.decode_steps += 1

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None) -> list[int]:
        """The prompt followed by `max_new_tokens` new token ids (see stream)."""
        return self._check_tokens(prompt_ids, max_new_tokens) + list(
            self.stream(prompt_ids, max_new_tokens, temperature, top_k, seed))

    def export(self, directory, *, weights: str = "linked", verbose: bool = False):
        """Write a C package for the target into `directory`: the prefill (first-token when there is one)
        and decode graphs, a greedy loop giving generate(prompt, n, temperature=0)'s ids
        (generator.h), the generate program, a Makefile and a README (docs/deploy.md). Returns the directory."""
        from ..deploy.export import export_generator

        return export_generator(self, directory, weights=weights, verbose=verbose)

    def save(self, path):
        """Write the generator to one file at `path` (its compiled models, prefill and decode graphs and
        settings; deploy/saved.py); `tensorforge.load_generator(path)` gives back one generating the same tokens."""
        from ..deploy.saved import save_generator

        return save_generator(self, path)

    def quant_report(self):
        """The int8 layers (compile_generator(quantize="int8")): scheme, SQNR on the calibration prompts
        (the whole layer's and its worst output channel's), decision, weight bytes."""
        return self.decode_model.quant_report()

    def close(self) -> None:
        for model in (self._prefill_model, self.first_model, self.decode_model):
            if isinstance(model, CompiledModel):
                model.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Generator {self.decode_model.target.name}: {self.layers} layers, "
                f"prompt_len {self.prompt_len}, max_len {self.max_len}, {self.graphs.kv_cache} cache "
                f"{self.cache_bytes} bytes>")


def _check_sampling(temperature, top_k) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)) \
            or not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")


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
        first = None if first_graph is None else compile(first_graph, target=target, opt_level=opt_level,
                                                         threads=threads, cache=False, weights_pool=pool)

        def prefill() -> CompiledModel:
            if first is None:
                return compile(graphs.prefill, target=target, opt_level=opt_level, threads=threads, cache=False,
                               weights_pool=pool)
            return compile(graphs.prefill, target=target, opt_level=opt_level, threads=threads, cache=cache)

        progress.update()
        decode = compile(graphs.decode, target=target, opt_level=opt_level, threads=threads, cache=False,
                         weights_pool=pool)
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
