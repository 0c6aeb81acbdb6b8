"""tf.compile_generator on decoders written by others: Hugging Face GPT-2 and plain PyTorch decoders
through the PyTorch importer (frontend/torch/decoder.py), and tensorforge's own nn.PositionalEncoding.

The KV-cache rewrite (generate/kv_cache.py) finds the attention of the imported graph by dataflow:
GPT-2's scaled_dot_product_attention arrives as matmul(q, transpose(k)), a scaling, where(causal
mask, scores, -inf), softmax, matmul; its eager attention as batched matmuls of [H, S, D] with an
additive mask of finfo.min; positions as a gather of a constant arange [1, S] from wpe. Greedy
tokens must equal `model.generate(do_sample=False)` (fp32, on several prompts, shorter and longer
than prompt_len), logits those of eager PyTorch; int8 stays within the int8 guard of the nn.GPT
tests (tests/test_kv_cache.py); decoders the rewrite cannot prove causal are refused with a message
naming the node and the assumption that failed. The models are tiny (2 layers, 128 wide): seconds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_kv_cache import interpreted_generator  # noqa: E402

import tensorforge as tf  # noqa: E402
from tensorforge import nn  # noqa: E402
from tensorforge.frontend.torch.decoder import load_decoder  # noqa: E402
from tensorforge.generate import KVCacheError, rewrite_for_kv_cache  # noqa: E402

MAX_LEN, PROMPT_LEN, NEW_TOKENS = 64, 8, 32
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}  # two layers summed in other orders than PyTorch's (test_torch_import)


@pytest.fixture(autouse=True)
def _quiet():
    transformers.logging.set_verbosity_error()  # the config's bos/eos ids (50256) lie outside the tiny vocabulary
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's and transformers' deprecation notices
        yield


def gpt2(attention: str = "sdpa"):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=1000, n_embd=128, n_layer=2, n_head=4, n_positions=128,
                                     attn_implementation=attention)
    return transformers.GPT2LMHeadModel(config).eval()


def prompt(length: int, seed: int = 0):
    return torch.randint(0, 1000, (1, length), generator=torch.Generator().manual_seed(seed))


def hf_greedy(model, ids, new: int = NEW_TOKENS) -> list[int]:
    with torch.no_grad():
        tokens = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                                pad_token_id=model.config.eos_token_id)
    return tokens[0].tolist()


def eager_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(ids, use_cache=False).logits[0].numpy()


@pytest.fixture(scope="module")
def model():
    return gpt2()


@pytest.fixture(scope="module")
def generator(model):
    with tf.compile_generator(model, max_len=MAX_LEN, prompt_len=PROMPT_LEN) as compiled:
        yield compiled


# --- Hugging Face GPT-2 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("length, seed", [(3, 1), (8, 2), (13, 3)])  # shorter than, as long as, longer than prompt_len
def test_greedy_tokens_equal_hf_generate(model, generator, length, seed):
    ids = prompt(length, seed)
    expected = hf_greedy(model, ids)
    assert len(expected) == length + NEW_TOKENS
    assert generator.generate(ids, NEW_TOKENS) == expected


def test_logits_after_every_prefix_equal_eager_pytorch(model, generator):
    ids = prompt(20, 4)
    np.testing.assert_allclose(generator.logits(ids[0].tolist()), eager_logits(model, ids), **TOLERANCE)
    np.testing.assert_allclose(generator.next_logits(ids[0, :5].tolist()), eager_logits(model, ids[:, :5])[-1],
                               **TOLERANCE)


def test_the_imported_graphs_keep_the_models_names_and_decode_with_cached_attention(generator):
    prefill, decode = generator.graphs.prefill, generator.graphs.decode
    names = {node.name for node in prefill.nodes}
    assert {"transformer.h.0.attn.c_attn.weight", "transformer.wpe.weight", "lm_head.weight"} <= names
    assert [node.name for node in decode.inputs[:2]] == ["token", "pos"]
    ops = [node.op for node in decode.nodes]
    assert ops.count("cached_attention") == 2 and "softmax" not in ops and "where" not in ops
    gather = next(node for node in decode.nodes
                  if node.op == "gather" and node.inputs[0].name == "transformer.wpe.weight")
    assert gather.inputs[1].op == "reshape" and gather.inputs[1].inputs[0].name == "pos"  # wpe[arange(S)] -> wpe[pos]
    assert generator.first_model is not None  # the output layer read on one row: logits [1, 1, V]
    assert generator.first_model.output_types[0].shape == (1, 1, 1000)


def test_eager_attention_with_an_additive_mask_decodes_too():
    """attn_implementation="eager": q @ k^T as batched matmuls of [H, S, D] and an additive mask of
    finfo(float32).min computed by where() from constants."""
    model = gpt2("eager")
    graph = load_decoder(model, PROMPT_LEN)
    ops = [node.op for node in graph.nodes]
    assert "add" in ops and ops.count("softmax") == 2 and "-3.40282" in str(graph)
    ids = prompt(11, 5)
    with tf.compile_generator(model, max_len=32, prompt_len=PROMPT_LEN) as generator:
        assert generator.generate(ids, 16) == hf_greedy(model, ids, 16)


def test_int8_stays_within_the_int8_guard(model):
    """quantize="int8": every linear, GPT-2's tied lm_head too (x @ wte^T, its transpose folded into a
    weight), becomes dynamic_qlinear; the compiled generator equals its int8 graphs in the reference
    interpreter and stays within int8 error of eager PyTorch (the bounds of test_kv_cache's int8 test)."""
    ids = prompt(11, 6)
    with tf.compile_generator(model, MAX_LEN, prompt_len=PROMPT_LEN, quantize="int8") as generator:
        graphs = generator.graphs
        for graph in (graphs.prefill, graphs.decode):
            ops = [node.op for node in graph.nodes]
            assert "linear" not in ops and ops.count("dynamic_qlinear") == 2 * 4 + 1
        logits = generator.logits(ids[0].tolist())
        np.testing.assert_allclose(logits, interpreted_generator(graphs, ids[0].tolist()), rtol=1e-4, atol=1e-5)
        exact = eager_logits(model, ids)
        assert np.abs(logits - exact).max() < 0.05 * np.abs(exact).max()
        report = str(generator.quant_report())
        assert "\nlm_head " in report and "transformer.h.1.mlp.c_proj" in report and "4.0x smaller" in report


def test_one_short_generation_on_armv8(model):
    ids = prompt(5, 7)
    with tf.compile_generator(model, max_len=16, prompt_len=4, target="armv8") as generator:
        assert generator.generate(ids, 6) == hf_greedy(model, ids, 6)


# --- plain PyTorch decoders -----------------------------------------------------------------------------

class TinyDecoder(torch.nn.Module):
    """One pre-norm block over learned positions: `positions` "slice" adds a Parameter[1, 32, E] sliced
    to [:, :S]; "offset" gathers rows 2..S+1 of an Embedding (OPT's offset). `attention` "causal" is
    SDPA with is_causal; "bidirectional" without a mask; "upper" with a mask that sees later keys;
    "memory" takes its keys from a constant; "capped" soft-caps the scores with a tanh."""

    def __init__(self, positions: str = "slice", attention: str = "causal", vocab: int = 50, dim: int = 32,
                 heads: int = 4, length: int = 32, seq: int = 6):
        super().__init__()
        torch.manual_seed(1)
        self.positions, self.attention, self.heads, self.dim = positions, attention, heads, dim
        self.embed = torch.nn.Embedding(vocab, dim)
        self.table = torch.nn.Parameter(torch.randn(1, length, dim) * 0.3)
        self.wpe = torch.nn.Embedding(length + 2, dim)
        self.ln1, self.ln2, self.ln_f = (torch.nn.LayerNorm(dim) for _ in range(3))
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim))
        self.head = torch.nn.Linear(dim, vocab, bias=False)
        self.memory = torch.nn.Parameter(torch.randn(1, seq, dim))

    def split(self, x):
        return x.view(1, x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, ids):
        length = ids.shape[1]
        x = self.embed(ids)
        x = x + (self.table[:, :length] if self.positions == "slice" else self.wpe(torch.arange(length) + 2))
        q, k, v = self.qkv(self.ln1(x)).split(self.dim, dim=-1)
        if self.attention == "memory":
            k = self.qkv(self.memory)[..., self.dim:2 * self.dim]
        q, k, v = self.split(q), self.split(k), self.split(v)
        if self.attention == "capped":
            scores = torch.tanh(q @ k.transpose(-2, -1) / 30.0) * 30.0
            scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
            a = scores.softmax(-1) @ v
        elif self.attention == "upper":
            upper = torch.ones(length, length, dtype=torch.bool).triu()
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=upper)
        else:
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.attention != "bidirectional")
        x = x + self.proj(a.transpose(1, 2).reshape(1, length, self.dim))
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln_f(x)), x  # a tuple: the generator takes the first item, the logits


