"""TinyTorch's transformer modules: Embedding, PositionalEncoding, LayerNorm, MultiHeadAttention, MLP,
TransformerBlock (pre-LN) and GPT, with TinyTorch's names and structure (re-exported as tensorforge.nn).

    model = nn.GPT(vocab_size=65, embed_dim=128, num_layers=4, num_heads=4, max_seq_len=128, rng=rng)
    logits = model(tokens)                       # tokens int[batch, seq] -> f32[batch, seq, vocab]
    graph = tf.trace(model, tokens)              # the same forward, recorded

State dict names follow TinyTorch's attributes: `token_embedding.weight`, `position_embedding.weight`,
`blocks.0.ln1.gamma`, `blocks.0.attention.q_proj.weight` (Linear weights are [in, out]),
`blocks.0.mlp.linear1.bias`, `ln_f.beta`, `lm_head.weight` (no bias, untied).

Causal self-attention traces to a graph whose dataflow says what it is (a KV-cache rewrite looks
for this shape):

    %q = linear(%h, %q_proj.weight, %q_proj.bias) -> reshape [B,S,H,D] -> transpose [B,H,S,D]   (k, v alike)
    %s = matmul(%q, %k) {transpose_b=true} : f32[B,H,S,S]
    %t = mul(%s, 1/sqrt(D)) ; %m = causal_mask(%t) ; %p = softmax(%m) {axis=3}
    %o = matmul(%p, %v) -> transpose [B,S,H,D] -> reshape [B,S,E] -> linear(out_proj)

Unlike TinyTorch's GPT (whose additive -inf mask meets attention code that expects 1/0 masks, so
every allowed score gets -1e9 added and attention comes out close to uniform), masked scores here
are -inf before the softmax and the allowed ones are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from . import functional as F
from .modules import GELU, Dropout, Linear, Module, _rng
from .proxy import Proxy

CAUSAL = "causal"  # MultiHeadAttention / TransformerBlock mask: each position attends to itself and earlier ones


def _check_ids(ids, rows: int, owner: str) -> None:
    """Eager ids outside [0, rows) raise IndexError (the gather op itself would clamp them)."""
    if isinstance(ids, Proxy):
        return  # checked at run time: ir.ops_transformer.index_inputs
    array = np.asarray(ids)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{owner}: token ids must be integers, got dtype {array.dtype}")
    if array.dtype.kind == "f":
        array = np.trunc(array)  # what the cast to int64 will make of them
    if array.size and (array.min() < 0 or array.max() >= rows):
        bad = array.flat[np.flatnonzero((array < 0) | (array >= rows))[0]]
        raise IndexError(f"{owner}: token id {bad} is outside [0, {rows}) (a table of {rows} rows)")


class Embedding(Module):
    """A lookup table: weight[vocab_size, embed_dim] (normal, std sqrt(2 / (vocab_size + embed_dim)));
    forward(ids) -> weight[ids], shape ids.shape + (embed_dim,)."""

    def __init__(self, vocab_size: int, embed_dim: int, *, rng: np.random.Generator | None = None):
        self.vocab_size, self.embed_dim = vocab_size, embed_dim
        scale = math.sqrt(2.0 / (vocab_size + embed_dim))
        self.weight = (_rng(rng).standard_normal((vocab_size, embed_dim)) * scale).astype(np.float32)

    def forward(self, indices):
        _check_ids(indices, self.vocab_size, "Embedding")
        return F.embedding(indices, self.weight)


class PositionalEncoding(Module):
    """Learned positions: forward(x[..., seq, embed_dim]) -> x + position_embeddings[:seq] (traced as a
    gather of the rows 0..seq-1, which tf.compile_generator turns into the row of the decoded position)."""

    def __init__(self, max_seq_len: int, embed_dim: int, *, rng: np.random.Generator | None = None):
        self.max_seq_len, self.embed_dim = max_seq_len, embed_dim
        scale = math.sqrt(2.0 / (max_seq_len + embed_dim))
        self.position_embeddings = (_rng(rng).standard_normal((max_seq_len, embed_dim)) * scale).astype(np.float32)

    def forward(self, x):
        if len(x.shape) < 2 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"PositionalEncoding: x must be [..., seq, {self.embed_dim}], got shape {x.shape}")
        seq = x.shape[-2]
        if seq > self.max_seq_len:
            raise ValueError(f"PositionalEncoding: sequence length {seq} exceeds max_seq_len {self.max_seq_len}")
        # rows 0..seq-1 gathered from the whole table, not a slice of it: a traced graph then holds the
        # table and the positions, so the KV-cache rewrite can read the row of a run-time position instead
        positions = F.constant_like(np.arange(seq, dtype=np.int64), x, "positions")
        return F.add(x, F.embedding(positions, self.position_embeddings))


class LayerNorm(Module):
    """Normalization over the last axis with the biased variance: (x - mean) / sqrt(var + eps) * gamma + beta."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5):
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if len(shape) != 1:
            raise ValueError(f"LayerNorm normalizes over the last axis only: normalized_shape must be one int, "
                             f"got {normalized_shape}")
        self.normalized_shape, self.eps = shape, eps
        self.gamma = np.ones(shape, np.float32)
        self.beta = np.zeros(shape, np.float32)

    def forward(self, x):
        return F.layer_norm(x, self.gamma, self.beta, self.eps)


