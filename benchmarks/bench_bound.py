"""Steady loops of bound calls (`cm.bind(...)`): what a change does to the native code itself.

    python benchmarks/bench_bound.py [--workloads sparse prune cnn tiny int8 softmax reduce gelu
                                                  winograd kv-int8]
                                      [--rounds 15] [--quiet]

The other benchmarks time plain calls after a pause, as a user's first call after idling meets
them; on this shared host the pause wakes a descheduled second vCPU and moves ratios a lot. Here
every engine is a bound call (no argument checks, no new output arrays) timed in blocks of at least
20 ms back to back (harness.measure_samples with no sleep), engines interleaved in a random order
each round; tables give the median block and ratios paired within rounds. Workloads:

  sparse   a 1024 x 1024 linear + bias at 90% zeros, batch 1: sparse kernel against the dense GEMM,
           one and two threads
  prune    the MLP 784-256-128-10 at batch 64, unpruned and with 50% of its hidden neurons removed
           (structured), one and two threads
  cnn      the CIFAR CNN at batch 1 and 64, with and without the fuse-pool pass
  tiny     tiny GPT decode steps (after a 32-token prompt), fp32 and int8, with matrix-vector
           products cut into 4 parts per thread whatever their size (parallel.STREAM_PART_BYTES = 1)
           and with the default (one part per thread under 1 MiB a part)
  int8     the int8 MLP 784-256-128-10 at batch 64 (static, calibrated), its quantize of x on one
           thread (the quantize op registered with cost 1) and split among the threads (the default)
  softmax  causal self-attention of GPT-2's shape (12 heads of 64) over 32 and 256 positions:
           q @ k^T, the scaling, the causal mask, the softmax, @ v, with and without fuse-softmax
  reduce   a layer norm written with tensor operators (mean, x - mean, the mean of its square,
           the normalization, scale and shift) over [512, 768] and [64, 4096], with and without
           fuse-reduce
  gelu     tiny GPT fp32 decode steps (after a 32-token prompt) with fuse-activation (each block's
           gelu in the epilogue of the linear before it) and without (the gelu a kernel of its own;
           the GPT has no other activation to fuse)
  winograd the CIFAR CNN at batch 1 and 64 with select-winograd (its second conv by Winograd's
           F(2x2, 3x3)) and without
  kv-int8  GPT-2-small-size decode steps with int8 weights (quantize="int8") at positions 256 and
           1000 of its 1024, with an f32 KV cache and with an int8 one (kv_cache="int8")
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import format_time, measure_samples, paired_ratio  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge import models  # noqa: E402
from tensorforge.codegen.threads import parallel  # noqa: E402

WORKLOADS = ("sparse", "prune", "cnn", "tiny", "int8", "softmax", "reduce", "gelu", "winograd", "kv-int8")


def sparse_engines() -> tuple[dict, list[tuple[str, str]]]:
    x = np.random.default_rng(0).standard_normal((1, 1024)).astype(np.float32)
    engines = {}
    for threads in (1, 2):
        for sparse in (True, False):
            prune = tf.PruneConfig(method="magnitude", sparsity=0.9, scope="layer", sparse_kernel=sparse)
            model = tf.compile(models.mlp((1024, 1024)), x, prune=prune, threads=threads,
                               config={"sparse_threshold": 0.0} if sparse else None)
            engines[f"{'sparse' if sparse else 'dense'}, {threads} thread(s)"] = model.bind(x)
    return engines, [(f"dense, {t} thread(s)", f"sparse, {t} thread(s)") for t in (1, 2)]


def prune_engines() -> tuple[dict, list[tuple[str, str]]]:
    from tensorforge.prune.structured import prune_structured

    x = np.random.default_rng(0).standard_normal((64, 784)).astype(np.float32)
    engines = {}
    for threads in (1, 2):
        for fraction in (0.0, 0.5):
            graph = tf.trace(models.mlp(), x)
            prune_structured(graph, fraction)
            engines[f"{int(fraction * 100)}% pruned, {threads} thread(s)"] = tf.compile(graph, threads=threads).bind(x)
    return engines, [(f"0% pruned, {t} thread(s)", f"50% pruned, {t} thread(s)") for t in (1, 2)]


def cnn_engines(switched: str = "fuse-pool") -> tuple[dict, list[tuple[str, str]]]:
    engines = {}
    for batch in (1, 64):
        x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        for disabled in ((), (switched,)):
            name = f"batch {batch}, {switched} {'off' if disabled else 'on'}"
            engines[name] = tf.compile(models.cifar_cnn(), x, disabled=disabled).bind(x)
    return engines, [(f"batch {b}, {switched} off", f"batch {b}, {switched} on") for b in (1, 64)]


def step_at(generator: tf.Generator, prompt: list[int], position: int | None = None):
    """One decode step (the generator's bound decode call) at `position` (default: right after the
    prompt), after a prefill of `prompt`, rewound each time so that every step attends over the same
    `position` cache rows (those past the prompt hold zeros)."""
    position = len(prompt) if position is None else position
    generator.next_logits(prompt)

    def step() -> None:
        generator.position = position
        generator._step(7)

    return step


def kv_int8_engines() -> tuple[dict, list[tuple[str, str]]]:
    from bench_gpt import build_model, prompt_ids

    model, prompt = build_model("gpt2"), prompt_ids("gpt2")
    engines, positions = {}, (256, 1000)
    for cache in ("f32", "int8"):
        generator = tf.compile_generator(model, model.max_seq_len, prompt_len=len(prompt), quantize="int8",
                                         kv_cache=cache)
        for position in positions:
            engines[f"{cache} cache, position {position}"] = step_at(generator, prompt, position)
    return engines, [(f"f32 cache, position {p}", f"int8 cache, position {p}") for p in positions]


def tiny_engines() -> tuple[dict, list[tuple[str, str]]]:
    from bench_gpt import build_model, prompt_ids

    model, prompt = build_model("tiny"), prompt_ids("tiny")
    engines = {}
    default = parallel.STREAM_PART_BYTES
    for quantize in (None, "int8"):
        for label, part_bytes in (("4 parts per thread", 1), ("default", default)):
            parallel.STREAM_PART_BYTES = part_bytes
            try:
                generator = tf.compile_generator(model, 256, quantize=quantize)
            finally:
                parallel.STREAM_PART_BYTES = default
            engines[f"{quantize or 'fp32'}, {label}"] = step_at(generator, prompt)
    return engines, [(f"{q}, 4 parts per thread", f"{q}, default") for q in ("fp32", "int8")]


def gelu_engines() -> tuple[dict, list[tuple[str, str]]]:
    from bench_gpt import build_model, prompt_ids

    from tensorforge.passes import PASSES

    model, prompt = build_model("tiny"), prompt_ids("tiny")
    original = PASSES["fuse-activation"]
    engines = {}
    for label in ("fuse-activation off", "fuse-activation on"):
        if label.endswith("off"):
            PASSES["fuse-activation"] = original.replace(function=lambda graph, ctx=None: graph)
        try:
            engines[label] = step_at(tf.compile_generator(model, 256), prompt)
        finally:
            PASSES["fuse-activation"] = original
    return engines, [("fuse-activation off", "fuse-activation on")]


def int8_engines() -> tuple[dict, list[tuple[str, str]]]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 784)).astype(np.float32)
    calibration = rng.standard_normal((512, 784)).astype(np.float32)
    engines = {}
    default = tf.ir.OPS["quantize"]
    for label, cost in (("quantize on one thread", 1), ("quantize split", default.cost)):
        tf.ir.OPS["quantize"] = dataclasses.replace(default, cost=cost)
        try:
            model = tf.compile(models.mlp(), x, threads=2, quantize="int8", calibration=calibration)
        finally:
            tf.ir.OPS["quantize"] = default
        engines[label] = model.bind(x)
    return engines, [("quantize on one thread", "quantize split")]


def attention_graph(positions: int) -> tf.Graph:
    """softmax(causal_mask(q @ k^T * 1/8)) @ v over q, k, v [1, 12, positions, 64]: GPT-2's heads."""
    graph = tf.Graph()
    shape = tf.ir.TensorType((1, 12, positions, 64), tf.ir.DType.f32)
    q, k, v = (graph.add_input(name, shape) for name in "qkv")
    scores = graph.call("mul", [graph.call("matmul", [q, k], {"transpose_b": True}),
                                graph.constant(np.float32(0.125), "scale")])
    weights = graph.call("softmax", [graph.call("causal_mask", [scores])], {"axis": -1})
    graph.outputs = [graph.call("matmul", [weights, v])]
    return graph


