"""The kv-cache rewrite (generate/kv_cache.py) and tf.compile_generator (generate/compile.py): decode logits
after every prefix equal the reference interpreter's full recompute on the un-rewritten graph, greedy
generation gives the same tokens, one armv8 decode step equals the reference, and graphs that are
not provably causal (no mask, a mask that sees later positions) are refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorforge as tf
from tensorforge import nn
from tensorforge.frontend import functional as F
from tensorforge.frontend.transformer import CAUSAL
from tensorforge.generate import KVCacheError, find_attentions, first_token_graph, quantized_rows, rewrite_for_kv_cache

VOCAB, DIM, MAX_LEN = 13, 8, 12
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def tiny_gpt(layers: int = 2, heads: int = 2, seed: int = 0) -> nn.GPT:
    """A GPT with non-trivial LayerNorm parameters and biases (init has 1s and 0s)."""
    rng = np.random.default_rng(seed)
    model = nn.GPT(VOCAB, DIM, layers, heads, MAX_LEN, rng=rng)
    for name, array in model.state_dict().items():
        if name.endswith(("gamma", "beta", "bias")):
            array[...] = rng.standard_normal(array.shape).astype(np.float32) * np.float32(0.5) \
                + np.float32(name.endswith("gamma"))
    return model


def full_recompute(model, ids) -> np.ndarray:
    """logits[len(ids), V] of the reference interpreter on the graph traced on all of `ids` (no cache)."""
    tokens = np.array([ids], np.int64)
    return tf.interpret(tf.trace(model, tokens), tokens)[0]


def empty_caches(graphs) -> list[np.ndarray]:
    """Zeroed caches in decode's input order: per cache its rows (f32) or its int8 codes and scales."""
    return [np.zeros(t.shape, t.dtype.numpy) for _ in range(2 * len(graphs.attentions)) for t in graphs.cache_types]


def interpreted_steps(graphs, ids) -> tuple[np.ndarray, list[np.ndarray]]:
    """logits[len(ids), V] and the caches: one interpreted decode step per token, its new k and v
    rows written into the caches at its position."""
    caches = empty_caches(graphs)
    logits = []
    for pos, token in enumerate(ids):
        outputs = tf.interpret(graphs.decode, np.array([[token]]), np.array([pos]), *caches)
        logits.append(outputs[0][0, 0])
        for cache, row in zip(caches, outputs[1:], strict=True):
            cache[:, :, pos:pos + 1] = row
    return np.stack(logits), caches


def decode_in_the_interpreter(graphs, ids) -> np.ndarray:
    return interpreted_steps(graphs, ids)[0]


# --- the rewrite, in the reference interpreter ------------------------------------------------------

@settings(max_examples=min(12, settings.default.max_examples), deadline=None)
@given(layers=st.integers(1, 2), heads=st.sampled_from([1, 2, 4]), prompt_len=st.integers(1, 5),
       seed=st.integers(0, 2**16), fuse=st.booleans())
