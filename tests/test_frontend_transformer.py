"""tensorforge.nn's transformer modules (frontend/transformer.py): each traces to what it computes
eagerly, TinyTorch's names, save/load, a tiny GPT compiled equal to the interpreter (host, armv8),
really causal attention (not TinyTorch's near-uniform one), a numpy-only GPT forward written here
from the formulas, and clear errors for bad token ids and shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorforge as tf
from tensorforge import ir, nn
from tensorforge.ir import InputError

VOCAB, DIM, LAYERS, HEADS, SEQ = 17, 16, 2, 2, 8


def randn(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def tiny_gpt(seed: int = 0) -> nn.GPT:
    """The tiny GPT of these tests, with non-trivial LayerNorm parameters and biases (init has 1s and 0s)."""
    rng = np.random.default_rng(seed)
    model = nn.GPT(VOCAB, DIM, LAYERS, HEADS, SEQ, rng=rng)
    for name, array in model.state_dict().items():
        if name.endswith(("gamma", "beta", "bias")):
            array[...] = randn(rng, *array.shape) * np.float32(0.5) + np.float32(name.endswith("gamma"))
    return model


def tokens(seed: int = 1, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, SEQ))


@pytest.fixture(scope="module")
def compiled_tiny():
    """tiny_gpt() compiled for the host on tokens() (opt level 2), shared by the tests of this file."""
    with tf.compile(tiny_gpt(), tokens()) as compiled:
        yield compiled


# --- modules ------------------------------------------------------------------------------------

RNG = np.random.default_rng(3)
MODULES = [  # (make the module, example input, the ops its graph holds)
    (lambda: nn.Embedding(11, 5, rng=RNG), np.array([[1, 10, 0], [3, 3, 2]]), ["gather"]),
    (lambda: nn.PositionalEncoding(6, 5, rng=RNG), randn(RNG, 2, 4, 5), ["gather", "add"]),
    (lambda: nn.LayerNorm(5), randn(RNG, 2, 3, 5), ["layer_norm"]),
    (lambda: nn.MLP(6, rng=RNG), randn(RNG, 2, 3, 6), ["linear", "gelu", "linear"]),
    (lambda: nn.MultiHeadAttention(6, 3, rng=RNG), randn(RNG, 2, 4, 6),
     ["linear", "reshape", "transpose"] * 3 + ["matmul", "mul", "softmax", "matmul", "transpose", "reshape", "linear"]),
]


@pytest.mark.parametrize("make, x, ops", MODULES, ids=[m[2][0] + str(i) for i, m in enumerate(MODULES)])
def test_each_module_traces_to_what_it_computes(make, x, ops):
    model = make()
    graph = tf.trace(model, x)
    eager = model(x)
    assert eager.dtype == np.float32
    np.testing.assert_array_equal(ir.interpret(graph, x), eager)
    assert [node.op for node in graph.op_nodes()] == ops


def test_attention_graph_reads_as_causal_attention():
    """q @ k^T (transpose_b) -> scale -> causal_mask -> softmax -> @ v: what a KV-cache rewrite looks for."""
    graph = tf.trace(lambda x: nn.MultiHeadAttention(8, 2, rng=RNG)(x, nn.CAUSAL), randn(RNG, 1, 5, 8))
    softmax = next(node for node in graph.nodes if node.op == "softmax")
    mask = softmax.inputs[0]
    scale = mask.inputs[0]
    scores = scale.inputs[0]
    assert (mask.op, scale.op, scores.op) == ("causal_mask", "mul", "matmul")
    assert scores.attrs["transpose_b"] and float(scale.inputs[1].value) == pytest.approx(1 / math.sqrt(4))
    (weighted,) = softmax.users
    assert weighted.op == "matmul" and weighted.inputs[0] is softmax
    q, k, v = scores.inputs[0], scores.inputs[1], weighted.inputs[1]
    assert all(node.op == "transpose" and node.inputs[0].inputs[0].op == "linear" for node in (q, k, v))


def test_gpt_state_dict_follows_tinytorch_names():
    names = list(tiny_gpt().state_dict())
    block = [f"blocks.0.attention.{p}_proj.{w}" for p in "qkv" for w in ("weight", "bias")]
    block += ["blocks.0.attention.out_proj.weight", "blocks.0.attention.out_proj.bias", "blocks.0.ln1.gamma",
              "blocks.0.ln1.beta", "blocks.0.ln2.gamma", "blocks.0.ln2.beta", "blocks.0.mlp.linear1.weight",
              "blocks.0.mlp.linear1.bias", "blocks.0.mlp.linear2.weight", "blocks.0.mlp.linear2.bias"]
    second = [name.replace("blocks.0", "blocks.1") for name in block]
    expected = ["token_embedding.weight", "position_embedding.weight", *block, *second, "ln_f.gamma", "ln_f.beta",
                "lm_head.weight"]
    assert names == expected
    shapes = {name: array.shape for name, array in tiny_gpt().state_dict().items()}
    assert shapes["blocks.1.mlp.linear1.weight"] == (DIM, 4 * DIM) and shapes["lm_head.weight"] == (DIM, VOCAB)
    assert shapes["position_embedding.weight"] == (SEQ, DIM)


def test_init_is_deterministic_and_save_load_round_trips(tmp_path):
    a, b = nn.GPT(VOCAB, DIM, LAYERS, HEADS, SEQ, rng=np.random.default_rng(7)), tiny_gpt(seed=8)
    same = nn.GPT(VOCAB, DIM, LAYERS, HEADS, SEQ, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a(tokens()), same(tokens()))
    path = tmp_path / "gpt.npz"
    a.save(path)
    with np.load(path, allow_pickle=False) as archive:
        assert all(archive[name].dtype == np.float32 for name in archive.files)
    b.load(path)
    np.testing.assert_array_equal(b(tokens()), a(tokens()))
    with pytest.raises(nn.StateDictError, match="missing"):
        nn.GPT(VOCAB, DIM, LAYERS + 1, HEADS, SEQ).load(path)


# --- compiled -----------------------------------------------------------------------------------

def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_tiny_gpt_compiled_equals_the_interpreter_on_the_host(compiled_tiny):
    model, x = tiny_gpt(), tokens()
    expected = ir.interpret(tf.trace(model, x), x)
    assert expected.shape == (2, SEQ, VOCAB)
    assert_close(compiled_tiny(x), expected)
    assert_close(compiled_tiny(tokens(seed=9)), model(tokens(seed=9)))
    with tf.compile(model, x, opt_level=0) as unoptimized:
        assert_close(unoptimized(x), expected)


def test_tiny_gpt_compiled_equals_the_interpreter_on_armv8():
    model, x = tiny_gpt(seed=2), tokens(seed=4)
    with tf.compile(model, x, target="armv8") as compiled:
        assert_close(compiled(x), ir.interpret(tf.trace(model, x), x))


def test_tf_check_passes_stage_by_stage():
    tf.check(tiny_gpt(seed=5), tokens(seed=6, batch=1))


@st.composite
def attention_cases(draw):
    heads, head_dim = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    batch, seq = draw(st.integers(1, 2)), draw(st.integers(1, 7))
    return heads, head_dim, draw(st.integers(0, 2**16)), (batch, seq, heads * head_dim)


@settings(max_examples=min(8, settings.default.max_examples))
@given(attention_cases(), st.sampled_from([None, nn.CAUSAL]))
def test_compiled_attention_equals_the_interpreter_over_shapes(case, mask):
    heads, head_dim, seed, shape = case
    rng = np.random.default_rng(seed)
    attention = nn.MultiHeadAttention(heads * head_dim, heads, rng=rng)
    x = randn(rng, *shape)
    with tf.compile(lambda value: attention(value, mask), x, threads=1) as compiled:
        assert_close(compiled(x), attention(x, mask))


# --- causal -------------------------------------------------------------------------------------

def test_a_later_token_does_not_change_earlier_logits(compiled_tiny):
    model, x = tiny_gpt(), tokens()
    changed = x.copy()
    changed[:, 5] = (changed[:, 5] + 3) % VOCAB
    for run in (model, compiled_tiny):
        before, after = run(x), run(changed)
        np.testing.assert_array_equal(before[:, :5], after[:, :5])
        assert np.abs(before[:, 5:] - after[:, 5:]).max() > 1e-3  # and it does change the later ones


def test_attention_weights_follow_the_scores_not_tinytorchs_uniform_average():
    """TinyTorch's GPT adds its -inf mask where 1/0 is expected, so every allowed score gets -1e9 and
    the weights come out uniform over the past; here they are the softmax of the true scores."""
    model, x = tiny_gpt(), tokens(batch=1)
    graph = tf.trace(model, x)
    values = ir.run_graph(graph, [x])
    softmax = next(node for node in graph.nodes if node.op == "softmax")
    weights, scores = values[softmax], values[softmax.inputs[0].inputs[0]]
    lower = np.tril(np.ones((SEQ, SEQ), bool))
    np.testing.assert_array_equal(weights[..., ~lower], 0)
    true = np.where(lower, scores.astype(np.float64), -np.inf)
    true = np.exp(true - true.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(weights, true / true.sum(axis=-1, keepdims=True), rtol=1e-5, atol=1e-7)
    uniform = lower / lower.sum(axis=-1, keepdims=True)
    assert np.abs(weights - uniform).max() > 0.05


# --- an independent forward, in numpy from the formulas ------------------------------------------

def numpy_gpt(state: dict[str, np.ndarray], ids: np.ndarray, layers: int, heads: int) -> np.ndarray:
    """GPT's forward in float64 written out here: no tensorforge op reference is used."""
    p = {name: value.astype(np.float64) for name, value in state.items()}

    def norm(x, prefix):
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * p[prefix + ".gamma"] + p[prefix + ".beta"]

    def dense(x, prefix, bias=True):
        return x @ p[prefix + ".weight"] + (p[prefix + ".bias"] if bias else 0)

    batch, seq = ids.shape
    x = p["token_embedding.weight"][ids] + p["position_embedding.weight"][np.arange(seq)]
    for layer in range(layers):
        prefix = f"blocks.{layer}"
        h = norm(x, prefix + ".ln1")
        q, k, v = (dense(h, f"{prefix}.attention.{name}_proj") for name in "qkv")
        out = np.zeros_like(x)
        width = x.shape[-1] // heads
        for b in range(batch):
            for head in range(heads):
                cols = slice(head * width, (head + 1) * width)
                for i in range(seq):
                    scores = k[b, : i + 1, cols] @ q[b, i, cols] / math.sqrt(width)  # keys 0..i only
                    weights = np.exp(scores - scores.max())
                    out[b, i, cols] = (weights / weights.sum()) @ v[b, : i + 1, cols]
        x = x + dense(out, prefix + ".attention.out_proj")
        hidden = dense(norm(x, prefix + ".ln2"), prefix + ".mlp.linear1")
        hidden = 0.5 * hidden * (1 + np.tanh(math.sqrt(2 / math.pi) * (hidden + 0.044715 * hidden**3)))
        x = x + dense(hidden, prefix + ".mlp.linear2")
    return dense(norm(x, "ln_f"), "lm_head", bias=False)


