"""WeightsPool (codegen/memory.py): several graphs' constants in one buffer, equal ones stored once. A
generator's prefill and decode share their weights (each had a buffer of its own: 2 x 0.5 GB at GPT-2 size)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge import nn
from tensorforge.codegen.gemm.packing import pack_b_panels
from tensorforge.codegen.memory import WeightsPool


def test_equal_entries_are_stored_once_and_others_apart():
    pool = WeightsPool(1 << 20)
    a, b = np.arange(100, dtype=np.float32), np.ones((4, 4), np.float32)
    first = pool.place([("a", a), ("b", b)])
    second = pool.place([("a", a.copy()), ("b", b * 2), ("c", a[:10])])
    assert second["a"] == first["a"] and second["b"] != first["b"] and pool.size % 64 == 0
    buffer = pool.buffer()
    for offsets, values in ((first, {"a": a, "b": b}), (second, {"a": a, "b": b * 2, "c": a[:10]})):
        for name, value in values.items():
            stored = buffer[offsets[name]:offsets[name] + value.nbytes].view(value.dtype).reshape(value.shape)
            np.testing.assert_array_equal(stored, value)
    with pytest.raises(ValueError, match="holds"):
        pool.place([("big", np.zeros(1 << 20, np.uint8))])


def test_a_generators_models_share_one_buffer_and_generate_the_same():
    gpt = nn.GPT(300, 64, 2, 4, 64, rng=np.random.default_rng(0))
    with tfg.compile_generator(gpt, 64, prompt_len=8, cache=False) as gen:
        first, decode = gen.first_model.artifact.weights, gen.decode_model.artifact.weights
        assert first.ctypes.data == decode.ctypes.data  # one buffer: first's bytes are decode's prefix
        constants = sum(node.value.nbytes for node in gen.graphs.decode.nodes if node.op == "constant")
        assert decode.nbytes < 1.2 * constants
        tokens = gen.generate([5, 1, 7], 12, temperature=0)
    graph = tfg.trace(gpt, np.zeros((1, 15), np.int64))
    ids = list(tokens[:3])
    for _ in range(12):  # greedy decoding by full recompute in the reference interpreter
        logits = tfg.interpret(graph, np.array([ids + [0] * (15 - len(ids))], np.int64))
        ids.append(int(np.argmax(logits[0, len(ids) - 1])))
    assert tokens == ids


def test_a_graph_that_does_not_fit_gets_a_buffer_of_its_own():
    model = nn.Sequential(nn.Linear(64, 64, rng=np.random.default_rng(0)))
    x = np.ones((2, 64), np.float32)
    pool = WeightsPool(4096)  # smaller than the 16 KiB weight
    with tfg.compile(model, x, cache=False, weights_pool=pool) as cm:
        assert cm.artifact.weights.nbytes >= 64 * 64 * 4
        np.testing.assert_allclose(cm(x), tfg.interpret(tfg.trace(model, x), x), rtol=1e-5, atol=1e-5)


def test_compile_generator_reads_a_modules_weights_in_place():
    """No traced copy of the weights (0.5 GB at GPT-2 size): the graphs read the model's arrays, read-only."""
    gpt = nn.GPT(300, 64, 2, 4, 64, rng=np.random.default_rng(0))
    weights = list(gpt.state_dict().values())
    with tfg.compile_generator(gpt, 64, prompt_len=8, cache=False) as gen:
        constants = [node.value for node in gen.graphs.prefill.nodes if node.op == "constant"]
        in_place = [value for value in constants if any(np.shares_memory(value, array) for array in weights)]
        assert sum(value.nbytes for value in in_place) >= 0.9 * sum(array.nbytes for array in weights)
        assert not any(value.flags.writeable for value in in_place)
    graph = tfg.trace(gpt, np.zeros((1, 8), np.int64))  # trace itself still copies
    assert not any(np.shares_memory(node.value, array) for node in graph.nodes if node.op == "constant"
                   for array in weights)


