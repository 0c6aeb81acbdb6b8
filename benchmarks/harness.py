"""Interleaved timing of several engines on one workload, robust to a shared, noisy machine.

Each round runs every engine once, in a fresh random order, after a short sleep (spinning thread
pools of the previous engine would otherwise steal a core). A sample is the mean of a block of
calls long enough to be timed well; the result is the median sample per engine.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from tqdm import tqdm

from tensorforge.cli.bench import block_size, interleaved, onnxruntime_session, paired_ratio  # noqa: F401 - shared

# Seconds of sleep before each sample, so the previous engine's spinning threads go idle. OpenBLAS's
# workers spin for about 2^28 cycles (~0.1 s) after a call: multi-threaded comparisons need more.
SLEEP_BEFORE_SAMPLE = 0.05
SLEEP_AFTER_THREAD_POOLS = 0.25


def measure(engines: dict[str, Callable[[], object]], rounds: int = 15, verbose: bool = True,
            desc: str = "timing", sleep: float = SLEEP_BEFORE_SAMPLE) -> dict[str, float]:
    """Median seconds per call of each engine, sampled interleaved over `rounds` rounds."""
    samples = measure_samples(engines, rounds, verbose, desc, sleep)
    return {name: statistics.median(values) for name, values in samples.items()}


def measure_samples(engines: dict[str, Callable[[], object]], rounds: int = 15, verbose: bool = True,
                    desc: str = "timing", sleep: float = SLEEP_BEFORE_SAMPLE) -> dict[str, list[float]]:
    """Seconds per call of each engine, one sample per round, interleaved in a random order
    (tensorforge/cli/bench.py's `interleaved`, the one implementation)."""
    return interleaved(engines, rounds, verbose, sleep=sleep, desc=desc)


def commit_and_machine(root) -> tuple[str, str]:
    """The checkout's commit (marked when it has uncommitted changes) and the machine, for a results header."""
    import os
    import platform
    import subprocess

    from tensorforge.codegen.target import Target

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += " (uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return commit, f"{Target.parse('host').cpu} ({platform.machine()}), {cpus} cores"


def write_results(columns: list[str], table: list[list[str]], lines: list[str], notes: list[str], out) -> None:
    """Print the results as a markdown table; with `out` (a Path), also write the header lines (the
    command first, indented), the notes and the table there."""
    markdown = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    markdown += ["| " + " | ".join(values) + " |" for values in table]
    print("\n" + "\n".join(markdown))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        text = [f"    {lines[0]}", *lines[1:], "\n".join(f"- {note}" for note in notes), "\n".join(markdown)]
        out.write_text("\n\n".join(text) + "\n")
        print(f"\nwritten to {out}")


def format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def bar_charts(path, panels: list[dict]) -> None:
    """One horizontal bar chart per panel, side by side, saved to `path` (nothing without matplotlib).

    A panel: title, names, values, xlabel, and optionally colors and a vertical reference line at `mark`.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no chart)")
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        ax.barh(panel["names"], panel["values"], color=panel.get("colors", "#4c72b0"))
        if "mark" in panel:
            ax.axvline(panel["mark"], color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(panel["xlabel"])
        ax.set_title(panel["title"], fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"chart: {path}")


# --- engines in processes of their own -------------------------------------------------------------
#
# Two runtimes in one process disturb each other: ours and PyTorch's both run OpenMP teams, and in
# one process some samples of either took 10-20x their usual time (a team waiting for a thread of
# the other runtime to give up a core). A user runs one of them; so does each engine here, in its
# own process, still sampled in the same interleaved rounds.

def _engine_worker(connection, factory, arguments, min_seconds: float = 0.02) -> None:
    """In the child: build the engine, size its block(s), then time one block per request ("sample",
    or ("sample", key) for one of several callables the factory returned in a dict)."""
    try:
        fn = factory(*arguments)
        if fn is None:
            raise EngineUnavailable(f"{factory.__name__}{arguments}")
        several = isinstance(fn, dict)
        functions = fn if several else {None: fn}
        counts = {key: block_size(function, min_seconds) for key, function in functions.items()}
        connection.send(("ready", counts if several else counts[None]))
        while True:
            request = connection.recv()
            if request != "sample" and not (isinstance(request, tuple) and request[0] == "sample"):
                break
            key = request[1] if isinstance(request, tuple) else None
            function, count = functions[key], counts[key]
            start = time.perf_counter()
            for _ in range(count):
                function()
            connection.send(("sample", (time.perf_counter() - start) / count))
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        connection.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        connection.close()


def measure_isolated(factories: dict[str, tuple[Callable, tuple]], rounds: int = 15, verbose: bool = True,
                     desc: str = "timing", sleep: float = SLEEP_AFTER_THREAD_POOLS,
                     min_seconds: float = 0.02) -> dict[str, list[float]]:
    """Like measure_samples, each engine built by `factory(*arguments)` in a spawned process of its own.

    A factory returns the no-argument callable to time (None: the engine is not available, dropped),
    or a dict of them, {key: callable}, timed as engines "name|key" sharing the process (phases of
    one engine: a prefill and a decode over the same weights); it must be a module-level function,
    and it checks its engine's results itself. A sample is a
    block of calls of at least `min_seconds` (longer blocks amortize the first call after the sleep,
    slower as the engine's threads and caches wake up).
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    workers = {}
    timed: dict[str, tuple[str, object]] = {}  # what is timed: (its worker, the request that times it)
    try:
        for name, (factory, arguments) in factories.items():  # one at a time: builds peak in memory
            parent, child = context.Pipe()
            process = context.Process(target=_engine_worker, args=(child, factory, arguments, min_seconds),
                                      daemon=True)
            process.start()
            child.close()
            workers[name] = (process, parent)
            kind, value = _receive(name, process, parent)
            if kind == "error":
                if value.startswith("EngineUnavailable"):
                    del workers[name]
                    continue
                raise RuntimeError(f"engine {name!r} failed to start: {value}")
            if isinstance(value, dict):
                timed.update({f"{name}|{key}": (name, ("sample", key)) for key in value})
            else:
                timed[name] = (name, "sample")
        samples: dict[str, list[float]] = {name: [] for name in timed}
        order = list(timed)
        for _ in tqdm(range(rounds), desc=desc, disable=not verbose, leave=False):
            random.shuffle(order)
            for name in order:
                time.sleep(sleep)
                worker, request = timed[name]
                connection = workers[worker][1]
                connection.send(request)
                kind, value = _receive(name, *workers[worker])
                if kind == "error":
                    raise RuntimeError(f"engine {name!r} failed: {value}")
                samples[name].append(value)
        return samples
    finally:
        for process, connection in workers.values():
            try:
                connection.send("stop")
            except (BrokenPipeError, OSError):
                pass
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def _receive(name: str, process, connection) -> tuple[str, object]:
    """The next message of an engine's process; a RuntimeError naming the engine if the process died
    (the kernel's out-of-memory killer, for one: every engine holds its model at once)."""
    try:
        return connection.recv()
    except EOFError:
        process.join(timeout=10)
        raise RuntimeError(f"engine {name!r}: its process ended (exit code {process.exitcode}) without an answer; "
                           f"if it was killed (-9: out of memory?), time fewer engines at once (--engines)") from None


class EngineUnavailable(Exception):
    """Raised by a factory whose engine is not installed here (the engine is left out)."""