def test_numpy_only_forward_agrees_with_the_interpreter():
    model, x = tiny_gpt(), tokens()
    expected = numpy_gpt(model.state_dict(), x, LAYERS, HEADS)
    np.testing.assert_allclose(ir.interpret(tf.trace(model, x), x), expected, rtol=1e-4, atol=1e-5)


# --- errors -------------------------------------------------------------------------------------

def test_bad_token_ids_are_clear_errors_eager_interpreted_and_compiled(compiled_tiny):
    model, x = tiny_gpt(), tokens()
    bad = x.copy()
    bad[1, 3] = VOCAB
    with pytest.raises(IndexError, match=r"Embedding: token id 17 is outside \[0, 17\)"):
        model(bad)
    message = r"input 'tokens' holds the id 17 at \[1, 3\], outside \[0, 17\)"
    with pytest.raises(InputError, match=message):
        ir.interpret(tf.trace(model, x), bad)
    with pytest.raises(InputError, match=message):
        compiled_tiny(bad)
    with pytest.raises(InputError, match="holds the id -1"):
        compiled_tiny(np.where(bad == VOCAB, -1, bad))


def test_float_token_ids_are_truncated_as_tinytorch_does_and_still_checked():
    model, x = tiny_gpt(), tokens()
    floats = x.astype(np.float32) + np.float32(0.25)
    with tf.compile(model, floats) as compiled:
        assert_close(compiled(floats), model(x))
        floats[0, 0] = VOCAB
        with pytest.raises(InputError, match="holds the id 17.0 at"):
            compiled(floats)


