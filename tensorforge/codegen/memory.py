"""Where values live: constants in the weights buffer, intermediates in the workspace arena.

Both are laid out at compile time with every buffer at a 64-byte aligned offset:

    pack_weights([("fc.weight", f32[64,32]), ("fc.bias", f32[32])])
        -> 8320-byte buffer, {"fc.weight": 0, "fc.bias": 8192}
    plan_workspace([%1 f32[4,32], %2 f32[4,32], %3 f32[4,32]], {})
        %1 dies when %2 is computed, so %3 takes its bytes: {%1: 0, %2: 512, %3: 0}, 1024 bytes

Several graphs compiled together (a generator's prefill and decode) can share one buffer: a
WeightsPool places each graph's constants, reusing the bytes of an equal constant (same name,
dtype and bytes) placed before, so that every graph's offsets point into the same buffer; a packed
copy of a constant array it placed for an earlier graph is not even made again (place_copy).

`plan_workspace` is memory planning by liveness: a value lives from the step that computes it to
the last step that reads it (through views such as reshape, which share their operand's bytes);
graph outputs live to the end, since tf_run copies them out last. Values whose lives overlap get
disjoint bytes; the others may share. Offsets are found greedily, biggest value first, at the
lowest aligned offset that is free during the value's whole life.

A concat whose operands are computed for it alone gathers them in place (`concat_sinks`): each
operand's kernel writes into the concat's bytes, which live from the first operand's step, and the
concat itself is no kernel (SqueezeNet's Fire modules). At a batch of one along channels (every axis
before the concat's of size 1) an operand is one contiguous block of the result; along the channels
of several images it is one block per image, which only kernels that write their output's images
`output_image_stride` elements apart can fill (Lowering.image_strided: the f32 convolutions).
"""

from __future__ import annotations

import mmap
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..ir import OPS, Node
from ..ir.arrays import same_bytes

ALIGNMENT = 64  # bytes, docs/architecture.md