def test_decode_graph_equals_full_recompute_after_every_prefix(layers, heads, prompt_len, seed, fuse):
    model = tiny_gpt(layers, heads, seed)
    graphs = rewrite_for_kv_cache(tf.trace(model, np.zeros((1, prompt_len), np.int64)), MAX_LEN, fuse)
    assert ("cached_attention" in str(graphs.decode)) == fuse
    graphs.decode.verify()
    assert len(graphs.attentions) == layers and graphs.cache_type.shape == (1, heads, MAX_LEN, DIM // heads)
    ids = np.random.default_rng(seed).integers(0, VOCAB, MAX_LEN).tolist()
    np.testing.assert_allclose(decode_in_the_interpreter(graphs, ids), full_recompute(model, ids), **TOLERANCE)


def test_prefill_is_the_traced_graph_with_each_layers_k_and_v():
    model = tiny_gpt()
    graph = tf.trace(model, np.zeros((1, 5), np.int64))
    graphs = rewrite_for_kv_cache(graph, MAX_LEN)
    assert [str(t) for t in (node.type for node in graphs.prefill.outputs)] == \
        ["f32[1,5,13]"] + ["f32[1,2,5,4]"] * 4
    assert len(graph.outputs) == 1  # the traced graph is left as it was
    assert [str(node.type) for node in graphs.decode.outputs] == ["f32[1,1,13]"] + ["f32[1,2,1,4]"] * 4
    text = str(graphs.decode)
    assert "cached_attention(%6, %k_cache.0, %v_cache.0, %9, %12, %pos) {scale=0.5}" in text
    assert "causal_mask" not in text and "softmax" not in text and "cache_write" not in text
    unfused = str(rewrite_for_kv_cache(graph, MAX_LEN, fuse_attention=False).decode)
    assert "cache_write(%k_cache.0, %9, %pos)" in unfused and "position_mask(" in unfused
    assert "cached_attention" not in unfused


# --- compiled: tf.compile_generator -------------------------------------------------------------------

@pytest.fixture(scope="module")
def generator():
    with tf.compile_generator(tiny_gpt(), MAX_LEN, prompt_len=4) as compiled:
        yield compiled


@settings(max_examples=min(10, settings.default.max_examples), deadline=None)
@given(ids=st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=MAX_LEN))
def test_compiled_cache_logits_equal_full_recompute_for_every_prompt_length(generator, ids):
    """Up to prompt_len: one padded prefill; longer: a prefill, then decode steps."""
    np.testing.assert_allclose(generator.logits(ids), full_recompute(tiny_gpt(), ids), **TOLERANCE)


@pytest.mark.parametrize("prompt", [[3], [1, 2, 3, 4], [5, 0, 12, 7, 7, 1]])
def test_greedy_generation_gives_the_tokens_of_full_recompute(generator, prompt):
    new = MAX_LEN - len(prompt)
    expected = list(prompt)
    for _ in range(new):
        expected.append(int(np.argmax(full_recompute(tiny_gpt(), expected)[-1])))
    assert generator.generate(prompt, new) == expected
    assert list(generator.stream(prompt, new)) == expected[len(prompt):]
    stats = generator.stats
    assert stats.prompt_tokens == len(prompt) and stats.decode_steps == new - 1
    assert stats.cache_bytes == 2 * 2 * 2 * MAX_LEN * 4 * 4 and stats.decode_tokens_per_second > 0


def test_sampling_is_reproducible_with_a_seed_and_top_k_1_is_greedy(generator):
    first = generator.generate([1, 2], 8, temperature=1.0, top_k=4, seed=7)
    assert generator.generate([1, 2], 8, temperature=1.0, top_k=4, seed=7) == first
    assert generator.generate([1, 2], 8, temperature=1.0, top_k=1, seed=3) == generator.generate([1, 2], 8)


def test_generation_that_does_not_fit_in_the_cache_is_refused(generator):
    with pytest.raises(ValueError, match="do not fit in max_len=12"):
        generator.generate([1] * 10, 3)
    with pytest.raises(ValueError, match="at least one token"):
        generator.generate([], 3)
    with pytest.raises(tf.ir.InputError, match="outside"):
        generator.generate([VOCAB], 1)
    with pytest.raises(tf.ir.InputError, match=f"holds the id {VOCAB} at"):  # past prompt_len: a decode step's
        generator.generate([1, 2, 3, 4, 5, VOCAB], 1)


def test_one_decode_step_compiled_for_armv8_equals_the_reference():
    model = tiny_gpt(seed=4)
    graphs = rewrite_for_kv_cache(tf.trace(model, np.zeros((1, 3), np.int64)), MAX_LEN)
    ids = [4, 9, 1, 0, 11]
    _, caches = interpreted_steps(graphs, ids[:-1])
    inputs = (np.array([[ids[-1]]]), np.array([len(ids) - 1]), *caches)
    with tf.compile(graphs.decode, target="armv8") as compiled:
        actual = compiled(*inputs)
    expected = tf.interpret(graphs.decode, *inputs)
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_allclose(got, want, **TOLERANCE)
    np.testing.assert_allclose(actual[0][0, 0], full_recompute(model, ids)[-1], **TOLERANCE)