class MultiHeadAttention(Module):
    """Self-attention with `num_heads` heads of embed_dim / num_heads: q_proj, k_proj, v_proj, out_proj
    (Linear(embed_dim, embed_dim) with bias). forward(x[batch, seq, embed_dim], mask=None), where mask is
    None, CAUSAL ("causal"), or a 1/0 array (1 = attend, TinyTorch's convention) of shape [seq, seq] or
    [batch, seq, seq]; blocked scores become -inf before the softmax."""

    def __init__(self, embed_dim: int, num_heads: int, *, rng: np.random.Generator | None = None):
        if num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim {embed_dim} must be a multiple of num_heads {num_heads}")
        rng = _rng(rng)
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.q_proj = Linear(embed_dim, embed_dim, rng=rng)
        self.k_proj = Linear(embed_dim, embed_dim, rng=rng)
        self.v_proj = Linear(embed_dim, embed_dim, rng=rng)
        self.out_proj = Linear(embed_dim, embed_dim, rng=rng)

    def _heads(self, x, batch: int, seq: int):
        """[batch, seq, embed_dim] -> [batch, heads, seq, head_dim]."""
        return F.transpose(F.reshape(x, batch, seq, self.num_heads, self.head_dim), 0, 2, 1, 3)

    def forward(self, x, mask=None):
        if len(x.shape) != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiHeadAttention: x must be [batch, seq, {self.embed_dim}], got shape {x.shape}")
        batch, seq, _ = x.shape
        q = self._heads(self.q_proj(x), batch, seq)
        k = self._heads(self.k_proj(x), batch, seq)
        v = self._heads(self.v_proj(x), batch, seq)
        scores = F.mul(F.matmul(q, k, transpose_b=True), np.float32(1.0 / math.sqrt(self.head_dim)))
        if isinstance(mask, str):
            if mask != CAUSAL:
                raise ValueError(f"MultiHeadAttention: mask must be None, {CAUSAL!r} or a 1/0 array, got {mask!r}")
            scores = F.causal_mask(scores)
        elif mask is not None:
            scores = F.add(scores, _additive_mask(mask, batch, seq))
        weights = F.softmax(scores, -1)
        out = F.transpose(F.matmul(weights, v), 0, 2, 1, 3)
        return self.out_proj(F.reshape(out, batch, seq, self.embed_dim))


def _additive_mask(mask, batch: int, seq: int) -> np.ndarray:
    """A 1/0 mask (1 = attend) as 0 / -inf to add to scores[batch, heads, seq, seq]."""
    if isinstance(mask, Proxy):
        raise TypeError("MultiHeadAttention: a traced mask is not supported; pass a numpy 1/0 array or 'causal'")
    allowed = np.asarray(mask) != 0
    if allowed.shape not in ((seq, seq), (batch, seq, seq), (1, seq, seq)):
        raise ValueError(f"MultiHeadAttention: mask must be [{seq}, {seq}] or [{batch}, {seq}, {seq}], "
                         f"got shape {allowed.shape}")
    additive = np.where(allowed, np.float32(0), np.float32(-np.inf))
    return additive.reshape(-1, 1, seq, seq) if additive.ndim == 3 else additive


class MLP(Module):
    """linear1 (embed_dim -> hidden_dim, default 4 * embed_dim), GELU, linear2 (back to embed_dim).

    `approximate` is the GELU's ("tanh" by default, as PyTorch's GPT-2 style models; TinyTorch's own
    is "sigmoid"). Dropout is the identity at inference."""

    def __init__(self, embed_dim: int, hidden_dim: int | None = None, dropout_prob: float = 0.1, *,
                 approximate: str = "tanh", rng: np.random.Generator | None = None):
        rng = _rng(rng)
        hidden_dim = 4 * embed_dim if hidden_dim is None else hidden_dim
        self.embed_dim, self.hidden_dim = embed_dim, hidden_dim
        self.linear1 = Linear(embed_dim, hidden_dim, rng=rng)
        self.gelu = GELU(approximate)
        self.linear2 = Linear(hidden_dim, embed_dim, rng=rng)
        self.dropout = Dropout(dropout_prob)

    def forward(self, x):
        return self.dropout(self.linear2(self.gelu(self.linear1(x))))


