"""Emission of matmul and linear: the tiled f32 GEMM (gemm/gemm.py), or an exact loop nest for integers.

    %y = linear(%x, %w, %b) : f32[64,256]   ->  emit_gemm(x, w packed at compile time, bias per column)
    %y = matmul(%a, %b) : i32[..., M, N]    ->  c[i, :] += a[i, k] * b[k, :] in i-k-j order, wrapping

f32 goes through the GEMM, whose epilogue adds linear's bias and applies a fused `activation`
attribute (set by the fuse-activation pass); a constant operand (linear's weight, either matmul operand) is packed
into micro-kernel panels once, at compile time (`pack_gemm_constant`), so a call never repacks
it; other operands are packed block by block into the node's scratch at run time. Integers
accumulate in their own width and wrap, exactly as numpy's matmul; bool matmul is or-of-ands.
"""

from __future__ import annotations

import functools
import math

from llvmlite import ir

from ...ir import DType, Node
from ...ir.ops_nn import matrix_dims, split_contraction
from ..gemm.gemm import GemmOperand, GemmSplit, emit_gemm_part, gemm_scratch_bytes
from ..gemm.micro_kernel import Epilogue
from ..gemm.packing import pack_a_panels, pack_b_panels
from ..gemm.tiling import gemm_tiling
from ..kernel import Kernel
from ..llvm import float_math, scalar
from ..llvm.layout import broadcast_strides, coalesce, contiguous_strides
from ..llvm.utils import (
    add_offsets,
    affine_offset,
    element_pointer,
    fill_elements,
    for_range,
    load_element,
    store_element,
    strided_loops,
)
from ..lowering import ALL, Lowering, PackedConstant, register_lowering
from ..target import Target
from ..threads import parallel

CONTRACT = ("contract",)


def exact_gemm(kernel: Kernel, a: ir.Value, b: ir.Value, c: ir.Value, rows: int, depth: int, columns: int,
               bias: ir.Value | None = None, transposed: tuple[bool, bool] = (False, False)) -> None:
    """c[rows, columns] = a[rows, depth] @ b[depth, columns] (+ bias[columns]); all row-major, any dtype.

    `transposed[0]` / `[1]`: a / b are stored as their transposes ([depth, rows] / [columns, depth])."""
    builder, dtype, element = kernel.builder, kernel.dtype, kernel.element
    a_strides = (1, rows) if transposed[0] else (depth, 1)  # of (i, k)
    b_strides = (1, depth) if transposed[1] else (columns, 1)  # of (k, j)
    with for_range(builder, rows, "i") as i:
        c_row = element_pointer(builder, c, add_offsets(builder, 0, i, columns), element, "c_row")
        fill_elements(builder, c_row, columns, scalar.constant(dtype, 0), "zero")
        with for_range(builder, depth, "k") as k:
            a_ik = load_element(builder, a, affine_offset(builder, [(i, a_strides[0]), (k, a_strides[1])]), element,
                                "a_ik")
            b_row = element_pointer(builder, b, add_offsets(builder, 0, k, b_strides[0]), element, "b_row")
            with for_range(builder, columns, "j") as j:
                b_kj = load_element(builder, b_row, add_offsets(builder, 0, j, b_strides[1]), element, "b_kj")
                product = scalar.mul(builder, dtype, a_ik, b_kj,
                                     name="product", flags=CONTRACT)
                total = scalar.add(builder, dtype, load_element(builder, c_row, j, element, "c_ij"), product,
                                   name="c_ij", flags=CONTRACT)
                store_element(builder, total, c_row, j)
        if bias is not None:
            with for_range(builder, columns, "bias") as j:
                total = scalar.add(builder, dtype, load_element(builder, c_row, j, element, "c_ij"),
                                   load_element(builder, bias, j, element, "b_j"), name="c_ij")
                store_element(builder, total, c_row, j)


def contraction_operands(kernel: Kernel) -> tuple[ir.Value | None, ir.Value | None]:
    """The (bias, residual) pointers of a linear's or conv2d's kernel, None where absent."""
    _, _, bias, residual = split_contraction(list(kernel.inputs), kernel.node.attrs.get("residual", False))
    return bias, residual


