"""Emission of fused_elementwise: the whole program in the body of one loop nest over the output.

Each instruction is computed by the same element function as its op alone (ops/elementwise.py: ELEMENT),
so a fused chain rounds exactly as the unfused ops do; intermediates stay in registers:

    %2 = fused_elementwise(%x, %b) {program=[["add", ["in", 0], ["in", 1]], ["relu", ["t", 0]]]} : f32[4,8]
      for i0 in 0..4: for i1 in 0..8:  t0 = x[8*i0 + i1] + b[i1];  out[8*i0 + i1] = relu(t0)
"""

from __future__ import annotations

from llvmlite import ir

from ...ir.ops_fused import decode_instruction, operand_dtypes
from ..errors import CodegenError
from ..kernel import Kernel
from ..lowering import ALL, register_lowering
from .elementwise import ELEMENT, Compute, map_elements, map_lowering


def _check_ops(kernel: Kernel, ops: list[str]) -> None:
    missing = sorted(set(ops) - set(ELEMENT))
    if missing:
        node = kernel.node
        raise CodegenError(f"cannot compile %{node.name} = {node.op}(...) : {node.type} for target "
                           f"{kernel.target.name}: instruction op(s) {missing} have no element function "
                           f"(ops with one: {', '.join(sorted(ELEMENT))})")


def program_compute(kernel: Kernel) -> Compute:
    """The node's program (fused_elementwise, fused_reduce) as a Compute: the operands' loaded
    values -> the last instruction's result."""
    node = kernel.node
    instructions = [decode_instruction(instruction) for instruction in node.attrs["program"]]
    dtypes = operand_dtypes([operand.type for operand in node.inputs], node.attrs["program"], node.op)
    _check_ops(kernel, [instruction.op for instruction in instructions])

    def compute(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
        results: list[ir.Value] = []
        for (op, refs, attrs), dtype in zip(instructions, dtypes):
            operands = [values[i] if kind == "in" else results[i] for kind, i in refs]
            results.append(ELEMENT[op].compute(builder, op, dtype, operands, attrs))
        return results[-1]

    return compute


def emit_fused_elementwise(kernel: Kernel) -> None:
    """The node's program at every index of its output; operands broadcast as in numpy."""
    map_elements(kernel, program_compute(kernel))


register_lowering("fused_elementwise", map_lowering(emit_fused_elementwise, ALL))  # a chain in one loop
