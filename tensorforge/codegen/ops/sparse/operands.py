"""A sparse_linear node's operands as its kernels see them (ops/sparse/linear.py, ops/sparse/slices.py):
its sizes, its constant CSR arrays, a row's entries, a copy of a row of x, and the outputs' epilogue.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from ....ir import Node
from ....ir.ops_sparse import check_csr, split_sparse_operands
from ...errors import CodegenError
from ...kernel import Kernel
from ...llvm import float_math
from ...llvm.utils import F32, I32, I64, element_pointer, for_range, i64, load_element, store_element

FLOAT_BYTES = 4


def sparse_shape(node: Node) -> tuple[int, int, int, int]:
    """(rows M, in, out, stored entries) of a sparse_linear node."""
    x, values, _, row_starts = node.inputs[:4]
    return math.prod(x.shape[:-1]), x.shape[-1], row_starts.shape[0] - 1, values.shape[0]


def csr_constants(node: Node) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The constant (values, columns, row_starts) of a node, checked; CodegenError if they are not constants."""
    arrays = node.inputs[1:4]
    if any(array.op != "constant" for array in arrays):
        raise CodegenError(f"cannot compile %{node.name} = sparse_linear(...): values, columns and row_starts must "
                           f"be constants (a weight's CSR arrays), got {', '.join(a.op for a in arrays)}")
    values, columns, row_starts = (array.value for array in arrays)
    check_csr(values, columns, row_starts, node.inputs[0].shape[-1])
    return values, columns, row_starts


def row_bounds(builder: ir.IRBuilder, row_starts: ir.Value, row: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(first entry, end) of `row` (a row or a slice) from its i32 starts table."""
    start = builder.sext(load_element(builder, row_starts, row, I32, "start"), I64)
    end = builder.sext(load_element(builder, row_starts, builder.add(row, i64(1)), I32, "end"), I64)
    return start, end


def finish_outputs(kernel: Kernel, total: ir.Value, row: ir.Value, at: ir.Value) -> ir.Value:
    """One output's epilogue: + bias[row], + residual[at], then the activation; or, for a vector
    `total`, that of the outputs from row and at on."""
    builder, node = kernel.builder, kernel.node
    _, _, _, _, bias, residual = split_sparse_operands(list(kernel.inputs), node.attrs["residual"])

    def operand(base: ir.Value, offset: ir.Value, name: str) -> ir.Value:
        return builder.load(element_pointer(builder, base, offset, F32), typ=total.type, align=FLOAT_BYTES,
                            name=name)

    if bias is not None:
        total = builder.fadd(total, operand(bias, row, "bias"))
    if residual is not None:
        total = builder.fadd(total, operand(residual, at, "skip"))
    return float_math.activation(builder, node.attrs["activation"], total)  # relu, relu6: NaN stays NaN


def copy_row(kernel: Kernel, m: ir.Value, depth: int, padded: int) -> None:
    """Row m of x (depth floats) into the kernel's scratch, then zeros up to `padded` floats."""
    builder, copy = kernel.builder, kernel.scratch
    x_row = element_pointer(builder, kernel.inputs[0], builder.mul(m, i64(depth)), F32, "x_row")
    with for_range(builder, depth, "copy") as k:
        store_element(builder, load_element(builder, x_row, k, F32), copy, k)
    for k in range(depth, padded):
        store_element(builder, ir.Constant(F32, 0.0), copy, k)