def align_up(nbytes: int, alignment: int = ALIGNMENT) -> int:
    return -(-nbytes // alignment) * alignment


def aligned_empty(nbytes: int, alignment: int = ALIGNMENT, zeroed: bool = False) -> np.ndarray:
    """A uint8 buffer of `nbytes` (at least one alignment unit) starting at an aligned address; uninitialized
    unless `zeroed`."""
    size = max(nbytes, alignment)
    raw = (np.zeros if zeroed else np.empty)(size + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + size]


@dataclass
class ConstantLayout:
    """What the weights buffer holds: `entries` (name, array), and per node the operands it reads
    in a packed copy, as {operand index: entry name}."""

    entries: list[tuple[str, np.ndarray]]
    packed: dict[Node, dict[int, str]]
    sizes: dict[str, int] = field(default_factory=dict)  # entry name -> bytes
    offsets: dict[str, int] = field(default_factory=dict)  # placed in a WeightsPool already: name -> offset

    def nbytes(self, name: str) -> int:
        return self.sizes[name]


def pack_weights(entries: Sequence[tuple[str, np.ndarray]]) -> tuple[np.ndarray, dict[str, int]]:
    """One uint8 buffer holding every entry's bytes; and the byte offset of each, by name.

    The names are the constants' node names, or `<name>@<layout>` for a copy a kernel asked for
    in its own layout (gemm/packing.py).
    """
    offsets: dict[str, int] = {}
    size = 0
    for name, value in entries:
        offsets[name] = size
        size = align_up(size + value.nbytes)
    buffer = aligned_empty(size, zeroed=True)[:size]  # aligned: the runtime passes it as it is, no copy
    for name, value in entries:
        data = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
        buffer[offsets[name]:offsets[name] + data.size] = data
    return buffer, offsets


class WeightsPool:
    """One weights buffer for several graphs: `pool.place(entries)` gives each entry's offset, reusing the
    bytes of an equal entry placed before (same name, dtype, shape and bytes, compared a chunk at a time:
    no temporaries the size of the entry), and `pool.buffer()` the buffer so far (a view of the same
    memory every time, so buffers handed out earlier stay valid).

    The memory is reserved up front (`capacity` bytes of an anonymous mapping: pages cost nothing until
    written) and filled as graphs are placed; a graph that would not fit raises ValueError (the caller
    gives that graph a buffer of its own)."""

    def __init__(self, capacity: int):
        self.capacity = align_up(max(int(capacity), ALIGNMENT), mmap.PAGESIZE)
        self._memory = mmap.mmap(-1, self.capacity)
        self._bytes = np.frombuffer(self._memory, dtype=np.uint8)  # page aligned, zero filled
        self.size = 0
        self._placed: dict[str, list[tuple[int, np.dtype, tuple]]] = {}  # name -> where each copy is, as what
        self._copies: dict[str, list[tuple[weakref.ref, int, int]]] = {}  # name -> (made from, offset, bytes)

    def place(self, entries: Sequence[tuple[str, np.ndarray]]) -> dict[str, int]:
        """The offset of each (name, value) entry in the pool, placing the values not already there."""
        offsets: dict[str, int] = {}
        new: list[tuple[str, np.ndarray, int]] = []
        size = self.size
        for name, value in entries:
            value = np.ascontiguousarray(value)
            found = next((offset for offset, dtype, shape in self._placed.get(name, ())
                          if dtype == value.dtype and shape == value.shape
                          and same_bytes(self._view(offset, dtype, shape), value)), None)
            if found is None:
                found = align_up(size)
                size = found + value.nbytes
                new.append((name, value, found))
            offsets[name] = found
        if align_up(size) > self.capacity:
            raise ValueError(f"the weights pool holds {self.capacity} bytes; these constants need {align_up(size)}")
        for name, value, offset in new:
            self._bytes[offset:offset + value.nbytes] = value.reshape(-1).view(np.uint8)
            self._placed.setdefault(name, []).append((offset, value.dtype, value.shape))
        self.size = align_up(size)
        return offsets

    def place_copy(self, name: str, source: np.ndarray, make: Callable[[], np.ndarray]) -> tuple[int, int]:
        """The offset and size of a copy of the constant array `source` in another layout (`name`:
        `<constant>@<layout>`): `make()` placed as by `place`, unless this pool placed a copy named so
        from the same array object before, then that one, not made again. (A copy depends only on its
        layout and the constant's value, and a constant's array is never written: lowering.PackedConstant.)"""
        for made_from, offset, nbytes in self._copies.get(name, ()):
            if made_from() is source:
                return offset, nbytes
        value = make()
        offset = self.place([(name, value)])[name]
        self._copies.setdefault(name, []).append((weakref.ref(source), offset, value.nbytes))
        return offset, value.nbytes

    def _view(self, offset: int, dtype: np.dtype, shape: tuple) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64))
        return self._bytes[offset:offset + count * dtype.itemsize].view(dtype).reshape(shape)

    def buffer(self) -> np.ndarray:
        """The pool's bytes placed so far (a view: the memory is shared with every buffer given before)."""
        return self._bytes[:self.size]


@dataclass
class WorkspacePlan:
    """Byte offsets in the workspace arena: each computed value's, and each kernel's scratch.

    `size` is the arena (the peak of live bytes, up to fragmentation); `unshared_bytes` is what
    the arena would be if every value and scratch buffer had bytes of its own.
    """

    values: dict[Node, int]
    scratch: dict[Node, int]
    size: int
    unshared_bytes: int = 0
    in_place: dict[Node, Node] = field(default_factory=dict)  # value -> the operand whose bytes it overwrites
    gathered: frozenset = frozenset()  # concats whose operands are computed into their bytes: no kernel


@dataclass(frozen=True)
class _Life:
    key: tuple[str, Node]  # ("value" | "scratch", node)
    nbytes: int
    first: int  # step that writes it
    last: int  # last step that reads it


