"""tensorforge against PyTorch eager, torch.compile and ONNX Runtime on PyTorch modules: ResNet-18,
MobileNetV2, a BERT-base-shaped encoder, all-MiniLM-L6-v2 and GPT-2-small-shaped greedy decoding.

    python benchmarks/bench_torch.py [--models resnet18,mobilenetv2,bert,minilm,gpt2] [--batches 1,8]
                                     [--encoder-batches 1] [--engines ours,eager,compile,onnxruntime]
                                     [--peer-threads 1,2] [--threads 2] [--int8] [--rounds 15]
                                     [--out results.md] [--csv results.csv] [--chart chart.svg]
                                     [--cache DIR] [--quick] [--verbose]

The models (torch_zoo.py) are plain PyTorch modules built the same way (seeded) in every engine's
process: ResNet-18 and MobileNetV2 as torchvision writes them (224x224 images, batch 1 and 8), the
encoders (Hugging Face BertModel; sequence 128 with an attention mask, batch 1 unless
--encoder-batches) and GPT2LMHeadModel (random weights, 12 layers, n_embd 768). --quick: 64x64
images, sequence 16, tiny BERT and GPT-2 configs, 3 rounds (a smoke test: its figures say nothing).

Engines, each in a process of its own, timed in the same interleaved rounds (harness.measure_isolated):
- ours: tfg.compile(module, inputs, threads=--threads), the module imported through torch.export;
  GPT-2: tfg.compile_generator(model, max_len=prompt + new tokens, prompt_len=prompt) (if it raises,
  the row says "not available: <reason>" and the peers are still timed);
- pytorch eager: the module under torch.inference_mode, torch.set_num_threads(1) and (2) in two
  processes, the faster (median) reported;
- torch.compile: torch.compile(module) (inductor, default mode; its C++ kernels built by gcc), 1 and
  2 threads set before compiling, the faster reported; its compile time is the first call's;
- onnxruntime: the module exported by torch.onnx.export (TorchScript exporter, opset 17, batch axis
  symbolic), intra_op 1 and 2 threads (inter_op 1, ORT_ENABLE_ALL), the faster reported.
Ratio = the median over rounds of the peer's (best) time / ours in the same round: above 1x, ours is
faster. The issue's targets: >= 1.5x eager and >= 1.2x torch.compile on every model; GPT-2 decode
>= 1.3x ONNX Runtime with its KV cache (fp32), >= 1.5x (int8).

GPT-2 (batch 1, greedy): a prompt of 32 random tokens, 64 new ones. "TTFT" is the time from the
prompt to the first token (prefill, the last position's logits only: ours' first-token graph,
the peers' logits_to_keep=1, then the argmax); "decode" the 63 following steps, reported as tokens/s.
PyTorch eager and torch.compile decode with transformers' DynamicCache (what model.generate does;
the check compares their tokens with model.generate(do_sample=False)); ONNX Runtime runs two
exported models, the prefill (input_ids -> logits, present k, v per layer) and one decode step
(token, past k, v -> logits, present k, v one row longer: torch_zoo.export_gpt2), feeding each
step's present as the next step's past. --int8 adds ours with quantize="int8" (dynamic int8
linears) against ONNX Runtime's quantize_dynamic of both exported models (QInt8 weights).

Checks, before timing, in each engine's process: outputs against eager PyTorch's in the parent
(max abs error, and relative to the output's largest magnitude); GPT-2: the prefill logits'
relative error and how many of the 64 greedy tokens agree with model.generate's. Peak RSS of each
engine's process is reported: every engine of a row is alive at once (built one at a time), one
row at a time; at the full sizes the GPT-2 row holds ~8 processes of ~1-2.5 GB (--engines to trim).

Writes the table (--out, markdown), the ratios as rows of benchmarks/current.csv's format (--csv:
group, workload, peer, ratios, over, target, machine, source) and their chart (--chart, drawn by
chart.py from that CSV; needs matplotlib). torch.compile keeps its compiled kernels in its own
cache directory (/tmp/torchinductor_<user>), as it always does.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from harness import (  # noqa: E402
    EngineUnavailable,
    commit_and_machine,
    format_time,
    measure_isolated,
    onnxruntime_session,
    paired_ratio,
    write_results,
)

OURS, OURS_INT8 = "ours", "ours int8"
FAMILIES = {"eager": "pytorch eager", "compile": "torch.compile", "onnxruntime": "onnxruntime"}
PEER_TITLES = {"eager": "PyTorch eager", "compile": "torch.compile", "onnxruntime": "ONNX Runtime"}
TARGETS = {"eager": 1.5, "compile": 1.2}  # the issue's, on every model
GPT_TARGETS = {"onnxruntime": 1.3, "onnxruntime int8": 1.5}  # GPT-2 decode
FP32_TOLERANCE = 1e-3  # relative error above which a row's check says OFF


# --- the engines' processes -------------------------------------------------------------------------------
#
# A job is a dict of plain values: the model, batch and sizes, where the reference outputs and the
# ONNX files are, and the folder each engine writes its check (a JSON file) into.

def _load(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}


def _write(job: dict, engine: str, result: dict) -> None:
    result["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    Path(job["checks"], f"{engine}.json").write_text(json.dumps(result))


def _failed(job: dict, engine: str, error: BaseException, prefix: str = "") -> EngineUnavailable:
    message = prefix + f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    _write(job, engine, {"failed": message[:500]})
    return EngineUnavailable(message)


def _errors(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Max abs error over the reference's outputs, and relative: over each output's largest magnitude."""
    pairs = [(np.asarray(outputs[name]), want) for name, want in reference.items()]
    for got, want in pairs:
        if got.shape != want.shape:
            raise AssertionError(f"output of shape {got.shape}, the reference's is {want.shape}")
    return {"abs": max(float(np.abs(got - want).max()) for got, want in pairs),
            "rel": max(float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)) for got, want in pairs)}