# --- what the rewrite refuses --------------------------------------------------------------------------

class OneBlock(nn.Module):
    """Embedding, one TransformerBlock with the given mask, lm_head: no positions."""

    def __init__(self, mask):
        rng = np.random.default_rng(2)
        self.mask = mask
        self.embedding = nn.Embedding(VOCAB, DIM, rng=rng)
        self.block = nn.TransformerBlock(DIM, 2, rng=rng)
        self.head = nn.Linear(DIM, VOCAB, rng=rng)

    def forward(self, tokens):
        return self.head(self.block(self.embedding(tokens), self.mask))


def trace_one_block(mask, length: int = 4):
    return tf.trace(OneBlock(mask), np.zeros((1, length), np.int64))


def test_bidirectional_attention_is_refused():
    with pytest.raises(KVCacheError, match="no causal mask .* bidirectional attention cannot use a KV cache"):
        rewrite_for_kv_cache(trace_one_block(None), MAX_LEN)


@pytest.mark.parametrize("mask", [np.ones((4, 4)), np.triu(np.ones((4, 4))),
                                  np.tril(np.ones((4, 4)), -1) + np.eye(4)[::-1]])
def test_a_mask_that_is_not_lower_triangular_is_refused(mask):
    with pytest.raises(KVCacheError, match="is not lower-triangular"):
        rewrite_for_kv_cache(trace_one_block(mask), MAX_LEN)


def test_a_lower_triangular_one_zero_mask_is_causal_and_rewritten():
    model = OneBlock(np.tril(np.ones((4, 4))))
    graphs = rewrite_for_kv_cache(tf.trace(model, np.zeros((1, 4), np.int64)), MAX_LEN)
    ids = [3, 1, 4, 1]
    expected = tf.interpret(tf.trace(OneBlock(CAUSAL), np.array([ids])), np.array([ids]))[0]
    np.testing.assert_allclose(decode_in_the_interpreter(graphs, ids), expected, **TOLERANCE)


def test_an_op_that_mixes_positions_is_refused():
    def model(tokens):
        x = OneBlock(CAUSAL)(tokens)
        return F.add(x, F.mean(x, 1, keepdims=True))

    graph = tf.trace(model, np.zeros((1, 4), np.int64))
    assert len(find_attentions(graph)) == 1
    with pytest.raises(KVCacheError, match="reduce_mean.*cannot prove that it keeps positions apart"):
        rewrite_for_kv_cache(graph, MAX_LEN)


def test_a_graph_without_attention_or_with_a_short_position_table_is_refused():
    with pytest.raises(KVCacheError, match="no causal self-attention"):
        rewrite_for_kv_cache(tf.trace(nn.Embedding(VOCAB, DIM), np.zeros((1, 4), np.int64)), MAX_LEN)
    with pytest.raises(KVCacheError, match="has 12 rows, fewer than max_len 20"):
        rewrite_for_kv_cache(tf.trace(tiny_gpt(), np.zeros((1, 4), np.int64)), 20)


class SlicedPositions(nn.Module):
    """Embedding + a table of positions sliced in numpy to [:seq] (a constant of S rows, not a gather of
    rows of a table: the decode could not read the row of a later position) + a block."""

    def __init__(self):
        rng = np.random.default_rng(5)
        self.embedding = nn.Embedding(VOCAB, DIM, rng=rng)
        self.table = rng.standard_normal((MAX_LEN, DIM)).astype(np.float32)
        self.block = nn.TransformerBlock(DIM, 2, rng=rng)

    def forward(self, tokens):
        return self.block(F.add(self.embedding(tokens), self.table[:tokens.shape[1]]), CAUSAL)


def test_a_constant_that_varies_along_the_positions_is_refused():
    with pytest.raises(KVCacheError, match="varies along the sequence axis but is not computed from the tokens"):
        rewrite_for_kv_cache(tf.trace(SlicedPositions(), np.zeros((1, 4), np.int64)), MAX_LEN)


