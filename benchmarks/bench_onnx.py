"""tensorforge against ONNX Runtime on real architectures imported from ONNX: ResNet-50, MobileNetV2,
SqueezeNet 1.1, a BERT-base-shaped encoder and all-MiniLM-L6-v2, fp32 and INT8, interleaved.

    python benchmarks/bench_onnx.py [--models resnet50,mobilenetv2,squeezenet,bert,minilm] [--batches 1,8]
                                    [--int8] [--no-fp32] [--rounds 15] [--out results.md] [--cache DIR]
                                    [--quick] [--verbose]

The models (onnx_zoo.py) are written in PyTorch as torchvision and Hugging Face write them and
exported with torch.onnx.export(..., dynamo=False, opset_version=17), batch axis symbolic, into a
temporary folder (or --cache, where the files are kept and reused). Images are 224x224, the
encoders run at sequence 128 with an attention mask (the first sentence of a batch fills the
sequence, the others are shorter: padding masked). --quick: 64x64 images, sequence 16, 3 rounds,
4 calibration samples (a smoke test: its figures say little).

Per model, batch and precision, three engines are timed in the same interleaved rounds, each in a
process of its own (harness.measure_isolated):
- ours: tfg.compile("model.onnx", inputs, threads=--threads) on that batch size; int8:
  quantize="int8" with the calibration samples (static; ResNet-50) or
  quantize=tfg.QuantConfig(dynamic=True) (the encoders);
- ONNX Runtime with intra_op_num_threads 1 and with 2 (inter_op 1, ORT_ENABLE_ALL, CPU provider):
  the row reports the faster (median) of the two and which it was. Its int8 models are
  onnxruntime.quantization's, after its quant_pre_process (shape inference and optimization, as
  its documentation advises): quantize_static (QDQ format, per channel, int8 activations and
  weights, MinMax calibration on the same samples) for ResNet-50, quantize_dynamic (int8
  weights) for the encoders.
Ratio = the median over rounds of ONNX Runtime's (best) time / ours in the same round: above 1x,
ours is faster. "compile s" is ours' tf.compile (ONNX import, calibration and quantization for
int8, passes, LLVM, loading) in its engine's process.

Numerics, checked once per row before timing against ONNX Runtime's fp32 output on the same
inputs: fp32 rows give ours' max abs error (and relative: over the output's largest magnitude);
int8 rows give the relative error of each int8 engine against that fp32 output (different
quantization schemes: neither is the reference of the other), and how many of ours' layers the
SQNR guard left in int8. If ours fails to compile or run a model, the row says so, with the
error, and ONNX Runtime is still timed.

Memory: one model at a time; each engine's process ends before the next row's start. ResNet-50's
int8 compile is slow (minutes: see the compile column).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
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

MODELS = ("resnet50", "mobilenetv2", "squeezenet", "bert", "minilm")
TITLES = {"resnet50": "ResNet-50", "mobilenetv2": "MobileNetV2", "squeezenet": "SqueezeNet 1.1",
          "bert": "BERT-base", "minilm": "MiniLM-L6"}
INT8 = {"resnet50": "static", "bert": "dynamic", "minilm": "dynamic"}  # the int8 rows: ONNX Runtime's peer
PRECISIONS = {"fp32": "fp32", "static": "int8 static", "dynamic": "int8 dynamic"}
FULL = {"image": 224, "sequence": 128, "rounds": 15, "calibration": 16}
QUICK = {"image": 64, "sequence": 16, "rounds": 3, "calibration": 4}
OURS = "ours"
FP32_TOLERANCE = 1e-4  # an fp32 row whose relative error is above this is marked OFF in its check


# --- progress: the command line's (a ticking line while a long step runs) -------------------------------

from tensorforge.cli.progress import step  # noqa: E402

# --- engines, each in its own process ------------------------------------------------------------------
#
# A job (a dict of plain values) names the files: the model, its inputs and ONNX Runtime's fp32
# outputs on them (reference), the calibration samples, and where the engine writes its check.

def _load(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}


def _errors(outputs, reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Max abs error over the outputs, and relative: each output's over its largest magnitude."""
    outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    pairs = list(zip(outputs, reference.values(), strict=True))
    absolute = max(float(np.abs(got - want).max()) for got, want in pairs)
    relative = max(float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)) for got, want in pairs)
    return {"abs": absolute, "rel": relative}