def _build(job: dict):
    import torch_zoo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch_zoo.build(job["model"], job["batch"], job["sizes"], job["quick"])


def ours_engine(job: dict, int8: bool = False):
    """tf.compile of the module (or tf.compile_generator of GPT-2), checked; the call(s) to time."""
    engine = OURS_INT8 if int8 else OURS
    try:
        import tensorforge as tfg
        from tensorforge.api import inputs_in_order

        model, inputs, _ = _build(job)
        if job["kind"] == "decoder":
            return _decoder_engine(job, engine, OursDecoder(model, inputs, job, int8))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cm = tfg.compile(model, inputs, threads=job["threads"])
        arrays = inputs_in_order(cm.source_graph, {key: value.numpy() for key, value in inputs.items()})
        import torch_zoo

        check = _errors(torch_zoo.outputs_of(cm(*arrays)), _load(job["reference"]))
    except EngineUnavailable:
        raise
    except Exception as error:  # noqa: BLE001 - reported in the row
        raise _failed(job, engine, error) from None
    check["build"] = time.perf_counter() - start
    _write(job, engine, check)
    return lambda: cm(*arrays)


def torch_engine(job: dict, threads: int, compiled: bool):
    """The module in eager PyTorch, or torch.compile'd, with `threads` intra-op threads."""
    engine = f"{FAMILIES['compile' if compiled else 'eager']} {threads}"
    try:
        import torch
        import torch_zoo

        torch.set_num_threads(threads)
        model, inputs, _ = _build(job)
        start = time.perf_counter()
        function = torch.compile(model) if compiled else model
        if job["kind"] == "decoder":
            return _decoder_engine(job, engine, TorchDecoder(function, inputs, job), start)

        def call():
            with torch.inference_mode():
                return function(**inputs)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outputs = call()  # torch.compile compiles here
        check = _errors(torch_zoo.outputs_of(outputs), _load(job["reference"]))
    except EngineUnavailable:
        raise
    except Exception as error:  # noqa: BLE001 - reported in the row (torch.compile may fail here)
        raise _failed(job, engine, error) from None
    check["build"] = time.perf_counter() - start
    _write(job, engine, check)
    return call


