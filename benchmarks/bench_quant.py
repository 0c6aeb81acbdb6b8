"""INT8: the int8 GEMM against our f32 GEMM, the INT8 MLP against ONNX Runtime, digits accuracy per method.

    python benchmarks/bench_quant.py [--rounds 11] [--quiet] [--skip-accuracy]

1. GEMM: qlinear (int8 x int8 -> int32, requantized to int8) against linear (f32) at
   M = N = K = 256 / 512 / 1024, both ours, both cores, interleaved; GOP/s and the ratio; and the
   two roofs (runtime/machine.py: the int8 instruction's peak and the f32 FMA peak).
2. MLP 784-256-128-10 at batch 64: ours in int8 (static, calibrated; and dynamic) and in f32, ONNX Runtime in
   f32 and with its INT8 dynamic quantization (onnxruntime.quantization.quantize_dynamic of the
   same model), each engine in its own process, interleaved (harness.measure_isolated), 2 threads.
3. Weight bytes of the MLP in f32 and int8, and the digits models' held-out accuracy in f32 and in
   int8 with each calibration method (examples/digits, calibration on the training split).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "examples" / "digits"))

from harness import EngineUnavailable, format_time, measure_isolated, measure_samples, onnxruntime_session, paired_ratio  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge.ir import DType, Graph, TensorType  # noqa: E402
from tensorforge.models import mlp  # noqa: E402

BATCH = 64
SIZES = (256, 512, 1024)


def gemm_models(n: int, rng: np.random.Generator) -> tuple[Graph, Graph]:
    """(int8 qlinear, f32 linear) graphs of one n x n x n product."""
    integer, real = Graph(), Graph()
    x = integer.add_input("x", TensorType((n, n), DType.i8))
    operands = [integer.constant(rng.integers(-127, 128, (n, n)).astype(np.int8), "w"),
                integer.constant(rng.integers(-1000, 1000, n).astype(np.int32), "b"),
                integer.constant(np.full(n, 1e-4, np.float32), "m"), integer.constant(np.int32(3), "zx"),
                integer.constant(np.int32(-2), "zy")]
    integer.outputs = [integer.call("qlinear", [x, *operands], {"dtype": "i8"})]
    y = real.add_input("x", TensorType((n, n), DType.f32))
    real.outputs = [real.call("linear", [y, real.constant(rng.standard_normal((n, n)).astype(np.float32), "w")])]
    return integer, real


def roofs() -> list[str]:
    """The two instruction roofs on both cores: int8 (the GEMM's own multiply-add) and f32 FMA."""
    from tensorforge.codegen.gemm.qgemm import has_amx, int8_scheme
    from tensorforge.codegen.target import Target
    from tensorforge.runtime.machine import int8_peak, machine_peaks

    host = Target.parse("host")
    int8, real = int8_peak(2), machine_peaks(2).gflops
    if has_amx(host):  # the vector instruction's roof no longer bounds the GEMM
        return [f"roofs on 2 threads: int8 vectors ({int8_scheme(host).name}) {int8:.0f} GOP/s, f32 FMA "
                f"{real:.0f} GFLOP/s; the int8 GEMM takes AMX tiles here (from 16 rows), whose roof is not measured"]
    return [f"roofs on 2 threads: int8 ({int8_scheme(host).name}) {int8:.0f} GOP/s, f32 FMA "
            f"{real:.0f} GFLOP/s: int8 can be at most {int8 / real:.2f}x f32 on this machine"]


def bench_gemm(rounds: int, verbose: bool) -> list[str]:
    rng = np.random.default_rng(0)
    lines = ["int8 GEMM (qlinear, requantized to int8) vs f32 GEMM (linear), both ours, 2 threads:"]
    for n in SIZES:
        integer, real = gemm_models(n, rng)
        x8 = rng.integers(-128, 128, (n, n)).astype(np.int8)
        x32 = rng.standard_normal((n, n)).astype(np.float32)
        with tf.compile(integer, threads=2) as q, tf.compile(real, threads=2) as f:
            engines = {"int8": lambda q=q, x8=x8: q(x8), "f32": lambda f=f, x32=x32: f(x32)}
            samples = measure_samples(engines, rounds=rounds,
                                      verbose=verbose, desc=f"gemm {n}", sleep=0.25)
        ops = 2.0 * n ** 3
        int8_rate, f32_rate = (ops / np.median(samples[k]) / 1e9 for k in ("int8", "f32"))
        lines.append(f"  {n:>5}^3: int8 {int8_rate:7.1f} GOP/s   f32 {f32_rate:7.1f} GFLOP/s   "
                     f"int8 {paired_ratio(samples, 'f32', 'int8'):.2f}x f32")
    return lines


# --- the MLP, each engine in its own process ----------------------------------------------------

def _inputs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((BATCH, 784)).astype(np.float32)
    calibration = rng.standard_normal((8 * BATCH, 784)).astype(np.float32)
    return x, calibration


def ours(quantized: bool, dynamic: bool = False):
    x, calibration = _inputs()
    options = {"quantize": "int8", "calibration": calibration} if quantized else {}
    if dynamic:
        options = {"quantize": tf.QuantConfig(dynamic=True)}
    compiled = tf.compile(mlp(), x, threads=2, **options)
    reference = tf.interpret(tf.trace(mlp(), x), x)
    error = np.abs(compiled(x) - reference).max() / np.abs(reference).max()
    if error > (0.05 if quantized else 1e-4):
        raise AssertionError(f"ours ({'int8' if quantized else 'f32'}) is off by {error:.3g} of the output's range")
    return lambda: compiled(x)


def onnxruntime_engine(quantized: bool):
    try:
        import onnxruntime  # noqa: F401 - is it installed?
        from onnx_models import to_onnx
        logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's advice to pre-process the model
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:
        raise EngineUnavailable(str(error)) from None
    x, _ = _inputs()
    graph = tf.trace(mlp(), x)
    model = to_onnx(graph).SerializeToString()
    if quantized:
        with tempfile.TemporaryDirectory() as directory:
            source, target = Path(directory) / "mlp.onnx", Path(directory) / "mlp.int8.onnx"
            source.write_bytes(model)
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
            model = target.read_bytes()
    session = onnxruntime_session(model, 2)
    feed = {f"v_{graph.inputs[0].name}": x}
    reference = tf.interpret(graph, x)
    error = np.abs(session.run(None, feed)[0] - reference).max() / np.abs(reference).max()
    if error > (0.05 if quantized else 1e-4):
        raise AssertionError(f"onnxruntime is off by {error:.3g} of the output's range")
    return lambda: session.run(None, feed)[0]


def bench_mlp(rounds: int, verbose: bool) -> list[str]:
    factories = {"ours int8": (ours, (True,)), "ours int8 dynamic": (ours, (True, True)), "ours f32": (ours, (False,)),
                 "onnxruntime int8 dynamic": (onnxruntime_engine, (True,)),
                 "onnxruntime f32": (onnxruntime_engine, (False,))}
    samples = measure_isolated(factories, rounds=rounds, verbose=verbose, desc="mlp")
    lines = [f"MLP 784-256-128-10, batch {BATCH}, 2 threads, each engine in its own process:"]
    for name, values in samples.items():
        line = f"  {name:<26} {format_time(float(np.median(values))):>10}"
        if name != "ours int8":
            line += f"   ours int8 is {paired_ratio(samples, name, 'ours int8'):.2f}x faster"
        lines.append(line)
    return lines


def model_sizes() -> list[str]:
    x, calibration = _inputs()
    with tf.compile(mlp(), x) as real, tf.compile(mlp(), x, quantize="int8", calibration=calibration) as integer:
        before, after = real.artifact.weights.size, integer.artifact.weights.size
        report = integer.quant_report()
    return [f"MLP weights: {before} bytes f32, {after} bytes int8 ({before / after:.2f}x smaller; the int8 buffer "
            f"also holds biases, multipliers and column sums); linear weights alone "
            f"{report.weight_bytes[0]} -> {report.weight_bytes[1]} bytes"]


def accuracy_table(verbose: bool) -> list[str]:
    try:
        from data import accuracy, load_split
        from evaluate import trained
    except ImportError as error:
        return [f"(no accuracy: {error})"]
    lines = ["digits held-out accuracy (calibration: the training split; default SQNR budget 30 dB):"]
    for kind in ("mlp", "cnn"):
        x_train, _, x_test, y_test = load_split(kind)
        model = trained(kind)
        with tf.compile(model, x_test) as compiled:
            row = [f"fp32 {accuracy(compiled(x_test), y_test):.4f}"]
        for method in ("minmax", "percentile", "entropy", "tinytorch"):
            config = tf.QuantConfig(method=method, verbose=verbose)
            with tf.compile(model, x_test, quantize=config, calibration=x_train) as compiled:
                row.append(f"{method} {accuracy(compiled(x_test), y_test):.4f}")
                if method == "percentile":  # the default
                    quantized = len(compiled.quant_report().quantized)
        lines.append(f"  {kind}: " + ", ".join(row) + f"  ({quantized} layers in int8 by default)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    verbose = not args.quiet
    lines = roofs() + bench_gemm(args.rounds, verbose) + bench_mlp(args.rounds, verbose) + model_sizes()
    if not args.skip_accuracy:
        lines += accuracy_table(verbose)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
