"""fused_elementwise: a chain of elementwise ops computed in one loop (made by the fuse-elementwise pass).

    %1 = add(%x, %b) : f32[4,8]
    %2 = gelu(%1) {approximation="tanh"} : f32[4,8]      ->   %3 = fused_elementwise(%x, %b)
    %3 = cast(%2) {dtype=i32} : i32[4,8]                         {program=[["add", ["in", 0], ["in", 1]],
                                                                           ["gelu", ["t", 0], "tanh"],
                                                                           ["cast", ["t", 1], i32]]} : i32[4,8]

The attribute `program` is a tuple of instructions `(op, refs..., attribute values...)`: one ref per
operand of the op, `("in", i)` for operand i of the fused node or `("t", j)` for the result of
instruction j < this one, then the values of the op's own attributes in the order its OpDef lists
them (gelu: approximation; cast: dtype). The last instruction is the result. Operands broadcast
as in numpy; every operand and every instruction but the last is read at least once.

The meaning is the unfused ops' numpy references run in order, so fusing never changes a value.
"""

from __future__ import annotations

from typing import Any, NamedTuple, NoReturn

import numpy as np

from . import registry
from .registry import OpError, register_op
from .types import DType, TensorType, broadcast_shapes

FUSABLE = ("add", "sub", "mul", "div", "neg", "relu", "exp", "log", "sqrt", "tanh", "sigmoid", "gelu", "cast")
REF_KINDS = ("in", "t")  # an operand of the fused node, the result of an earlier instruction

Ref = tuple[str, int]


class Instruction(NamedTuple):
    """One decoded instruction of a program: `op(refs) {attrs}`."""

    op: str
    refs: tuple[Ref, ...]
    attrs: dict[str, Any]


def encode_instruction(op: str, refs: tuple[Ref, ...], attrs: dict[str, Any]) -> tuple:
    """The program form of `op(refs) {attrs}`: ("gelu", ("t", 0), "tanh")."""
    return (op, *refs, *(attrs[key] for key in registry.get_op(op).attrs))


def decode_instruction(instruction: tuple) -> Instruction:
    """("gelu", ("t", 0), "tanh") -> Instruction("gelu", (("t", 0),), {"approximation": "tanh"})."""
    op = instruction[0]
    opdef = registry.get_op(op)
    refs = tuple(instruction[1:1 + opdef.min_operands])
    return Instruction(op, refs, dict(zip(opdef.attrs, instruction[1 + opdef.min_operands:])))


def _fail(index: int, instruction, message: str) -> NoReturn:
    raise OpError(f"op 'fused_elementwise': instruction {index} {instruction!r}: {message}")


def _check_ref(index: int, instruction, ref, operand_count: int) -> Ref:
    if not (isinstance(ref, (tuple, list)) and len(ref) == 2 and ref[0] in REF_KINDS
            and isinstance(ref[1], (int, np.integer)) and not isinstance(ref[1], bool)):
        _fail(index, instruction, f"a ref is (\"in\", operand) or (\"t\", instruction), got {ref!r}")
    kind, position = ref[0], int(ref[1])
    bound = operand_count if kind == "in" else index
    if not 0 <= position < bound:
        readable = "operands of the node" if kind == "in" else "results of earlier instructions"
        _fail(index, instruction, f"ref {ref!r} reads none of the {bound} {readable}")
    return (kind, position)


def _check_instruction(index: int, instruction, operand_count: int) -> Instruction:
    """Decode one instruction, checking its op, its length and its refs (not yet the types)."""
    if not isinstance(instruction, (tuple, list)) or not instruction or instruction[0] not in FUSABLE:
        _fail(index, instruction, f"an instruction is (op, refs..., attrs...) with op one of {FUSABLE}")
    opdef = registry.get_op(instruction[0])
    length = 1 + opdef.min_operands + len(opdef.attrs)
    if len(instruction) != length:
        _fail(index, instruction, f"'{opdef.name}' takes {opdef.min_operands} refs and the attributes "
                                  f"{list(opdef.attrs)}: {length} items")
    decoded = decode_instruction(tuple(instruction))
    refs = tuple(_check_ref(index, instruction, ref, operand_count) for ref in decoded.refs)
    return decoded._replace(refs=refs)


def _check_everything_is_read(instructions: list[Instruction], operand_count: int) -> None:
    read = {ref for instruction in instructions for ref in instruction.refs}
    for position in range(operand_count):
        if ("in", position) not in read:
            raise OpError(f"op 'fused_elementwise': operand {position} is never read; drop it from the operands")
    for position in range(len(instructions) - 1):
        if ("t", position) not in read:
            raise OpError(f"op 'fused_elementwise': the result of instruction {position} is never read; drop it")


def typed_program(types: list[TensorType], program) -> list[tuple[Instruction, TensorType]]:
    """Each instruction, its attributes completed by its op, with its result type (the op's own inference)."""
    if not isinstance(program, (tuple, list)) or not program:
        raise OpError(f"op 'fused_elementwise': 'program' must be a non-empty tuple of instructions, got {program!r}")
    instructions = [_check_instruction(i, instruction, len(types)) for i, instruction in enumerate(program)]
    _check_everything_is_read(instructions, len(types))
    typed: list[tuple[Instruction, TensorType]] = []
    for index, instruction in enumerate(instructions):
        operand_types = [types[i] if kind == "in" else typed[i][1] for kind, i in instruction.refs]
        try:
            result, attrs = registry.infer_type(instruction.op, operand_types, instruction.attrs)
        except ValueError as err:
            _fail(index, program[index], str(err))
        typed.append((instruction._replace(attrs=attrs), result))
    return typed


def operand_dtypes(types: list[TensorType], program) -> list[DType]:
    """The dtype each instruction computes in: its first operand's (for cast, the source dtype)."""
    typed = typed_program(types, program)
    return [types[i].dtype if kind == "in" else typed[i][1].dtype
            for (kind, i) in (instruction.refs[0] for instruction, _ in typed)]


def _normalize_fused(types, attrs):
    typed = typed_program(types, attrs["program"])
    return {"program": tuple(encode_instruction(*instruction) for instruction, _ in typed)}


def _infer_fused(types, attrs):
    results = [result for _, result in typed_program(types, attrs["program"])]
    return TensorType(broadcast_shapes(*(result.shape for result in results)), results[-1].dtype)


@register_op("fused_elementwise", infer=_infer_fused, operands=(1, None), attrs={"program": registry.REQUIRED},
             traits={"elementwise", "fused"}, normalize=_normalize_fused)
def fused_elementwise(*operands, program):
    results: list[np.ndarray] = []
    for instruction in program:
        op, refs, attrs = decode_instruction(instruction)
        arrays = [operands[i] if kind == "in" else results[i] for kind, i in refs]
        results.append(registry.evaluate(op, arrays, attrs))
    return results[-1]