@pytest.mark.parametrize("make, call, error, message", [
    (lambda: tiny_gpt(), lambda m: m(np.zeros(SEQ, np.int64)), ValueError, r"tokens\[batch, seq\]"),
    (lambda: tiny_gpt(), lambda m: m(np.zeros((1, SEQ + 1), np.int64)), ValueError, "max_seq_len=8"),
    (lambda: tiny_gpt(), lambda m: tf.trace(m, np.zeros((1, SEQ + 1), np.int64)), ValueError, "max_seq_len=8"),
    (lambda: nn.MultiHeadAttention(10, 3), None, ValueError, "multiple of num_heads"),
    (lambda: nn.MultiHeadAttention(4, 2), lambda m: m(np.zeros((2, 4), np.float32)), ValueError, r"\[batch, seq, 4\]"),
    (lambda: nn.MultiHeadAttention(4, 2), lambda m: m(np.zeros((1, 3, 4), np.float32), "future"), ValueError,
     "mask must be"),
    (lambda: nn.MultiHeadAttention(4, 2), lambda m: m(np.zeros((1, 3, 4), np.float32), np.ones((2, 2))),
     ValueError, r"mask must be \[3, 3\]"),
    (lambda: nn.LayerNorm((2, 3)), None, ValueError, "last axis only"),
    (lambda: nn.PositionalEncoding(4, 3), lambda m: m(np.zeros((1, 5, 3), np.float32)), ValueError,
     "exceeds max_seq_len 4"),
])
def test_bad_shapes_are_clear_errors(make, call, error, message):
    with pytest.raises(error, match=message):
        call(make())


