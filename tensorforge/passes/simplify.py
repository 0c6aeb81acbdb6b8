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
from .rewrite import Rule, is_filled_with, rewrite_to_fixpoint


def _same(node: ir.Node, candidate: ir.Node) -> ir.Node | None:
    """`candidate` if it can stand for `node` (same type), else None."""
    return candidate if candidate.type == node.type else None


def _identity_operand(value: float) -> Rule:
    """x op c -> x for a constant c filled with `value` (the right operand)."""
    def rule(node: ir.Node) -> ir.Node | None:
        x, c = node.inputs
        return _same(node, x) if is_filled_with(c, value) else None

    return rule


def _identity_left(value: float) -> Rule:
    """c op x -> x for a constant c filled with `value` (the left operand)."""
    def rule(node: ir.Node) -> ir.Node | None:
        c, x = node.inputs
        return _same(node, x) if is_filled_with(c, value) else None

    return rule


def _involution(node: ir.Node) -> ir.Node | None:
    """f(f(x)) -> x for f its own inverse (neg)."""
    inner = node.inputs[0]
    return _same(node, inner.inputs[0]) if inner.op == node.op else None


def _idempotent(node: ir.Node) -> ir.Node | None:
    """f(f(x)) -> f(x) for f idempotent (relu)."""
    inner = node.inputs[0]
    return inner if inner.op == node.op else None


def _view_chain(node: ir.Node) -> ir.Node | None:
    """A reshape/flatten to the operand's own shape -> operand; of a reshape/flatten(y) -> reshape(y)."""
    inner = node.inputs[0]
    if inner.shape == node.shape:
        return inner
    if inner.op in ("reshape", "flatten"):
        return node.graph.call("reshape", [inner.inputs[0]], {"shape": node.shape})
    return None


def _no_op(node: ir.Node) -> ir.Node | None:
    """cast to the operand's own dtype, transpose by the identity permutation -> operand."""
    x = node.inputs[0]
    if node.op == "transpose" and node.attrs["perm"] != tuple(range(len(x.shape))):
        return None
    return _same(node, x)


def _transpose_chain(node: ir.Node) -> ir.Node | None:
    """transpose(transpose(y, p1), p2) -> transpose(y, p1[p2]) (or y when that is the identity)."""
    inner = node.inputs[0]
    if inner.op != "transpose":
        return None
    composed = tuple(inner.attrs["perm"][axis] for axis in node.attrs["perm"])
    if composed == tuple(range(len(composed))):
        return inner.inputs[0]
    return node.graph.call("transpose", [inner.inputs[0]], {"perm": composed})


RULES = [
    ("mul", _identity_operand(1)),      # x * 1 -> x
    ("mul", _identity_left(1)),         # 1 * x -> x
    ("add", _identity_operand(0)),      # x + 0 -> x
    ("add", _identity_left(0)),         # 0 + x -> x
    ("sub", _identity_operand(0)),      # x - 0 -> x
    ("div", _identity_operand(1)),      # x / 1 -> x
    ("neg", _involution),               # -(-x) -> x
    ("relu", _idempotent),              # relu(relu(x)) -> relu(x)
    ("reshape", _view_chain),           # reshape(reshape(x)) -> reshape(x); reshape to x's own shape -> x
    ("flatten", _view_chain),           # flatten(reshape(x)) -> reshape(x); flatten that changes nothing -> x
    ("cast", _no_op),                   # cast to the same dtype -> x
    ("transpose", _no_op),              # transpose by the identity -> x
    ("transpose", _transpose_chain),    # transpose(transpose(x)) -> one transpose (or x)
]


@register_pass("simplify", opt_level=1, description="algebraic identities: x*1, x+0, reshape/transpose chains")
def simplify(graph: ir.Graph, ctx: PassContext | None = None) -> ir.Graph:
    """Apply RULES to every live node until none fires."""
    return rewrite_to_fixpoint(graph, RULES)
