"""Transformer ops: gather (embedding lookup), layer_norm, causal_mask and argmax.

    %e = gather(%wte, %tokens) : f32[1,8,16]               wte: f32[17,16], tokens: i64[1,8]
    %n = layer_norm(%x, %gamma, %beta) {eps=1e-05} : f32[1,8,16]
    %m = causal_mask(%scores) : f32[1,2,8,8]              -inf above the diagonal
    %a = argmax(%logits) {axis=2, keepdims=false, dtype=i64} : i64[1,8]

Causal attention is written with them as q @ k^T -> scale -> causal_mask -> softmax -> @ v:

    %s = matmul(%q, %k) {transpose_b=true} : f32[B,H,S,S]
    %t = mul(%s, %scale) ; %m = causal_mask(%t) ; %p = softmax(%m) {axis=3} ; %o = matmul(%p, %v)

Out-of-range ids: `gather` clamps every index into [0, rows - 1] (as XLA's gather does), so its
meaning is total and the compiled code never reads outside the table. Token ids that come straight
from a graph input are checked before anything runs (`index_inputs`, used by the interpreter and
the runtime), so a bad id is an InputError there, not a silently clamped row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import Graph, Node
from .registry import OpError, evaluate, need_float, normalize_axis, register_op, same_dtype
from .types import DType, TensorType

F32 = np.float32
INDEX_DTYPES = (DType.i8, DType.u8, DType.i32, DType.i64)


# --- gather -----------------------------------------------------------------------------------

def _infer_gather(types, attrs):
    table, indices = types
    if table.rank < 1 or table.shape[0] == 0:
        raise OpError(f"op 'gather' needs a table[rows, ...] with at least one row, got {table}")
    if indices.dtype not in INDEX_DTYPES:
        raise OpError(f"op 'gather' needs integer indices ({', '.join(d.name for d in INDEX_DTYPES)}), "
                      f"got {indices}; cast float token ids first")
    return TensorType(indices.shape + table.shape[1:], table.dtype)


@register_op("gather", infer=_infer_gather, operands=2)
def gather(table, indices):
    """table[indices] along axis 0 (an embedding lookup): result shape indices.shape + table.shape[1:].

    Indices are clamped into [0, rows - 1]: -1 reads row 0 (not the last row, as numpy would)."""
    return table[np.clip(indices.astype(np.int64), 0, table.shape[0] - 1)]


# --- layer_norm -------------------------------------------------------------------------------

def _normalize_layer_norm(types, attrs):
    eps = attrs["eps"]
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.number)) or not eps >= 0:
        raise OpError(f"op 'layer_norm': eps must be a non-negative number, got {eps!r}")
    return {"eps": float(eps)}


def _infer_layer_norm(types, attrs):
    x, gamma, beta = types
    same_dtype("layer_norm", types)
    need_float("layer_norm", x)
    if x.rank < 1:
        raise OpError(f"op 'layer_norm' needs x[..., features], got {x}")
    for name, t in (("gamma", gamma), ("beta", beta)):
        if t.shape != x.shape[-1:]:
            raise OpError(f"op 'layer_norm': {name} must be [{x.shape[-1]}] like the last axis of x {x}, got {t}")
    return x


@register_op("layer_norm", infer=_infer_layer_norm, operands=3, attrs={"eps": 1e-5}, normalize=_normalize_layer_norm)
def layer_norm(x, gamma, beta, *, eps):
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis, var biased (divided by n)."""
    mean = np.mean(x, axis=-1, keepdims=True, dtype=F32)
    centered = x - mean
    var = np.mean(centered * centered, axis=-1, keepdims=True, dtype=F32)
    return centered / np.sqrt(var + F32(eps)) * gamma + beta


# --- causal_mask ------------------------------------------------------------------------------

def _infer_causal_mask(types, attrs):
    x = types[0]
    need_float("causal_mask", x)
    if x.rank < 2:
        raise OpError(f"op 'causal_mask' needs scores[..., queries, keys], got {x}")
    queries, keys = x.shape[-2:]
    if keys < queries:
        raise OpError(f"op 'causal_mask': {queries} queries but only {keys} keys in {x}; the queries are the "
                      "last positions of the keys, so there must be at least as many keys")
    return x


