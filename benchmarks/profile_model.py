"""Per-kernel profile (cm.profile: time, FLOPs, bytes, roofline) of a benchmark workload.

    python benchmarks/profile_model.py mlp --batch 64
    python benchmarks/profile_model.py cnn --batch 64
    python benchmarks/profile_model.py gpt2 --phase decode [--int8]      (or tiny; --phase prefill)
    python benchmarks/profile_model.py resnet50 [--by-op] [--int8] [--disable select-winograd]  (or mobilenetv2,
                                                  squeezenet)
    python benchmarks/profile_model.py bert [--batch 8] [--by-op] [--int8] [--onnxruntime]  (or minilm)

mlp and cnn are bench_models.py's models (random input of the batch); tiny and gpt2 are
bench_gpt.py's random-weight GPTs compiled by tf.compile_generator with prompt_len 32: the
first-token prefill of a 32-token prompt (generation's: the output layer at the last position only),
or one decode step at position 32 after it. resnet50, mobilenetv2 and squeezenet are bench_onnx.py's
CNNs (onnx_zoo.py: random weights, 224x224), exported to ONNX in a temporary folder and imported;
bert and minilm are its encoders at sequence 128 (random ids, --batch sequences; --int8: dynamic int8).
`--by-op` adds a line per op (kernels, time, share, GFLOP/s). `--onnxruntime` (the CNNs and the fp32
encoders) also prints ONNX Runtime's own per-node profile of the same file (`enable_profiling`, its best settings:
every graph optimization, --threads intra-op threads), the median of 30 runs per node, so layer
times can be set side by side. `--threads` as in the other benchmarks (default 2). The table is the
median of cm.profile's runs per kernel; the last line
says how much of a call the kernels take.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpt import PROMPT, build_model, prompt_ids  # noqa: E402
from onnx_zoo import CNNS, ENCODERS, encoder_inputs, export_cnn, export_encoder, images  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge import models  # noqa: E402

SEQUENCE = 128  # bench_onnx.py's encoders' sequence


def print_by_op(profile) -> None:
    """Kernels, time, share of the kernels' time and GFLOP/s, per op."""
    by_op: dict[str, list[float]] = {}
    for kernel in profile.rows:
        totals = by_op.setdefault(kernel.op, [0, 0.0, 0])
        totals[0] += 1
        totals[1] += kernel.seconds
        totals[2] += kernel.flops
    total = sum(seconds for _, seconds, _ in by_op.values())
    for op, (count, seconds, flops) in sorted(by_op.items(), key=lambda item: -item[1][1]):
        print(f"{op:<20} {count:4d} kernels {seconds * 1e3:9.2f} ms {100 * seconds / total:5.1f}% "
              f"{flops / seconds / 1e9 if seconds else 0:7.1f} GFLOP/s")


