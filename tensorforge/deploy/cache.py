"""The compile cache: tf.compile and tf.compile_generator load what an earlier compile of the same
graph built, in this process or any other.

    cm = tfg.compile(model, x)                   # first time: passes + LLVM, then stored in the cache
    cm = tfg.compile(model, x)                   # again, in any process: loaded; cm.cache_status == "hit"
    tfg.compile(model, x, cache=False)           # not looked up, not stored (or TENSORFORGE_CACHE=0)
    tfg.compile(model, x, cache="/tmp/tfcache")  # another directory than the default
    gen = tfg.compile_generator(gpt, 1024)       # the whole generator is one entry

Where: `cache=<directory>`, else $TENSORFORGE_CACHE_DIR, else $XDG_CACHE_HOME/tensorforge, else
~/.cache/tensorforge. TENSORFORGE_CACHE=0 (or false, no, off) turns the default cache off; an
explicit `cache=<directory>` still uses that directory. Nothing is written anywhere else.

An entry is a saved-model file (deploy/saved.py) named `<kind>-<key>.tfm`, but for the traced graph's
constants, which every hit has in memory (the key covers their bytes): it loads only through the
cache. The key is the sha256 of
the graph as traced (its text, every constant's name and digest: xxh3_128, as the saved-model
file's checksums, container.py), the target (triple, cpu,
features, vector width), every option that changes the code (opt level, LLVM level, threads,
disabled passes, pass config, pack, share_memory; prune and quantize configs and the calibration
samples' bytes; for a generator max_len, prompt_len, kv_cache), the tensorforge, llvmlite, LLVM,
numpy and Python versions and a digest of tensorforge's own source files (an edited compiler never
reuses old code). Keying on the traced graph lets a hit skip everything after tracing: pruning,
quantization (and its calibration), the KV-cache rewrite, the passes and LLVM. What remains is
tracing, hashing the constants for the key (in threads) and loading the entry, whose constants
equal to the traced graph's are taken from memory rather than read.

A hit's model has `cache_status == "hit"` and `loaded_from` = the entry; `cm.report()` is the
stored pass report, marked as loaded; `cm.snapshots` / `cm.save_pictures()` run the passes again
(no LLVM) when asked. A damaged entry (truncated, altered: a checksum differs) is never loaded:
it is removed with a warning and the model is compiled and stored again. Entries are written to a
temporary file in the cache directory and renamed into place, so two processes compiling the same
model at once each write a whole file and the last rename wins; a reader never sees a partial
entry. The cache is not pruned: delete the directory (or `clear_cache()`) to reclaim the space.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..ir import Graph
from ..ir.printer import print_graph
from .container import FORMAT_VERSION, ContainerWriter, SavedModelError, digest, hash_pool
from .records import json_meta, target_record
from .saved import versions

CACHE_VERSION = 1  # of the entries' records; bumped when what an entry holds changes meaning
STALE_TEMPORARY_SECONDS = 3600  # a temporary file this old was left by a process that died while writing
OFF = ("0", "false", "no", "off")


def default_directory() -> Path | None:
    """The default cache directory, or None when TENSORFORGE_CACHE turns the cache off."""
    if os.environ.get("TENSORFORGE_CACHE", "1").strip().lower() in OFF:
        return None
    if os.environ.get("TENSORFORGE_CACHE_DIR"):
        return Path(os.environ["TENSORFORGE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tensorforge"


def cache_directory(cache) -> Path | None:
    """The directory `cache` (compile's argument: True, False or a directory) asks for; None: off."""
    if cache is True:
        return default_directory()
    if cache is False or cache is None:
        return None
    if isinstance(cache, (str, os.PathLike)):
        return Path(cache).expanduser()
    raise TypeError(f"cache must be True, False or a directory, got {cache!r}")


def clear_cache(cache=True) -> int:
    """Remove every entry (and leftover temporary file) of the cache directory; how many files went."""
    directory = cache_directory(cache)
    removed = 0
    if directory is not None and directory.is_dir():
        for path in directory.iterdir():
            if path.suffix in (".tfm", ".tmp") and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


@functools.cache
def source_digest() -> str:
    """sha256 over tensorforge's own source files (their paths and bytes): any edit changes every key."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".c") and p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def constant_digests(graph: Graph) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Each constant node's digest (container.digest, by node name), hashed in threads; and the arrays by
    digest, as flat uint8 views (what a loaded entry may take from memory instead of reading, and a writer
    need not hash or store)."""
    constants = [node for node in graph.nodes if node.op == "constant"]
    arrays = {id(node.value): np.ascontiguousarray(node.value) for node in constants}
    with hash_pool() as pool:
        hashed = dict(zip(arrays, pool.map(digest, arrays.values())))
    by_name = {node.name: hashed[id(node.value)] for node in constants}
    known = {hashed[key]: np.ascontiguousarray(array).reshape(-1).view(np.uint8) for key, array in arrays.items()}
    return by_name, known


def array_digest(value) -> list:
    """dtype, shape and digest of an array-like (calibration samples), or of each in a tuple or list."""
    if isinstance(value, (tuple, list)):
        return [array_digest(item) for item in value]
    array = np.ascontiguousarray(value)
    return [array.dtype.str, list(array.shape), digest(array)]


def config_record(config) -> dict | None:
    """A PruneConfig or QuantConfig as JSON for a key (`verbose` changes no code)."""
    if config is None:
        return None
    record = dataclasses.asdict(config)
    record.pop("verbose", None)
    return {"type": type(config).__name__, **record}


class CacheEntry:
    """One key's entry in one directory: look it up (`load`), or store what was compiled (`store`).
    `seconds` holds the time spent on the key (hashing the constants), on `load` and on `store`."""

    def __init__(self, directory: Path, kind: str, key: str, graph: Graph, digests: dict[str, str],
                 known: dict[str, np.ndarray], key_seconds: float):
        self.directory, self.kind, self.key, self.known = directory, kind, key, known
        self._constants = [(node.value, digests[node.name]) for node in graph.nodes if node.op == "constant"]
        self.path = directory / f"{kind}-{key}.tfm"
        self.seconds = {"key": key_seconds, "load": 0.0, "store": 0.0}

    def load(self, loader: Callable[..., object]):
        """What `loader(path, known=, cache_key=)` makes of the entry (it checks the file's key), or None
        when there is none; a damaged entry is removed with a warning and None returned, so the caller
        compiles again."""
        start = time.perf_counter()
        try:
            if not self.path.is_file():
                return None
            return loader(self.path, known=self.known, cache_key=self.key)
        except SavedModelError as error:
            warnings.warn(f"tensorforge compile cache: a damaged entry was removed and will be rebuilt: {error}",
                          RuntimeWarning, stacklevel=4)
            self.path.unlink(missing_ok=True)
            return None
        except OSError as error:  # unreadable: compile as if there were no entry
            warnings.warn(f"tensorforge compile cache: cannot read {self.path}: {error}", RuntimeWarning, stacklevel=4)
            return None
        finally:
            self.seconds["load"] += time.perf_counter() - start

    def store(self, saver: Callable[..., object]) -> None:
        """`saver(path, private=True, writer=, cache_key=key)` writes the entry through a temporary file in
        the directory, renamed into place (the writer knows the traced constants' digests already). A
        directory that cannot be written draws a warning, not an error."""
        start = time.perf_counter()
        writer = ContainerWriter(external=self.known)  # the traced constants: every hit has them
        for array, name in self._constants:
            writer.remember(array, name)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temporaries()
            saver(self.path, private=True, writer=writer, cache_key=self.key)
        except OSError as error:
            warnings.warn(f"tensorforge compile cache: cannot write {self.path}: {error}", RuntimeWarning,
                          stacklevel=4)
        finally:
            self.seconds["store"] += time.perf_counter() - start

    def _remove_stale_temporaries(self) -> None:
        now = time.time()
        for path in self.directory.glob(f".{self.kind}-*.tmp"):
            try:
                if now - path.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                    path.unlink()
            except OSError:
                pass  # another process renamed or removed it


def entry_for(cache, kind: str, graph: Graph, target, options: dict) -> CacheEntry | None:
    """The cache entry of compiling `graph` (as traced) for `target` with `options`; None when the cache
    is off. `options` must hold everything else that changes the code (JSON values)."""
    directory = cache_directory(cache)
    if directory is None:
        return None
    start = time.perf_counter()
    digests, known = constant_digests(graph)
    material = {
        "cache": CACHE_VERSION, "format": FORMAT_VERSION, "kind": kind, "versions": versions(),
        "source": source_digest(), "target": target_record(target), "options": options,
        "graph": print_graph(graph), "constants": digests,
        "meta": {node.name: json_meta(node.meta) for node in graph.nodes if json_meta(node.meta)},
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=repr)
    key = hashlib.sha256(text.encode()).hexdigest()[:40]
    return CacheEntry(directory, kind, key, graph, digests, known, time.perf_counter() - start)
