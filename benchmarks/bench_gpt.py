"""Greedy generation of a GPT with random weights on every engine: time to first token (the prefill
of the prompt) and decode tokens/s, each engine in a process of its own, interleaved, medians.

    python benchmarks/bench_gpt.py [--size tiny|gpt2] [--rounds 7] [--threads 2] [--engines ...] [--int8-kv-cache]
                                   [--quiet]

tiny: 4 layers, d 256, 4 heads, vocab 512, context 256 (issue 5's targets); gpt2: GPT-2 small's shape
(12 layers, d 768, 12 heads, vocab 50257, context 1024). Batch 1, a prompt of 32 random tokens,
64 new tokens: the first from the prefill's logits, then 63 decode steps; "decode tokens/s" is
63 / the time of those 63 steps (each step's argmax included), "prefill" is the time from the prompt
to the first token's logits and argmax, both warm (a sample is a block of at least --block seconds
of calls after a 0.25 s idle sleep). Engines (all on the same weights, nn.GPT(rng=0)):

- tensorforge fp32: tf.compile_generator (prefill graph + one-token decode graph over its KV cache);
  its prefill computes the output layer at the prompt's last position only (generator.next_logits,
  generator.first_token_graph), the ONNX Runtime engines' prefill at all 32 (their exported graph's).
- tensorforge int8: the same with quantize="int8" (every linear layer dynamic_qlinear: int8 weights
  per output channel, activations quantized per call, int32 accumulation); with --int8-kv-cache
  also kv_cache="int8" (the caches as int8 codes and a scale per row; the peers' caches stay f32).
- pytorch eager fp32 / pytorch int8 dynamic: a torch GPT written here with a KV cache (preallocated
  [1, H, context, D] per layer, rows written in place, scaled_dot_product_attention over the rows so
  far), torch.inference_mode, torch.set_num_threads(threads); int8 is
  torch.ao.quantization.quantize_dynamic of its nn.Linear layers (qint8 weights).
- onnxruntime fp32 (recompute): the traced GPT exported by onnx_models.to_onnx with a symbolic
  sequence axis and no cache: each new token is a full forward over the whole context so far (what
  a cache-less exported model does).
- onnxruntime fp32 (KV cache): the KV-cache rewrite's prefill graph (logits and every layer's k, v)
  and decode graph exported with past/present inputs and outputs (to_onnx(past_sequence=True)): each
  step feeds the previous step's present k, v as past, ORT concatenates the new row.
- onnxruntime int8 (KV cache): the same two models through onnxruntime.quantization.quantize_dynamic
  (QInt8 weights).

Before timing, each engine (in its process) checks its prefill logits against tf.interpret on the
traced graph (relative error: max |diff| / max |reference|; fp32 engines must be under 1e-3) and
its 64 greedy tokens against the reference's (the eager numpy GPT, the ops' reference
implementations, recomputing the context for each token): fp32 engines must agree on every token,
int8 engines report how many agree. Ratios are the median over rounds of the peer's time over
tensorforge's of the same precision in the same round ("vs": tensorforge int8 for the int8 peers
when it runs, else tensorforge fp32; above 1: tensorforge faster). "build s" is the engine's set-up
in its process: for tensorforge, tf.compile_generator (trace, rewrite, passes, LLVM, loading:
the compile time); for the peers, building the model, export and session creation. "RSS MB" is the
engine's process after its build and check (its model, weights and caches: what stays resident
while it is timed), "peak MB" that process's peak (during the build). Last, the
weight-bandwidth bound: the read bandwidth machine_peaks measures with --threads threads once the
engines are done, over the bytes of the weights a decode step reads (every matrix but the
embedding tables; a quarter of it in int8), against tensorforge's decode tokens/s.

Each engine is one process (its prefill and decode share it and one copy of the model; the
reference is computed in a process of its own), all resident while the rounds interleave them:
1.4-4.3 GB each at the gpt2 size, 14.7 GB for all seven; a whole run with every engine peaked at
15.5 GB (the processes' summed RSS, sampled every second; ONNX Runtime's engines, whose builds peak
at 4.5-5.8 GB, are built first). (They were two processes each, 14 in all, and the parent held 1 GB
after the reference: more than the VM's 23 GB.) Not measured: a cold first call, torch.compile,
sampling other than greedy, batch > 1, int8 accuracy beyond the greedy tokens' agreement. The
pytorch prefill figure was the noisiest between runs on the 2-core VM.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import EngineUnavailable, format_time, measure_isolated, onnxruntime_session, paired_ratio  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge import nn  # noqa: E402
from tensorforge.runtime.machine import machine_peaks  # noqa: E402

SIZES = {"tiny": dict(vocab=512, dim=256, layers=4, heads=4, context=256),
         "gpt2": dict(vocab=50257, dim=768, layers=12, heads=12, context=1024)}
PROMPT, NEW = 32, 64
DECODE_STEPS = NEW - 1  # the first new token comes from the prefill's logits
OURS = "tensorforge fp32"
OURS_INT8 = "tensorforge int8"
ENGINES = (OURS, OURS_INT8, "pytorch eager fp32", "pytorch int8 dynamic", "onnxruntime fp32 (recompute)",
           "onnxruntime fp32 (KV cache)", "onnxruntime int8 (KV cache)")
FP32 = {OURS, "pytorch eager fp32", "onnxruntime fp32 (recompute)", "onnxruntime fp32 (KV cache)"}


def build_model(size: str) -> nn.GPT:
    shape = SIZES[size]
    return nn.GPT(shape["vocab"], shape["dim"], shape["layers"], shape["heads"], shape["context"],
                  rng=np.random.default_rng(0))


def linear_weight_bytes(size: str) -> int:
    """f32 bytes of the weights every decode step reads whole: every matrix but the embedding tables
    (of which a step reads one row each)."""
    return sum(array.nbytes for name, array in build_model(size).state_dict().items()
               if array.ndim == 2 and "embedding" not in name)


def prompt_ids(size: str) -> list[int]:
    return np.random.default_rng(1).integers(0, SIZES[size]["vocab"], PROMPT).tolist()


def reference(size: str) -> tuple[np.ndarray, list[int]]:
    """tf.interpret's logits after the prompt (last position) and the 64 greedy tokens of the eager
    numpy GPT (the ops' reference implementations), recomputing the context for each token."""
    model, prompt = build_model(size), prompt_ids(size)
    graph = tf.trace(model, np.array([prompt], np.int64))
    first = tf.interpret(graph, np.array([prompt], np.int64))[0, -1]
    tokens = [int(np.argmax(first))]
    for _ in range(DECODE_STEPS):
        logits = model(np.array([prompt + tokens], np.int64))
        tokens.append(int(np.argmax(logits[0, -1])))
    return first, tokens


# --- engines: each a prefill(prompt) -> last logits and a step(token) -> logits after prefill ------------

class Ours:
    def __init__(self, model, threads: int, int8: bool = False, kv_cache: str = "f32"):
        self.generator = tf.compile_generator(model, model.max_seq_len, prompt_len=PROMPT, threads=threads,
                                              quantize="int8" if int8 else None, kv_cache=kv_cache,
                                              cache=False)  # "build s" is the compile, not a cache hit

    def prefill(self, prompt: list[int]) -> np.ndarray:
        return self.generator.next_logits(prompt)  # the first-token prefill: logits of the last position only

    def step(self, token: int) -> np.ndarray:
        return self.generator._step(token)  # one decode step at the generator's position (its caches updated)


def torch_gpt(model, int8: bool):
    """A torch GPT with nn.GPT's weights and a KV cache (see the module docstring)."""
    import torch
    from torch import nn as tnn
    from torch.nn import functional as F

    def linear(ours) -> tnn.Linear:
        layer = tnn.Linear(*ours.weight.shape, bias=ours.bias is not None)
        layer.weight.data = torch.from_numpy(ours.weight.T.copy())
        if ours.bias is not None:
            layer.bias.data = torch.from_numpy(ours.bias.copy())
        return layer

    def layer_norm(ours) -> tnn.LayerNorm:
        norm = tnn.LayerNorm(ours.gamma.shape[0], eps=ours.eps)
        norm.weight.data, norm.bias.data = torch.from_numpy(ours.gamma.copy()), torch.from_numpy(ours.beta.copy())
        return norm

    heads, head_dim, context = model.num_heads, model.embed_dim // model.num_heads, model.max_seq_len

    class Block(tnn.Module):
        def __init__(self, block):
            super().__init__()
            attention = block.attention
            self.ln1, self.ln2 = layer_norm(block.ln1), layer_norm(block.ln2)
            self.q, self.k, self.v = linear(attention.q_proj), linear(attention.k_proj), linear(attention.v_proj)
            self.out = linear(attention.out_proj)
            self.fc1, self.fc2 = linear(block.mlp.linear1), linear(block.mlp.linear2)
            self.register_buffer("k_cache", torch.zeros(1, heads, context, head_dim))
            self.register_buffer("v_cache", torch.zeros(1, heads, context, head_dim))

        def forward(self, x, pos: int):
            batch, seq, dim = x.shape
            h = self.ln1(x)

            def split(t):
                return t.view(batch, seq, heads, head_dim).transpose(1, 2)

            q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
            self.k_cache[:, :, pos:pos + seq] = k
            self.v_cache[:, :, pos:pos + seq] = v
            keys, values = self.k_cache[:, :, :pos + seq], self.v_cache[:, :, :pos + seq]
            # the prefill (pos 0) is causal; one decode query sees every row so far
            attended = F.scaled_dot_product_attention(q, keys, values, is_causal=seq > 1)
            x = x + self.out(attended.transpose(1, 2).reshape(batch, seq, dim))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

    class TorchGPT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.token_embedding = tnn.Embedding.from_pretrained(torch.from_numpy(model.token_embedding.weight))
            self.position_embedding = tnn.Embedding.from_pretrained(
                torch.from_numpy(model.position_embedding.weight))
            self.blocks = tnn.ModuleList(Block(block) for block in model.blocks)
            self.ln_f, self.lm_head = layer_norm(model.ln_f), linear(model.lm_head)

        def forward(self, tokens, pos: int):
            positions = torch.arange(pos, pos + tokens.shape[1])
            x = self.token_embedding(tokens) + self.position_embedding(positions)
            for block in self.blocks:
                x = block(x, pos)
            return self.lm_head(self.ln_f(x))

    net = TorchGPT().eval()
    if int8:
        from torch.ao.quantization import quantize_dynamic

        warnings.filterwarnings("ignore", message=".*quantize_per_tensor")  # deprecated, still what it uses
        net = quantize_dynamic(net, {tnn.Linear}, dtype=torch.qint8)
    return net


class Torch:
    def __init__(self, model, threads: int, int8: bool):
        import torch

        torch.set_num_threads(threads)
        self.torch, self.net, self.position = torch, torch_gpt(model, int8), 0

    def prefill(self, prompt: list[int]) -> np.ndarray:
        with self.torch.inference_mode():
            logits = self.net(self.torch.tensor([prompt]), 0)[0, -1].numpy()
        self.position = len(prompt)
        return logits

    def step(self, token: int) -> np.ndarray:
        with self.torch.inference_mode():
            logits = self.net(self.torch.tensor([[token]]), self.position)[0, -1].numpy()
        self.position += 1
        return logits


class OrtRecompute:
    def __init__(self, model, threads: int):
        from onnx_models import onnx_session

        graph = tf.trace(model, np.zeros((1, PROMPT), np.int64))
        self.session = onnx_session(graph, threads, dynamic_sequence=True)
        self.input = self.session.get_inputs()[0].name
        self.tokens: list[int] = []

    def _run(self) -> np.ndarray:
        return self.session.run(None, {self.input: np.array([self.tokens], np.int64)})[0][0, -1]

    def prefill(self, prompt: list[int]) -> np.ndarray:
        self.tokens = list(prompt)
        return self._run()

    def step(self, token: int) -> np.ndarray:
        self.tokens.append(token)
        return self._run()


class OrtCache:
    def __init__(self, model, threads: int, int8: bool):
        from onnx_models import to_onnx

        from tensorforge.generate.kv_cache import rewrite_for_kv_cache

        graphs = rewrite_for_kv_cache(tf.trace(model, np.zeros((1, PROMPT), np.int64)), model.max_seq_len)
        protos = [to_onnx(graphs.prefill, dynamic_sequence=True), to_onnx(graphs.decode, past_sequence=True)]
        sessions = []
        with tempfile.TemporaryDirectory() as directory:
            for index, proto in enumerate(protos):
                data = proto.SerializeToString()
                if int8:
                    from onnxruntime.quantization import QuantType, quantize_dynamic

                    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the model first

                    source, target = Path(directory, f"{index}.onnx"), Path(directory, f"{index}.int8.onnx")
                    source.write_bytes(data)
                    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
                    data = target.read_bytes()
                sessions.append(onnxruntime_session(data, threads))
        self.prefill_session, self.decode_session = sessions
        self.prefill_input = self.prefill_session.get_inputs()[0].name
        token, pos, *pasts = (value.name for value in self.decode_session.get_inputs())
        self.token_input, self.pos_input, self.past_inputs = token, pos, pasts
        self.past: list[np.ndarray] = []
        self.position = 0

    def prefill(self, prompt: list[int]) -> np.ndarray:
        logits, *self.past = self.prefill_session.run(None, {self.prefill_input: np.array([prompt], np.int64)})
        self.position = len(prompt)
        return logits[0, -1]

    def step(self, token: int) -> np.ndarray:
        feed = {self.token_input: np.array([[token]], np.int64), self.pos_input: np.array([self.position], np.int64)}
        feed.update(zip(self.past_inputs, self.past, strict=True))
        logits, *self.past = self.decode_session.run(None, feed)
        self.position += 1
        return logits[0, 0]


def build_engine(engine: str, model, threads: int, int8_kv_cache: bool = False):
    try:
        if engine in (OURS, OURS_INT8):
            int8 = engine == OURS_INT8
            return Ours(model, threads, int8, kv_cache="int8" if int8 and int8_kv_cache else "f32")
        if engine.startswith("pytorch"):
            return Torch(model, threads, int8="int8" in engine)
        if engine == "onnxruntime fp32 (recompute)":
            return OrtRecompute(model, threads)
        return OrtCache(model, threads, int8="int8" in engine)
    except ImportError as error:
        raise EngineUnavailable(f"{engine}: {error}") from error


def generate(engine, prompt: list[int]) -> tuple[np.ndarray, list[int]]:
    """The prefill's last logits and the 64 greedy tokens."""
    first = engine.prefill(prompt)
    tokens = [int(np.argmax(first))]
    for _ in range(DECODE_STEPS):
        tokens.append(int(np.argmax(engine.step(tokens[-1]))))
    return first, tokens


def make_engine(engine: str, size: str, threads: int, expected_logits: np.ndarray, expected_tokens: list[int],
                checks: str, int8_kv_cache: bool = False) -> dict:
    """In the engine's process: build it, check it against the reference (written to `checks`, with the
    process's resident set after the build and its peak so far), and return the callables to time, in
    one process over one copy of the model: the prefill and first token, and the 63 decode steps after
    the prefill (each rewinds to just after the prompt, whose cache rows every prefill rewrites as they were)."""
    model, prompt = build_model(size), prompt_ids(size)
    start = time.perf_counter()
    built = build_engine(engine, model, threads, int8_kv_cache)
    build_seconds = time.perf_counter() - start
    del model  # what the engine keeps of it (tensorforge reads its arrays in place) stays alive
    logits, tokens = generate(built, prompt)
    error = float(np.abs(logits - expected_logits).max() / np.abs(expected_logits).max())
    agree = sum(a == b for a, b in zip(tokens, expected_tokens, strict=True))
    gc.collect()
    Path(checks, f"{engine}.json").write_text(json.dumps({
        "error": error, "agree": agree, "build": build_seconds, "rss_mb": _status_mb("VmRSS"),
        "peak_mb": _status_mb("VmHWM")}))
    if engine in FP32 and (error > 1e-3 or agree != NEW):
        raise AssertionError(f"{engine}: prefill logits relative error {error:.2e}, {agree}/{NEW} greedy tokens "
                             f"agree with the reference")
    first = tokens[0]
    built.prefill(prompt)
    past = list(built.past) if isinstance(built, OrtCache) else None

    def decode():
        # rewind to just after the prompt (the rows past it are overwritten before they are read)
        if isinstance(built, OrtRecompute):
            built.tokens = list(prompt)
        elif isinstance(built, OrtCache):
            built.past = list(past)
            built.position = PROMPT
        elif isinstance(built, Ours):
            built.generator.position = PROMPT
        else:
            built.position = PROMPT
        token = first
        for _ in range(DECODE_STEPS):
            token = int(np.argmax(built.step(token)))
        return token

    return {"prefill": lambda: int(np.argmax(built.prefill(prompt))), "decode": decode}


def _status_mb(field: str) -> float:
    """This process's resident set (VmRSS) or its peak (VmHWM), in MB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith(f"{field}:"))


def reference_in_child(size: str) -> tuple[np.ndarray, list[int]]:
    """reference(size), computed in a process of its own: the parent then never holds a model (the
    interpreter's freed arrays left this process 1 GB larger for the whole run)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(reference, size).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES),
                        help=f"which engines (default all; {OURS!r} is added unless a tensorforge engine is named)")
    parser.add_argument("--block", type=float, default=0.2,
                        help="seconds of calls per sample (amortizes the first, slower call after the sleep)")
    parser.add_argument("--int8-kv-cache", action="store_true",
                        help=f"{OURS_INT8!r} with an int8 KV cache (compile_generator(kv_cache='int8'))")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    engines = list(dict.fromkeys(args.engines))
    if not {OURS, OURS_INT8} & set(engines):
        engines.insert(0, OURS)
    print("$ python " + " ".join(sys.argv))
    shape = SIZES[args.size]
    print(f"GPT {args.size}: {shape['layers']} layers, d {shape['dim']}, {shape['heads']} heads, vocab "
          f"{shape['vocab']}, context {shape['context']}, random weights; batch 1, greedy, prompt {PROMPT}, "
          f"{NEW} new tokens ({DECODE_STEPS} decode steps); threads {args.threads}; rounds {args.rounds}; "
          f"cpus {len(os.sched_getaffinity(0))}"
          + (f"; {OURS_INT8} with an int8 KV cache" if args.int8_kv_cache else ""))
    start = time.perf_counter()
    expected_logits, expected_tokens = reference_in_child(args.size)
    print(f"reference (tf.interpret prefill, numpy eager greedy): {time.perf_counter() - start:.1f} s")
    # built one at a time, all then resident: ONNX Runtime's builds first, their peaks (up to 6 GB at the
    # gpt2 size: traced graph, ONNX model, its bytes, sessions) beside the fewest engines already built
    build_order = sorted(engines, key=lambda engine: not engine.startswith("onnxruntime"))
    with tempfile.TemporaryDirectory() as checks:
        factories = {engine: (make_engine, (engine, args.size, args.threads, expected_logits, expected_tokens,
                                            checks, args.int8_kv_cache)) for engine in build_order}
        start = time.perf_counter()
        keyed = measure_isolated(factories, args.rounds, not args.quiet, desc="gpt", min_seconds=args.block)
        print(f"timing: {time.perf_counter() - start:.1f} s (engines built, checked and sampled)")
        samples = {tuple(key.split("|")): values for key, values in keyed.items()}
        results = {}
        for engine in engines:
            path = Path(checks, f"{engine}.json")
            if (engine, "decode") in samples and path.exists():
                results[engine] = json.loads(path.read_text())
    print(f"{'engine':<30} {'build s':>7} {'RSS MB':>7} {'peak MB':>7} {'logits err':>10} {'tokens':>7} "
          f"{'prefill':>10} {'decode tok/s':>12} {'vs':>16} {'ours faster: prefill':>20} {'decode':>7}")
    for engine in engines:
        if engine not in results:
            print(f"{engine:<30} (not available)")
            continue
        prefill = statistics.median(samples[engine, "prefill"])
        decode = statistics.median(samples[engine, "decode"])
        keys = {phase: f"{engine}|{phase}" for phase in ("prefill", "decode")}
        ours_run = [name for name in (OURS, OURS_INT8) if name in results]
        base = (OURS_INT8 if engine not in FP32 else OURS) if len(ours_run) == 2 else ours_run[0]  # same precision
        ours = {phase: f"{base}|{phase}" for phase in ("prefill", "decode")}
        ratios = [paired_ratio(keyed, keys[phase], ours[phase]) for phase in ("prefill", "decode")]
        check = results[engine]
        print(f"{engine:<30} {check['build']:>7.1f} {check['rss_mb']:>7.0f} {check['peak_mb']:>7.0f} "
              f"{check['error']:>10.1e} {check['agree']:>3}/{NEW:<3} {format_time(prefill):>10} "
              f"{DECODE_STEPS / decode:>12.1f} {base:>16} {ratios[0]:>19.2f}x {ratios[1]:>6.2f}x")
    resident = sum(check["rss_mb"] for check in results.values())
    print(f"memory: the engines' processes, all resident while timed, {resident / 1024:.1f} GB after their builds "
          f"(RSS MB; peak MB: a process's peak, while it built)")
    bandwidth = machine_peaks(args.threads).gbytes_per_second * 1e9  # measured after the engines exited
    f32_bytes = linear_weight_bytes(args.size)
    print(f"\nweight-bandwidth bound: read bandwidth {bandwidth / 1e9:.1f} GB/s with {args.threads} thread(s) "
          f"(machine_peaks); weights per decode step {f32_bytes / 1e6:.1f} MB f32, {f32_bytes / 4e6:.1f} MB int8")
    for engine, weight_bytes in ((OURS, f32_bytes), (OURS_INT8, f32_bytes // 4)):
        if engine in results:
            bound = bandwidth / weight_bytes
            rate = DECODE_STEPS / statistics.median(samples[engine, "decode"])
            print(f"  {engine:<18} bound {bound:8.1f} tokens/s; decode {rate:8.1f} tokens/s = {rate / bound:.0%} of it")


if __name__ == "__main__":
    main()
