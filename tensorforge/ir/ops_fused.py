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

fused_reduce (made by the fuse-reduce pass) is a reduction of such a program's values, which are
never stored: `reduction` names the reduce op (reduce_sum, reduce_mean, reduce_max), `axes` and
`keepdims` are its attributes.

    %2 = fused_reduce(%x, %m) {program=[["sub", ["in", 0], ["in", 1]], ["mul", ["t", 0], ["t", 0]]],
                               reduction="reduce_mean", axes=[1], keepdims=true} : f32[4,1]
"""

from __future__ import annotations

from typing import Any, NamedTuple, NoReturn

import numpy as np

from . import registry
from .registry import OpError, register_op
from .types import DType, TensorType, broadcast_shapes

REF_KINDS = ("in", "t")  # an operand of the fused node, the result of an earlier instruction

Ref = tuple[str, int]


def is_fusable(op) -> bool:
    """An op a program may hold: an elementwise op registered with the trait "fusable"."""
    return op in registry.OPS and registry.OPS[op].has("fusable")


def program_flops(attrs: dict[str, Any]) -> int:
    """FLOPs per element of a program: the sum of its instructions' ops' own."""
    return sum(registry.get_op(instruction[0]).flops for instruction in attrs["program"])


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


def _fail(index: int, instruction, message: str, op: str = "fused_elementwise") -> NoReturn:
    raise OpError(f"op '{op}': instruction {index} {instruction!r}: {message}")


def _check_ref(index: int, instruction, ref, operand_count: int, op: str) -> Ref:
    if not (isinstance(ref, (tuple, list)) and len(ref) == 2 and ref[0] in REF_KINDS
            and isinstance(ref[1], (int, np.integer)) and not isinstance(ref[1], bool)):
        _fail(index, instruction, f"a ref is (\"in\", operand) or (\"t\", instruction), got {ref!r}", op)
    kind, position = ref[0], int(ref[1])
    bound = operand_count if kind == "in" else index
    if not 0 <= position < bound:
        readable = "operands of the node" if kind == "in" else "results of earlier instructions"
        _fail(index, instruction, f"ref {ref!r} reads none of the {bound} {readable}", op)
    return (kind, position)


def _check_instruction(index: int, instruction, operand_count: int, op: str) -> Instruction:
    """Decode one instruction, checking its op, its length and its refs (not yet the types)."""
    if not isinstance(instruction, (tuple, list)) or not instruction or not is_fusable(instruction[0]):
        _fail(index, instruction, "an instruction is (op, refs..., attrs...) with op one of "
                                  f"{registry.ops_with('fusable')}", op)
    opdef = registry.get_op(instruction[0])
    length = 1 + opdef.min_operands + len(opdef.attrs)
    if len(instruction) != length:
        _fail(index, instruction, f"'{opdef.name}' takes {opdef.min_operands} refs and the attributes "
                                  f"{list(opdef.attrs)}: {length} items", op)
    decoded = decode_instruction(tuple(instruction))
    refs = tuple(_check_ref(index, instruction, ref, operand_count, op) for ref in decoded.refs)
    return decoded._replace(refs=refs)


def _check_everything_is_read(instructions: list[Instruction], operand_count: int, op: str) -> None:
    read = {ref for instruction in instructions for ref in instruction.refs}
    for position in range(operand_count):
        if ("in", position) not in read:
            raise OpError(f"op '{op}': operand {position} is never read; drop it from the operands")
    for position in range(len(instructions) - 1):
        if ("t", position) not in read:
            raise OpError(f"op '{op}': the result of instruction {position} is never read; drop it")


def typed_program(types: list[TensorType], program, op: str = "fused_elementwise"
                  ) -> list[tuple[Instruction, TensorType]]:
    """Each instruction, its attributes completed by its op, with its result type (the op's own
    inference); `op` (fused_elementwise or fused_reduce) names the node in errors."""
    if not isinstance(program, (tuple, list)) or not program:
        raise OpError(f"op '{op}': 'program' must be a non-empty tuple of instructions, got {program!r}")
    instructions = [_check_instruction(i, instruction, len(types), op) for i, instruction in enumerate(program)]
    _check_everything_is_read(instructions, len(types), op)
    typed: list[tuple[Instruction, TensorType]] = []
    for index, instruction in enumerate(instructions):
        operand_types = [types[i] if kind == "in" else typed[i][1] for kind, i in instruction.refs]
        try:
            result, attrs = registry.infer_type(instruction.op, operand_types, instruction.attrs)
        except ValueError as err:
            _fail(index, program[index], str(err), op)
        typed.append((instruction._replace(attrs=attrs), result))
    return typed


def operand_dtypes(types: list[TensorType], program, op: str = "fused_elementwise") -> list[DType]:
    """The dtype each instruction computes in: its first operand's (for cast, the source dtype)."""
    typed = typed_program(types, program, op)
    return [types[i].dtype if kind == "in" else typed[i][1].dtype
            for (kind, i) in (instruction.refs[0] for instruction, _ in typed)]


