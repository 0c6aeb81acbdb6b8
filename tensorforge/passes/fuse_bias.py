"""fuse-bias: a constant bias added to a linear's result becomes the linear's own bias.

    %1 = linear(%x, %w) : f32[1,128,768]                  %2 = linear(%x, %w, %b) : f32[1,128,768]
    %2 = add(%bias, %1) : f32[1,128,768]           ->     (%b: the bias as f32[768])

An ONNX MatMul with a 2-D weight imports as a bias-less linear followed by an Add of the bias (the
PyTorch exporter writes `Add(bias, MatMul(x, w))`); as the linear's bias it is added in the GEMM's
epilogue instead of a pass of its own over the result, and the passes after it see a layer: a
skip connection then goes into the epilogue too (fuse-residual), so does an activation
(fuse-activation), and q, k and v with their biases become one linear (fuse-sibling-linears).

Fires when the linear is f32 with no bias, activation or residual yet, only the add reads it, and
the other addend is an f32 constant with one value per output column (shape [N], or [1, ..., 1, N])
that does not broadcast the result to a bigger shape. Exact: the epilogue adds the same two floats.
"""

from __future__ import annotations

from .. import ir
from .registry import register_pass
from .rewrite import Captures, Pattern, rebuilt, rewrite_to_fixpoint

LINEAR = Pattern("linear", name="c", single_use=True,
                 where=lambda c: (c.dtype is ir.DType.f32 and len(c.inputs) == 2 and c.attrs["activation"] is None
                                  and not c.attrs["residual"]))
BIAS = Pattern("constant", name="bias", where=lambda b: b.dtype is ir.DType.f32)


def _with_bias(m: Captures) -> ir.Node | None:
    """The linear with the constant as its bias, when it is one value per column of the result."""
    linear, bias, add = m["c"], m["bias"], m["add"]
    columns = linear.shape[-1]
    if add.type != linear.type or bias.value.size != columns or bias.shape[-1:] != (columns,):
        return None
    vector = bias if bias.type.rank == 1 else linear.graph.constant(bias.value.reshape(columns), bias.name)
    return rebuilt(linear, [*linear.inputs, vector])


RULES = [
    (Pattern("add", [LINEAR, BIAS], name="add"), _with_bias),  # linear(x, w) + b
    (Pattern("add", [BIAS, LINEAR], name="add"), _with_bias),  # b + linear(x, w): PyTorch's ONNX exporter's
]


@register_pass("fuse-bias", opt_level=2, description="add a constant bias in a linear's epilogue",
               after={"fold-constants": "a bias computed from constants is one constant by then"},
               before={"fuse-residual": "the bias first: then the skip connection is the add of the layer's result",
                       "fuse-activation": "the bias first: the activation reads the biased result",
                       "fuse-sibling-linears": "q, k and v take their biases into the one linear"})
def fuse_bias(graph: ir.Graph, ctx=None) -> ir.Graph:
    return rewrite_to_fixpoint(graph, RULES)