def softmax_engines() -> tuple[dict, list[tuple[str, str]]]:
    engines = {}
    for positions in (32, 256):
        inputs = [np.random.default_rng(i).standard_normal((1, 12, positions, 64)).astype(np.float32)
                  for i in range(3)]
        for disabled in ((), ("fuse-softmax",)):
            name = f"{positions} positions, fuse-softmax {'off' if disabled else 'on'}"
            engines[name] = tf.compile(attention_graph(positions), disabled=disabled).bind(*inputs)
    return engines, [(f"{p} positions, fuse-softmax off", f"{p} positions, fuse-softmax on") for p in (32, 256)]


def layer_norm_graph(shape: tuple[int, int]) -> tf.Graph:
    """(x - mean) / sqrt(var + 1e-5) * gamma + beta over the last axis, each step an op of its own."""
    graph = tf.Graph()
    x = graph.add_input("x", tf.ir.TensorType(shape, tf.ir.DType.f32))
    rng = np.random.default_rng(3)
    gamma, beta = (graph.constant(rng.standard_normal(shape[-1:]).astype(np.float32)) for _ in range(2))
    mean = graph.call("reduce_mean", [x], {"axes": [1], "keepdims": True})
    centered = graph.call("sub", [x, mean])
    variance = graph.call("reduce_mean", [graph.call("mul", [centered, centered])], {"axes": [1], "keepdims": True})
    deviation = graph.call("sqrt", [graph.call("add", [variance, graph.constant(np.float32(1e-5))])])
    normalized = graph.call("div", [graph.call("sub", [x, mean]), deviation])
    graph.outputs = [graph.call("add", [graph.call("mul", [normalized, gamma]), beta])]
    return graph


