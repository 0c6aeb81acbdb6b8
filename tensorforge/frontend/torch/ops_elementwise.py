"""Converters of the elementwise ATen ops: one IR op each, with PyTorch's type promotion made explicit.

    aten.add.Tensor(x, y, alpha=2)   ->  add(x, mul(y, 2))
    aten.mul.Scalar(x, 0.5)          ->  mul(x, 0.5 : f32[])       (scalars: constants of the result dtype)
    aten.hardtanh(x, 0, 6)           ->  clip(x) {min=0.0, max=6.0}  (relu6)
    aten.rsqrt(x)                    ->  div(1, sqrt(x))
    aten._to_copy(x, dtype=bool)     ->  cast(x) {dtype=bool}
"""

from __future__ import annotations

import numpy as np

from ... import ir
from .context import NodeContext, _torch, converter, ir_dtype

aten = _torch().ops.aten

UNARY = {aten.relu.default: "relu", aten.exp.default: "exp", aten.log.default: "log", aten.sqrt.default: "sqrt",
         aten.abs.default: "abs", aten.neg.default: "neg", aten.tanh.default: "tanh", aten.sigmoid.default: "sigmoid",
         aten.erf.default: "erf", aten.isnan.default: "is_nan"}
ARITHMETIC = {aten.add.Tensor: "add", aten.add.Scalar: "add", aten.sub.Tensor: "sub", aten.sub.Scalar: "sub",
              aten.mul.Tensor: "mul", aten.mul.Scalar: "mul", aten.div.Tensor: "div", aten.div.Scalar: "div",
              aten.maximum.default: "maximum", aten.minimum.default: "minimum",
              aten.pow.Tensor_Tensor: "pow", aten.pow.Tensor_Scalar: "pow", aten.pow.Scalar: "pow"}
COMPARISONS = {}
for _name, _ir in (("eq", "equal"), ("ne", "not_equal"), ("lt", "less"), ("le", "less_equal"), ("gt", "greater"),
                   ("ge", "greater_equal")):
    COMPARISONS[getattr(aten, _name).Tensor] = _ir
    COMPARISONS[getattr(aten, _name).Scalar] = _ir
LOGICAL = {aten.logical_and.default: "logical_and", aten.logical_or.default: "logical_or",
           aten.logical_xor.default: "logical_xor", aten.bitwise_and.Tensor: "logical_and",
           aten.bitwise_or.Tensor: "logical_or", aten.bitwise_xor.Tensor: "logical_xor"}


@converter(*UNARY)
def unary(ctx: NodeContext):
    x = ctx.tensor(0)
    if UNARY[ctx.op] != "is_nan" and x.dtype is not ctx.dtype:  # exp of an int tensor is float
        x = ctx.as_tensor(x, ctx.dtype)
    return ctx.call(UNARY[ctx.op], [x])


@converter(*ARITHMETIC)
def arithmetic(ctx: NodeContext):
    """a op b in the result dtype PyTorch promotes to (an integer pair divides as floats, like torch.div)."""
    dtype = ctx.dtype
    a, b = ctx.as_tensor(ctx.arg(0), dtype), ctx.arg(1)
    op = ARITHMETIC[ctx.op]
    if op == "pow" and not isinstance(b, ir.Node):
        if b == 2:
            return ctx.call("mul", [a, a])
        if b == 1:
            return a
        if b == 0.5:
            return ctx.call("sqrt", [a])
    b = ctx.as_tensor(b, dtype)
    alpha = ctx.kwargs.get("alpha", ctx.arg(2) if op in ("add", "sub") else None)
    if alpha is not None and alpha != 1:
        b = ctx.call("mul", [b, ctx.constant(alpha, dtype)], last=False)
    return ctx.call(op, [a, b])


