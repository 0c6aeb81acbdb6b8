"""kv-cache: from a GPT graph traced on tokens[1, S] (full recompute), a prefill graph and a
one-token decode graph that reads per-layer K/V caches of `max_len` rows.

    traced (S = 4)                                      decode (max_len = 16)
    %tokens : i64[1,4]                                  %token : i64[1,1]   %pos : i64[1]
    %positions = constant() {value=[0, 1, 2, 3]}        %k_cache.0, %v_cache.0 : f32[1,H,16,D]
    %1 = gather(%wpe, %positions) : f32[4,E]       ->   %1 = gather(%wpe, %pos) : f32[1,E]
    %13 = matmul(%q, %k) {transpose_b=true}             %k2 = cache_write(%k_cache.0, %k, %pos)
    %16 = causal_mask(%15) : f32[1,H,4,4]               %13 = matmul(%q, %k2) {transpose_b=true} : f32[1,H,1,16]
    %18 = matmul(%17, %v)                               %16 = position_mask(%15, %pos) ; %18 = matmul(%17, %v2)
                                                        then fused (fuse_cached_attention):
                                                        %18 = cached_attention(%q, %k_cache.0, %v_cache.0, %k, %v, %pos)
    return %logits                                      return %logits : f32[1,1,V], %k, %v (the new rows)

The attentions and positions are found by generate/attention.py (find_attentions, find_positions).
Everything else must act on each position separately,
which the rewrite proves by following the sequence axis through every node (elementwise ops,
linear, layer_norm, gather, a softmax over features, reshapes that keep the sequence axis whole,
such as [1, S, E] -> [S, E], slices that keep it whole, transposes); anything else, bidirectional
attention or a mask that is not causal raises KVCacheError naming the node and the assumption that
failed. Position ids c + 0..S-1 become `pos + c` in decode,
and a slice of rows 0..S-1 of a constant table becomes a gather of row `pos`; the table must hold
max_len rows. Prefill is the
traced graph itself with each layer's k and v ([1,H,S,D]) as extra outputs. Decode attention is
then fused into cached_attention, whose kernel reads the cache rows before pos and the new row, and
copies no cache (without the fusion, decode copies each cache in cache_write and computes over all
max_len rows, those after pos masked to -inf). Both graphs return each layer's new k and v rows; the
caller owns the caches and writes the rows in at 0 (prefill) or pos (decode), so the caches are only
ever read by compiled code.

With kv_cache="int8" each cache is two arrays: i8 codes [1,H,max_len,D] and an f32 scale per row
[1,H,max_len,1] (one position of one head: scale = max|row| / 127, codes = quantize(row, scale, 0);
a row of zeros has scale 0 and codes 0). Both graphs quantize the rows they return
(quantized_rows), and decode attention reads dequantize(cache_write(codes), cache_write(scales)),
the step's own row quantized too; fused, cached_attention takes the codes and the four scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ir
from ..ir import DType, Graph, Node, TensorType
from ..passes.dead_code import eliminate_dead_code
from ..passes.rewrite import suffixed_name
from .attention import (
    SCALE_OPS,
    Attention,
    KVCacheError,
    Positions,
    batched_matmuls_unflattened,
    find_positions,
    is_scalar_constant,
    scan,
    token_dependent,
    tokens_input,
)

KV_CACHE_DTYPES = ("f32", "int8")
CODE_LIMIT = 127.0  # int8 cache codes are symmetric, -127..127
ROW_OPS = ("linear", "layer_norm")  # ops that act on the last axis of each position


@dataclass(frozen=True)
class KVCacheGraphs:
    """What the rewrite produces: prefill(tokens[1,S]) -> logits, k0, v0, k1, v1, ... ([1,H,S,D]) and
    decode(token[1,1], pos[1], k_cache0, v_cache0, ...) -> logits[1,1,V], k0, v0, ... ([1,H,1,D]):
    both return each layer's new k and v rows, which the caller writes into its caches at 0 / pos."""

    prefill: Graph
    decode: Graph
    attentions: tuple[Attention, ...]
    prompt_len: int
    max_len: int
    # the arrays of each of the 2 * layers caches: (f32 [1, H, max_len, D],), or for an int8 cache
    # (i8 codes [1, H, max_len, D], f32 scales [1, H, max_len, 1]); in this order among decode's
    # inputs (after token and pos) and both graphs' outputs (after the logits), layer by layer, k then v
    cache_types: tuple[TensorType, ...]

    @property
    def kv_cache(self) -> str:
        return "int8" if len(self.cache_types) == 2 else "f32"

    @property
    def cache_type(self) -> TensorType:
        """The type of each cache's rows: f32, or the int8 codes."""
        return self.cache_types[0]