@pytest.mark.parametrize("kv_cache, caches", [
    ("f32", "%k_cache.0: f32[1,2,12,4], %v_cache.0"),
    ("int8", "%k_cache.0: i8[1,2,12,4], %k_cache_scales.0: f32[1,2,12,1], %v_cache.0: i8"),
])
def test_the_decode_graph_prints_and_parses_back(kv_cache, caches):
    graphs = rewrite_for_kv_cache(tf.trace(tiny_gpt(), np.zeros((1, 3), np.int64)), MAX_LEN, kv_cache=kv_cache)
    text = str(graphs.decode)
    assert caches in text and "%pos: i64[1]" in text
    assert str(tf.ir.parse(text, graphs.decode.constants())) == text


def interpreted_generator(graphs, ids) -> np.ndarray:
    """What Generator.logits(ids) computes, in the reference interpreter: the padded prefill of the
    first prompt_len ids, then one decode step per remaining id."""
    head = ids[:graphs.prompt_len]
    outputs = tf.interpret(graphs.prefill, np.array([head + [0] * (graphs.prompt_len - len(head))]))
    caches = empty_caches(graphs)
    for cache, written in zip(caches, outputs[1:], strict=True):
        cache[:, :, :graphs.prompt_len] = written
    logits = list(outputs[0][0, :len(head)])
    for pos, token in enumerate(ids[len(head):], start=len(head)):
        step = tf.interpret(graphs.decode, np.array([[token]]), np.array([pos]), *caches)
        logits.append(step[0][0, 0])
        for cache, row in zip(caches, step[1:], strict=True):
            cache[:, :, pos:pos + 1] = row
    return np.stack(logits)


def test_the_int8_generator_runs_its_int8_graphs_and_stays_near_fp32():
    """quantize="int8": every linear of both graphs becomes dynamic_qlinear; the compiled generator
    equals its int8 graphs in the reference interpreter (integer products exact, f32 elsewhere: the
    f32 tolerance; 2e-7 seen here) and stays within int8 error of the f32 model (0.8% seen here)."""
    ids = [5, 0, 12, 3, 9, 1, 7]  # a prefill of 4 tokens, then 3 decode steps
    with tf.compile_generator(tiny_gpt(), MAX_LEN, prompt_len=4, quantize="int8") as generator:
        graphs = generator.graphs
        for graph in (graphs.prefill, graphs.decode):
            ops = [node.op for node in graph.nodes]
            assert "linear" not in ops and ops.count("dynamic_qlinear") == 2 * 6 + 1
        logits = generator.logits(ids)
        np.testing.assert_allclose(logits, interpreted_generator(graphs, ids), **TOLERANCE)
        exact = full_recompute(tiny_gpt(), ids)
        assert np.abs(logits - exact).max() < 0.05 * np.abs(exact).max()
        report = str(generator.quant_report())
        assert report.count(" int8\n") + report.endswith(" int8") >= 13 and "4.0x smaller" in report


def test_verbose_shows_the_stages_and_quiet_shows_nothing(capsys):
    tf.compile_generator(tiny_gpt(), MAX_LEN, quantize="int8", verbose=True).close()
    err = capsys.readouterr().err
    assert "compile_generator" in err and "5/5" in err  # trace, rewrite, int8, prefill, decode
    tf.compile_generator(tiny_gpt(), MAX_LEN).close()
    assert "compile_generator" not in capsys.readouterr().err


@pytest.mark.parametrize("quantize, error, match", [
    ("int4", ValueError, "quantize must be 'int8' or a tf.QuantConfig"),
    (tf.QuantConfig(), ValueError, "quantizes dynamically"),
])
def test_a_quantization_the_generator_cannot_do_is_refused(quantize, error, match):
    with pytest.raises(error, match=match):
        tf.compile_generator(tiny_gpt(), MAX_LEN, quantize=quantize)