def _lives(values: Sequence[Node], scratch_bytes: dict[Node, int],
           in_place: dict[Node, Node] | None = None, sinks: dict[Node, tuple[Node, int]] | None = None) -> list[_Life]:
    """The lives of every value and scratch buffer; a value computed in place of an operand
    (`in_place`) has no life of its own: its operand's lasts until the value's last reader. Nor has an
    operand a concat gathers (`sinks`): the concat's life starts at its first operand's step."""
    step = {node: index for index, node in enumerate(values)}

    def storage(node: Node) -> Node | None:
        """The computed value whose bytes `node` is: itself, or the base of a chain of views."""
        while node not in step:
            if node.op in ("input", "constant") or not node.inputs:
                return None
            node = node.inputs[0]
        return node

    last = dict(step)
    for node in values:
        for operand in node.inputs:
            base = storage(operand)
            if base is not None:
                last[base] = max(last[base], step[node])
    if values:
        for output in values[0].graph.outputs:
            base = storage(output)
            if base is not None:
                last[base] = len(values)
    in_place = in_place or {}
    for node in reversed(values):  # a chain x -> relu -> neg in place: x lives until neg's last reader
        if node in in_place:
            last[in_place[node]] = max(last[in_place[node]], last[node])
    sinks = sinks or {}
    first = dict(step)
    for operand, (concat, _) in sinks.items():
        first[concat] = min(first[concat], step[operand])
    lives = [_Life(("value", node), align_up(max(node.type.nbytes, 1)), first[node], last[node]) for node in values
             if node not in in_place and node not in sinks]
    lives += [_Life(("scratch", node), align_up(nbytes), step[node], step[node])
              for node, nbytes in scratch_bytes.items()]
    return lives


def _in_place_pairs(values: Sequence[Node], last: dict[Node, int],
                    sinks: dict[Node, tuple[Node, int]] | None = None) -> dict[Node, Node]:
    """Elementwise values that may overwrite an operand: one of the same bytes and shape, computed
    here (not an input, a constant or a view), read for the last time by this value. Each element
    is read before the same element is written, so the loop stays correct. A value a concat gathers
    (`sinks`) is written in the concat's bytes instead."""
    step = {node: index for index, node in enumerate(values)}
    in_place: dict[Node, Node] = {}
    taken: set[Node] = set()
    for node in values:
        if "elementwise" not in getattr(OPS.get(node.op), "traits", ()) or node in (sinks or {}):
            continue
        for operand in node.inputs:
            if (operand in step and operand not in taken and last[operand] == step[node]
                    and operand.type.shape == node.type.shape and operand.type.nbytes == node.type.nbytes):
                in_place[node] = operand
                taken.add(operand)
                break
    return in_place


def _root(node: Node, in_place: dict[Node, Node]) -> Node:
    while node in in_place:
        node = in_place[node]
    return node


def plan_workspace(values: Sequence[Node], scratch_bytes: dict[Node, int], share: bool = True,
                   image_strided: Callable[[Node], bool] = lambda node: False) -> WorkspacePlan:
    """Offsets for `values` (computed nodes in execution order) and each kernel's scratch, by liveness.

    An elementwise value whose operand dies at its step takes that operand's bytes (`in_place`); the
    operands of a concat that gathers them in place (`concat_sinks`, with `image_strided` the nodes
    whose kernels can write their images apart) lie in the concat's bytes. `share=False` gives every
    buffer bytes of its own (as if all lived throughout): no planning.
    """
    placed: list[tuple[_Life, int]] = []
    offsets: dict[tuple[str, Node], int] = {}
    in_place: dict[Node, Node] = {}
    sinks = concat_sinks(values, image_strided) if share else {}
    if share:  # the lives without in-place reuse tell which operands die where
        in_place = _in_place_pairs(values, {life.key[1]: life.last for life in _lives(values, {})}, sinks)
    lives = _lives(values, scratch_bytes, in_place, sinks)
    if not share:
        lives = [_Life(life.key, life.nbytes, 0, len(values)) for life in lives]
    for life in sorted(lives, key=lambda life: (-life.nbytes, life.first)):
        busy = sorted((offset, offset + other.nbytes) for other, offset in placed
                      if other.first <= life.last and life.first <= other.last)
        offset = 0
        for start, end in busy:
            if offset + life.nbytes <= start:
                break
            offset = max(offset, end)
        placed.append((life, offset))
        offsets[life.key] = offset
    size = max((offset + life.nbytes for life, offset in placed), default=0)
    for operand, (concat, at) in sinks.items():
        offsets[("value", operand)] = offsets[("value", concat)] + at
    return WorkspacePlan({node: offsets[("value", _root(node, in_place))] for node in values},
                         {node: offsets[("scratch", node)] for node in scratch_bytes}, size,
                         sum(align_up(max(node.type.nbytes, 1)) for node in values)
                         + sum(align_up(nbytes) for nbytes in scratch_bytes.values()), in_place,
                         frozenset(concat for concat, _ in sinks.values()))