def quantized_rows(graph: Graph, x: Node, name: str) -> tuple[Node, Node]:
    """The int8 cache form of x's rows (its last axis): codes i8 = quantize(x, scales, 0) with
    scales f32 [..., 1] = max|row| / 127 (0 for a row of zeros, whose codes are then 0)."""
    largest = graph.call("reduce_max", [graph.call("abs", [x])], {"axes": (x.type.rank - 1,), "keepdims": True})
    scales = graph.call("div", [largest, graph.constant(np.float32(CODE_LIMIT))], name=suffixed_name(name, "scales"))
    codes = graph.call("quantize", [x, scales, graph.constant(np.int32(0))], {"dtype": DType.i8},
                       name=suffixed_name(name, "codes"))
    return codes, scales


def _reshaped_axis(before: tuple[int, ...], axis: int, after: tuple[int, ...]) -> int | None:
    """The axis of a reshape's result that holds axis `axis` of its operand whole, the axes after it
    flattened in the same order ([1, S, E] -> [S, E], [1, S, H*D] -> [1, S, H, D]); None if none does."""
    inner = int(np.prod(before[axis + 1:], dtype=np.int64))
    found = [j for j, size in enumerate(after)
             if size == before[axis] and int(np.prod(after[j + 1:], dtype=np.int64)) == inner]
    if not found:
        return None
    return axis if axis in found else found[-1]


def _constant_sources(node: Node, limit: int = 3) -> str:
    """The named constants `node` is computed from (at most `limit`), for messages."""
    seen, stack, names = set(), [node], []
    while stack and len(names) < limit:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.op == "constant":
            if not current.name.isdigit() or current.value.size > 1:
                names.append(f"%{current.name}")
        else:
            stack.extend(reversed(current.inputs))
    return ", ".join(names) or "scalars"


