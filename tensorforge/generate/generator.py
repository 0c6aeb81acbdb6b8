"""Generator: a GPT compiled for generation with a KV cache (generate/kv_cache.py; built by compile.py).

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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..frontend.transformer import sample
from ..runtime import CompiledModel
from .kv_cache import KVCacheGraphs

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
