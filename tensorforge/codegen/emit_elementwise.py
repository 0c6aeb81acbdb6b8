"""Emission of elementwise ops: add sub mul div, neg exp log sqrt tanh sigmoid relu gelu, cast.

Every elementwise op is one loop nest over the output shape (coalesced, so a contiguous add is
a single loop LLVM vectorizes); operands are read through broadcast strides:

    %2 = add(%0, %1) : f32[4,8]    with %0 : f32[4,8], %1 : f32[8]
      for i0 in 0..4: for i1 in 0..8:  out[8*i0 + i1] = x0[8*i0 + i1] + x1[i1]
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from . import float_math, scalar
from .kernel import Kernel
from .layout import broadcast_strides, coalesce, contiguous_strides
from .llvm_utils import llvm_type, load_element, store_element, strided_loops

Compute = Callable[[ir.IRBuilder, list[ir.Value]], ir.Value]


def map_elements(kernel: Kernel, compute: Compute) -> None:
    """out[index] = compute(operand values at index), over the output shape with broadcasting."""
    node = kernel.node
    builder = kernel.builder
    if node.type.size == 0:
        return
    strides = [broadcast_strides(operand.shape, node.shape) for operand in node.inputs]
    shape, strides = coalesce(node.shape, [*strides, contiguous_strides(node.shape)])
    with strided_loops(builder, shape, [(s, 0) for s in strides], "i") as offsets:
        values = [load_element(builder, pointer, offset, llvm_type(operand.dtype), f"x{position}")
                  for position, (pointer, offset, operand) in enumerate(zip(kernel.inputs, offsets, node.inputs))]
        store_element(builder, compute(builder, values), kernel.output, offsets[-1])


BINARY = {"add": scalar.add, "sub": scalar.sub, "mul": scalar.mul, "div": scalar.divide}


def emit_binary(kernel: Kernel) -> None:
    """add, sub, mul, div: numpy broadcasting, integers wrap, bool + is `or` and bool * is `and`."""
    operation = BINARY[kernel.node.op]
    dtype = kernel.dtype

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        return operation(builder, dtype, values[0], values[1], name=kernel.node.op)

    map_elements(kernel, compute)


FLOAT_UNARY = {"exp": float_math.exp, "log": float_math.log, "sqrt": float_math.sqrt,
               "tanh": float_math.tanh, "sigmoid": float_math.sigmoid}


def emit_float_unary(kernel: Kernel) -> None:
    """exp, log, sqrt, tanh, sigmoid on f32."""
    function = FLOAT_UNARY[kernel.node.op]

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        return function(builder, values[0], name=kernel.node.op)

    map_elements(kernel, compute)


def emit_gelu(kernel: Kernel) -> None:
    """gelu with the node's approximation: "tanh", "sigmoid" or "exact" (erf)."""
    function = float_math.GELU[kernel.node.attrs["approximation"]]

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        return function(builder, values[0])

    map_elements(kernel, compute)


def emit_neg(kernel: Kernel) -> None:
    """-x; unsigned integers wrap around."""
    dtype = kernel.dtype

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        return scalar.negate(builder, dtype, values[0], name="neg")

    map_elements(kernel, compute)


def emit_relu(kernel: Kernel) -> None:
    """max(x, 0); NaN stays NaN."""
    dtype = kernel.dtype

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        return scalar.relu(builder, dtype, values[0], name="relu")

    map_elements(kernel, compute)


def emit_cast(kernel: Kernel) -> None:
    """Convert each element to the node's dtype (see scalar.convert for the rules)."""
    source, target = kernel.dtype, kernel.node.dtype

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        return scalar.convert(builder, values[0], source, target, name="cast")

    map_elements(kernel, compute)