class _Decode:
    """Builds the decode graph node by node, following the sequence axis of every value.

    `axis[old]` is the axis of the old value that runs over the S positions (None: the value does
    not depend on the tokens, such as a weight); the new value has 1 there. Attention nodes are
    rebuilt over the caches, position ids and rows (find_positions) read `pos`."""

    def __init__(self, traced: Graph, attentions: list[Attention], max_len: int, kv_cache: str,
                 missed: dict[Node, str] | None = None):
        self.traced, self.max_len = traced, max_len
        self.tokens = tokens_input(traced)
        self.length = self.tokens.shape[1]
        self.positions = find_positions(traced)
        self.missed = missed or {}
        self.depends = token_dependent(traced)
        self.graph = Graph()
        self.new: dict[Node, Node] = {}
        self.axis: dict[Node, int | None] = {}
        self.attention_of = {a.scores: a for a in attentions} | {a.output: a for a in attentions}
        self.layer_of = {a: index for index, a in enumerate(attentions)}
        self.in_attention = {node for a in attentions for node in (*a.chain, a.softmax)}
        token = self.graph.add_input("token", TensorType((1, 1), self.tokens.dtype))
        self.pos = self.graph.add_input("pos", TensorType((1,), DType.i64))
        self.new[self.tokens], self.axis[self.tokens] = token, 1
        self.caches: list[tuple[Node, ...]] = []  # each cache's inputs: (f32 rows,) or (int8 codes, scales)
        self.new_rows: list[Node] = []  # each layer's k and v [1,H,1,D] (or codes, scales): outputs after the logits
        for index, attention in enumerate(attentions):
            self.check_operands(attention)
            batch, heads, _, head_dim = attention.k.shape
            rows = (batch, heads, max_len, head_dim)
            for name in ("k_cache", "v_cache"):
                if kv_cache == "int8":
                    self.caches.append((self.graph.add_input(f"{name}.{index}", TensorType(rows, DType.i8)),
                                        self.graph.add_input(f"{name}_scales.{index}",
                                                             TensorType(rows[:-1] + (1,), DType.f32))))
                else:
                    self.caches.append((self.graph.add_input(f"{name}.{index}", TensorType(rows, attention.k.dtype)),))

    def fail(self, node: Node, why: str) -> KVCacheError:
        missed = f"; {self.missed[node]}" if node in self.missed else ""
        return KVCacheError(f"kv-cache: {node.format()}: {why}{missed}")

    def check_operands(self, attention: Attention) -> None:
        """q, k and v as [1, heads, positions, head_dim], each computed from the tokens."""
        depends = self.depends
        for role, value in (("queries", attention.q), ("keys", attention.k), ("values", attention.v)):
            if value not in depends:
                raise KVCacheError(f"kv-cache: {attention.name}: its {role} %{value.name} are not computed from "
                                   f"the tokens: they read only constants ({_constant_sources(value)}); a KV cache "
                                   "holds self-attention's keys and values of earlier positions")
            if value.type.rank != 4 or value.shape[0] != 1:
                raise KVCacheError(f"kv-cache: {attention.name}: its {role} %{value.name} are {value.type}; the "
                                   "rewrite needs q, k and v as [1, heads, positions, head_dim]")

    def build(self) -> Graph:
        for node in self.traced.nodes:
            if node.op == "input":
                continue
            if node in self.positions:  # positions 0..S-1 become the run-time position
                self.new[node], self.axis[node] = self.position(self.positions[node]), self.positions[node].axis
            elif node.op == "constant":
                self.new[node], self.axis[node] = self.graph.constant(node.value, node.name), None
            else:
                self.new[node] = self.rewrite(node)
        for output in self.traced.outputs:
            if self.axis.get(output) is None:
                raise self.fail(output, "a graph output that does not run over the positions")
        self.graph.outputs = [self.new[node] for node in self.traced.outputs] + self.new_rows
        return eliminate_dead_code(self.graph)

    def position(self, positions: Positions) -> Node:
        """The decode graph's value for `positions`: the ids `pos + first` shaped as the traced ids, or
        the table's row `pos` shaped as the traced slice, with 1 on the sequence axis."""
        node = positions.node
        shape = tuple(1 if i == positions.axis else size for i, size in enumerate(node.shape))
        if positions.kind == "ids":
            ids = self.graph.call("reshape", [self.pos], {"shape": shape}, name=node.name)
            if positions.first:
                ids = self.graph.call("add", [ids, self.graph.constant(np.int64(positions.first))])
            return ids
        table = self.new[node.inputs[0]]
        rows = self.graph.call("reshape", [table], {"shape": table.shape[positions.axis:]})
        return self.graph.call("reshape", [self.graph.call("gather", [rows, self.pos])], {"shape": shape},
                               name=node.name)

    def call(self, node: Node, inputs: list[Node], op: str | None = None, attrs: dict | None = None) -> Node:
        try:
            return self.graph.call(op or node.op, inputs, node.attrs if attrs is None else attrs, node.name)
        except ir.OpError as err:
            raise self.fail(node, f"cannot be rebuilt for one position: {err}") from None

    def rewrite(self, node: Node) -> Node:
        operands = [self.new[operand] for operand in node.inputs]
        axes = [self.axis[operand] for operand in node.inputs]
        if node in self.attention_of:
            return self.rewrite_attention(node)
        if node in self.in_attention:
            self.axis[node] = None
            if node.op in ("causal_mask", "add", "where"):  # the mask: keys 0..pos
                value = next(new for old, new in zip(node.inputs, operands) if old in self.depends)
                return self.call(node, [value, self.pos], "position_mask", {})
            return self.call(node, operands)
        if all(axis is None for axis in axes):
            self.axis[node] = None
            return self.call(node, operands)
        axis = self.sequence_axis(node, axes)
        attrs = node.attrs
        if node.op == "reshape":
            shape = list(attrs["shape"])
            shape[axis] = 1
            attrs = {**attrs, "shape": tuple(shape)}
        elif node.op == "slice":
            stops = list(attrs["stops"])
            stops[axis] = 1
            attrs = {**attrs, "stops": tuple(stops)}
        new = self.call(node, operands, attrs=attrs)
        expected = tuple(1 if i == axis else size for i, size in enumerate(node.shape))
        if new.shape != expected:
            raise self.fail(node, f"rebuilt for one position it is {new.type}, expected shape {list(expected)}")
        self.axis[node] = axis
        return new

    def sequence_axis(self, node: Node, axes: list[int | None]) -> int:
        """The axis of `node`'s result that runs over the positions; KVCacheError if positions could mix."""
        rank = node.type.rank
        if "elementwise" in ir.get_op(node.op).traits:
            aligned = {rank - operand.type.rank + axis for operand, axis in zip(node.inputs, axes) if axis is not None}
            if len(aligned) != 1:
                raise self.fail(node, "its operands run over the positions along different axes")
            (axis,) = aligned
            for operand, operand_axis in zip(node.inputs, axes):
                at = axis - (rank - operand.type.rank)
                if operand_axis is None and at >= 0 and operand.shape[at] != 1:
                    raise self.fail(node, f"%{operand.name} varies along the sequence axis but is not computed "
                                          "from the tokens (positions are recognized as integer ids 0..S-1 "
                                          "gathered from a table, or rows 0..S-1 sliced from a constant table)")
            return axis
        if node.op == "gather":
            if axes[0] is not None:
                raise self.fail(node, "a table computed from the tokens")
            return axes[1]
        axis = axes[0]
        if any(other is not None for other in axes[1:]):
            raise self.fail(node, "only its first operand may depend on the tokens")
        if node.op in ROW_OPS or (node.op == "softmax" and node.attrs["axis"] == rank - 1):
            if axis == node.inputs[0].type.rank - 1:
                raise self.fail(node, "it reduces over the sequence axis")
            return axis
        if node.op == "reshape":
            reshaped = _reshaped_axis(node.inputs[0].shape, axis, node.shape)
            if reshaped is None:
                raise self.fail(node, f"it does not keep the sequence axis ({axis} of {node.inputs[0].type}) whole")
            return reshaped
        if node.op == "slice":
            bounds = (node.attrs["starts"][axis], node.attrs["stops"][axis], node.attrs["steps"][axis])
            if bounds != (0, node.inputs[0].shape[axis], 1):
                raise self.fail(node, f"it takes part of the sequence axis ({axis} of {node.inputs[0].type})")
            return axis
        if node.op == "transpose":
            return list(node.attrs["perm"]).index(axis)
        raise self.fail(node, "the kv-cache rewrite cannot prove that it keeps positions apart (outside an "
                              "attention it knows ops that act on each position alone)")

    def rewrite_attention(self, node: Node) -> Node:
        """q @ k^T over the K cache with k written at pos, or weights @ v over the V cache."""
        attention = self.attention_of[node]
        is_scores = node is attention.scores
        cache = self.caches[2 * self.layer_of[attention] + (0 if is_scores else 1)]
        value = attention.k if is_scores else attention.v
        for role, operand in (("queries", attention.q), ("keys", attention.k)) if is_scores else (("values", value),):
            if self.axis[operand] != 2:
                raise self.fail(node, f"{attention.name}: its {role} %{operand.name} run over the positions along "
                                      f"axis {self.axis[operand]} of {operand.type}; the rewrite needs q, k and v "
                                      "as [1, heads, positions, head_dim]")
        new = self.new[value]
        rows = [new] if len(cache) == 1 else list(quantized_rows(self.graph, new, f"{cache[0].name}_row"))
        written = [self.graph.call("cache_write", [array, row, self.pos], name=f"{array.name}.written")
                   for array, row in zip(cache, rows, strict=True)]
        read = written[0] if len(written) == 1 else \
            self.graph.call("dequantize", [*written, self.graph.constant(np.int32(0))])  # codes, scales
        self.new_rows.extend(rows)
        self.axis[node] = None if is_scores else 2
        if is_scores:
            return self.call(node, [self.new[attention.q], read], attrs={"transpose_a": False, "transpose_b": True})
        return self.call(node, [self.new[node.inputs[0]], read])


