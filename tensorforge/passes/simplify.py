"""simplify: algebraic identities as a rule table, applied to a fixpoint.

    %1 = mul(%x, %one) : f32[4,8]                   (%one: a constant of ones)
    %2 = reshape(%1) {shape=[32]} : f32[32]    ->   %3 = reshape(%x) {shape=[8,4]} : f32[8,4]
    %3 = reshape(%2) {shape=[8,4]} : f32[8,4]

A rule only fires when the replacement has the node's exact type: `x * ones` where the ones
broadcast `x` to a bigger shape stays. Note x + 0 -> x keeps -0.0 where IEEE addition gives +0.0;
the values compare equal.
"""

from __future__ import annotations

from .. import ir
from .registry import register_pass
from .rewrite import is_filled_with, rewrite_to_fixpoint


def _same(node: ir.Node, candidate: ir.Node) -> ir.Node | None:
    """`candidate` if it can stand for `node` (same type), else None."""
    return candidate if candidate.type == node.type else None


def _identity_operand(value: float):
    """x op c -> x for a constant c filled with `value` (the right operand)."""
    def rule(node: ir.Node) -> ir.Node | None:
        x, c = node.inputs
        return _same(node, x) if is_filled_with(c, value) else None

    return rule


def _identity_left(value: float):
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


def _reshape_chain(node: ir.Node) -> ir.Node | None:
    """reshape(reshape|flatten(y)) -> reshape(y); a reshape to the operand's own shape -> operand."""
    inner = node.inputs[0]
    if inner.shape == node.shape:
        return inner
    if inner.op in ("reshape", "flatten"):
        return node.graph.call("reshape", [inner.inputs[0]], {"shape": node.shape})
    return None


def _no_op(node: ir.Node) -> ir.Node | None:
    """flatten / cast / transpose that leaves shape, dtype and element order unchanged -> operand."""
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
    ("reshape", _reshape_chain),        # reshape(reshape(x)) -> reshape(x); reshape to same shape -> x
    ("flatten", _no_op),                # flatten that changes nothing -> x
    ("cast", _no_op),                   # cast to the same dtype -> x
    ("transpose", _no_op),              # transpose by the identity -> x
    ("transpose", _transpose_chain),    # transpose(transpose(x)) -> one transpose (or x)
]


@register_pass("simplify", opt_level=1, description="algebraic identities: x*1, x+0, reshape/transpose chains")
def simplify(graph: ir.Graph, ctx=None) -> ir.Graph:
    return rewrite_to_fixpoint(graph, RULES)