def _write(job: dict, name: str, result: dict) -> None:
    Path(job["checks"], f"{name}.json").write_text(json.dumps(result))


def ours_engine(job: dict):
    """tf.compile of the ONNX file at the job's batch size, checked, and the call to time; a failure
    is written to the check file and the engine left out (EngineUnavailable)."""
    import tensorforge as tfg
    from tensorforge.api import inputs_in_order

    feeds, reference = _load(job["inputs"]), _load(job["reference"])
    options: dict = {}
    if job["precision"] == "static":
        calibration = _load(job["calibration"])
        options = {"quantize": tfg.QuantConfig(verbose=job["verbose"]), "calibration": tuple(calibration.values())}
    elif job["precision"] == "dynamic":
        options = {"quantize": tfg.QuantConfig(dynamic=True)}
    cm = None
    try:
        with step(f"{job['label']}: compiling ours", job["verbose"]):
            cm = tfg.compile(job["model"], feeds, threads=job["threads"], cache=False, **options)  # compile time
        arrays = inputs_in_order(cm.source_graph, feeds)
        check = _errors(cm(*arrays), reference)
    except Exception as error:  # noqa: BLE001 - reported in the table's row
        if cm is not None:
            cm.close()
        message = f"{type(error).__name__}: {error}"
        _write(job, OURS, {"failed": message})
        raise EngineUnavailable(message) from None
    check["compile"] = cm.compile_seconds["total"]
    check["compile_parts"] = cm.compile_seconds
    if options.get("quantize") is not None:
        report = cm.quant_report()
        check["int8_layers"] = f"{len(report.quantized)}/{len(report.rows)}"
    _write(job, OURS, check)
    return lambda: cm(*arrays)


def onnxruntime_engine(job: dict, threads: int):
    """An ONNX Runtime session (every graph optimization, `threads` intra-op threads) on the job's model."""
    name = f"onnxruntime {threads}"
    try:
        import onnxruntime  # noqa: F401 - is it installed?
    except ImportError as error:
        raise EngineUnavailable(str(error)) from None
    feeds, reference = _load(job["inputs"]), _load(job["reference"])
    try:
        start = time.perf_counter()
        session = onnxruntime_session(job["ort_model"], threads)
        build = time.perf_counter() - start
        check = _errors(session.run(None, feeds), reference)
    except Exception as error:  # noqa: BLE001 - reported in the table's row
        message = f"{type(error).__name__}: {error}"
        _write(job, name, {"failed": message})
        raise EngineUnavailable(message) from None
    check["build"] = build
    _write(job, name, check)
    return lambda: session.run(None, feeds)


# --- the parent: export, ONNX Runtime's quantization, reference outputs ------------------------------------

def model_inputs(name: str, batch: int, sizes: dict, vocab: int | None, seed: int = 2) -> dict[str, np.ndarray]:
    import onnx_zoo

    if name in onnx_zoo.CNNS:
        return {"input": onnx_zoo.images(batch, sizes["image"], seed)}
    return onnx_zoo.encoder_inputs(batch, sizes["sequence"], vocab, seed)


def export(name: str, sizes: dict, folder: Path, verbose: bool) -> tuple[Path, int | None, str]:
    """(the exported fp32 model, the vocabulary size of an encoder, a note on its weights)."""
    import onnx_zoo

    with step(f"{name}: exporting", verbose):
        if name in onnx_zoo.CNNS:
            return onnx_zoo.export_cnn(name, sizes["image"], folder), None, "random weights"
        return onnx_zoo.export_encoder(name, sizes["sequence"], folder)