def concat_sinks(values: Sequence[Node], image_strided: Callable[[Node], bool] = lambda node: False
                 ) -> dict[Node, tuple[Node, int]]:
    """{operand: (concat, byte offset in it)} for every concat among `values` (computed nodes in
    execution order) that gathers its operands in place. Each operand is computed here (not an input,
    a constant or a view), read by this concat alone and once, neither a graph output nor a concat
    itself, and starts at an aligned offset. Either every axis before the concat's has size 1 (an
    operand is one contiguous block of the result), or the concat joins the channels (axis 1) of
    several images, each image's bytes a multiple of the alignment, and every operand's kernel can
    write its images apart (`image_strided(operand)`; see output_image_stride)."""
    computed = set(values)
    outputs = set(values[0].graph.outputs) if values else set()
    sinks: dict[Node, tuple[Node, int]] = {}
    for node in values:
        if node.op != "concat":
            continue
        axis = node.attrs["axis"]
        images = int(np.prod(node.type.shape[:axis])) != 1  # an operand is a block per image of the result
        if images and (axis != 1 or node.type.size == 0 or node.type.nbytes // node.type.shape[0] % ALIGNMENT):
            continue
        starts = np.cumsum([0] + [operand.type.nbytes // max(operand.type.shape[0], 1) if axis == 1
                                  else operand.type.nbytes for operand in node.inputs[:-1]])
        if all(operand in computed and operand.op != "concat" and operand not in outputs and operand not in sinks
               and list(operand.users) == [node] and node.inputs.count(operand) == 1 and start % ALIGNMENT == 0
               and (not images or image_strided(operand)) for operand, start in zip(node.inputs, starts)):
            sinks.update({operand: (node, int(start)) for operand, start in zip(node.inputs, starts)})
    return sinks


def output_image_stride(node: Node, gathered: frozenset) -> int:
    """Elements between the images of `node`'s output when it is an operand of a concat gathered in
    place along the channels of several images (memory.concat_sinks): the concat's elements per
    image; 0 when its output is contiguous."""
    users = list(node.users)
    if len(users) != 1 or users[0] not in gathered or users[0].attrs["axis"] != 1 or node.type.shape[0] == 1:
        return 0
    return int(np.prod(users[0].type.shape[1:]))


@dataclass
class MemoryReport:
    """Peak activation memory of a compiled model (its workspace arena) against the sum of every
    intermediate tensor and scratch buffer, and where each value lives."""

    arena_bytes: int
    intermediate_bytes: int  # every computed value, each in bytes of its own
    scratch_bytes: int  # the kernels' private buffers (packing, padded images), each in bytes of its own
    weight_bytes: int
    values: list[tuple[str, str, int, int]]  # (node, op, bytes, offset) in execution order

    @property
    def saving(self) -> float:
        """How many times smaller the arena is than giving every buffer bytes of its own."""
        return (self.intermediate_bytes + self.scratch_bytes) / self.arena_bytes if self.arena_bytes else 1.0

    def __str__(self) -> str:
        kib = 1024
        lines = [f"workspace arena {self.arena_bytes / kib:.1f} KiB (peak of live activations and scratch); "
                 f"without sharing {(self.intermediate_bytes + self.scratch_bytes) / kib:.1f} KiB "
                 f"(intermediates {self.intermediate_bytes / kib:.1f} KiB + scratch {self.scratch_bytes / kib:.1f} KiB)"
                 f": {self.saving:.2f}x smaller; weights {self.weight_bytes / kib:.1f} KiB",
                 f"{'value':<24} {'op':<18} {'KiB':>9} {'offset':>10}"]
        lines += [f"{'%' + name:<24} {op:<18} {nbytes / kib:>9.1f} {offset:>10}"
                  for name, op, nbytes, offset in self.values]
        return "\n".join(lines)


def memory_report(plan: WorkspacePlan, weight_bytes: int) -> MemoryReport:
    """The MemoryReport of a workspace plan (Artifact.memory)."""
    values = [(node.name, node.op, node.type.nbytes, offset) for node, offset in plan.values.items()]
    intermediates = sum(nbytes for _, _, nbytes, _ in values)
    return MemoryReport(plan.size, intermediates, plan.unshared_bytes - sum(align_up(max(node.type.nbytes, 1))
                                                                            for node in plan.values),
                        weight_bytes, values)