def onnxruntime_engine(job: dict, threads: int, int8: bool = False):
    """An ONNX Runtime session (every graph optimization, `threads` intra-op threads) per exported model."""
    engine = f"{FAMILIES['onnxruntime']}{' int8' if int8 else ''} {threads}"
    try:
        import onnxruntime  # noqa: F401 - is it installed?
    except ImportError as error:
        raise _failed(job, engine, error) from None
    try:
        start = time.perf_counter()
        paths = job["onnx_int8" if int8 else "onnx"]
        sessions = [onnxruntime_session(path, threads) for path in paths]
        feeds = _load(job["inputs"])
        if job["kind"] == "decoder":
            return _decoder_engine(job, engine, OrtDecoder(sessions, feeds), start)
        outputs = dict(zip(job["onnx_outputs"], sessions[0].run(None, feeds), strict=True))
        check = _errors(outputs, _load(job["reference"]))
    except EngineUnavailable:
        raise
    except Exception as error:  # noqa: BLE001 - reported in the row
        raise _failed(job, engine, error) from None
    check["build"] = time.perf_counter() - start
    _write(job, engine, check)
    session = sessions[0]
    return lambda: session.run(None, feeds)


# --- GPT-2 decoding: prefill (first token) and decode steps, per engine -------------------------------------

class OursDecoder:
    def __init__(self, model, inputs, job: dict, int8: bool):
        import tensorforge as tfg

        self.prompt = inputs["input_ids"][0].tolist()
        self.generator = tfg.compile_generator(model, max_len=len(self.prompt) + job["sizes"]["new_tokens"],
                                               prompt_len=len(self.prompt), threads=job["threads"],
                                               quantize="int8" if int8 else None)

    def first(self) -> np.ndarray:
        return self.generator.next_logits(self.prompt)  # the first-token prefill: the last position only

    def steps(self, token: int, count: int) -> list[int]:
        self.generator.position = len(self.prompt)  # the rows past the prompt are written before being read
        tokens = []
        for _ in range(count):
            token = int(np.argmax(self.generator._step(token)))
            tokens.append(token)
        return tokens


class TorchDecoder:
    """Greedy decoding as model.generate does it: a DynamicCache, one token per forward."""

    def __init__(self, model, inputs, job: dict):
        import torch

        self.torch, self.model, self.ids, self.after_prompt = torch, model, inputs["input_ids"], None

    def first(self) -> np.ndarray:
        import torch_zoo

        with self.torch.inference_mode():
            out = self.model(input_ids=self.ids, use_cache=True, logits_to_keep=1)
        self.after_prompt = torch_zoo.cache_tensors(out.past_key_values)
        return out.logits[0, -1].numpy()

    def steps(self, token: int, count: int) -> list[int]:
        import torch_zoo

        cache, tokens = torch_zoo.dynamic_cache(self.after_prompt), []
        with self.torch.inference_mode():
            for _ in range(count):
                out = self.model(input_ids=self.torch.tensor([[token]]), cache=cache, use_cache=True)
                cache = out.past_key_values
                token = int(out.logits[0, -1].argmax())
                tokens.append(token)
        return tokens


class OrtDecoder:
    def __init__(self, sessions, feeds: dict[str, np.ndarray]):
        self.prefill, self.decode = sessions
        self.ids = feeds["input_ids"]
        self.past_names = [value.name for value in self.decode.get_inputs()][1:]
        self.after_prompt: list[np.ndarray] = []

    def first(self) -> np.ndarray:
        logits, *self.after_prompt = self.prefill.run(None, {"input_ids": self.ids})
        return logits[0, -1]

    def steps(self, token: int, count: int) -> list[int]:
        past, tokens = self.after_prompt, []
        for _ in range(count):
            feeds = {"input_ids": np.array([[token]], np.int64), **dict(zip(self.past_names, past, strict=True))}
            logits, *past = self.decode.run(None, feeds)
            token = int(np.argmax(logits[0, -1]))
            tokens.append(token)
        return tokens