def calibration_samples(name: str, sizes: dict, vocab: int | None) -> dict[str, np.ndarray]:
    """The calibration set of both engines' static int8: random samples like the inputs, other seeds."""
    return model_inputs(name, sizes["calibration"], sizes, vocab, seed=3)


def ort_quantized(name: str, source: Path, mode: str, calibration: dict[str, np.ndarray], verbose: bool) -> tuple[
        Path, str]:
    """ONNX Runtime's int8 model of `source` (static QDQ or dynamic), kept beside it; and a note."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    samples = len(next(iter(calibration.values())))
    target = source.with_name(source.stem + (f".qdq-c{samples}.onnx" if mode == "static" else ".int8.onnx"))
    note = ""
    if target.exists():
        return target, note
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process (done) and its calibration chatter
    prepared = source.with_name(source.stem + ".pre.onnx")
    try:
        with step(f"{name}: onnxruntime quant_pre_process", verbose):
            quant_pre_process(str(source), str(prepared))
    except Exception as error:  # noqa: BLE001 - quantized without it then
        note = f"quant_pre_process failed ({type(error).__name__}: {error}); quantized the exported model"
        prepared = source
    partial = target.with_name(target.stem + ".part.onnx")  # renamed when whole: a cached file is complete
    try:
        if mode == "dynamic":
            with step(f"{name}: onnxruntime quantize_dynamic", verbose):
                quantize_dynamic(str(prepared), str(partial), weight_type=QuantType.QInt8)
        else:
            quantize_calibrated(name, prepared, partial, calibration, verbose)
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)
        if prepared != source:
            prepared.unlink(missing_ok=True)
    return target, note


def quantize_calibrated(name: str, source: Path, target: Path, calibration: dict[str, np.ndarray],
                        verbose: bool) -> None:
    """onnxruntime.quantization.quantize_static: QDQ, per channel, int8 activations and weights, MinMax
    calibration on the samples (one at a time)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    samples = len(next(iter(calibration.values())))

    class Reader(CalibrationDataReader):
        def __init__(self):
            feeds = [{key: value[i:i + 1] for key, value in calibration.items()} for i in range(samples)]
            if verbose:
                from tqdm import tqdm
                feeds = tqdm(feeds, desc=f"{name}: onnxruntime calibration", file=sys.stderr)
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def reference_outputs(model: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ONNX Runtime's fp32 outputs (the session is gone when this returns)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


# --- a row ---------------------------------------------------------------------------------------------

def time_row(job: dict, ort_threads: list[int], rounds: int, block: float, verbose: bool) -> dict:
    """Time ours and ONNX Runtime at each thread count, interleaved; the row's figures and checks."""
    factories = {OURS: (ours_engine, (job,))}  # first: its compile runs before the peers' processes start
    factories.update({f"onnxruntime {threads}": (onnxruntime_engine, (job, threads)) for threads in ort_threads})
    row: dict = {"label": job["label"]}
    try:
        samples = measure_isolated(factories, rounds=rounds, verbose=verbose, desc=job["label"], min_seconds=block)
    except RuntimeError as error:  # an engine's process died (out of memory?) or failed mid-run
        samples = {}
        row["failed"] = str(error)
    checks = {}
    for name in factories:
        path = Path(job["checks"], f"{name}.json")
        checks[name] = json.loads(path.read_text()) if path.exists() else {"failed": "no result (see above)"}
    row["checks"] = checks
    row["medians"] = {name: statistics.median(values) for name, values in samples.items()}
    peers = [name for name in row["medians"] if name != OURS]
    if peers:
        best = min(peers, key=row["medians"].get)
        row["best"] = best
        if OURS in row["medians"]:
            row["ratio"] = paired_ratio(samples, best, OURS)
    row["samples"] = samples
    return row


def cells(row: dict, precision: str) -> list[str]:
    """ours, ONNX Runtime best (threads), ratio, compile s, check."""
    medians, checks = row["medians"], row["checks"]
    ours = checks[OURS]
    ours_cell = format_time(medians[OURS]) if OURS in medians else "FAILED"
    if "best" in row:
        best = row["best"]
        others = "; ".join(f"{name.split()[-1]}: {format_time(medians[name])}" for name in medians
                           if name not in (OURS, best))
        ort_cell = f"{format_time(medians[best])} ({best.split()[-1]})" + (f" [{others}]" if others else "")
    else:
        failures = {c["failed"] for name, c in checks.items() if name != OURS and "failed" in c}
        ort_cell = "FAILED: " + " / ".join(sorted(failures)) if failures else "-"
    ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "-"
    compile_cell = f"{ours['compile']:.1f}" if "compile" in ours else "-"
    if "failed" in ours:
        check = f"ours FAILED: {ours['failed']}"
    elif precision == "fp32":
        check = f"abs {ours['abs']:.1e} (rel {ours['rel']:.1e})"
        if ours["rel"] > FP32_TOLERANCE:
            check = f"OFF (rel > {FP32_TOLERANCE:g}): {check}"
    else:
        peer = checks.get(row.get("best", ""), {})
        check = f"rel vs fp32: ours {ours['rel']:.1e}" + (f", ORT {peer['rel']:.1e}" if "rel" in peer else "") \
            + f"; ours int8 layers {ours.get('int8_layers', '?')}"
    if "failed" in row:
        check += f"; timing FAILED: {row['failed']}"
    return [ours_cell, ort_cell, ratio, compile_cell, check.replace("|", "/").replace("\n", " ")]


# --- main --------------------------------------------------------------------------------------------

def header(args, sizes: dict) -> list[str]:
    import onnxruntime

    commit, machine = commit_and_machine(ROOT)
    return [f"$ python {' '.join(sys.argv)}",
            f"machine: {machine}; commit {commit}; "
            f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, python {platform.python_version()}",
            f"images {sizes['image']}x{sizes['image']}, sequence {sizes['sequence']}; rounds {args.rounds}; "
            f"ours threads {args.threads}; onnxruntime threads {args.ort_threads} (ORT_ENABLE_ALL, the faster "
            f"reported); {sizes['calibration']} calibration samples"
            + ("; QUICK: smoke-test sizes" if args.quick else "")]


def parse_list(text: str, allowed=None, kind=str) -> list:
    values = [kind(item) for item in text.split(",") if item.strip()]
    if allowed is not None and not set(values) <= set(allowed):
        raise argparse.ArgumentTypeError(f"{text!r}: choose among {','.join(allowed)}")
    return values


def main() -> None:
    import onnx_zoo  # torch: in the parent only (the engines' processes import this file, not onnx_zoo)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda text: parse_list(text, MODELS), default=list(MODELS),
                        help=f"comma-separated, among {','.join(MODELS)} (default: all)")
    parser.add_argument("--batches", type=lambda text: parse_list(text, kind=int), default=[1, 8])
    parser.add_argument("--int8", action="store_true",
                        help=f"also int8 where ONNX Runtime has a quantized peer ({', '.join(INT8)})")
    parser.add_argument("--no-fp32", action="store_true", help="no fp32 rows (with --int8)")
    parser.add_argument("--rounds", type=int, default=None, help=f"default {FULL['rounds']} ({QUICK['rounds']} quick)")
    parser.add_argument("--threads", type=int, default=2, help="ours' threads")
    parser.add_argument("--ort-threads", type=lambda text: parse_list(text, kind=int), default=[1, 2],
                        help="ONNX Runtime's intra-op thread counts to try (the faster is reported)")
    parser.add_argument("--calibration", type=int, default=None,
                        help=f"static int8 calibration samples (default {FULL['calibration']}, {QUICK['calibration']} "
                             "quick)")
    parser.add_argument("--block", type=float, default=None,
                        help="seconds of calls per sample (default 0.2; 0.02 quick)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 64x64 images, sequence 16, 3 rounds")
    parser.add_argument("--cache", type=Path, default=None, help="keep the exported models here (and reuse them)")
    parser.add_argument("--out", type=Path, default=None, help="write the table as markdown to this file")
    parser.add_argument("--verbose", action="store_true", help="progress bars on export, compile, calibration, timing")
    args = parser.parse_args()
    if args.no_fp32 and not args.int8:
        parser.error("--no-fp32 leaves nothing to time without --int8")
    sizes = dict(QUICK if args.quick else FULL)
    if args.calibration is not None:
        sizes["calibration"] = args.calibration
    args.rounds = args.rounds or sizes["rounds"]
    block = args.block if args.block is not None else (0.02 if args.quick else 0.2)
    precisions = [] if args.no_fp32 else ["fp32"]
    lines = header(args, sizes)
    print("\n".join(lines), flush=True)

    columns = ["model", "batch", "precision", "ours", "ONNX Runtime best (threads)", "ratio (ORT / ours)",
               "compile s (ours)", "check"]
    table, notes = [], []
    with contextlib.ExitStack() as stack:
        if args.cache is not None:
            args.cache.mkdir(parents=True, exist_ok=True)
            folder = args.cache
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_onnx_")))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_onnx_run_")))
        for name in args.models:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model, vocab, note = export(name, sizes, folder, args.verbose)
            print(f"\n{TITLES[name]}: {model.name}, {onnx_zoo.parameters(model):.1f} M weights, {note} "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)
            notes.append(f"{TITLES[name]}: {note}")
            modes = precisions + ([INT8[name]] if args.int8 and name in INT8 else [])
            calibration = calibration_samples(name, sizes, vocab)
            calibration_path = work / f"{name}.calibration.npz"
            np.savez(calibration_path, **calibration)
            ort_models = {"fp32": (model, "")}
            for mode in modes:
                if mode == "fp32":
                    continue
                start = time.perf_counter()
                try:
                    ort_models[mode] = quantized, quant_note = ort_quantized(name, model, mode, calibration,
                                                                             args.verbose)
                    print(f"  onnxruntime int8 ({mode}): {quantized.name} ({time.perf_counter() - start:.1f} s)"
                          + (f"; {quant_note}" if quant_note else ""), flush=True)
                except Exception as error:  # noqa: BLE001 - ours is timed alone, the row says why
                    ort_models[mode] = (None, f"{type(error).__name__}: {error}")
                    print(f"  onnxruntime int8 ({mode}) FAILED: {ort_models[mode][1]}", flush=True)
            for batch in args.batches:
                feeds = model_inputs(name, batch, sizes, vocab)
                inputs_path, reference_path = work / f"{name}-{batch}.inputs.npz", work / f"{name}-{batch}.ref.npz"
                np.savez(inputs_path, **feeds)
                np.savez(reference_path, **reference_outputs(model, feeds))
                for mode in modes:
                    label = f"{TITLES[name]} b{batch} {PRECISIONS[mode]}"
                    checks = work / f"{name}-{batch}-{mode}"
                    checks.mkdir()
                    ort_model, ort_note = ort_models[mode]
                    job = {"label": label, "model": str(model), "precision": mode, "threads": args.threads,
                           "inputs": str(inputs_path), "reference": str(reference_path),
                           "calibration": str(calibration_path), "checks": str(checks), "verbose": args.verbose,
                           "ort_model": str(ort_model) if ort_model is not None else None}
                    threads = args.ort_threads if ort_model is not None else []
                    row = time_row(job, threads, args.rounds, block, args.verbose)
                    if ort_model is None:
                        row["checks"]["onnxruntime"] = {"failed": f"quantization: {ort_note}"}
                    values = [TITLES[name], str(batch), PRECISIONS[mode], *cells(row, mode)]
                    table.append(values)
                    print("  " + "  ".join(f"{column}: {value}" for column, value in zip(columns[1:], values[1:],
                                                                                        strict=True)), flush=True)
                    failure = row["checks"][OURS].get("failed")
                    if failure:
                        print(f"  ours FAILED on {label}: {failure}", flush=True)

    write_results(columns, table, lines, notes, args.out)


if __name__ == "__main__":
    main()
