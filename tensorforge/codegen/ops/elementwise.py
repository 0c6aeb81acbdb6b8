"""Emission of elementwise ops: add sub mul div, neg exp log sqrt tanh sigmoid relu gelu, cast.

Every elementwise op is one loop nest over the output shape (coalesced, so a contiguous add is
a single loop LLVM vectorizes); operands are read through broadcast strides:

    %2 = add(%0, %1) : f32[4,8]    with %0 : f32[4,8], %1 : f32[8]
      for i0 in 0..4: for i1 in 0..8:  out[8*i0 + i1] = x0[8*i0 + i1] + x1[i1]

`ELEMENT` computes one element of each op; ops/fused.py uses the same table for fused chains.

Big or costly maps are split among threads (`elementwise_parts`): part p of P takes a block of the
outermost coalesced axis (of a contiguous map: a block of elements), as the other kernels' parts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llvmlite import ir

from ...ir import DType, Node, get_op
from ..kernel import Kernel
from ..llvm import float_math, scalar
from ..llvm.layout import broadcast_strides, coalesce, contiguous_strides
from ..llvm.utils import add_offsets, llvm_type, load_element, store_element, strided_loops
from ..target import Target
from ..threads import parallel

Compute = Callable[[ir.IRBuilder, list[ir.Value]], ir.Value]



def _loop_nest(node: Node) -> tuple[list[int], list[list[int]]]:
    """The coalesced output shape and, per operand and then the output, its element strides."""
    strides = [broadcast_strides(operand.shape, node.shape) for operand in node.inputs]
    return coalesce(node.shape, [*strides, contiguous_strides(node.shape)])


def elementwise_parts(node: Node, target: Target, threads: int) -> int:
    """Parts of a map for a team of `threads`: one per thread, blocks of its outermost loop."""
    shape, _ = _loop_nest(node)
    # the op's cost per element in adds (the registry's); a map splits when size x cost reaches
    # MIN_PARALLEL_FLOPS / 4 (as a pool's taps: an add counts as 4 flops of work)
    return parallel.row_parts(shape[0] if shape else 1, 4 * node.type.size * get_op(node.op).cost, threads)


def map_elements(kernel: Kernel, compute: Compute) -> None:
    """out[index] = compute(operand values at index), over the output shape with broadcasting."""
    node = kernel.node
    builder = kernel.builder
    if node.type.size == 0:
        return
    shape, strides = _loop_nest(node)
    accesses = [(s, 0) for s in strides]
    if kernel.parts > 1:  # this part's block of the outermost axis
        first, count = parallel.part_bounds(builder, kernel.part, kernel.parts, shape[0], "block")
        shape = [count, *shape[1:]]
        accesses = [(s, add_offsets(builder, 0, first, s[0])) for s in strides]
    with strided_loops(builder, shape, accesses, "i") as offsets:
        values = [load_element(builder, pointer, offset, llvm_type(operand.dtype), f"x{position}")
                  for position, (pointer, offset, operand) in enumerate(zip(kernel.inputs, offsets, node.inputs))]
        store_element(builder, compute(builder, values), kernel.output, offsets[-1])


BINARY = {"add": scalar.add, "sub": scalar.sub, "mul": scalar.mul, "div": scalar.divide}
FLOAT_UNARY = {"exp": float_math.exp, "log": float_math.log, "sqrt": float_math.sqrt, "abs": float_math.fabs,
               "tanh": float_math.tanh, "sigmoid": float_math.sigmoid}

# One element of an op: (builder, op, dtype it computes in (its first operand's), loaded operands, attrs) -> value
ElementFunction = Callable[[ir.IRBuilder, str, DType, list[ir.Value], dict[str, Any]], ir.Value]


def binary_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    """add, sub, mul, div: integers wrap, bool + is `or` and bool * is `and`."""
    return BINARY[op](builder, dtype, values[0], values[1], name=op)


def float_unary_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    """exp, log, sqrt, abs, tanh, sigmoid on f32."""
    return FLOAT_UNARY[op](builder, values[0], name=op)


def gelu_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    """gelu with the node's approximation: "tanh", "sigmoid" or "exact" (erf)."""
    return float_math.GELU[attrs["approximation"]](builder, values[0])


def neg_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    """-x; unsigned integers wrap around."""
    return scalar.negate(builder, dtype, values[0], name=op)


def relu_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    """max(x, 0); NaN stays NaN."""
    return scalar.relu(builder, dtype, values[0], name=op)


def cast_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    """Convert to the node's dtype (see scalar.convert for the rules)."""
    return scalar.convert(builder, values[0], dtype, attrs["dtype"], name=op)


ELEMENT: dict[str, ElementFunction] = {
    **dict.fromkeys(BINARY, binary_element), **dict.fromkeys(FLOAT_UNARY, float_unary_element),
    "gelu": gelu_element, "neg": neg_element, "relu": relu_element, "cast": cast_element,
}


def map_op_elements(kernel: Kernel) -> None:
    """The node's own op (an ELEMENT key) at every index of its output."""
    node, dtype = kernel.node, kernel.dtype
    element = ELEMENT[node.op]

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        return element(builder, node.op, dtype, values, node.attrs)

    map_elements(kernel, compute)


def emit_binary(kernel: Kernel) -> None:
    """add, sub, mul, div: numpy broadcasting, integers wrap, bool + is `or` and bool * is `and`."""
    map_op_elements(kernel)


def emit_float_unary(kernel: Kernel) -> None:
    """exp, log, sqrt, abs, tanh, sigmoid on f32."""
    map_op_elements(kernel)


def emit_gelu(kernel: Kernel) -> None:
    """gelu with the node's approximation: "tanh", "sigmoid" or "exact" (erf)."""
    map_op_elements(kernel)


def emit_neg(kernel: Kernel) -> None:
    """-x; unsigned integers wrap around."""
    map_op_elements(kernel)


def emit_relu(kernel: Kernel) -> None:
    """max(x, 0); NaN stays NaN."""
    map_op_elements(kernel)


def emit_cast(kernel: Kernel) -> None:
    """Convert each element to the node's dtype (see scalar.convert for the rules)."""
    map_op_elements(kernel)
