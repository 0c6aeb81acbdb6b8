"""Loading a saved model against compiling it, and a compile answered by the compile cache.

    python benchmarks/bench_load.py [--models cnn gpt] [--size tiny|gpt2] [--threads 2] [--keep DIR]

Every step is a fresh Python process (tensorforge imported before the clock starts), one after another:

1. compile: build the model (not timed), tf.compile / tf.compile_generator with cache=False (trace,
   passes, LLVM, loading), then cm.save / gen.save; prints both times and the file's size.
2. load: tf.load / tf.load_generator of that file; checks its outputs (the CNN's) or its greedy
   tokens (the generator's: 16 after a 32-token prompt) are the same bits as step 1's.
3. cache, twice: the same compile with cache=<a fresh directory>: the first process compiles and
   stores the entry (miss), the second finds it (hit). The hit's time is the whole compile call:
   tracing, hashing the constants for the key, loading the entry.

cnn is models.cifar_cnn() on one 3x32x32 image; gpt is bench_gpt.py's random-weight GPT (--size
gpt2: GPT-2 small's shape, 12 layers, d 768, vocab 50257, context 1024) with prompt_len 32.
The files go to a temporary directory, removed at the end (or to --keep DIR).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPT, NEW = 32, 16


def _model(name: str, size: str):
    from tensorforge import models

    if name == "cnn":
        return models.cifar_cnn(), np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    from bench_gpt import build_model, prompt_ids

    return build_model(size), prompt_ids(size)


def _compile(name: str, model, x, threads: int, cache):
    import tensorforge as tf

    if name == "cnn":
        return tf.compile(model, x, threads=threads, cache=cache)
    return tf.compile_generator(model, model.max_seq_len, prompt_len=PROMPT, threads=threads, cache=cache)


def _result(name: str, compiled, x) -> list:
    if name == "cnn":
        return compiled(x).view(np.uint32).ravel().tolist()
    return compiled.generate(x, NEW)


def child(step: str, name: str, size: str, threads: int, directory: Path) -> None:
    import tensorforge as tf

    model, x = _model(name, size)
    path = directory / f"{name}.tfm"
    out: dict = {}
    start = time.perf_counter()
    if step == "compile":
        compiled = _compile(name, model, x, threads, cache=False)
        out["compile"] = time.perf_counter() - start
        start = time.perf_counter()
        compiled.save(path)
        out["save"] = time.perf_counter() - start
        out["bytes"] = path.stat().st_size
        (directory / f"{name}.json").write_text(json.dumps(_result(name, compiled, x)))
    elif step == "load":
        compiled = (tf.load if name == "cnn" else tf.load_generator)(path)
        out["load"] = time.perf_counter() - start
        out["same"] = _result(name, compiled, x) == json.loads((directory / f"{name}.json").read_text())
    else:
        compiled = _compile(name, model, x, threads, cache=directory / "cache")
        out["seconds"] = time.perf_counter() - start
        out["status"] = compiled.cache_status
        parts = compiled.compile_seconds
        out["parts"] = {key: round(value, 3) for key, value in parts.items()}
        out["same"] = _result(name, compiled, x) == json.loads((directory / f"{name}.json").read_text())
    print(json.dumps(out))


def run(step: str, name: str, args, directory: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", step, name, "--size", args.size, "--threads",
                           str(args.threads), "--keep", str(directory)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{step} {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=("cnn", "gpt"), default=["cnn", "gpt"])
    parser.add_argument("--size", choices=("tiny", "gpt2"), default="gpt2", help="the GPT's size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", help="write the files here and keep them (default: a temporary directory)")
    parser.add_argument("--child", nargs=2, metavar=("STEP", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.size, args.threads, Path(args.keep))
        return
    directory = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-load-"))
    directory.mkdir(parents=True, exist_ok=True)
    print("$ python " + " ".join(sys.argv))
    try:
        for name in args.models:
            label = name if name == "cnn" else f"gpt {args.size}"
            compiled = run("compile", name, args, directory)
            loaded = run("load", name, args, directory)
            miss = run("cache", name, args, directory)
            hit = run("cache", name, args, directory)
            print(f"\n{label}: file {compiled['bytes'] / 2**20:.1f} MiB")
            print(f"  compile (cache=False)     {compiled['compile']:8.3f} s")
            print(f"  save                      {compiled['save']:8.3f} s")
            print(f"  load (new process)        {loaded['load']:8.3f} s   "
                  f"{loaded['load'] / compiled['compile']:.1%} of compiling; same results: {loaded['same']}")
            print(f"  compile, cache miss       {miss['seconds']:8.3f} s   ({miss['status']}; stores the entry)")
            print(f"  compile, cache hit        {hit['seconds']:8.3f} s   ({hit['status']}; new process; same "
                  f"results: {hit['same']}) {hit['parts']}")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
