"""Emission of elementwise ops: arithmetic, the float functions, comparisons, logic, where, clip, cast.

Every elementwise op is one loop nest over the output shape (coalesced, so a contiguous add is
a single loop LLVM vectorizes); operands are read through broadcast strides:

    %2 = add(%0, %1) : f32[4,8]    with %0 : f32[4,8], %1 : f32[8]
      for i0 in 0..4: for i1 in 0..8:  out[8*i0 + i1] = x0[8*i0 + i1] + x1[i1]

`ELEMENT` maps each op to its element function (one element of its result) and the dtypes it
compiles for; every op in it gets its map lowering from that entry, and ops/fused.py computes fused
chains with the same functions. A new elementwise op is one entry there:

    "erf": Element(float_unary(float_math.erf), FLOAT),    # after writing float_math.erf(builder, x, name)

Big or costly maps are split among threads (`elementwise_parts`): part p of P takes a block of the
outermost coalesced axis (of a contiguous map: a block of elements), as the other kernels' parts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from llvmlite import ir

from ...ir import DType, Node, get_op
from ..kernel import Kernel
from ..llvm import float_math, scalar
from ..llvm.layout import broadcast_strides, coalesce, contiguous_strides
from ..llvm.utils import add_offsets, llvm_type, load_element, store_element, strided_loops
from ..lowering import ALL, FLOAT, NUMERIC, Lowering, register_lowering
from ..target import Target
from ..threads import parallel

Compute = Callable[[ir.IRBuilder, list[ir.Value]], ir.Value]
BOOL = frozenset({DType.bool})


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


# One element of an op: (builder, op, dtype it computes in (its first operand's), loaded operands, attrs) -> value
ElementFunction = Callable[[ir.IRBuilder, str, DType, list[ir.Value], dict[str, Any]], ir.Value]


class Element(NamedTuple):
    """An elementwise op's element function and the operand dtypes its map compiles for."""

    compute: ElementFunction
    dtypes: frozenset[DType]


def binary(function: Callable[..., ir.Value]) -> ElementFunction:
    """The element function of `function(builder, dtype, x, y, name)` (scalar.py): add, sub, mul, div."""
    def element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
        return function(builder, dtype, values[0], values[1], name=op)
    return element


def unary(function: Callable[..., ir.Value]) -> ElementFunction:
    """The element function of `function(builder, dtype, x, name)` (scalar.py): neg, relu."""
    def element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
        return function(builder, dtype, values[0], name=op)
    return element


def float_unary(function: Callable[..., ir.Value]) -> ElementFunction:
    """The element function of an f32 function `function(builder, x, name)` (float_math.py): exp, log..."""
    def element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
        return function(builder, values[0], name=op)
    return element


def gelu_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    """gelu with the node's approximation: "tanh", "sigmoid" or "exact" (erf)."""
    return float_math.GELU[attrs["approximation"]](builder, values[0])


def compare_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    """equal, not_equal, less, less_equal, greater, greater_equal: a bool byte (scalar.compare)."""
    return scalar.compare(builder, dtype, op, values[0], values[1], name=op)


def clip_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    return scalar.clip(builder, dtype, values[0], attrs["min"], attrs["max"], name=op)


def pow_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    return float_math.power(builder, values[0], values[1], name=op)


def where_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    """values[1] where the condition byte is nonzero, else values[2]."""
    condition = builder.icmp_unsigned("!=", values[0], scalar.constant(DType.bool, 0), name="where.condition")
    return builder.select(condition, values[1], values[2], name=op)


def logical_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    """logical_not, logical_and, logical_or, logical_xor on bool bytes (0 or 1)."""
    if op == "logical_not":
        return builder.xor(values[0], scalar.constant(DType.bool, 1), name=op)
    combine = {"logical_and": builder.and_, "logical_or": builder.or_, "logical_xor": builder.xor}[op]
    return combine(values[0], values[1], name=op)


def is_nan_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    unordered = builder.fcmp_unordered("uno", values[0], values[0], name="is_nan.i1")
    return builder.zext(unordered, llvm_type(DType.bool), name=op)


def cast_element(builder: ir.IRBuilder, op: str, dtype: DType, values: list[ir.Value], attrs: dict) -> ir.Value:
    """Convert to the node's dtype (see scalar.convert for the rules)."""
    return scalar.convert(builder, values[0], dtype, attrs["dtype"], name=op)


# Every elementwise op the codegen compiles alone or in a fused chain: its element function and the
# dtypes of its first operand. Each gets a map lowering below; a new op is one more line here.
ELEMENT: dict[str, Element] = {
    "add": Element(binary(scalar.add), ALL),  # integers wrap, bool + is `or`
    "sub": Element(binary(scalar.sub), NUMERIC),
    "mul": Element(binary(scalar.mul), ALL),  # bool * is `and`
    "div": Element(binary(scalar.divide), FLOAT),
    "neg": Element(unary(scalar.negate), NUMERIC),  # unsigned integers wrap around
    "relu": Element(unary(scalar.relu), ALL),  # max(x, 0); NaN stays NaN
    "exp": Element(float_unary(float_math.exp), FLOAT),
    "log": Element(float_unary(float_math.log), FLOAT),
    "sqrt": Element(float_unary(float_math.sqrt), FLOAT),
    "abs": Element(float_unary(float_math.fabs), FLOAT),
    "tanh": Element(float_unary(float_math.tanh), FLOAT),
    "sigmoid": Element(float_unary(float_math.sigmoid), FLOAT),
    "gelu": Element(gelu_element, FLOAT),
    "cast": Element(cast_element, ALL),
    "erf": Element(float_unary(float_math.erf), FLOAT),
    "pow": Element(pow_element, FLOAT),
    "minimum": Element(binary(scalar.minimum), ALL),  # NaN wins, as in np.minimum
    "maximum": Element(binary(scalar.maximum), ALL),
    "clip": Element(clip_element, NUMERIC),
    **dict.fromkeys(scalar.COMPARISONS, Element(compare_element, ALL)),
    **dict.fromkeys(("logical_not", "logical_and", "logical_or", "logical_xor"), Element(logical_element, BOOL)),
    "where": Element(where_element, BOOL),  # by its condition's dtype
    "is_nan": Element(is_nan_element, FLOAT),
}


def map_op_elements(kernel: Kernel) -> None:
    """The node's own op (an ELEMENT key) at every index of its output."""
    node, dtype = kernel.node, kernel.dtype
    element = ELEMENT[node.op].compute

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        return element(builder, node.op, dtype, values, node.attrs)

    map_elements(kernel, compute)


def map_lowering(emit: Callable[[Kernel], None], dtypes: frozenset[DType]) -> Lowering:
    """The lowering of an elementwise map (`emit` calls map_elements): no scratch, split by elementwise_parts."""
    return Lowering(emit, dtypes, parts=elementwise_parts)


for _op, _element in ELEMENT.items():
    register_lowering(_op, map_lowering(map_op_elements, _element.dtypes))
