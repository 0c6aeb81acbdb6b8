"""Emission of data movement: transpose, slice, concat (reshape and flatten need no code).

reshape and flatten are views: their result is the operand's buffer (see lowering.VIEW). The
other ops are strided copies, one loop nest each, contiguous on the side that is written, split
among threads when big (parallel.PARALLEL_BYTES):

    %1 = transpose(%0) {perm=[1,0]} : f32[8,4]     with %0 : f32[4,8]
      for i0 in 0..8: for i1 in 0..4:  out[4*i0 + i1] = x[i0 + 8*i1]
"""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

from ...ir import Node, ops_with
from ..kernel import Kernel
from ..llvm.layout import Strides, coalesce, contiguous_strides
from ..llvm.utils import add_offsets, i64, load_element, store_element, strided_loops
from ..lowering import ALL, VIEW, Lowering, register_lowering
from ..target import Target
from ..threads import parallel

for _view in ops_with("view"):  # reshape, flatten
    register_lowering(_view, VIEW)


def copy_parts(node: Node, target: Target, threads: int) -> int:
    """All the threads from parallel.PARALLEL_BYTES of result (copy_elements: each part its share of
    the outermost axis)."""
    return threads if node.type.size * node.dtype.itemsize >= parallel.PARALLEL_BYTES else 1


def copy_elements(kernel: Kernel, source: ir.Value, source_at: tuple[Strides, int], destination: ir.Value,
                  destination_at: tuple[Strides, int], shape: Sequence[int], name: str) -> None:
    """destination[...] = source[...] over `shape`; each side given as (strides, base offset). A
    kernel in parts copies its part's share of the outermost (coalesced) axis."""
    if 0 in shape:
        return
    builder = kernel.builder
    (source_strides, source_base), (destination_strides, destination_base) = source_at, destination_at
    shape, (source_strides, destination_strides) = coalesce(shape, [source_strides, destination_strides])
    accesses = [(source_strides, source_base), (destination_strides, destination_base)]
    if kernel.parts > 1 and kernel.part is not None and shape:
        per_part = -(-shape[0] // kernel.parts)
        start = builder.mul(kernel.part, i64(per_part))
        first = builder.select(builder.icmp_unsigned("<", start, i64(shape[0])), start, i64(shape[0]),
                               name=f"{name}.first")
        left = builder.sub(i64(shape[0]), first)  # 0 for a part past the end
        count = builder.select(builder.icmp_unsigned("<", left, i64(per_part)), left, i64(per_part),
                               name=f"{name}.count")
        accesses = [(strides, add_offsets(builder, base, first, strides[0])) for strides, base in accesses]
        shape = (count, *shape[1:])
    with strided_loops(builder, shape, accesses, name) as (read_at, write_at):
        value = load_element(builder, source, read_at, kernel.element, f"{name}.value")
        store_element(builder, value, destination, write_at)


def emit_transpose(kernel: Kernel) -> None:
    """out[i0, i1, ...] = x[...] with axis k of the output being axis perm[k] of x."""
    node = kernel.node
    operand_strides = contiguous_strides(node.inputs[0].shape)
    source_strides = tuple(operand_strides[axis] for axis in node.attrs["perm"])
    copy_elements(kernel, kernel.inputs[0], (source_strides, 0), kernel.output,
                  (contiguous_strides(node.shape), 0), node.shape, "t")


register_lowering("transpose", Lowering(emit_transpose, ALL, parts=copy_parts))


def emit_slice(kernel: Kernel) -> None:
    """out[i] = x[start + i * step] on every axis (canonical attrs give all three per axis)."""
    node = kernel.node
    operand_strides = contiguous_strides(node.inputs[0].shape)
    starts, steps = node.attrs["starts"], node.attrs["steps"]
    source_strides = tuple(stride * step for stride, step in zip(operand_strides, steps))
    source_base = sum(start * stride for start, stride in zip(starts, operand_strides))
    copy_elements(kernel, kernel.inputs[0], (source_strides, source_base), kernel.output,
                  (contiguous_strides(node.shape), 0), node.shape, "s")


register_lowering("slice", Lowering(emit_slice, ALL, parts=copy_parts))


def emit_concat(kernel: Kernel) -> None:
    """Each operand copied into its range of the output along `axis`."""
    node = kernel.node
    axis = node.attrs["axis"]
    output_strides = contiguous_strides(node.shape)
    position = 0
    for index, (operand, pointer) in enumerate(zip(node.inputs, kernel.inputs)):
        copy_elements(kernel, pointer, (contiguous_strides(operand.shape), 0), kernel.output,
                      (output_strides, position * output_strides[axis]), operand.shape, f"part{index}")
        position += operand.shape[axis]


register_lowering("concat", Lowering(emit_concat, ALL, parts=copy_parts))
