"""Finding what the kv-cache rewrite needs in a graph traced on tokens[1, S]: its causal
self-attentions and where it reads the positions 0..S-1 (kv_cache.py then rewrites them).

    attentions = find_attentions(graph)    # [Attention(scores, chain, softmax, output), ...]
    positions = find_positions(graph)      # {node: Positions(node, "ids" | "rows", axis, first)}

Attention is found by its dataflow, not by module names: a softmax over the last axis whose
operand comes from q @ k^T (`matmul(q, k) {transpose_b}`, or `matmul(q, transpose(k))` swapping k's
last two axes, as the PyTorch importer writes scaled_dot_product_attention) through multiplications
or divisions by a scalar constant and a causal mask (`causal_mask`; an added constant that is 0 on
and below the diagonal and -inf above it; or `where(keep, scores, -inf)` with a constant lower
triangular `keep`; masks computed from constants count as constants, and a finite fill below
-1e30, as Hugging Face's eager attention uses, as -inf), and whose only user is `matmul(p, v)`.
PyTorch's batched matmuls that flatten [1, H, S, D] to [H, S, D] and back are first read as rank-4
matmuls (batched_matmuls_unflattened). A softmax that is not one is remembered with the nodes its
walk went through and why it stopped (scan), so the rewrite's errors can name them.

Positions are read from the graph's constants: integer ids c + 0..S-1 gathered from a table
(nn.GPT's and Hugging Face GPT-2's `arange(S)`, shaped [S] or [1, S]), or a slice of rows 0..S-1
of a constant table (a learned position parameter `table[:, :S]`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ir
from ..ir import Graph, Node
from ..passes.absorb_transpose import swaps_last_two_axes
from ..passes.dead_code import eliminate_dead_code

SCALE_OPS = ("mul", "div")  # scores scaled by a scalar constant on the way to the mask
MASKED = -1e30  # a mask value at or below this is never attended: its exp is 0 next to any finite score


class KVCacheError(ValueError):
    """The graph is not one the kv-cache rewrite can prove causal and position-wise."""


@dataclass(frozen=True)
class Attention:
    """One causal self-attention found in the traced graph: q @ k^T ... softmax ... @ v."""

    scores: Node  # matmul(q, k) {transpose_b=true}, or matmul(q, transpose(k)) swapping k's last two axes
    chain: tuple[Node, ...]  # from the scores to the softmax's operand: scalings and the mask
    softmax: Node
    output: Node  # matmul(softmax, v)

    @property
    def q(self) -> Node:
        return self.scores.inputs[0]

    @property
    def k(self) -> Node:
        keys = self.scores.inputs[1]
        return keys if self.scores.attrs["transpose_b"] else keys.inputs[0]

    @property
    def v(self) -> Node:
        return self.output.inputs[1]

    @property
    def name(self) -> str:
        """How messages name it: its output, matmul(weights, v) (`scaled_dot_product_attention_1`)."""
        return f"attention %{self.output.name}"



def token_dependent(graph: Graph) -> set[Node]:
    """The values of `graph` computed from its inputs."""
    depends: set[Node] = set()
    for node in graph.nodes:
        if node.op == "input" or any(operand in depends for operand in node.inputs):
            depends.add(node)
    return depends


class _Known:
    """The values of a graph known at compile time: computed from constants only (a mask built by where
    or expand of constants, as PyTorch exports Hugging Face's), evaluated by the op references once."""

    def __init__(self, graph: Graph):
        self.depends = token_dependent(graph)
        self.values: dict[Node, np.ndarray] = {}

    def __call__(self, node: Node) -> np.ndarray | None:
        if node in self.depends:
            return None
        if node not in self.values:
            self.values[node] = node.value if node.op == "constant" else \
                np.asarray(ir.evaluate(node.op, [self(operand) for operand in node.inputs], node.attrs))
        return self.values[node]


def is_scalar_constant(node: Node) -> bool:
    return node.op == "constant" and node.value.size == 1


def _is_masked_fill(node: Node, known: _Known) -> bool:
    """A scalar known at compile time that masks what it replaces: -inf, or a finite value below MASKED."""
    value = known(node) if node.type.size == 1 else None
    return value is not None and node.dtype.is_float and float(value.reshape(())) <= MASKED


def _lower_triangle(keep: np.ndarray, queries: int, keys: int) -> bool:
    """Whether bool `keep`, broadcast to [queries, keys], is true exactly on and below the diagonal."""
    if keep.ndim < 2 or keep.shape[-2:] != (queries, keys) or any(size != 1 for size in keep.shape[:-2]):
        return False
    return bool(np.array_equal(keep.reshape(queries, keys), np.tril(np.ones((queries, keys), bool))))


def _is_causal_additive(mask: Node, queries: int, keys: int, known: _Known) -> bool:
    """Whether `mask` (known at compile time) broadcast to [queries, keys] is 0 on and below the diagonal,
    -inf (or below MASKED) above."""
    value = known(mask)
    if value is None or not mask.dtype.is_float:
        return False
    return _lower_triangle(value == 0, queries, keys) and bool(np.all((value == 0) | (value <= MASKED)))


def _is_scores(node: Node) -> bool:
    """q @ k^T: matmul(q, k) {transpose_b}, or matmul(q, transpose(k)) with k's last two axes swapped."""
    if node.op != "matmul" or node.attrs["transpose_a"]:
        return False
    return node.attrs["transpose_b"] or swaps_last_two_axes(node.inputs[1])


def _chain_step(node: Node, known: _Known) -> int | None:
    """The operand the walk from a softmax towards q @ k^T follows through `node` (a scaling by a scalar
    constant or a causal mask); None when `node` is neither. KVCacheError for a mask that is not causal."""
    constants = [i for i, operand in enumerate(node.inputs) if operand.op == "constant"]
    fixed = [i for i, operand in enumerate(node.inputs) if operand not in known.depends]
    if node.op == "causal_mask":
        return 0
    if node.op in SCALE_OPS and constants == [1] and is_scalar_constant(node.inputs[1]):
        return 0
    if node.op == "mul" and constants == [0] and is_scalar_constant(node.inputs[0]):
        return 1
    if node.op == "add" and len(fixed) == 1:
        mask = node.inputs[fixed[0]]
        if not _is_causal_additive(mask, *node.shape[-2:], known):
            raise KVCacheError(f"kv-cache: the mask %{mask.name} added to the attention scores at %{node.name} "
                               "is not lower-triangular (0 on and below the diagonal, -inf above): attention "
                               "that sees later positions cannot use a KV cache")
        return 1 - fixed[0]
    if node.op == "where" and 0 in fixed and len(fixed) == 2:
        follow = 1 if 2 in fixed else 2
        fill = node.inputs[3 - follow]
        condition = known(node.inputs[0]).astype(bool)
        keep = condition if follow == 1 else ~condition
        if not _is_masked_fill(fill, known) or not _lower_triangle(keep, *node.shape[-2:]):
            raise KVCacheError(f"kv-cache: the mask %{node.inputs[0].name} that %{node.name} = where(...) applies "
                               "to the attention scores does not keep exactly the keys on and below the diagonal "
                               "(and fill the rest with -inf): attention that sees later positions cannot use a "
                               "KV cache")
        return follow
    return None


def _attention_of(softmax: Node, known: _Known) -> tuple[Attention | None, str]:
    """The attention around `softmax`, or (None, why not) when its operand does not come from q @ k^T;
    KVCacheError when it does but the attention cannot be proven causal."""
    chain, node, masked = [], softmax.inputs[0], False
    while not _is_scores(node):
        follow = _chain_step(node, known)
        if follow is None:
            return None, (f"its scores come from %{node.name} = {node.op}(...), which is neither q @ k^T (a matmul "
                          "reading k transposed), a scaling by a scalar constant nor a causal mask")
        masked = masked or node.op in ("causal_mask", "add", "where")
        chain.append(node)
        node = node.inputs[follow]
    scores = node
    users = list(softmax.users)
    label = f"attention %{users[0].name}" if len(users) == 1 else f"the attention at %{softmax.name}"
    if not masked:
        raise KVCacheError(f"kv-cache: {label}: no causal mask between %{scores.name} = q @ k^T and the softmax "
                           f"%{softmax.name}: bidirectional attention cannot use a KV cache")
    if softmax.attrs["axis"] != softmax.type.rank - 1:
        raise KVCacheError(f"kv-cache: {label}: the softmax %{softmax.name} must be over the keys (last axis)")
    if len(users) != 1 or users[0].op != "matmul" or users[0].inputs[0] is not softmax \
            or users[0].attrs["transpose_a"] or users[0].attrs["transpose_b"]:
        raise KVCacheError(f"kv-cache: {label}: the attention weights %{softmax.name} must feed exactly one "
                           "matmul(weights, v)")
    for node in (scores, *chain):
        if len(node.users) != 1:
            raise KVCacheError(f"kv-cache: {label}: the attention scores %{node.name} have other users than the "
                               "softmax")
    return Attention(scores, tuple(reversed(chain)), softmax, users[0]), ""


def scan(graph: Graph) -> tuple[list[Attention], dict[Node, str]]:
    """Every causal self-attention of `graph`, in graph order; and for each softmax that is not one, the
    nodes its walk towards q @ k^T went through, with the reason it stopped (for error messages)."""
    found, missed, known = [], {}, _Known(graph)
    for node in graph.nodes:
        if node.op == "softmax":
            attention, why = _attention_of(node, known)
            if attention is not None:
                found.append(attention)
                continue
            walked, step = [node], node.inputs[0]
            while _chain_step(step, known) is not None:
                walked.append(step)
                step = step.inputs[_chain_step(step, known)]
            walked.append(step)
            missed.update((seen, f"the softmax %{node.name} is not recognized as causal attention: {why}")
                          for seen in walked)
    return found, missed


def _dropped_leading_one(node: Node) -> Node | None:
    """x when `node` = reshape(x) only drops x's leading axis of size 1 ([1, H, S, D] -> [H, S, D])."""
    if node.op != "reshape" or node.inputs[0].shape != (1, *node.shape):
        return None
    return node.inputs[0]


def batched_matmuls_unflattened(graph: Graph) -> Graph:
    """A copy of `graph` in which reshape(matmul(reshape(a), reshape(b))) that only drop and restore a
    leading axis of size 1 (PyTorch's bmm of [1, H, S, D] attention, as Hugging Face's eager attention
    exports) is matmul(a, b) on the rank-4 values, so the attention reads as q @ k^T ... @ v."""
    graph = graph.copy()
    changed = False
    for node in list(graph.nodes):
        if node.op != "matmul" or len(node.users) != 1:
            continue
        operands = [_dropped_leading_one(operand) for operand in node.inputs]
        (user,) = node.users
        if None in operands or user.op != "reshape" or user.shape != (1, *node.shape) or node in graph.outputs:
            continue
        with graph.inserting_before(user):
            unflattened = graph.call("matmul", operands, node.attrs, name=node.name)
        user.replace_all_uses_with(unflattened)
        changed = True
    return eliminate_dead_code(graph) if changed else graph


def find_attentions(graph: Graph) -> list[Attention]:
    """Every causal self-attention of `graph`, in graph order (see the module docstring)."""
    return scan(graph)[0]


def tokens_input(graph: Graph) -> Node:
    if len(graph.inputs) != 1 or graph.inputs[0].type.rank != 2 or graph.inputs[0].shape[0] != 1 \
            or graph.inputs[0].dtype.is_float:
        types = ", ".join(str(node.type) for node in graph.inputs)
        raise KVCacheError(f"kv-cache needs a graph of one integer input tokens[1, S], got inputs ({types})")
    return graph.inputs[0]


@dataclass(frozen=True)
class Positions:
    """Where the traced graph reads positions 0..S-1 (decode reads position `pos` instead): integer
    ids `first` + 0..S-1 gathered from tables (kind "ids", the node a constant), or rows 0..S-1 of a
    constant table sliced along `axis` (kind "rows", the node a slice)."""

    node: Node
    kind: str
    axis: int  # the node's axis that runs over the positions
    first: int = 0

    def tables(self) -> list[tuple[Node, int]]:
        """Each table the positions index, with its number of rows."""
        if self.kind == "rows":
            return [(self.node.inputs[0], self.node.inputs[0].shape[self.axis])]
        return [(user.inputs[0], user.inputs[0].shape[0]) for user in self.node.users]


def _sequence_axis_of_shape(shape: tuple[int, ...], length: int) -> int | None:
    """The one axis of `shape` of size `length`, every other of size 1 (the last, if all are 1)."""
    axes = [i for i, size in enumerate(shape) if size != 1]
    if not shape or any(shape[i] != length for i in axes) or len(axes) > 1:
        return None
    return axes[0] if axes else len(shape) - 1


def _positions_of(node: Node, length: int) -> Positions | None:
    if node.op == "constant" and node.value.dtype.kind in "iu" and node.users \
            and all(user.op == "gather" and user.inputs[1] is node and user.inputs[0] is not node
                    for user in node.users):
        axis = _sequence_axis_of_shape(node.shape, length)
        ids = node.value.reshape(-1).astype(np.int64)
        if axis is not None and np.array_equal(ids - ids[0], np.arange(length)) and ids[0] >= 0:
            return Positions(node, "ids", axis, int(ids[0]))
    if node.op == "slice" and node.inputs[0].op == "constant":
        table = node.inputs[0].shape
        cut = [i for i, (start, stop, step, size) in enumerate(zip(node.attrs["starts"], node.attrs["stops"],
                                                                    node.attrs["steps"], table))
               if (start, stop, step) != (0, size, 1)]
        if len(cut) == 1 and node.shape[cut[0]] == length and node.attrs["starts"][cut[0]] == 0 \
                and node.attrs["steps"][cut[0]] == 1 and all(size == 1 for size in table[:cut[0]]):
            return Positions(node, "rows", cut[0])
    return None


def find_positions(graph: Graph) -> dict[Node, Positions]:
    """Where a graph traced on tokens[1, S] reads the positions 0..S-1 (see Positions)."""
    length = tokens_input(graph).shape[1]
    found = (_positions_of(node, length) for node in graph.nodes)
    return {positions.node: positions for positions in found if positions is not None}