def _decoder_engine(job: dict, engine: str, decoder, start: float | None = None):
    """Check a decoder (prefill logits, greedy tokens, twice: the second run must repeat the first) and
    return its two phases to time."""
    start = time.perf_counter() if start is None else start
    reference = _load(job["reference"])
    steps = job["sizes"]["new_tokens"] - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logits = decoder.first()
        tokens = [int(np.argmax(logits))]
        tokens += decoder.steps(tokens[0], steps)
        build = time.perf_counter() - start
        decoder.first()
        again = decoder.steps(tokens[0], steps)
    if again != tokens[1:]:
        raise AssertionError(f"{engine}: a second decode from the prompt gave other tokens")
    want = reference["logits"]
    check = {"abs": float(np.abs(logits - want).max()), "rel": float(np.abs(logits - want).max() / np.abs(want).max()),
             "agree": sum(a == b for a, b in zip(tokens, reference["tokens"].tolist(), strict=True)),
             "tokens": len(tokens), "build": build}
    _write(job, engine, check)
    first = tokens[0]
    return {"prefill": lambda: int(np.argmax(decoder.first())), "decode": lambda: decoder.steps(first, steps)}


# --- the parent: reference outputs, exports, rows -----------------------------------------------------------

def prepare(name: str, batch: int, sizes: dict, quick: bool, folder: Path, engines: list[str], int8: bool,
            exported: dict, verbose: bool) -> tuple[dict, str]:
    """Write the row's inputs and eager reference outputs; export the ONNX models once per model.
    Returns the job's file entries and the note on the model's weights."""
    import torch
    import torch_zoo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inputs, note = torch_zoo.build(name, batch, sizes, quick)
        entries = {"inputs": str(folder / f"{name}-{batch}.inputs.npz"),
                   "reference": str(folder / f"{name}-{batch}.reference.npz")}
        np.savez(entries["inputs"], **{key: value.numpy() for key, value in inputs.items()})
        with torch.inference_mode():
            if name in torch_zoo.DECODERS:
                ids = inputs["input_ids"]
                logits = model(input_ids=ids, logits_to_keep=1).logits[0, -1].numpy()
                generated = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                           max_new_tokens=sizes["new_tokens"], min_new_tokens=sizes["new_tokens"],
                                           pad_token_id=model.config.eos_token_id)
                reference = {"logits": logits, "tokens": generated[0, ids.shape[1]:].numpy()}
            else:
                reference = torch_zoo.outputs_of(model(**inputs))
        np.savez(entries["reference"], **reference)
        if "onnxruntime" in engines and name not in exported:
            start = time.perf_counter()
            try:
                if name in torch_zoo.DECODERS:
                    paths, outputs = list(torch_zoo.export_gpt2(model, inputs["input_ids"], folder)), None
                    exported[name] = {"onnx": [str(p) for p in paths], "onnx_outputs": outputs}
                    if int8:
                        exported[name]["onnx_int8"] = [str(quantized(path)) for path in paths]
                else:
                    path, outputs = torch_zoo.export_onnx(name, model, inputs, folder)
                    exported[name] = {"onnx": [str(path)], "onnx_outputs": outputs}
                if verbose:
                    print(f"  exported for ONNX Runtime ({time.perf_counter() - start:.1f} s)", flush=True)
            except Exception as error:  # noqa: BLE001 - the row says why ONNX Runtime is missing
                exported[name] = {"export_failed": f"{type(error).__name__}: {error}"[:500]}
                print(f"  torch.onnx.export FAILED: {exported[name]['export_failed']}", flush=True)
    entries.update(exported.get(name, {}))
    return entries, note