def print_onnxruntime_profile(path: str, x: np.ndarray | dict, threads: int, folder: Path, runs: int = 30) -> None:
    """ONNX Runtime's per-node kernel times of the model at `path` on `x` (an array for its one input, or
    arrays by input name; the median of `runs` runs after 5 warm-ups), slowest first, with each node's
    op and input shapes; its JSON is written in `folder`."""
    from tensorforge.cli.bench import onnxruntime_session

    session = onnxruntime_session(path, threads, profile_prefix=str(folder / "onnxruntime"))
    feed = x if isinstance(x, dict) else {session.get_inputs()[0].name: x}
    for _ in range(5 + runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[str, list[float]] = {}
    about: dict[str, tuple] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"].removesuffix("_kernel_time")
            times.setdefault(name, []).append(event["dur"])
            about[name] = (event["args"].get("op_name"), event["args"].get("input_type_shape"))
    medians = {name: float(np.median(durations[-runs:])) for name, durations in times.items()}
    print(f"\nONNX Runtime ({threads} threads), per node: median of {runs} runs; kernels "
          f"{sum(medians.values()) / 1e3:.2f} ms")
    for name, microseconds in sorted(medians.items(), key=lambda item: -item[1]):
        op, shapes = about[name]
        shown = [next(iter(shape.values())) for shape in shapes or []]
        print(f"{name[:44]:<44} {op:<16} {microseconds:9.1f} us  {shown}")


def profile_onnx(args, path: Path, inputs: np.ndarray | dict, options: dict) -> None:
    """Our profile of the ONNX file at `path` on `inputs` (compiled with `options`), then per op and ONNX
    Runtime's, as `args` asks; ONNX Runtime writes its JSON beside the file."""
    with tf.compile(str(path), inputs, threads=args.threads, disabled=tuple(args.disable), **options) as compiled:
        profile = compiled.profile(inputs)
    print(profile)
    if args.by_op:
        print_by_op(profile)
    if args.onnxruntime:
        print_onnxruntime_profile(str(path), inputs, args.threads, path.parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=("mlp", "cnn", "tiny", "gpt2", *CNNS, *ENCODERS))
    parser.add_argument("--batch", type=int, default=1, help="mlp, cnn, the CNNs and the encoders")
    parser.add_argument("--phase", choices=("prefill", "decode"), default="decode", help="tiny and gpt2")
    parser.add_argument("--int8", action="store_true",
                        help="tiny and gpt2: quantize='int8'; the CNNs: static int8 calibrated on 8 random images; "
                             "the encoders: dynamic int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--disable", nargs="*", default=(), metavar="PASS",
                        help="passes to leave out (the CNNs and encoders)")
    parser.add_argument("--by-op", action="store_true", help="also the time per op (the CNNs and encoders)")
    parser.add_argument("--onnxruntime", action="store_true",
                        help="the CNNs and the fp32 encoders: also ONNX Runtime's per-node profile of the same file")
    args = parser.parse_args()
    print("$ python " + " ".join(sys.argv))
    rng = np.random.default_rng(0)
    if args.model in ("mlp", "cnn"):
        shape = (args.batch, 784) if args.model == "mlp" else (args.batch, 3, 32, 32)
        x = rng.standard_normal(shape).astype(np.float32)
        model = models.mlp() if args.model == "mlp" else models.cifar_cnn()
        with tf.compile(model, x, threads=args.threads) as compiled:
            print(compiled.profile(x))
        return
    if args.model in CNNS:
        with tempfile.TemporaryDirectory() as folder:
            path = export_cnn(args.model, 224, Path(folder))
            int8 = {"quantize": "int8", "calibration": (images(8, 224, 3),)} if args.int8 else {}
            profile_onnx(args, path, images(args.batch, 224, 0), int8)
        return
    if args.model in ENCODERS:
        if args.int8 and args.onnxruntime:
            parser.error("--onnxruntime profiles the fp32 encoders only (bench_onnx.py times ONNX Runtime's int8)")
        with tempfile.TemporaryDirectory() as folder:
            path, vocab, _ = export_encoder(args.model, SEQUENCE, Path(folder))
            int8 = {"quantize": tf.QuantConfig(dynamic=True)} if args.int8 else {}
            profile_onnx(args, path, encoder_inputs(args.batch, SEQUENCE, vocab, 0), int8)
        return
    model = build_model(args.model)
    with tf.compile_generator(model, model.max_seq_len, prompt_len=PROMPT, threads=args.threads,
                              quantize="int8" if args.int8 else None, verbose=True) as generator:
        prompt = prompt_ids(args.model)
        if args.phase == "prefill":  # the first-token prefill generation runs (logits at the last position)
            tokens = np.array([prompt], np.int64)
            if generator.first_model is not None:
                print(generator.first_model.profile(tokens, np.array([len(prompt) - 1], np.int64)))
            else:
                print(generator.prefill_model.profile(tokens))
            return
        generator.next_logits(prompt)  # fills the caches' first 32 rows
        token, position = np.array([[prompt[-1]]], np.int64), np.array([PROMPT], np.int64)
        print(generator.decode_model.profile(token, position, *generator.caches))


if __name__ == "__main__":
    main()