def activate_output(kernel: Kernel) -> None:
    """Add the node's fused residual (fuse-residual) and apply its fused `activation` (fuse-activation)
    to its whole output, in place.

    The tiled kernels do both in the GEMM epilogue instead; this is for the exact loop nests.
    """
    residual = contraction_operands(kernel)[1] if kernel.node.op in ("linear", "conv2d") else None
    activation = kernel.node.attrs.get("activation")
    if residual is None and activation is None:
        return
    builder, dtype = kernel.builder, kernel.node.dtype
    with for_range(builder, kernel.node.type.size, "activate") as index:
        value = load_element(builder, kernel.output, index, kernel.element, "value")
        if residual is not None:
            value = scalar.add(builder, dtype, value, load_element(builder, residual, index, kernel.element, "skip"),
                               name="residual")
        if activation == "relu":
            value = scalar.relu(builder, dtype, value, "relu")
        elif activation is not None:  # relu6 or a gelu (f32 only: an f32 linear of depth 0 comes here)
            value = float_math.activation(builder, activation, value)
        store_element(builder, value, kernel.output, index)


def gemm_epilogue(node: Node, bias: str | None) -> Epilogue:
    """The GEMM epilogue of a node: its bias (per "row" or "column", if it has one), fused residual
    and fused activation."""
    residual = node.attrs.get("residual", False)
    has_bias = node.op != "matmul" and split_contraction(node.inputs, residual)[2] is not None
    return Epilogue(bias=bias if has_bias else None, activation=node.attrs.get("activation"), residual=residual)


def gemm_shape(node: Node) -> tuple[int, int, int]:
    """(M, K, N) of one GEMM of a matmul or linear node (linear folds leading axes of x into M)."""
    a_type, b_type = node.inputs[0].type, node.inputs[1].type
    if node.op == "linear":
        return math.prod(a_type.shape[:-1]), b_type.shape[0], b_type.shape[1]
    (rows, depth), columns = matrix_dims(a_type.shape, node.attrs["transpose_a"]), node.shape[-1]
    return rows, depth, columns


def transposed(node: Node) -> tuple[bool, bool]:
    """Whether a matmul reads a and b transposed (absorb-transpose); linear never does."""
    if node.op != "matmul":
        return False, False
    return node.attrs["transpose_a"], node.attrs["transpose_b"]


def uses_tiled_gemm(node: Node) -> bool:
    """f32 with a non-empty result and depth: the tiled GEMM. Everything else: the exact loop nest."""
    rows, depth, columns = gemm_shape(node)
    return node.inputs[0].dtype is DType.f32 and rows * depth * columns > 0


def _prepacked(node: Node, index: int) -> bool:
    """Operand `index` arrives packed exactly when it is a constant the GEMM operand packing applies to."""
    return uses_tiled_gemm(node) and index < 2 and node.inputs[index].op == "constant"


def pack_gemm_constant(node: Node, index: int, target: Target) -> PackedConstant | None:
    """The compile-time panels of a constant GEMM operand: A panels for operand 0, B panels for operand 1."""
    if not _prepacked(node, index):
        return None
    tiling = gemm_tiling(target)
    value, swapped = node.inputs[index].value, transposed(node)[index]
    if index == 0:
        if node.op == "linear":  # every leading axis of x is a row of the one GEMM
            value = value.reshape(gemm_shape(node)[:2])
        # a transposed A's rows are its columns: B panels of it are A panels of its transpose (and back)
        panels = pack_b_panels if swapped else pack_a_panels
        return PackedConstant(f"gemm.a{tiling.rows}{'t' if swapped else ''}",
                              make=functools.partial(panels, value, tiling.rows))
    panels = pack_a_panels if swapped else pack_b_panels
    return PackedConstant(f"gemm.b{tiling.columns}{'t' if swapped else ''}",
                          make=functools.partial(panels, value, tiling.columns))


def gemm_node_scratch_bytes(node: Node, target: Target, packed: frozenset[int] = frozenset()) -> int:
    """Scratch for the run-time packing of a matmul's or linear's non-constant operands."""
    if not uses_tiled_gemm(node):
        return 0
    return gemm_scratch_bytes(gemm_tiling(target), gemm_shape(node), 0 in packed, 1 in packed)