def quantized(path: Path) -> Path:
    """ONNX Runtime's quantize_dynamic (QInt8 weights) of an exported model, beside it."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the model first
    target = path.with_name(path.stem + ".int8.onnx")
    quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8)
    return target


def factories_for(job: dict, engines: list[str], peer_threads: list[int], int8: bool) -> dict:
    factories = {}
    if "ours" in engines:
        factories[OURS] = (ours_engine, (job,))
        if int8 and job["kind"] == "decoder":
            factories[OURS_INT8] = (ours_engine, (job, True))
    for threads in peer_threads:
        if "eager" in engines:
            factories[f"{FAMILIES['eager']} {threads}"] = (torch_engine, (job, threads, False))
        if "compile" in engines:
            factories[f"{FAMILIES['compile']} {threads}"] = (torch_engine, (job, threads, True))
        if "onnxruntime" in engines and "onnx" in job:
            factories[f"{FAMILIES['onnxruntime']} {threads}"] = (onnxruntime_engine, (job, threads))
            if int8 and "onnx_int8" in job:
                factories[f"{FAMILIES['onnxruntime']} int8 {threads}"] = (onnxruntime_engine, (job, threads, True))
    return factories


def time_row(job: dict, factories: dict, rounds: int, block: float, verbose: bool) -> dict:
    row: dict = {"label": job["label"], "kind": job["kind"]}
    try:
        samples = measure_isolated(factories, rounds=rounds, verbose=verbose, desc=job["label"], min_seconds=block)
    except RuntimeError as error:  # an engine's process died or failed mid-run
        samples, row["failed"] = {}, str(error)
    row["checks"] = {}
    for engine in factories:
        path = Path(job["checks"], f"{engine}.json")
        row["checks"][engine] = json.loads(path.read_text()) if path.exists() else {"failed": "no result (see above)"}
    row["samples"] = samples
    row["medians"] = {key: statistics.median(values) for key, values in samples.items()}
    return row


def best(row: dict, family: str, phase: str | None) -> str | None:
    """The faster thread count of a peer family (by median), as its timed key."""
    suffix = f"|{phase}" if phase else ""
    keys = [key for key in row["medians"] if key.endswith(suffix) and key.split("|")[0].rsplit(" ", 1)[0] == family]
    return min(keys, key=row["medians"].get) if keys else None


def summarize(row: dict, phases: list[str | None], peers: dict[str, str], ours: str) -> list[dict]:
    """Per phase: ours' median, each peer family's best (key, median) and the paired ratio."""
    results = []
    for phase in phases:
        suffix = f"|{phase}" if phase else ""
        result = {"phase": phase, "ours": row["medians"].get(ours + suffix), "peers": {}}
        for family, label in peers.items():
            key = best(row, label, phase)
            if key is None:
                continue
            ratio = paired_ratio(row["samples"], key, ours + suffix) if result["ours"] is not None else None
            result["peers"][family] = {"key": key, "median": row["medians"][key], "ratio": ratio}
        results.append(result)
    return results


def threads_of(key: str) -> str:
    return key.split("|")[0].rsplit(" ", 1)[-1]


def check_cell(row: dict) -> str:
    parts = []
    for engine, check in row["checks"].items():
        short = engine.replace("pytorch ", "").replace("onnxruntime", "ORT")
        if "failed" in check:
            failure = check["failed"]
            parts.append(f"{short} FAILED: {failure if len(failure) < 160 else failure[:160] + ' ...'}")
        elif "agree" in check:
            parts.append(f"{short} rel {check['rel']:.0e}, {check['agree']}/{check['tokens']} tokens")
        else:
            flag = "OFF " if check["rel"] > FP32_TOLERANCE else ""
            parts.append(f"{short} {flag}rel {check['rel']:.0e}")
    if "failed" in row:
        parts.append(f"timing FAILED: {row['failed']}")
    rss = [check["rss_gb"] for check in row["checks"].values() if "rss_gb" in check]
    if rss:
        parts.append(f"peak RSS {max(rss):.1f} GB/process, {sum(rss):.1f} GB together")
    return "; ".join(parts).replace("|", "/").replace("\n", " ")


def cells(summary: dict, decode_steps: int | None = None) -> tuple[list[str], dict[str, float]]:
    """ours, each family's best (threads), each ratio: table cells, and the ratios for the CSV."""
    def show(seconds):
        if seconds is None:
            return "-"
        return f"{decode_steps / seconds:.1f} tok/s" if decode_steps else format_time(seconds)

    values, ratios = [show(summary["ours"]) if summary["ours"] is not None else "n/a"], {}
    for family in ("eager", "compile", "onnxruntime", "onnxruntime int8"):
        peer = summary["peers"].get(family)
        values.append("-" if peer is None else f"{show(peer['median'])} ({threads_of(peer['key'])})")
    for family in ("eager", "compile", "onnxruntime", "onnxruntime int8"):
        peer = summary["peers"].get(family)
        if peer is None or peer["ratio"] is None:
            values.append("-")
        else:
            values.append(f"{peer['ratio']:.2f}x")
            ratios[family] = peer["ratio"]
    return values, ratios


