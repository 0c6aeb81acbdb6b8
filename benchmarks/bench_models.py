"""Time the benchmark models on every engine, interleaved in one run, and print medians and ratios.

    python benchmarks/bench_models.py [--rounds 15] [--out out/bench] [--quiet] [--only "batch 1"] [--engines ...]

Engines: tensorforge's reference interpreter, hand-written numpy, PyTorch eager and torch.compile
and ONNX Runtime (if installed), and tensorforge compiled for the host. Models: MLP 784-256-128-10
and the CIFAR-style CNN, at batch 1 and 64. Ratios are the median over rounds of each engine's time
over tensorforge's time in the same round. Each engine runs in a process of its own (harness.py:
runtimes sharing a process disturbed each other's threads), sampled in the same interleaved rounds.
Also reports compile time (trace + passes + LLVM) per model. Writes results.json and a bar chart
(if matplotlib is installed) into --out.

torch.compile compiles in its engine's process (TORCHINDUCTOR_COMPILE_THREADS=1): its default pool
of compile worker processes starts in the background and takes the cores from the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # before torch is imported (see above)

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy_models  # noqa: E402
from harness import bar_charts, format_time, measure_isolated, paired_ratio  # noqa: E402
from onnx_models import onnx_engine  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge import models  # noqa: E402


def torch_engine(model, x, compiled: bool = False):
    """PyTorch eager (or torch.compile'd) on the same weights; None if torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    from torch_models import to_torch

    net = to_torch(model)
    if compiled:
        net = torch.compile(net)
    xt = torch.from_numpy(x)

    def run():
        with torch.inference_mode():
            return net(xt).numpy()

    return run


def workloads():
    rng = np.random.default_rng(0)
    mlp, cnn = models.mlp(), models.cifar_cnn()
    for batch in (1, 64):
        yield f"MLP 784-256-128-10, batch {batch}", mlp, numpy_models.mlp_forward(mlp), \
            rng.standard_normal((batch, 784), dtype=np.float32)
    for batch in (1, 64):
        yield f"CNN 3x32x32, batch {batch}", cnn, numpy_models.cnn_forward(cnn), \
            rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)


ENGINES = ("reference interpreter", "numpy hand-written", "pytorch eager", "torch.compile", "onnxruntime",
           "tensorforge host")


def make_engine(engine: str, workload: int):
    """Build `engine` on workload number `workload` (in its own process, see harness.measure_isolated),
    check it against the reference interpreter, and return the callable to time (None if unavailable)."""
    name, model, numpy_forward, x = list(workloads())[workload]
    graph = tf.trace(model, x)
    expected = tf.interpret(graph, x)
    if engine == "reference interpreter":
        run = lambda: tf.interpret(graph, x)  # noqa: E731
    elif engine == "numpy hand-written":
        run = lambda: numpy_forward(x)  # noqa: E731
    elif engine == "tensorforge host":
        cm = tf.compile(model, x, target="host")
        run = lambda: cm(x)  # noqa: E731
    elif engine == "onnxruntime":
        run = onnx_engine(graph, x)
    else:
        run = torch_engine(model, x, compiled=engine == "torch.compile")
    if run is not None:
        np.testing.assert_allclose(run(), expected, rtol=1e-3, atol=1e-4)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile (slow to compile)")
    parser.add_argument("--only", nargs="+", default=None, metavar="TEXT",
                        help="only the workloads whose name holds one of these, in any case (e.g. 'batch 1', 'cnn')")
    parser.add_argument("--engines", nargs="+", default=None, choices=ENGINES, help="default: all")
    args = parser.parse_args()
    results = []
    names = [name for name, *_ in workloads()]
    if args.only and not any(text.lower() in name.lower() for name in names for text in args.only):
        parser.error(f"--only {' '.join(args.only)} matches no workload; the workloads are: {', '.join(names)}")
    for index, (name, model, _, x) in enumerate(workloads()):
        if args.only and not any(text.lower() in name.lower() for text in args.only):
            continue
        start = time.perf_counter()
        cm = tf.compile(model, x, target="host", cache=False)  # only for the compile time (each engine runs in its
        # own process); cache=False: a compile, not a compile-cache hit
        compile_seconds = time.perf_counter() - start
        engines = [engine for engine in args.engines or ENGINES
                   if not (args.no_torch_compile and engine == "torch.compile")]
        samples = measure_isolated({engine: (make_engine, (engine, index)) for engine in engines},
                                   rounds=args.rounds, verbose=not args.quiet, desc=name)
        medians = {engine: statistics.median(values) for engine, values in samples.items()}
        ratios = {engine: paired_ratio(samples, engine, "tensorforge host") for engine in samples}
        print(f"\n{name}  (compile {compile_seconds * 1000:.0f} ms: "
              + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in cm.compile_seconds.items()) + ")")
        for engine, seconds in sorted(medians.items(), key=lambda kv: kv[1]):
            print(f"  {engine:<24} {format_time(seconds):>10}   {ratios[engine]:6.2f}x tensorforge's time")
        results.append({"workload": name, "medians_s": medians, "ratio_to_tensorforge": ratios,
                        "samples_s": samples, "compile_s": compile_seconds,
                        "compile_breakdown_s": cm.compile_seconds})
        cm.close()
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
            "numpy": np.__version__, "rounds": args.rounds, "isolation": "one process per engine"}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    chart(results, args.out / "models.png")


def chart(results, path: Path) -> None:
    panels = []
    for result in results:
        names = sorted(result["medians_s"], key=result["medians_s"].get)
        panels.append({"title": result["workload"], "names": names,
                       "values": [result["medians_s"][n] * 1e6 for n in names],
                       "xlabel": "median time per call (us, log)"})
    bar_charts(path, panels)

if __name__ == "__main__":
    main()