class TransformerBlock(Module):
    """Pre-LN: x = x + attention(ln1(x), mask); out = x + mlp(ln2(x))."""

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: int = 4, dropout_prob: float = 0.1, *,
                 approximate: str = "tanh", rng: np.random.Generator | None = None):
        rng = _rng(rng)
        self.attention = MultiHeadAttention(embed_dim, num_heads, rng=rng)
        self.ln1 = LayerNorm(embed_dim)
        self.ln2 = LayerNorm(embed_dim)
        self.mlp = MLP(embed_dim, mlp_ratio * embed_dim, dropout_prob, approximate=approximate, rng=rng)

    def forward(self, x, mask=None):
        x = F.add(x, self.attention(self.ln1(x), mask))
        return F.add(x, self.mlp(self.ln2(x)))


class GPT(Module):
    """A decoder-only transformer: token and learned position embeddings, `num_layers` causal
    TransformerBlocks, ln_f, and lm_head (Linear(embed_dim, vocab_size, bias=False)).

    forward(tokens[batch, seq]) -> logits[batch, seq, vocab_size] for every position; seq <= max_seq_len.
    Token ids are integers (floats, as TinyTorch passes them, are truncated to int64)."""

    def __init__(self, vocab_size: int, embed_dim: int, num_layers: int, num_heads: int, max_seq_len: int = 1024,
                 *, approximate: str = "tanh", rng: np.random.Generator | None = None):
        rng = _rng(rng)
        self.vocab_size, self.embed_dim, self.num_layers = vocab_size, embed_dim, num_layers
        self.num_heads, self.max_seq_len = num_heads, max_seq_len
        self.token_embedding = Embedding(vocab_size, embed_dim, rng=rng)
        self.position_embedding = Embedding(max_seq_len, embed_dim, rng=rng)
        self.blocks = [TransformerBlock(embed_dim, num_heads, approximate=approximate, rng=rng)
                       for _ in range(num_layers)]
        self.ln_f = LayerNorm(embed_dim)
        self.lm_head = Linear(embed_dim, vocab_size, bias=False, rng=rng)

    def forward(self, tokens):
        shape = tuple(tokens.shape) if hasattr(tokens, "shape") else np.shape(tokens)
        if len(shape) != 2:
            raise ValueError(f"GPT.forward takes tokens[batch, seq], got shape {shape}")
        if not 1 <= shape[1] <= self.max_seq_len:
            raise ValueError(f"GPT.forward: sequence length {shape[1]} must be in [1, max_seq_len={self.max_seq_len}]")
        # positions 0..seq-1 are known while tracing (the sequence length is static): a constant node
        positions = F.constant_like(np.arange(shape[1], dtype=np.int64), tokens, "positions")
        x = F.add(self.token_embedding(tokens), self.position_embedding(positions))
        for block in self.blocks:
            x = block(x, CAUSAL)
        return self.lm_head(self.ln_f(x))

    def generate(self, prompt_tokens: Sequence[int], max_new_tokens: int = 50, temperature: float = 1.0, *,
                 rng: np.random.Generator | None = None) -> list[int]:
        """Prompt plus `max_new_tokens` sampled tokens, recomputing the whole (windowed) context eagerly."""
        return generate(self, prompt_tokens, max_new_tokens, self.max_seq_len, temperature=temperature, rng=rng,
                        pad=False)


def sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A token drawn from softmax(logits / temperature); temperature 0 is the argmax."""
    if temperature == 0:
        return int(logits.argmax())  # the method: a fifth of np.argmax's 1.2 us here
    scaled = logits.astype(np.float64) / temperature
    probabilities = np.exp(scaled - scaled.max())
    return int(rng.choice(len(probabilities), p=probabilities / probabilities.sum()))


def generate(model: Callable[[np.ndarray], np.ndarray], prompt_tokens: Sequence[int], max_new_tokens: int,
             context: int, *, temperature: float = 1.0, rng: np.random.Generator | None = None, pad: bool = True,
             pad_id: int = 0) -> list[int]:
    """Sample `max_new_tokens` tokens after the prompt, one full forward per token (no KV cache).

    `model` maps int64 tokens[1, n] to logits[1, n, vocab]: a GPT, or a compiled one, which takes
    exactly [1, context]. The model sees the last `context` tokens; with `pad` a shorter window is
    padded at the end with `pad_id` up to `context`, which is harmless because the model is causal:
    the logits at the window's last real position do not depend on the padding after it."""
    if not prompt_tokens:
        raise ValueError("generate needs a prompt of at least one token")
    rng = _rng(rng)
    tokens = [int(token) for token in prompt_tokens]
    for _ in range(max_new_tokens):
        window = tokens[-context:]
        padded = window + [pad_id] * (context - len(window)) if pad else window
        logits = model(np.array([padded], np.int64))
        tokens.append(sample(np.asarray(logits)[0, len(window) - 1], temperature, rng))
    return tokens