def reduce_engines() -> tuple[dict, list[tuple[str, str]]]:
    engines = {}
    for shape in ((512, 768), (64, 4096)):
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for disabled in ((), ("fuse-reduce",)):
            name = f"{shape[0]} x {shape[1]}, fuse-reduce {'off' if disabled else 'on'}"
            engines[name] = tf.compile(layer_norm_graph(shape), x, disabled=disabled).bind(x)
    names = [f"{r} x {c}" for r, c in ((512, 768), (64, 4096))]
    return engines, [(f"{n}, fuse-reduce off", f"{n}, fuse-reduce on") for n in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    builders = {"sparse": sparse_engines, "prune": prune_engines, "cnn": cnn_engines, "tiny": tiny_engines,
                "int8": int8_engines, "softmax": softmax_engines, "reduce": reduce_engines,
                "gelu": gelu_engines, "winograd": lambda: cnn_engines("select-winograd"),
                "kv-int8": kv_int8_engines}
    for workload in args.workloads:
        engines, pairs = builders[workload]()
        samples = measure_samples(engines, rounds=args.rounds, verbose=not args.quiet, desc=workload, sleep=0.0)
        print(f"\n{workload}: median of {args.rounds} interleaved blocks of bound calls")
        for name, values in samples.items():
            print(f"  {name:<34} {format_time(float(np.median(values))):>10}")
        for before, after in pairs:
            print(f"  {after} is {paired_ratio(samples, before, after):.2f}x faster than {before}")


if __name__ == "__main__":
    main()
