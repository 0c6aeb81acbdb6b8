"""Where values live: constants in the weights buffer, intermediates in the workspace arena.

Both are laid out at compile time with every buffer at a 64-byte aligned offset:

    pack_weights([fc.weight f32[64,32], fc.bias f32[32]])  -> 8320-byte buffer, {fc.weight: 0, fc.bias: 8192}
    plan_workspace([%1 f32[4,32], %2 f32[4,32]], {})        -> offsets {%1: 0, %2: 512}, 1024 bytes

`plan_workspace` is a bump allocator (every value gets its own bytes); memory planning with
liveness replaces that one function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..ir import Node

ALIGNMENT = 64  # bytes, docs/architecture.md


def align_up(nbytes: int, alignment: int = ALIGNMENT) -> int:
    return -(-nbytes // alignment) * alignment


def pack_weights(constants: Sequence[Node]) -> tuple[np.ndarray, dict[str, int]]:
    """One uint8 buffer holding every constant's bytes; and the byte offset of each, by node name."""
    offsets: dict[str, int] = {}
    size = 0
    for node in constants:
        offsets[node.name] = size
        size = align_up(size + node.type.nbytes)
    buffer = np.zeros(size, dtype=np.uint8)
    for node in constants:
        data = np.ascontiguousarray(node.value).reshape(-1).view(np.uint8)
        buffer[offsets[node.name]:offsets[node.name] + data.size] = data
    return buffer, offsets


@dataclass
class WorkspacePlan:
    """Byte offsets in the workspace arena: each computed value's, and each kernel's scratch."""

    values: dict[Node, int]
    scratch: dict[Node, int]
    size: int


def plan_workspace(values: Sequence[Node], scratch_bytes: dict[Node, int]) -> WorkspacePlan:
    """Bump allocation: each value, then each scratch buffer, at the next aligned offset."""
    size = 0
    value_offsets: dict[Node, int] = {}
    for node in values:
        value_offsets[node] = size
        size = align_up(size + node.type.nbytes)
    scratch_offsets: dict[Node, int] = {}
    for node, nbytes in scratch_bytes.items():
        scratch_offsets[node] = size
        size = align_up(size + nbytes)
    return WorkspacePlan(value_offsets, scratch_offsets, size)