def test_the_generator_on_armv8_gives_the_logits_of_full_recompute_and_updates_its_caches_in_place():
    ids = [5, 0, 12, 3, 9, 1, 7]  # a prefill of 4 tokens, then 3 decode steps; then a padded prefill of 2
    with tf.compile_generator(tiny_gpt(), MAX_LEN, prompt_len=4, target="armv8") as generator:
        caches = [id(cache) for cache in generator.caches]
        np.testing.assert_allclose(generator.logits(ids), full_recompute(tiny_gpt(), ids), **TOLERANCE)
        np.testing.assert_allclose(generator.logits(ids[:2]), full_recompute(tiny_gpt(), ids[:2]), **TOLERANCE)
        assert [id(cache) for cache in generator.caches] == caches


def test_generation_starts_from_the_logits_of_the_last_prompt_position_only(generator):
    """The first-token prefill computes the output layer on one row (logits [1, 1, V]) and gives the
    logits that logits() gives at the prompt's last position, for prompts shorter than, as long as
    and longer than prompt_len."""
    assert generator.first_model is not None and generator.first_model.output_types[0].shape == (1, 1, VOCAB)
    assert generator.first_model.input_names[-1] == "last"
    for ids in ([3], [3, 1, 4, 1], [3, 1, 4, 1, 5, 9]):
        np.testing.assert_allclose(generator.next_logits(ids), full_recompute(tiny_gpt(), ids)[-1], **TOLERANCE)
        np.testing.assert_allclose(generator.next_logits(ids), generator.logits(ids)[-1], rtol=1e-6, atol=1e-6)


def test_first_token_graph_needs_an_output_layer_on_hidden_states():
    graph = tf.trace(tiny_gpt(), np.zeros((1, 4), np.int64))
    first = first_token_graph(graph)
    assert [node.name for node in first.inputs][-1] == "last" and first.outputs[0].shape == (1, 1, VOCAB)
    ids, last = np.array([[5, 2, 7, 1]], np.int64), np.array([2], np.int64)
    np.testing.assert_allclose(tf.interpret(first, ids, last)[0, 0], tf.interpret(graph, ids)[0, 2], rtol=1e-5,
                               atol=1e-6)
    graph.outputs = [graph.call("neg", [graph.outputs[0]])]  # the logits are not a linear layer's any more
    assert first_token_graph(graph) is None


# --- the int8 cache ------------------------------------------------------------------------------------

