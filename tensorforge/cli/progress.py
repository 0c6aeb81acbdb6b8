"""Progress for the command line's long steps, on stderr (off with --quiet).

    with step("compiling for armv8", verbose):     # "compiling for armv8: 00:03" ticking while it runs
        cm = tfg.compile(...)                       # (not a terminal: one line "compiling for armv8 ...")
"""

from __future__ import annotations

import contextlib
import sys
import threading


@contextlib.contextmanager
def step(desc: str, verbose: bool):
    """A line with the elapsed time while a step with no progress of its own runs (nothing if not verbose)."""
    if not verbose:
        yield
        return
    if not sys.stderr.isatty():  # a log, not a terminal: one line, no redrawing
        print(f"{desc} ...", file=sys.stderr, flush=True)
        yield
        return
    from tqdm import tqdm

    bar = tqdm(desc=desc, bar_format="{desc}: {elapsed}", file=sys.stderr, leave=True)
    stop = threading.Event()

    def tick():
        while not stop.wait(0.5):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()
