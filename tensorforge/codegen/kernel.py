"""Kernel: what an emission function receives for one node.

Each op node becomes one internal LLVM function `void @"<op>.<name>"(operands..., output[, scratch])`;
the emission function for its op (lowering.LOWERINGS) fills in the body through `kernel.builder`:

    def emit_transpose(kernel: Kernel) -> None:
        ... loops that read kernel.inputs[0] and write kernel.output ...

An operand whose index is in `kernel.packed` is a constant stored in the layout the lowering's
`pack_constant` made for it (gemm/packing.py: GEMM panels, for example), not row-major.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llvmlite import ir

from ..ir import DType, Node, TensorType
from .llvm.utils import llvm_type
from .target import Target


@dataclass
class Kernel:
    """One node being emitted: the node, the builder inside its function, and its buffers."""

    node: Node
    builder: ir.IRBuilder
    inputs: list[ir.Value]  # one pointer per operand, C-contiguous
    output: ir.Value  # the node's result buffer, C-contiguous, written by the kernel
    scratch: ir.Value | None  # a private buffer of the size the op's lowering asked for
    target: Target
    packed: frozenset[int] = field(default=frozenset())  # operands received in the lowering's packed layout
    part: ir.Value | None = None  # i64: which part of the node's work to do, when it is split (threads/parallel.py)
    parts: int = 1  # how many parts the work is split into (1: all of it, `part` is None)
    output_image_stride: int = 0  # elements between the output's images (0: contiguous; Lowering.image_strided)

    @property
    def output_image(self) -> int:
        """Elements from one image of the output to the next (its size unless output_image_stride)."""
        return self.output_image_stride or self.node.type.size // max(self.node.type.shape[0], 1)

    @property
    def dtype(self) -> DType:
        """The element type the op computes in: its first operand's (for cast, the source)."""
        return self.node.inputs[0].dtype

    @property
    def element(self) -> ir.Type:
        """The LLVM type of one element of the first operand."""
        return llvm_type(self.dtype)

    def operand_type(self, index: int) -> TensorType:
        return self.node.inputs[index].type