def test_a_tinytorch_style_1_0_mask_blocks_like_causal():
    attention, x = nn.MultiHeadAttention(6, 2, rng=np.random.default_rng(1)), randn(RNG, 2, 5, 6)
    np.testing.assert_allclose(attention(x, np.tril(np.ones((5, 5)))), attention(x, nn.CAUSAL), rtol=1e-6, atol=1e-6)


# --- generation ---------------------------------------------------------------------------------

def test_padded_compiled_generation_equals_eager_generation():
    """The compiled model takes exactly [1, SEQ]: a shorter context is padded at the end, which the
    causal mask makes harmless, and a longer one is windowed to the last SEQ tokens."""
    model = tiny_gpt()
    with tf.compile(model, np.zeros((1, SEQ), np.int64)) as compiled:
        padded = nn.generate(compiled, [3, 1, 4], 12, SEQ, temperature=0)
    assert padded == model.generate([3, 1, 4], 12, temperature=0)
    assert len(padded) == 15 and all(0 <= token < VOCAB for token in padded)
    sampled = model.generate([3], 5, temperature=1.0, rng=np.random.default_rng(0))
    assert sampled == model.generate([3], 5, temperature=1.0, rng=np.random.default_rng(0))


@pytest.mark.parametrize("function", [lambda x: np.argmax(x), lambda x: np.argmax(x, axis=1), lambda x: x.argmax(0),
                                      lambda x: np.argmax(x, keepdims=True), lambda x: nn.functional.argmax(x, -1)])
def test_argmax_traces_like_numpy(function):
    x = randn(RNG, 3, 5)
    result = ir.interpret(tf.trace(function, x), x)
    np.testing.assert_array_equal(result, function(x))
    assert result.dtype == np.int64 and result.shape == np.shape(function(x))


def test_greedy_next_token_can_be_computed_in_the_graph():
    """argmax over the vocabulary as the model's last op: the next token of every position, compiled."""
    model, x = tiny_gpt(), tokens()
    with tf.compile(lambda ids: nn.functional.argmax(model(ids), -1), x) as compiled:
        np.testing.assert_array_equal(compiled(x), np.argmax(model(x), axis=-1))