def _scaling(node: Node) -> tuple[float, Node]:
    """(s, x) when node = x * s or x / s for a scalar constant s; (1, node) otherwise."""
    if node.op in SCALE_OPS and is_scalar_constant(node.inputs[1]):
        value = float(node.inputs[1].value.reshape(()))
        return (value if node.op == "mul" else 1.0 / value), node.inputs[0]
    if node.op == "mul" and is_scalar_constant(node.inputs[0]):
        return float(node.inputs[0].value.reshape(())), node.inputs[1]
    return 1.0, node


def _cache_read(node: Node, pos: Node) -> tuple[Node, ...] | None:
    """(cache, new rows) when `node` is cache_write(cache, new, pos); (codes cache, new codes, scales
    cache, new scales) when it is an int8 cache's dequantize(cache_write(codes, ...), cache_write(scales,
    ...), 0); None otherwise."""
    if node.op == "cache_write" and node.inputs[2] is pos:
        return node.inputs[0], node.inputs[1]
    if node.op == "dequantize" and node.inputs[2].op == "constant" and not node.inputs[2].value.any() \
            and all(operand.op == "cache_write" and operand.inputs[2] is pos for operand in node.inputs[:2]):
        codes, scales = node.inputs[:2]
        return codes.inputs[0], codes.inputs[1], scales.inputs[0], scales.inputs[1]
    return None