def test_a_copy_made_from_the_same_array_is_not_made_again():
    pool = WeightsPool(1 << 20)
    weight, made = np.arange(64, dtype=np.float32).reshape(8, 8), []

    def transposed(array):
        def make():
            made.append(array)
            return np.ascontiguousarray(array.T)
        return make

    first = pool.place_copy("w@t", weight, transposed(weight))
    assert pool.place_copy("w@t", weight, transposed(weight)) == first and len(made) == 1
    equal = weight.copy()  # another array: made again, and stored once (same bytes)
    assert pool.place_copy("w@t", equal, transposed(equal)) == first and len(made) == 2
    other = weight + 1
    offset, nbytes = pool.place_copy("w@t", other, transposed(other))
    assert offset != first[0] and nbytes == other.nbytes and len(made) == 3
    stored = pool.buffer()[offset:offset + nbytes].view(np.float32).reshape(8, 8)
    np.testing.assert_array_equal(stored, other.T)


@pytest.mark.parametrize("prompt_len", [8, 40])
def test_a_generators_graphs_share_fused_weights_and_pack_each_weight_once(monkeypatch, prompt_len):
    """The prefill's and decode's fused q, k, v weights are one array (fuse-sibling-linears in a
    sharing_derived_arrays block), and each weight is packed for the first graph only: the decode
    graph finds the copies in the pool. A prompt longer than SIBLING_ROWS fuses too (a generator lifts
    the row limit): else the first graph would keep q, k, v apart and both copies be stored."""
    from tensorforge.codegen.ops import matmul

    packed = []
    monkeypatch.setattr(matmul, "pack_b_panels", lambda array, columns: packed.append(array.shape) or
                        pack_b_panels(array, columns))
    gpt = nn.GPT(300, 64, 2, 4, 64, rng=np.random.default_rng(0))
    with tfg.compile_generator(gpt, 64, prompt_len=prompt_len, cache=False) as gen:
        graphs = [gen.first_model.artifact.graph, gen.decode_model.artifact.graph]
        fused = [{node.name: node.value for node in graph.nodes if node.op == "constant" and "siblings" in node.name
                  and node.value.ndim == 2} for graph in graphs]
        assert len(fused[0]) == 2 and fused[0].keys() == fused[1].keys()
        assert all(fused[0][name] is fused[1][name] for name in fused[0])
        # the first graph packs every linear's weight (2 layers: qkv, proj, fc1, fc2; the output layer)
        assert sorted(packed) == sorted([(64, 192), (64, 64), (64, 256), (256, 64)] * 2 + [(64, 300)])
        assert gen.generate([5, 1, 7], 6, temperature=0)[3:] == _greedy(gpt, [5, 1, 7], 6)


def _greedy(gpt, prompt: list[int], count: int) -> list[int]:
    """Greedy decoding by full recompute in the reference interpreter."""
    graph = tfg.trace(gpt, np.zeros((1, len(prompt) + count), np.int64))
    ids = list(prompt)
    for _ in range(count):
        logits = tfg.interpret(graph, np.array([ids + [0] * (len(prompt) + count - len(ids))], np.int64))
        ids.append(int(np.argmax(logits[0, len(ids) - 1])))
    return ids[len(prompt):]


def test_compiling_a_generator_makes_no_copy_of_its_weights_beside_the_pool():
    """tracemalloc sees every numpy allocation but the pool (an mmap): compiling a generator whose
    weights are mostly its embedding and output layer allocates well under one copy of them at any
    time (the common-subexpression pass's tobytes() of every constant, the packing temporaries, the
    byte comparisons and a fused weight per graph made 2.5 copies)."""
    gpt = nn.GPT(64000, 64, 1, 2, 32, rng=np.random.default_rng(0))
    weights = sum(array.nbytes for array in gpt.state_dict().values())
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        gen = tfg.compile_generator(gpt, 32, prompt_len=8, cache=False, threads=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    with gen:
        assert (peak - start) / weights < 1.2, (peak - start) / weights
        assert len(gen.generate([5, 1, 7], 3, temperature=0)) == 6