@converter(aten.rsub.Scalar, aten.rsub.Tensor)
def rsub(ctx: NodeContext):
    """b - alpha * a."""
    dtype = ctx.dtype
    a, b = ctx.as_tensor(ctx.arg(0), dtype), ctx.as_tensor(ctx.arg(1), dtype)
    alpha = ctx.kwargs.get("alpha", ctx.arg(2, default=1))
    if alpha != 1:
        a = ctx.call("mul", [a, ctx.constant(alpha, dtype)], last=False)
    return ctx.call("sub", [b, a])


def _common_dtype(ctx: NodeContext, a, b) -> ir.DType:
    """The dtype PyTorch compares a and b in (a Python float against an integer tensor: float32)."""
    torch = _torch()
    types = []
    for index, value in enumerate((a, b)):
        if isinstance(value, ir.Node):
            meta = ctx.node.args[index].meta.get("val")
            types.append(meta if meta is not None else torch.empty((), dtype=torch.float32))
        else:
            types.append(value)
    return ir_dtype(torch.result_type(*types), f"the operands of {ctx.describe()}")


@converter(*COMPARISONS)
def comparison(ctx: NodeContext):
    a, b = ctx.arg(0), ctx.arg(1)
    dtype = _common_dtype(ctx, a, b)
    return ctx.call(COMPARISONS[ctx.op], [ctx.as_tensor(a, dtype), ctx.as_tensor(b, dtype)])


@converter(*LOGICAL)
def logical(ctx: NodeContext):
    if ctx.op in (aten.bitwise_and.Tensor, aten.bitwise_or.Tensor, aten.bitwise_xor.Tensor) and \
            ctx.dtype is not ir.DType.bool:
        ctx.unsupported(f"bitwise ops are supported on bool tensors only (here {ctx.dtype.name})")
    operands = [_truth(ctx, ctx.arg(i)) for i in range(2)]
    return ctx.call(LOGICAL[ctx.op], operands)


def _truth(ctx: NodeContext, value) -> ir.Node:
    if isinstance(value, ir.Node):
        return value if value.dtype is ir.DType.bool else ctx.as_tensor(value, ir.DType.bool)
    return ctx.constant(bool(value), ir.DType.bool)


@converter(aten.logical_not.default, aten.bitwise_not.default)
def logical_not(ctx: NodeContext):
    if ctx.op is aten.bitwise_not.default and ctx.dtype is not ir.DType.bool:
        ctx.unsupported(f"bitwise_not is supported on bool tensors only (here {ctx.dtype.name})")
    return ctx.call("logical_not", [_truth(ctx, ctx.tensor(0))])


@converter(aten.rsqrt.default)
def rsqrt(ctx: NodeContext):
    x = ctx.as_tensor(ctx.tensor(0), ctx.dtype)
    root = ctx.call("sqrt", [x], last=False)
    return ctx.call("div", [ctx.constant(1.0, ctx.dtype), root])


@converter(aten.reciprocal.default)
def reciprocal(ctx: NodeContext):
    x = ctx.as_tensor(ctx.tensor(0), ctx.dtype)
    return ctx.call("div", [ctx.constant(1.0, ctx.dtype), x])


@converter(aten.gelu.default)
def gelu(ctx: NodeContext):
    approximate = ctx.kwargs.get("approximate", ctx.arg(1, default="none"))
    if approximate not in ("none", "tanh"):
        ctx.unsupported(f"approximate={approximate!r} (supported: 'none', 'tanh')")
    return ctx.call("gelu", [ctx.tensor(0)], {"approximation": "exact" if approximate == "none" else "tanh"})


def _bound(ctx: NodeContext, value, what: str):
    if value is None or isinstance(value, (int, float)):
        return value
    array = ctx.static(value) if isinstance(value, ir.Node) else None
    if array is None or array.size != 1:
        ctx.unsupported(f"the {what} bound must be a number known at import")
    return float(array.reshape(()))


@converter(aten.hardtanh.default, aten.clamp.default, aten.clamp.Tensor, aten.clamp_min.default,
           aten.clamp_max.default)