def fuse_cached_attention(graph: Graph) -> Graph:
    """matmul(softmax(position_mask(matmul(q, cache_write(kc, k, pos)) {transpose_b} * s, pos)),
    cache_write(vc, v, pos)) becomes cached_attention(q, kc, vc, k, v, pos) {scale=s}, whose kernel
    reads the cache rows before pos and the new rows, and copies no cache. For an int8 cache (k and
    v read through dequantize, see _cache_read) the fused op also takes the caches' and rows' scales."""
    for node in list(graph.nodes):
        if node.op != "matmul" or node.attrs["transpose_a"] or node.attrs["transpose_b"]:
            continue
        weights, v = node.inputs
        if weights.op != "softmax" or weights.attrs["axis"] != weights.type.rank - 1 \
                or weights.inputs[0].op != "position_mask":
            continue
        scaled, pos = weights.inputs[0].inputs
        scale, scores = _scaling(scaled)
        if scores.op != "matmul" or not scores.attrs["transpose_b"] or scores.attrs["transpose_a"]:
            continue
        q, k = scores.inputs
        keys, values = _cache_read(k, pos), _cache_read(v, pos)
        if keys is None or values is None or len(keys) != len(values):
            continue
        scales = [*keys[2:], *values[2:]]  # k cache, k rows, v cache, v rows -> the op's order
        with graph.inserting_before(node):
            fused = graph.call("cached_attention", [q, keys[0], values[0], keys[1], values[1], pos,
                                                    *scales[0::2], *scales[1::2]], {"scale": scale})
        node.replace_all_uses_with(fused)
    return eliminate_dead_code(graph)


def rewrite_for_kv_cache(graph: Graph, max_len: int, fuse_attention: bool = True,
                         kv_cache: str = "f32") -> KVCacheGraphs:
    """The prefill and decode graphs of a GPT graph traced on tokens[1, S] (see the module docstring);
    `fuse_attention=False` keeps decode attention as matmul, position_mask, softmax, matmul over max_len
    rows; `kv_cache="int8"` keeps the caches as int8 codes and a scale per row."""
    if kv_cache not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache must be one of {KV_CACHE_DTYPES}, got {kv_cache!r}")
    tokens = tokens_input(graph)
    length = tokens.shape[1]
    graph = batched_matmuls_unflattened(graph)
    if not length <= max_len:
        raise KVCacheError(f"kv-cache: max_len {max_len} is shorter than the traced sequence of {length} tokens")
    attentions, missed = scan(graph)
    if not attentions:
        softmaxes = [reason for node, reason in missed.items() if node.op == "softmax"]
        why = f" ({softmaxes[0]})" if softmaxes else ""
        raise KVCacheError("kv-cache: no causal self-attention (q @ k^T -> causal mask -> softmax -> @ v) in the "
                           f"graph{why}")
    for positions in find_positions(graph).values():
        for table, rows in positions.tables():
            if rows < positions.first + max_len:
                first = f" (positions start at row {positions.first})" if positions.first else ""
                raise KVCacheError(f"kv-cache: the position table %{table.name} has {rows} rows, fewer than "
                                   f"max_len {max_len}{first}")
    decode = _Decode(graph, attentions, max_len, kv_cache, missed)
    decoded = fuse_cached_attention(decode.build()) if fuse_attention else decode.build()
    prefill = graph.copy()
    rows = [prefill.node(node.name) for a in attentions for node in (a.k, a.v)]
    if kv_cache == "int8":
        rows = [array for row in rows for array in quantized_rows(prefill, row, row.name)]
    prefill.outputs = prefill.outputs + rows
    return KVCacheGraphs(prefill, decoded, tuple(attentions), length, max_len,
                         tuple(array.type for array in decode.caches[0]))
