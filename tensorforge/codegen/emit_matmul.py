"""Emission of matmul and linear: one plain GEMM loop nest in i-k-j order.

    c[i, :] = 0;  for k: c[i, :] += a[i, k] * b[k, :]     the inner loop is contiguous in b and c

so LLVM vectorizes the j loop (and fuses multiply and add into FMA where the target has it, via
the `contract` flag). Integers accumulate in their own width and wrap, exactly as numpy's matmul;
bool matmul is or-of-ands. Tiled kernels replace this in a later issue.
"""

from __future__ import annotations

import math

from llvmlite import ir

from . import scalar
from .kernel import Kernel
from .layout import broadcast_strides, coalesce, contiguous_strides
from .llvm_utils import (
    add_offsets,
    element_pointer,
    fill_elements,
    for_range,
    load_element,
    store_element,
    strided_loops,
)

CONTRACT = ("contract",)


def gemm(kernel: Kernel, a: ir.Value, b: ir.Value, c: ir.Value, rows: int, depth: int, columns: int,
         bias: ir.Value | None = None) -> None:
    """c[rows, columns] = a[rows, depth] @ b[depth, columns] (+ bias[columns]); all row-major."""
    builder, dtype, element = kernel.builder, kernel.dtype, kernel.element
    with for_range(builder, rows, "i") as i:
        a_row = element_pointer(builder, a, add_offsets(builder, 0, i, depth), element, "a_row")
        c_row = element_pointer(builder, c, add_offsets(builder, 0, i, columns), element, "c_row")
        fill_elements(builder, c_row, columns, scalar.constant(dtype, 0), "zero")
        with for_range(builder, depth, "k") as k:
            a_ik = load_element(builder, a_row, k, element, "a_ik")
            b_row = element_pointer(builder, b, add_offsets(builder, 0, k, columns), element, "b_row")
            with for_range(builder, columns, "j") as j:
                product = scalar.mul(builder, dtype, a_ik, load_element(builder, b_row, j, element, "b_kj"),
                                     name="product", flags=CONTRACT)
                total = scalar.add(builder, dtype, load_element(builder, c_row, j, element, "c_ij"), product,
                                   name="c_ij", flags=CONTRACT)
                store_element(builder, total, c_row, j)
        if bias is not None:
            with for_range(builder, columns, "bias") as j:
                total = scalar.add(builder, dtype, load_element(builder, c_row, j, element, "c_ij"),
                                   load_element(builder, bias, j, element, "b_j"), name="c_ij")
                store_element(builder, total, c_row, j)


def emit_matmul(kernel: Kernel) -> None:
    """a[..., M, K] @ b[..., K, N]: one GEMM per element of the broadcast batch shape."""
    node, builder = kernel.node, kernel.builder
    a_type, b_type = kernel.operand_type(0), kernel.operand_type(1)
    rows, depth = a_type.shape[-2:]
    columns = b_type.shape[-1]
    batch = node.shape[:-2]
    if node.type.size == 0:
        return
    a_strides = tuple(s * rows * depth for s in broadcast_strides(a_type.shape[:-2], batch))
    b_strides = tuple(s * depth * columns for s in broadcast_strides(b_type.shape[:-2], batch))
    c_strides = tuple(s * rows * columns for s in contiguous_strides(batch))
    shape, strides = coalesce(batch, [a_strides, b_strides, c_strides])
    with strided_loops(builder, shape, [(s, 0) for s in strides], "batch") as (a_at, b_at, c_at):
        a = element_pointer(builder, kernel.inputs[0], a_at, kernel.element, "a")
        b = element_pointer(builder, kernel.inputs[1], b_at, kernel.element, "b")
        c = element_pointer(builder, kernel.output, c_at, kernel.element, "c")
        gemm(kernel, a, b, c, rows, depth, columns)


def emit_linear(kernel: Kernel) -> None:
    """x[..., in] @ w[in, out] (+ b[out]): one GEMM with all leading axes of x as rows."""
    x_type, w_type = kernel.operand_type(0), kernel.operand_type(1)
    rows = math.prod(x_type.shape[:-1])
    depth, columns = w_type.shape
    bias = kernel.inputs[2] if len(kernel.inputs) == 3 else None
    if kernel.node.type.size == 0:
        return
    gemm(kernel, kernel.inputs[0], kernel.inputs[1], kernel.output, rows, depth, columns, bias)