@settings(max_examples=min(8, settings.default.max_examples), deadline=None)
@given(layers=st.integers(1, 2), heads=st.sampled_from([1, 2, 4]), prompt_len=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_an_int8_cache_decodes_as_its_unfused_graph_and_near_the_f32_cache(layers, heads, prompt_len, seed):
    """kv_cache="int8": each cache is i8 codes [1,H,L,D] and f32 scales [1,H,L,1]; the fused decode
    graph (cached_attention on codes and scales) equals the unfused one (cache_write, dequantize,
    matmul) in the reference interpreter, and stays within int8 error of full recompute (a code is
    within half a step, max|row| / 254, of its value; 2% of the largest logit bounds what was seen)."""
    model = tiny_gpt(layers, heads, seed)
    traced = tf.trace(model, np.zeros((1, prompt_len), np.int64))
    fused, unfused = (rewrite_for_kv_cache(traced, MAX_LEN, fuse, kv_cache="int8") for fuse in (True, False))
    assert [t.dtype for t in fused.cache_types] == [tf.ir.DType.i8, tf.ir.DType.f32] and fused.kv_cache == "int8"
    assert fused.cache_types[1].shape == (1, heads, MAX_LEN, 1)
    ops = [node.op for node in fused.decode.nodes]
    assert ops.count("cached_attention") == layers and "dequantize" not in ops
    assert "dequantize" in [node.op for node in unfused.decode.nodes]
    ids = np.random.default_rng(seed).integers(0, VOCAB, MAX_LEN).tolist()
    logits = decode_in_the_interpreter(fused, ids)
    np.testing.assert_allclose(logits, decode_in_the_interpreter(unfused, ids), **TOLERANCE)
    exact = full_recompute(model, ids)
    assert np.abs(logits - exact).max() < 0.02 * np.abs(exact).max()


def test_int8_cache_rows_are_codes_and_scales_of_the_f32_rows():
    """The rows both graphs return: scale = max|row| / 127, codes = round(row / scale), a zero row 0s."""
    traced = tf.trace(tiny_gpt(), np.zeros((1, 3), np.int64))
    f32, int8 = (rewrite_for_kv_cache(traced, MAX_LEN, kv_cache=cache) for cache in ("f32", "int8"))
    tokens = np.array([[4, 0, 9]])
    rows = tf.interpret(f32.prefill, tokens)[1:]
    quantized = tf.interpret(int8.prefill, tokens)[1:]
    assert len(quantized) == 2 * len(rows)
    for row, codes, scales in zip(rows, quantized[0::2], quantized[1::2], strict=True):
        np.testing.assert_array_equal(scales, np.abs(row).max(axis=-1, keepdims=True) / np.float32(127))
        np.testing.assert_array_equal(codes, np.rint(row / scales).astype(np.int8))
    graph = tf.Graph()  # a row of zeros: scale 0, and codes 0 (0 / 0 is NaN, which quantize makes 0)
    x = graph.add_input("x", tf.ir.TensorType((2, 3), tf.ir.DType.f32))
    graph.outputs = list(quantized_rows(graph, x, "x"))
    rows = np.array([[0, 0, 0], [1, -2, 0.5]], np.float32)
    for codes, scales in (tf.interpret(graph, rows), tf.compile(graph)(rows)):
        np.testing.assert_array_equal(codes, [[0, 0, 0], [64, -127, 32]])
        np.testing.assert_array_equal(scales, [[0], [np.float32(2) / np.float32(127)]])


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_the_int8_cache_generator_equals_its_graphs_and_holds_a_quarter_of_the_bytes(quantize):
    ids = [5, 0, 12, 3, 9, 1, 7]  # a prefill of 4 tokens, then 3 decode steps
    with tf.compile_generator(tiny_gpt(), MAX_LEN, prompt_len=4, quantize=quantize, kv_cache="int8") as generator, \
            tf.compile_generator(tiny_gpt(), MAX_LEN, prompt_len=4, quantize=quantize) as f32_cache:
        heads, head_dim = 2, DIM // 2
        assert generator.cache_bytes == 2 * 2 * heads * MAX_LEN * (head_dim + 4)  # 2 layers, k and v
        assert f32_cache.cache_bytes == 2 * 2 * heads * MAX_LEN * head_dim * 4
        assert [cache.dtype for cache in generator.caches[:2]] == [np.int8, np.float32]
        assert "int8 cache" in repr(generator) and "f32 cache" in repr(f32_cache)
        logits = generator.logits(ids)
        np.testing.assert_allclose(logits, interpreted_generator(generator.graphs, ids), **TOLERANCE)
        reference = f32_cache.logits(ids)
        assert 0 < np.abs(logits - reference).max() < 0.02 * np.abs(reference).max()
        tokens = generator.generate(ids[:3], 5)
        assert tokens == interpreted_greedy(generator.graphs, ids[:3], 5)


def interpreted_greedy(graphs, prompt, count) -> list[int]:
    ids = list(prompt)
    for _ in range(count):
        ids.append(int(np.argmax(interpreted_generator(graphs, ids)[-1])))
    return ids


def test_the_int8_cache_generator_on_armv8_equals_its_graphs():
    ids = [5, 0, 12, 3, 9, 1]
    with tf.compile_generator(tiny_gpt(), MAX_LEN, prompt_len=4, target="armv8", kv_cache="int8") as generator:
        np.testing.assert_allclose(generator.logits(ids), interpreted_generator(generator.graphs, ids), **TOLERANCE)


def test_an_unknown_cache_dtype_is_refused():
    with pytest.raises(ValueError, match=r"kv_cache must be one of \('f32', 'int8'\), got 'f16'"):
        tf.compile_generator(tiny_gpt(), MAX_LEN, kv_cache="f16")
