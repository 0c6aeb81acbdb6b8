"""simplify: algebraic identities as a rule table, applied to a fixpoint.

    %1 = mul(%x, %one) : f32[4,8]                   (%one: a constant of ones)
    %2 = reshape(%1) {shape=[32]} : f32[32]    ->   %3 = reshape(%x) {shape=[8,4]} : f32[8,4]
    %3 = reshape(%2) {shape=[8,4]} : f32[8,4]

"1" and "0" are constants whose every element is 1 (or 0), of any shape. A rule only fires when
the replacement has the node's exact type: `x * ones` where the ones broadcast `x` to a bigger
shape stays. Every rewrite is exact (x*1, x/1, -(-x) give x bit for bit, NaN included), except
that x + 0 -> x keeps a -0.0 where IEEE addition gives +0.0; the two compare equal.
Nodes a rewrite leaves unused are erased; nodes that were dead before are left to eliminate-dead-code.
"""

from __future__ import annotations

from .. import ir
from .manager import PassContext
from .registry import register_pass
from .rewrite import Captures, Pattern, is_filled_with, rewrite_to_fixpoint

X = Pattern(name="x")
VIEWS = ("reshape", "flatten")


def _filled(value: float) -> Pattern:
    """A constant whose every element is `value`."""
    return Pattern("constant", where=lambda node: is_filled_with(node, value))


ONES, ZEROS = _filled(1), _filled(0)


def _op(op: str | tuple[str, ...], *operands: Pattern, where=None) -> Pattern:
    """A rule's root: `op` over `operands`, bound to "op"."""
    return Pattern(op, operands, name="op", where=where)


def _x(m: Captures) -> ir.Node | None:
    """x, when it can stand for the matched node (it has the same type)."""
    return m["x"] if m["x"].type == m["op"].type else None


def _reshaped_x(m: Captures) -> ir.Node:
    """x reshaped to the matched node's shape."""
    return m["x"].graph.call("reshape", [m["x"]], {"shape": m["op"].shape})


def _is_identity_perm(node: ir.Node) -> bool:
    return node.attrs["perm"] == tuple(range(len(node.inputs[0].shape)))


def _composed(m: Captures) -> ir.Node:
    """transpose(transpose(x, p1), p2) -> transpose(x, p1[p2]), or x when that is the identity."""
    perm = tuple(m["inner"].attrs["perm"][axis] for axis in m["op"].attrs["perm"])
    if perm == tuple(range(len(perm))):
        return m["x"]
    return m["x"].graph.call("transpose", [m["x"]], {"perm": perm})


def _within(outer: ir.Node, inner: ir.Node) -> bool:
    """The bounds of clip `outer` contain those of clip `inner` (a missing bound is unbounded)."""
    low, high = outer.attrs["min"], outer.attrs["max"]
    return ((low is None or (inner.attrs["min"] is not None and low <= inner.attrs["min"]))
            and (high is None or (inner.attrs["max"] is not None and high >= inner.attrs["max"])))


def _clip_inside_clip(m: Captures) -> ir.Node | None:
    """clip(clip(x, a, b), c, d) -> clip(x, a, b) when [c, d] contains [a, b]: the outer clip changes nothing."""
    return m["inner"] if _within(m["op"], m["inner"]) else None


RULES = [
    (_op("mul", X, ONES), _x),                                      # x * 1 -> x
    (_op("mul", ONES, X), _x),                                      # 1 * x -> x
    (_op("add", X, ZEROS), _x),                                     # x + 0 -> x
    (_op("add", ZEROS, X), _x),                                     # 0 + x -> x
    (_op("sub", X, ZEROS), _x),                                     # x - 0 -> x
    (_op("div", X, ONES), _x),                                      # x / 1 -> x
    (_op("neg", Pattern("neg", [X])), _x),                          # -(-x) -> x
    (_op("relu", Pattern("relu", name="inner")), lambda m: m["inner"]),  # relu(relu(x)) -> relu(x)
    (_op(VIEWS, X), _x),                                            # reshape/flatten to x's own shape -> x
    (_op(VIEWS, Pattern(VIEWS, [X])), _reshaped_x),                 # reshape(reshape/flatten(x)) -> reshape(x)
    (_op("cast", X), _x),                                           # cast to the same dtype -> x
    (_op("transpose", X, where=_is_identity_perm), _x),             # transpose by the identity -> x
    (_op("transpose", Pattern("transpose", [X], name="inner")), _composed),  # transpose(transpose(x)) -> one or x
    (_op("clip", Pattern("clip", name="inner")), _clip_inside_clip),  # clip(clip(x, 0, 6), 0, 8) -> clip(x, 0, 6)
]


@register_pass("simplify", opt_level=1, description="algebraic identities: x*1, x+0, reshape/transpose chains",
               before={"fold-constants": "simplify is cheap, and leaves fewer nodes to every pass after it"})
def simplify(graph: ir.Graph, ctx: PassContext | None = None) -> ir.Graph:
    """Apply RULES to every live node until none fires."""
    return rewrite_to_fixpoint(graph, RULES)