def causal_allowed(queries: int, keys: int) -> np.ndarray:
    """bool[queries, keys]: query i (position i + keys - queries) may attend to keys 0..that position."""
    return np.arange(keys)[None, :] <= np.arange(queries)[:, None] + (keys - queries)


@register_op("causal_mask", infer=_infer_causal_mask)
def causal_mask(x):
    """x[..., i, j] where key j is not after query i, -inf elsewhere (before a softmax over j).

    Query i is position i + (keys - queries): with as many keys as queries, the lower triangle is
    kept; with more keys (a cache of earlier positions), the last queries see them all."""
    return np.where(causal_allowed(*x.shape[-2:]), x, F32(-np.inf))


# --- argmax -----------------------------------------------------------------------------------

def _normalize_argmax(types, attrs):
    rank = types[0].rank if types else 1
    dtype = attrs["dtype"]
    dtype = dtype if isinstance(dtype, DType) else DType.parse(str(dtype))
    if dtype not in (DType.i32, DType.i64):
        raise OpError(f"op 'argmax': dtype must be i32 or i64, got {dtype.name}")
    return {"axis": normalize_axis("argmax", int(attrs["axis"]), rank), "keepdims": bool(attrs["keepdims"]),
            "dtype": dtype}


def _infer_argmax(types, attrs):
    x, axis = types[0], attrs["axis"]
    if x.rank < 1 or x.shape[axis] == 0:
        raise OpError(f"op 'argmax' needs a non-empty axis {axis}, got {x}")
    if x.dtype is DType.bool:
        raise OpError(f"op 'argmax' is not defined on a bool operand ({x})")
    if attrs["keepdims"]:
        shape = tuple(1 if i == axis else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i != axis)
    return TensorType(shape, attrs["dtype"])


@register_op("argmax", infer=_infer_argmax, attrs={"axis": -1, "keepdims": False, "dtype": DType.i64},
             normalize=_normalize_argmax)
def argmax(x, *, axis, keepdims, dtype):
    """The index of the largest value along `axis`: the first one on ties, the first NaN if any (numpy's)."""
    return np.argmax(x, axis=axis, keepdims=keepdims).astype(dtype.numpy)


# --- index inputs: the ids the runtime checks before native code runs -------------------------

PASS_THROUGH = ("reshape", "flatten", "cast")  # what may stand between a graph input and gather's indices


@dataclass(frozen=True)
class IndexInput:
    """A graph input whose values (through `chain`) index the first axis of a table of `rows` rows."""

    position: int  # index into graph.inputs
    rows: int
    chain: tuple[Node, ...]  # the reshape / flatten / cast nodes between the input and the gather, in order
    gather: Node  # the gather node, for the message

    def problem(self, name: str, array: np.ndarray) -> str | None:
        """What is wrong with the ids in `array` (input `name`): the first one outside [0, rows), or None."""
        indices = array
        for node in self.chain:
            if node.op == "cast":  # reshape and flatten keep the values: only a cast can change them
                indices = evaluate(node.op, [indices], node.attrs)
        if indices.size == 1 and 0 <= indices.item() < self.rows:  # a decode step's one token, quickly
            return None
        if not indices.size or (indices.min() >= 0 and indices.max() < self.rows):
            return None
        bad = np.flatnonzero((indices < 0) | (indices >= self.rows))
        where = np.unravel_index(bad[0], array.shape)
        return (f"input '{name}' holds the id {array.flat[bad[0]]} at {list(map(int, where))}, "
                f"outside [0, {self.rows}): it indexes a table of {self.rows} rows ({self.gather.format()})")


def index_inputs(graph: Graph) -> list[IndexInput]:
    """The graph inputs that reach a gather's indices through reshapes, flattens and casts only."""
    positions = {node: position for position, node in enumerate(graph.inputs)}
    found = []
    for node in graph.nodes:
        if node.op != "gather":
            continue
        chain, source = [], node.inputs[1]
        while source.op in PASS_THROUGH:
            chain.append(source)
            source = source.inputs[0]
        if source in positions:
            found.append(IndexInput(positions[source], node.inputs[0].shape[0], tuple(reversed(chain)), node))
    return found