def torch_greedy(model, ids: list[int], new: int) -> list[int]:
    """Greedy decoding by full recompute in eager PyTorch."""
    tokens = list(ids)
    with torch.no_grad():
        for _ in range(new):
            tokens.append(int(model(torch.tensor([tokens]))[0][0, -1].argmax()))
    return tokens


@pytest.mark.parametrize("positions", ["slice", "offset"])
def test_a_pytorch_decoder_with_learned_positions_generates_its_greedy_tokens(positions):
    """Positions as a slice of a Parameter (decode gathers its row pos) or as ids 2..S+1 (decode reads pos + 2)."""
    model = TinyDecoder(positions).eval()
    with tf.compile_generator(model, max_len=24, prompt_len=6) as generator:
        for ids in ([3, 1, 4], [2, 7, 1, 8, 2, 8, 1, 8, 2]):
            assert generator.generate(ids, 24 - len(ids)) == torch_greedy(model, ids, 24 - len(ids))
    if positions == "offset":
        with pytest.raises(KVCacheError, match=r"the position table %wpe.weight has 34 rows, fewer than max_len 33 "
                                               r"\(positions start at row 2\)"):
            tf.compile_generator(model, max_len=33, prompt_len=6)


@pytest.mark.parametrize("attention, match", [
    ("bidirectional", r"attention %scaled_dot_product_attention: no causal mask between %\w+ = q @ k\^T and the "
                      r"softmax %\w+: bidirectional attention cannot use a KV cache"),
    ("upper", r"the mask %\w+ that %\w+ = where\(...\) applies to the attention scores does not keep exactly the keys "
              r"on and below the diagonal"),
    ("memory", r"attention %scaled_dot_product_attention: its keys %\w+ are not computed from the tokens: they read "
               r"only constants \(%[\w.]+, %qkv.weight"),
    ("capped", r"no causal self-attention .* \(the softmax %\w+ is not recognized as causal attention: its scores "
               r"come from %tanh = tanh\(...\), which is neither q @ k\^T"),
])
def test_a_decoder_the_rewrite_cannot_prove_causal_is_refused_naming_the_node(attention, match):
    model = TinyDecoder(attention=attention).eval()
    with pytest.raises(KVCacheError, match=match):
        rewrite_for_kv_cache(load_decoder(model, 6), 24)