# --- main -----------------------------------------------------------------------------------------------

def parse_list(text: str, allowed=None, kind=str) -> list:
    values = [kind(item) for item in text.split(",") if item.strip()]
    if allowed is not None and not set(values) <= set(allowed):
        raise argparse.ArgumentTypeError(f"{text!r}: choose among {','.join(map(str, allowed))}")
    return values


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def header(args, sizes: dict) -> tuple[list[str], str]:
    commit, machine = commit_and_machine(ROOT)
    lines = [f"$ python {' '.join(sys.argv)}",
             f"machine: {machine}; commit {commit}; torch {_version('torch')}, transformers "
             f"{_version('transformers')}, onnxruntime {_version('onnxruntime')}, numpy {np.__version__}, "
             f"python {platform.python_version()}",
             f"images {sizes['image']}x{sizes['image']}, sequence {sizes['sequence']}, GPT-2 prompt "
             f"{sizes['prompt']} + {sizes['new_tokens']} new tokens; rounds {args.rounds}; ours threads "
             f"{args.threads}; peers' threads {args.peer_threads} (the faster reported)"
             + ("; QUICK: smoke-test sizes" if args.quick else "")]
    return lines, machine


def main() -> None:
    import torch_zoo  # torch: in the parent only (the engines' processes import it when they build)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda text: parse_list(text, torch_zoo.MODELS),
                        default=list(torch_zoo.MODELS), help=f"among {','.join(torch_zoo.MODELS)} (default: all)")
    parser.add_argument("--batches", type=lambda text: parse_list(text, kind=int), default=[1, 8],
                        help="the CNNs' batch sizes")
    parser.add_argument("--encoder-batches", type=lambda text: parse_list(text, kind=int), default=[1])
    parser.add_argument("--engines", type=lambda text: parse_list(text, ["ours", *FAMILIES]),
                        default=["ours", *FAMILIES], help="among ours,eager,compile,onnxruntime (default: all)")
    parser.add_argument("--peer-threads", type=lambda text: parse_list(text, kind=int), default=[1, 2],
                        help="the peers' thread counts (each its own process; the faster is reported)")
    parser.add_argument("--threads", type=int, default=2, help="ours' threads")
    parser.add_argument("--int8", action="store_true", help="GPT-2: also ours int8 against ONNX Runtime int8")
    parser.add_argument("--rounds", type=int, default=None, help="default 15 (3 quick)")
    parser.add_argument("--block", type=float, default=None, help="seconds of calls per sample (0.2; 0.02 quick)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 3 rounds")
    parser.add_argument("--cache", type=Path, default=None, help="keep the exported ONNX models here")
    parser.add_argument("--out", type=Path, default=None, help="write the table as markdown to this file")
    parser.add_argument("--csv", type=Path, default=None, help="write the ratios in current.csv's format")
    parser.add_argument("--chart", type=Path, default=None, help="draw the CSV's chart here (.svg or .png)")
    parser.add_argument("--verbose", action="store_true", help="progress of the timing rounds")
    args = parser.parse_args()
    if args.chart is not None and args.csv is None:
        parser.error("--chart draws the rows written by --csv: give --csv too")
    sizes = dict(torch_zoo.QUICK if args.quick else torch_zoo.FULL)
    args.rounds = args.rounds or sizes["rounds"]
    block = args.block if args.block is not None else (0.02 if args.quick else 0.2)
    lines, machine = header(args, sizes)
    print("\n".join(lines), flush=True)
    steps = sizes["new_tokens"] - 1
    columns = ["model", "shape", "ours", "PyTorch eager", "torch.compile", "ONNX Runtime", "ONNX Runtime int8",
               "eager / ours", "compile / ours", "ORT / ours", "ORT int8 / ours int8", "check"]
    table, notes, csv_rows = [], [], []
    source = f"{datetime.date.today().isoformat()}, bench_torch.py" + (" --quick" if args.quick else "")
    with contextlib.ExitStack() as stack:
        if args.cache is not None:
            args.cache.mkdir(parents=True, exist_ok=True)
            folder = args.cache
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_torch_")))
        exported: dict = {}
        for name in args.models:
            kind = "cnn" if name in torch_zoo.CNNS else "encoder" if name in torch_zoo.ENCODERS else "decoder"
            batches = args.batches if kind == "cnn" else args.encoder_batches if kind == "encoder" else [1]
            for batch in batches:
                shape = (f"batch {batch}, {sizes['image']}x{sizes['image']}" if kind == "cnn" else
                         f"batch {batch}, sequence {sizes['sequence']}" if kind == "encoder" else
                         f"prompt {sizes['prompt']}, {sizes['new_tokens']} new tokens")
                label = f"{torch_zoo.TITLES[name]} {shape}"
                print(f"\n{label}", flush=True)
                start = time.perf_counter()
                entries, note = prepare(name, batch, sizes, args.quick, folder, args.engines, args.int8, exported,
                                        args.verbose)
                print(f"  {note}; reference and exports {time.perf_counter() - start:.1f} s", flush=True)
                if f"{torch_zoo.TITLES[name]}: {note}" not in notes:
                    notes.append(f"{torch_zoo.TITLES[name]}: {note}")
                checks = folder / f"checks-{name}-{batch}"
                checks.mkdir(exist_ok=True)
                job = {"label": label, "model": name, "kind": kind, "batch": batch, "sizes": sizes,
                       "quick": args.quick, "threads": args.threads, "checks": str(checks), **entries}
                row = time_row(job, factories_for(job, args.engines, args.peer_threads, args.int8), args.rounds,
                               block, args.verbose)
                if "export_failed" in entries:
                    row["checks"]["onnxruntime"] = {"failed": f"torch.onnx.export: {entries['export_failed']}"}
                check = check_cell(row)
                peers = {family: FAMILIES[family] for family in ("eager", "compile", "onnxruntime")}
                if kind == "decoder":
                    phases = [("TTFT", "prefill", None), ("decode", "decode", steps)]
                else:
                    phases = [("", None, None)]
                for title, phase, per in phases:
                    summary = summarize(row, [phase], peers, OURS)[0]
                    int8 = None
                    if args.int8 and kind == "decoder":
                        int8 = summarize(row, [phase], {"onnxruntime int8": f"{FAMILIES['onnxruntime']} int8"},
                                         OURS_INT8)[0]
                        summary["peers"].update(int8["peers"])
                    values, ratios = cells(summary, per)
                    if int8 is not None and int8["ours"] is not None:
                        values[0] += f"; int8 {cells(int8, per)[0][0]}"
                    if kind == "decoder" and OURS not in row["checks"]:
                        values[0] = "-"
                    elif summary["ours"] is None:
                        failure = row["checks"].get(OURS, {}).get("failed", "no result")
                        values[0] = f"not available: {failure}" if kind == "decoder" else f"FAILED: {failure}"
                    shown = f"{shape}{', ' + title if title else ''}"
                    table.append([torch_zoo.TITLES[name], shown, *values, check])
                    print("  " + "  ".join(f"{column}: {value}" for column, value in zip(columns[1:], table[-1][1:],
                                                                                        strict=True)), flush=True)
                    for family, ratio in ratios.items():
                        target = GPT_TARGETS.get(family, "") if phase == "decode" else TARGETS.get(family, "")
                        workload = f"{torch_zoo.TITLES[name]} ({shape}{', ' + title if title else ''})"
                        csv_rows.append({"group": "torch", "workload": workload,
                                         "peer": PEER_TITLES.get(family, "ONNX Runtime int8"), "ratios": f"{ratio:.2f}",
                                         "over": "runs", "target": target, "machine": machine, "source": source})
    write_results(columns, table, lines, notes, args.out)
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, ["group", "workload", "peer", "ratios", "over", "target", "machine", "source"])
            writer.writeheader()
            writer.writerows(csv_rows)
        print(f"ratios written to {args.csv} (rows of benchmarks/current.csv's format)")
        if args.chart is not None:
            if not csv_rows:
                print("no ratios: no chart")
                return
            try:
                import chart
            except ImportError as error:
                print(f"no chart: {error}")
                return
            chart.draw(chart.load(args.csv), args.chart)
            print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
