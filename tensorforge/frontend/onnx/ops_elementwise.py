"""Converters of the elementwise ONNX ops: most are one IR op; the rest are short compositions.

    Relu(x)                   ->  relu(x)
    Clip(x, 0, 6)             ->  clip(x) {min=0.0, max=6.0}          (bounds must be known at import)
    HardSwish(x)              ->  mul(x, clip(x * 1/6 + 0.5) {min=0, max=1})
    Pow(x, 2)                 ->  mul(x, x)                           (as numpy computes x ** 2)
    Div(a, b) of int64 shapes ->  a constant: truncated division computed at import
"""

from __future__ import annotations

import numpy as np

from ... import ir
from .importer import NodeContext, converter
from .inputs import element_dtype

UNARY = {"Relu": "relu", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Abs": "abs", "Neg": "neg", "Tanh": "tanh",
         "Sigmoid": "sigmoid", "Erf": "erf", "Not": "logical_not", "IsNaN": "is_nan"}
BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Equal": "equal", "Less": "less", "LessOrEqual": "less_equal",
          "Greater": "greater", "GreaterOrEqual": "greater_equal", "And": "logical_and", "Or": "logical_or",
          "Xor": "logical_xor"}
VARIADIC = {"Min": "minimum", "Max": "maximum", "Sum": "add"}


@converter(*UNARY)
def unary(ctx: NodeContext):
    return ctx.call(UNARY[ctx.op_type], [ctx.input(0)])


@converter(*BINARY)
def binary(ctx: NodeContext):
    return ctx.call(BINARY[ctx.op_type], [ctx.input(0), ctx.input(1)])


@converter(*VARIADIC, "Mean")
def variadic(ctx: NodeContext):
    """Min, Max, Sum, Mean of any number of inputs, folded pairwise left to right."""
    operands = [ctx.input(i) for i in range(len(ctx.inputs))]
    op = VARIADIC.get(ctx.op_type, "add")
    result = operands[0]
    for index, operand in enumerate(operands[1:], start=1):
        last = index == len(operands) - 1 and ctx.op_type != "Mean"
        result = ctx.call(op, [result, operand], last=last)
    if ctx.op_type == "Mean":
        count = ctx.builder.constant(np.asarray(len(operands), result.dtype.numpy))
        result = ctx.call("div", [result, count])
    elif len(operands) == 1:
        result = ctx.call("mul", [result, ctx.builder.constant(np.ones((), result.dtype.numpy))])
    return result


@converter("Div")
def div(ctx: NodeContext):
    """Float division; integer division (ONNX truncates toward zero) only of values known at import."""
    a, b = ctx.input(0), ctx.input(1)
    if a.dtype.is_float:
        return ctx.call("div", [a, b])
    left, right = ctx.builder.static(a), ctx.builder.static(b)
    if left is None or right is None:
        ctx.unsupported(f"integer division of {a.type} by {b.type} computed at run time (the IR divides floats; "
                        "integer Div is supported on shapes known at import)")
    with np.errstate(all="ignore"):
        quotient = np.trunc(left.astype(np.float64) / right.astype(np.float64))
    return ctx.builder.constant(quotient.astype(left.dtype), ctx.name)


@converter("Pow")
def power(ctx: NodeContext):
    """x ** y; an exponent 1, 2 or 0.5 known at import becomes x, x * x or sqrt(x) (numpy's exact forms)."""
    x, y = ctx.input(0), ctx.input(1)
    exponent = ctx.builder.static(y)
    if exponent is not None and exponent.size == 1 and y.type.rank <= x.type.rank:
        value = float(exponent.reshape(()))
        if value == 1.0:
            return x
        if value == 2.0:
            return ctx.call("mul", [x, x])
        if value == 0.5:
            return ctx.call("sqrt", [x])
    if y.dtype != x.dtype:
        y = ctx.call("cast", [y], {"dtype": x.dtype}, last=False)
    return ctx.call("pow", [x, y])


def _bound(ctx: NodeContext, index: int, name: str):
    value = ctx.optional_static(index, f"the {name} bound")
    return None if value is None else float(value.reshape(()))


@converter("Clip")
def clip(ctx: NodeContext):
    """Clip(x, min, max): attributes before opset 11, optional inputs after (known at import)."""
    if ctx.version < 11:
        low, high = ctx.attr("min"), ctx.attr("max")
    else:
        low, high = _bound(ctx, 1, "min"), _bound(ctx, 2, "max")
    if low is None and high is None:
        return ctx.input(0)
    return ctx.call("clip", [ctx.input(0)], {"min": low, "max": high})


def _hard_sigmoid(ctx: NodeContext, x: ir.Node, alpha: float, beta: float, last: bool) -> ir.Node:
    """clip(alpha * x + beta, 0, 1)."""
    scaled = ctx.call("mul", [x, ctx.builder.constant(np.float32(alpha))], last=False)
    shifted = ctx.call("add", [scaled, ctx.builder.constant(np.float32(beta))], last=False)
    return ctx.call("clip", [shifted], {"min": 0.0, "max": 1.0}, last=last)


@converter("HardSigmoid")
def hard_sigmoid(ctx: NodeContext):
    return _hard_sigmoid(ctx, ctx.input(0), ctx.attr("alpha", 0.2), ctx.attr("beta", 0.5), last=True)


@converter("HardSwish")
def hard_swish(ctx: NodeContext):
    """x * HardSigmoid(x) with alpha 1/6, beta 0.5."""
    x = ctx.input(0)
    return ctx.call("mul", [x, _hard_sigmoid(ctx, x, 1 / 6, 0.5, last=False)])


@converter("LeakyRelu")
def leaky_relu(ctx: NodeContext):
    """where(x >= 0, x, alpha * x)."""
    x = ctx.input(0)
    zero = ctx.builder.constant(np.float32(0))
    scaled = ctx.call("mul", [x, ctx.builder.constant(np.float32(ctx.attr("alpha", 0.01)))], last=False)
    return ctx.call("where", [ctx.call("greater_equal", [x, zero], last=False), x, scaled])


@converter("Gelu")
def gelu(ctx: NodeContext):
    approximate = ctx.check("approximate", ("none", "tanh"), "none")
    return ctx.call("gelu", [ctx.input(0)], {"approximation": "exact" if approximate == "none" else "tanh"})


@converter("Reciprocal")
def reciprocal(ctx: NodeContext):
    x = ctx.input(0)
    return ctx.call("div", [ctx.builder.constant(np.ones((), x.dtype.numpy)), x])


@converter("Where")
def where(ctx: NodeContext):
    return ctx.call("where", [ctx.input(0), ctx.input(1), ctx.input(2)])


@converter("Cast")
def cast(ctx: NodeContext):
    dtype = element_dtype(ctx.attr("to"), f"the target type of {ctx.describe()}")
    return ctx.call("cast", [ctx.input(0)], {"dtype": dtype})


@converter("Identity")
def identity(ctx: NodeContext):
    return ctx.input(0)


@converter("Dropout")
def dropout(ctx: NodeContext):
    """Inference: the input as it is; the mask output (if asked for) all true."""
    if ctx.version >= 12 and ctx.optional(2) is not None:
        training = ctx.builder.static(ctx.input(2))
        if training is None or bool(training):
            ctx.unsupported("training_mode must be a constant false (inference)")
    x = ctx.input(0)
    if ctx.output_count > 1 and ctx.node.output[1]:
        return [x, ctx.builder.constant(np.ones(x.shape, bool))]
    return x