def _panel_elements(tiling_extent: int, outer: int, depth: int) -> int:
    """Elements of one matrix in packed panels: ceil(outer / tiling_extent) panels of depth x tiling_extent."""
    return -(-outer // tiling_extent) * depth * tiling_extent


def emit_matmul(kernel: Kernel) -> None:
    """a[..., M, K] @ b[..., K, N]: one GEMM per element of the broadcast batch shape."""
    node, builder = kernel.node, kernel.builder
    a_type, b_type = kernel.operand_type(0), kernel.operand_type(1)
    rows, depth, columns = gemm_shape(node)
    batch = node.shape[:-2]
    if node.type.size == 0:
        return
    tiled = uses_tiled_gemm(node)
    tiling = gemm_tiling(kernel.target)
    a_size = _panel_elements(tiling.rows, rows, depth) if 0 in kernel.packed else rows * depth
    b_size = _panel_elements(tiling.columns, columns, depth) if 1 in kernel.packed else depth * columns
    a_strides = tuple(s * a_size for s in broadcast_strides(a_type.shape[:-2], batch))
    b_strides = tuple(s * b_size for s in broadcast_strides(b_type.shape[:-2], batch))
    c_strides = tuple(s * rows * columns for s in contiguous_strides(batch))
    shape, strides = coalesce(batch, [a_strides, b_strides, c_strides])
    flags = transposed(node)
    with strided_loops(builder, shape, [(s, 0) for s in strides], "batch") as (a_at, b_at, c_at):
        a = element_pointer(builder, kernel.inputs[0], a_at, kernel.element, "a")
        b = element_pointer(builder, kernel.inputs[1], b_at, kernel.element, "b")
        c = element_pointer(builder, kernel.output, c_at, kernel.element, "c")
        if tiled:  # a prepacked operand was transposed before packing
            operands = [GemmOperand(pointer, index in kernel.packed, flags[index] and index not in kernel.packed)
                        for index, pointer in enumerate((a, b))]
            emit_gemm_part(builder, tiling, *operands, c, (rows, depth, columns), kernel.scratch, None,
                           gemm_epilogue(node, None), kernel.part, kernel.parts, a_constant=_a_constant(node),
                           stream_bytes=_b_stream_bytes(node))
        else:
            exact_gemm(kernel, a, b, c, rows, depth, columns, transposed=flags)
    if not tiled:
        activate_output(kernel)


def emit_linear(kernel: Kernel) -> None:
    """x[..., in] @ w[in, out] (+ b[out]), then the fused activation: one GEMM with all leading axes of x as rows."""
    rows, depth, columns = gemm_shape(kernel.node)
    bias, residual = contraction_operands(kernel)
    if kernel.node.type.size == 0:
        return
    if not uses_tiled_gemm(kernel.node):
        exact_gemm(kernel, kernel.inputs[0], kernel.inputs[1], kernel.output, rows, depth, columns, bias)
        activate_output(kernel)
        return
    emit_gemm_part(kernel.builder, gemm_tiling(kernel.target), GemmOperand(kernel.inputs[0], 0 in kernel.packed),
                   GemmOperand(kernel.inputs[1], 1 in kernel.packed), kernel.output, (rows, depth, columns),
                   kernel.scratch, bias, gemm_epilogue(kernel.node, "column"), kernel.part, kernel.parts, residual,
                   _a_constant(kernel.node), _b_stream_bytes(kernel.node))


def gemm_parts(node: Node, target: Target, threads: int) -> int:
    """Parts of each GEMM of a matmul or linear for a team of `threads` (1: too small to share)."""
    if not uses_tiled_gemm(node):
        return 1
    rows, depth, columns = gemm_shape(node)
    batch = math.prod(node.shape[:-2]) if node.op == "matmul" else 1
    weight = node.inputs[1]
    weight_bytes = weight.type.nbytes if weight.op == "constant" else 0
    if (2 * batch * rows * depth * columns < parallel.MIN_PARALLEL_FLOPS
            and weight_bytes < parallel.MIN_PARALLEL_WEIGHT_BYTES):
        return 1
    tiling = gemm_tiling(target)
    if rows <= tiling.rows and weight_bytes:  # a weight stream: finer parts, a late thread takes fewer
        threads *= parallel.stream_parts_per_thread(weight_bytes)
    return GemmSplit.of(tiling, (rows, depth, columns), threads, _a_constant(node), _b_stream_bytes(node)).parts


def _b_stream_bytes(node: Node) -> int:
    """The bytes of one GEMM's b when it is a constant (a weight every part would stream), else 0."""
    weight = node.inputs[1]
    if weight.op != "constant":
        return 0
    rows, depth, columns = gemm_shape(node)
    return depth * columns * weight.dtype.itemsize


def _a_constant(node: Node) -> bool:
    """Whether the GEMM's A is a constant (packed in whole row panels unless packing is off): its
    split keeps whole row panels (GemmSplit)."""
    return node.inputs[0].op == "constant"


register_lowering("matmul", Lowering(emit_matmul, ALL, gemm_node_scratch_bytes, pack_gemm_constant, gemm_parts))
register_lowering("linear", Lowering(emit_linear, ALL, gemm_node_scratch_bytes, pack_gemm_constant, gemm_parts))
