"""The compile cache (tensorforge/deploy/cache.py): tf.compile(..., cache=) and compile_generator.

The oracle for a hit is the model the miss compiled: the same bits. Hits in new processes are run
as child processes, with the passes and LLVM made to fail in them (a hit must not need either).
Every test points the cache at its own tmp directory; the suite's default cache is off (conftest).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge import models, nn
from tensorforge.deploy import cache as tfcache

ROOT = Path(__file__).resolve().parent.parent
X = np.random.default_rng(0).standard_normal((2, 3, 12, 12), dtype=np.float32)

CHILD = """
import json, sys, time
import numpy as np
import tensorforge as tfg
from tensorforge import models
if {forbid_compiling}:
    def refuse(*args, **kwargs):
        raise AssertionError("a cache hit ran the passes or LLVM")
    sys.modules["tensorforge.codegen.build"].optimize = refuse
    sys.modules["tensorforge.api"].run_pipeline = refuse
x = np.random.default_rng(0).standard_normal((2, 3, 12, 12), dtype=np.float32)
start = time.perf_counter()
cm = tfg.compile(models.small_cnn(), x, cache={cache!r})
seconds = time.perf_counter() - start
print(json.dumps({{"status": cm.cache_status, "seconds": seconds, "bits": cm(x).view(np.uint32).ravel().tolist()}}))
"""


def _child(cache, forbid_compiling: bool = False, env: dict | None = None, cwd=None) -> subprocess.Popen:
    script = CHILD.format(cache=str(cache) if not isinstance(cache, bool) else cache, forbid_compiling=forbid_compiling)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment, cwd=cwd)


def _result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _bits(array: np.ndarray) -> list[int]:
    return array.view(np.uint32).ravel().tolist()


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.tfm"))


def test_a_hit_in_a_new_process_skips_passes_and_llvm_and_gives_the_same_bits(tmp_path):
    start = time.perf_counter()
    with tfg.compile(models.small_cnn(), X, cache=tmp_path) as compiled:
        miss_seconds = time.perf_counter() - start
        assert compiled.cache_status == "miss" and len(_entries(tmp_path)) == 1
        hit = _result(_child(tmp_path, forbid_compiling=True))
        assert hit["status"] == "hit"
        assert hit["bits"] == _bits(compiled(X))
        assert hit["seconds"] < miss_seconds, "the hit was slower than compiling"


def test_a_hit_in_this_process_keeps_report_snapshots_and_source_graph(tmp_path):
    cache = tmp_path / "cache"
    with tfg.compile(models.small_cnn(), X, cache=cache) as miss, \
            tfg.compile(models.small_cnn(), X, cache=cache) as hit:
        assert hit.cache_status == "hit" and hit.loaded_from == _entries(cache)[0]
        assert hit.compile_seconds["passes"] == hit.compile_seconds["llvm"] == 0.0
        assert np.array_equal(hit(X), miss(X))
        assert str(hit.source_graph) == str(miss.source_graph)
        assert "loaded from the compile cache" in hit.report() and str(miss.pass_report).splitlines()[1][:20] \
            in hit.report()
        assert [name for name, _ in hit.snapshots] == [name for name, _ in miss.snapshots]  # the passes run again
        assert str(hit.snapshots[-1][1]) == str(miss.snapshots[-1][1]) == str(hit.graph)
        with tfg.load(hit.save(tmp_path / "hit.tfm")) as loaded:  # a hit saves as a whole file
            assert np.array_equal(loaded(X), miss(X))


def test_quantized_compiles_are_keyed_by_their_calibration(tmp_path):
    model = models.mlp((64, 32, 10))
    x = np.random.default_rng(1).standard_normal((4, 64), dtype=np.float32)
    samples = np.random.default_rng(2).standard_normal((32, 64), dtype=np.float32)
    first = tfg.compile(model, x, quantize="int8", calibration=samples, cache=tmp_path)
    again = tfg.compile(model, x, quantize="int8", calibration=samples.copy(), cache=tmp_path)
    other = tfg.compile(model, x, quantize="int8", calibration=samples * 2, cache=tmp_path)
    assert (first.cache_status, again.cache_status, other.cache_status) == ("miss", "hit", "miss")
    assert np.array_equal(again(x), first(x))
    assert str(again.quant_report()) == str(first.quant_report())


def test_generator_hit_gives_the_same_tokens(tmp_path):
    gpt = nn.GPT(64, 32, 2, 2, 32, rng=np.random.default_rng(0))
    miss = tfg.compile_generator(gpt, 32, prompt_len=8, cache=tmp_path)
    hit = tfg.compile_generator(gpt, 32, prompt_len=8, cache=tmp_path)
    assert (miss.cache_status, hit.cache_status) == ("miss", "hit")
    assert hit.generate([3, 1, 4, 1, 5], 10) == miss.generate([3, 1, 4, 1, 5], 10)
    assert np.array_equal(hit.logits([2, 7]), miss.logits([2, 7]))
    other = tfg.compile_generator(gpt, 32, prompt_len=8, kv_cache="int8", cache=tmp_path)
    assert other.cache_status == "miss"
    assert len(list(tmp_path.glob("generator-*.tfm"))) == 2


def test_the_key_covers_the_constants_target_and_options():
    graph = tfg.trace(models.small_cnn(), X)
    host = tfg.Target.parse("host")

    def key(graph=graph, target=host, **options):
        return tfcache.entry_for("/nonexistent-cache", "model", graph, target, {"threads": 1, **options}).key

    assert key() == key()
    assert len({key(), key(target=tfg.Target.parse("armv8")), key(threads=2), key(opt_level=1)}) == 4
    changed = graph.copy()
    weight = next(node for node in changed.nodes if node.op == "constant" and node.value.size > 16)
    value = weight.value.copy()
    value.flat[7] = np.nextafter(value.flat[7], np.float32(np.inf))  # one ulp of one weight
    weight.attrs["value"] = value
    assert key(graph=changed) != key()


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "empty"])
def test_a_damaged_entry_is_removed_and_rebuilt(tmp_path, damage):
    with tfg.compile(models.small_cnn(), X, cache=tmp_path) as first:
        expected = first(X)
    entry = _entries(tmp_path)[0]
    data = bytearray(entry.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "flip a byte":
        data[len(data) * 2 // 3] ^= 1
    else:
        data = b""
    entry.write_bytes(data)
    with pytest.warns(RuntimeWarning, match="damaged entry was removed"):
        rebuilt = tfg.compile(models.small_cnn(), X, cache=tmp_path)
    assert rebuilt.cache_status == "miss" and np.array_equal(rebuilt(X), expected)
    hit = tfg.compile(models.small_cnn(), X, cache=tmp_path)
    assert hit.cache_status == "hit" and np.array_equal(hit(X), expected)


def test_an_entry_part_checked_against_the_traced_constants_is_checked(tmp_path):
    """A hit compares the weights that equal a traced constant with that constant (memcmp) instead of
    hashing them: an altered byte there is still found."""
    tfg.compile(models.small_cnn(), X, cache=tmp_path)
    entry = _entries(tmp_path)[0]
    data = bytearray(entry.read_bytes())
    length = int.from_bytes(data[16:24], "little")
    header = json.loads(data[24:24 + length])
    start = -(-(24 + length + 32) // 64) * 64
    _, known = tfcache.constant_digests(tfg.trace(models.small_cnn(), X))
    at, _, parts = header["sections"][header["model"]["weights"]]
    offset, size, _ = max((part for part in parts if part[2] in known), key=lambda part: part[1])
    data[start + at + offset + size // 2] ^= 0x01
    entry.write_bytes(data)
    with pytest.warns(RuntimeWarning, match="damaged entry"):
        assert tfg.compile(models.small_cnn(), X, cache=tmp_path).cache_status == "miss"


def test_two_processes_compiling_at_once_leave_one_valid_entry(tmp_path):
    children = [_child(tmp_path) for _ in range(2)]
    results = [_result(child) for child in children]
    assert results[0]["bits"] == results[1]["bits"]
    assert [path.name for path in tmp_path.iterdir() if not path.name.endswith(".tfm")] == []  # no temporaries
    hit = tfg.compile(models.small_cnn(), X, cache=tmp_path)
    assert hit.cache_status == "hit" and _bits(hit(X)) == results[0]["bits"]


def test_cache_false_and_the_environment_turn_it_off(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path / "default"))
    monkeypatch.setenv("TENSORFORGE_CACHE", "1")
    assert tfg.compile(models.small_cnn(), X).cache_status == "miss"
    assert len(_entries(tmp_path / "default")) == 1
    assert tfg.compile(models.small_cnn(), X, cache=False).cache_status == "off"
    monkeypatch.setenv("TENSORFORGE_CACHE", "0")
    assert tfg.compile(models.small_cnn(), X).cache_status == "off"
    assert tfg.compile(models.small_cnn(), X, cache=tmp_path / "explicit").cache_status == "miss"  # asked for
    assert len(_entries(tmp_path / "default")) == 1


def test_the_default_directory(monkeypatch, tmp_path):
    for name in ("TENSORFORGE_CACHE", "TENSORFORGE_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tfcache.default_directory() == tmp_path / ".cache" / "tensorforge"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tfcache.default_directory() == tmp_path / "xdg" / "tensorforge"
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path / "mine"))
    assert tfcache.default_directory() == tmp_path / "mine"
    for off in ("0", "false", "OFF", "no"):
        monkeypatch.setenv("TENSORFORGE_CACHE", off)
        assert tfcache.default_directory() is None
    with pytest.raises(TypeError, match="cache must be True, False or a directory"):
        tfg.compile(models.small_cnn(), X, cache=3)


def test_nothing_is_written_outside_the_cache_directory(tmp_path):
    """New processes with an empty HOME and working directory, a miss then a hit: the default cache is
    HOME/.cache/tensorforge, and its one entry is the only file that appears under tmp_path."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {"HOME": str(home), "TENSORFORGE_CACHE": "1", "TENSORFORGE_CACHE_DIR": "", "XDG_CACHE_HOME": ""}
    _result(_child(True, env=env, cwd=work))
    _result(_child(True, env=env, cwd=work))
    files = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert len(files) == 1 and files[0].startswith("home/.cache/tensorforge/model-"), files


def test_an_entry_leaves_out_the_traced_constants_and_is_no_saved_model(tmp_path):
    """The key covers the traced constants' bytes, so a hit has them in memory: the entry leaves them
    out, and tfg.load of an entry says to use cm.save instead."""
    with tfg.compile(models.small_cnn(), X, cache=tmp_path / "cache") as compiled:
        saved = compiled.save(tmp_path / "model.tfm")
    entry = _entries(tmp_path / "cache")[0]
    assert entry.stat().st_size < saved.stat().st_size
    with pytest.raises(tfg.SavedModelError, match="compile-cache entry leaves out the traced graph's constants"):
        tfg.load(entry)