def test_a_forward_without_logits_is_refused():
    class Hidden(torch.nn.Module):
        def forward(self, ids):
            return {"hidden": ids.float()}

    with pytest.raises(tf.frontend.torch.TorchImportError, match="returned dict; compile_generator needs its logits"):
        load_decoder(Hidden().eval(), 4)


# --- tensorforge's own nn.PositionalEncoding ------------------------------------------------------------

class PositionalDecoder(nn.Module):
    """Embedding + nn.PositionalEncoding (learned rows) + two causal TransformerBlocks + ln + head."""

    def __init__(self, vocab: int = 13, dim: int = 16, max_len: int = 12):
        rng = np.random.default_rng(5)
        self.embedding = nn.Embedding(vocab, dim, rng=rng)
        self.positions = nn.PositionalEncoding(max_len, dim, rng=rng)
        self.blocks = [nn.TransformerBlock(dim, 2, rng=rng) for _ in range(2)]
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, rng=rng)

    def forward(self, tokens):
        x = self.positions(self.embedding(tokens))
        for block in self.blocks:
            x = block(x, nn.CAUSAL)
        return self.head(self.ln(x))


def test_a_decoder_with_nn_positional_encoding_is_rewritten_and_generates_its_greedy_tokens():
    model = PositionalDecoder()
    graphs = rewrite_for_kv_cache(tf.trace(model, np.zeros((1, 4), np.int64)), 12)
    table = next(node for node in graphs.decode.nodes if node.op == "gather" and node.inputs[1].op == "reshape")
    assert table.inputs[0].name == "positions.position_embeddings" and table.inputs[1].inputs[0].name == "pos"
    with tf.compile_generator(model, max_len=12, prompt_len=4) as generator:
        for ids in ([3], [5, 0, 12, 7, 7, 1]):
            expected = list(ids)
            while len(expected) < 12:  # greedy by full recompute in the reference interpreter
                tokens = np.array([expected], np.int64)
                expected.append(int(np.argmax(tf.interpret(tf.trace(model, tokens), tokens)[0, -1])))
            assert generator.generate(ids, 12 - len(ids)) == expected