def _checked_program(types: list[TensorType], program, op: str = "fused_elementwise") -> tuple[tuple, TensorType]:
    """(the program in canonical form, the type of its values over operands of `types`: every
    instruction's shape broadcast together, the last one's dtype)."""
    typed = typed_program(types, program, op)
    results = [result for _, result in typed]
    return (tuple(encode_instruction(*instruction) for instruction, _ in typed),
            TensorType(broadcast_shapes(*(result.shape for result in results)), results[-1].dtype))


def program_type(types: list[TensorType], program, op: str = "fused_elementwise") -> TensorType:
    """The type of a program's values over operands of `types`."""
    return _checked_program(types, program, op)[1]


def _normalize_fused(types, attrs):
    return {"program": _checked_program(types, attrs["program"])[0]}


def _infer_fused(types, attrs):
    return program_type(types, attrs["program"])


@register_op("fused_elementwise", infer=_infer_fused, operands=(1, None), attrs={"program": registry.REQUIRED},
             traits={"elementwise", "fused"}, normalize=_normalize_fused, flops=program_flops, cost=8)
def fused_elementwise(*operands, program):
    results: list[np.ndarray] = []
    for instruction in program:
        op, refs, attrs = decode_instruction(instruction)
        arrays = [operands[i] if kind == "in" else results[i] for kind, i in refs]
        results.append(registry.evaluate(op, arrays, attrs))
    return results[-1]


# --- fused_reduce: a reduction of a program's values (the fuse-reduce pass) -------------------

REDUCTIONS = ("reduce_sum", "reduce_mean", "reduce_max")


def _reduction_attrs(attrs) -> dict[str, Any]:
    return {"axes": attrs["axes"], "keepdims": attrs["keepdims"]}


def _check_reduction(reduction) -> str:
    if reduction not in REDUCTIONS:
        raise OpError(f"op 'fused_reduce': 'reduction' must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _normalize_fused_reduce(types, attrs):
    reduction = _check_reduction(attrs["reduction"])
    program, values = _checked_program(types, attrs["program"], "fused_reduce")
    return {"program": program, "reduction": reduction,
            **registry.get_op(reduction).complete_attrs([values], _reduction_attrs(attrs))}


def _infer_fused_reduce(types, attrs):
    values = program_type(types, attrs["program"], "fused_reduce")
    return registry.infer_type(attrs["reduction"], [values], _reduction_attrs(attrs))[0]


@register_op("fused_reduce", infer=_infer_fused_reduce, operands=(1, None),
             attrs={"program": registry.REQUIRED, "reduction": registry.REQUIRED, "axes": None, "keepdims": False},
             traits={"reduction", "fused"}, normalize=_normalize_fused_reduce)
def fused_reduce(*operands, program, reduction, axes, keepdims):
    """reduction(fused_elementwise(*operands, program)): the unfused ops' references, in order."""
    values = fused_elementwise(*operands, program=program)
    return registry.evaluate(reduction, [values], {"axes": axes, "keepdims": keepdims})