def clamp(ctx: NodeContext):
    """clip(x) {min, max}: hardtanh(x, 0, 6) is relu6; clamp's bounds must be known at import."""
    x = ctx.tensor(0)
    if ctx.op is aten.hardtanh.default:
        low, high = ctx.arg(1, "min_val", -1.0), ctx.arg(2, "max_val", 1.0)
    elif ctx.op is aten.clamp_min.default:
        low, high = ctx.arg(1, "min"), None
    elif ctx.op is aten.clamp_max.default:
        low, high = None, ctx.arg(1, "max")
    else:
        low, high = ctx.arg(1, "min"), ctx.arg(2, "max")
    low, high = _bound(ctx, low, "min"), _bound(ctx, high, "max")
    if low is None and high is None:
        return x
    return ctx.call("clip", [ctx.as_tensor(x, ctx.dtype)], {"min": low, "max": high})


@converter(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar)
def where(ctx: NodeContext):
    dtype = ctx.dtype
    condition = _truth(ctx, ctx.arg(0))
    return ctx.call("where", [condition, ctx.as_tensor(ctx.arg(1), dtype), ctx.as_tensor(ctx.arg(2), dtype)])


@converter(aten._to_copy.default, aten.clone.default, aten.alias.default, aten.lift_fresh_copy.default,
           aten.detach.default)
def copy(ctx: NodeContext):
    """Copies, aliases and casts: the value itself, or a cast to the result dtype."""
    x = ctx.tensor(0)
    return ctx.as_tensor(x, ctx.dtype)


@converter(aten.full_like.default, aten.zeros_like.default, aten.ones_like.default, aten.empty_like.default)
def full_like(ctx: NodeContext):
    """A constant of x's shape: its value does not depend on x's values."""
    fill = {aten.zeros_like.default: 0, aten.ones_like.default: 1, aten.empty_like.default: 0}.get(ctx.op)
    fill = ctx.arg(1, "fill_value") if fill is None else fill
    return ctx.builder.constant(np.full(ctx.shape, fill, ctx.dtype.numpy), ctx.name)


@converter(aten.leaky_relu.default)
def leaky_relu(ctx: NodeContext):
    """where(x > 0, x, slope * x)."""
    x = ctx.tensor(0)
    slope = ctx.arg(1, "negative_slope", 0.01)
    scaled = ctx.call("mul", [x, ctx.constant(slope, x.dtype)], last=False)
    positive = ctx.call("greater", [x, ctx.constant(0, x.dtype)], last=False)
    return ctx.call("where", [positive, x, scaled])


@converter(aten.log1p.default, aten.expm1.default)
def log1p_expm1(ctx: NodeContext):
    """log(1 + x) and exp(x) - 1, computed as written (not to full precision near 0)."""
    x = ctx.as_tensor(ctx.tensor(0), ctx.dtype)
    one = ctx.constant(1.0, ctx.dtype)
    if ctx.op is aten.log1p.default:
        return ctx.call("log", [ctx.call("add", [x, one], last=False)])
    return ctx.call("sub", [ctx.call("exp", [x], last=False), one])


@converter(aten.elu.default)
def elu(ctx: NodeContext):
    """scale * (x if x > 0 else alpha * (exp(input_scale * x) - 1))."""
    x = ctx.tensor(0)
    alpha, scale, input_scale = (float(ctx.arg(i, name, 1.0)) for i, name in
                                 ((1, "alpha"), (2, "scale"), (3, "input_scale")))
    inner = x if input_scale == 1 else ctx.call("mul", [x, ctx.constant(input_scale, x.dtype)], last=False)
    negative = ctx.call("sub", [ctx.call("exp", [inner], last=False), ctx.constant(1.0, x.dtype)], last=False)
    negative = ctx.call("mul", [negative, ctx.constant(alpha, x.dtype)], last=False)
    positive = ctx.call("greater", [x, ctx.constant(0, x.dtype)], last=False)
    result = ctx.call("where", [positive, x, negative], last=scale == 1)
    return result if scale == 1 else ctx.call("mul", [result, ctx.constant(scale, x.dtype)])
