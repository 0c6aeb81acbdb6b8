"""The lowering registry: for every op in ir.OPS, how it is compiled and the dtypes it supports.

Each module of ops/ registers the lowerings of its own ops, next to their emission functions;
importing tensorforge.codegen imports them all (ops/__init__.py):

    register_lowering("softmax", Lowering(emit_softmax, FLOAT, parts=softmax_parts))   # ops/reduce.py
    LOWERINGS["add"]      -> Lowering(map_op_elements, every dtype, split by elementwise_parts)
    LOWERINGS["reshape"]  -> VIEW: no code, the result is the operand's buffer
    LOWERINGS["linear"]   -> Lowering(emit_linear, every dtype, scratch for packing, weight packed at compile time)

`lowering_for(node, target)` is the one place that decides whether a node can be compiled; it
raises CodegenError naming the node, op, dtype and target otherwise.

A lowering may ask for a constant operand in another layout (its `pack_constant` hook, returning a
PackedConstant): build.py stores the result in the weights buffer under `<constant name>@<layout>`,
and the kernel receives a pointer to that copy instead of the row-major original. The original is
stored only if some other user still reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..ir import DType, Node
from .errors import CodegenError
from .kernel import Kernel
from .target import Target

ALL = frozenset(DType)
NUMERIC = ALL - {DType.bool}  # numpy refuses bool for -, unary -, and the padding of pools
FLOAT = frozenset({DType.f32})
INT8 = frozenset({DType.i8, DType.u8})


@dataclass(frozen=True)
class PackedConstant:
    """A constant operand transformed for one kernel: its layout name and the transformed array, or
    a function making it (`make`, called only when the copy is stored: a weights pool holding the
    copy made from the same array already takes that one).

    The copy depends only on the layout name and the constant's value (the name says everything else
    it depends on, such as a transposition): two users asking for the same layout of the same constant
    share one stored copy.
    """

    layout: str
    value: np.ndarray | None = None
    make: Callable[[], np.ndarray] | None = None

    def key(self, constant_name: str) -> str:
        """The name of this copy in the weights buffer (Artifact.weight_offsets)."""
        return f"{constant_name}@{self.layout}"

    def array(self) -> np.ndarray:
        """The transformed array (made now, if it is made by `make`)."""
        return self.make() if self.value is None else self.value


@dataclass(frozen=True)
class Lowering:
    """How one op is compiled: `emit` fills a Kernel, for operands of one of `dtypes`.

    `scratch_bytes(node, target, packed)` is the private workspace the kernel needs besides its
    output, given the operands it receives packed.
    `pack_constant(node, operand_index, target)` may return a constant operand in the kernel's own
    layout (gemm/packing.py), stored once at compile time; the kernel then finds that operand's index
    in `kernel.packed` (always, with `always_pack`). `parts(node, target, threads)` says into how
    many parts the kernel splits its work for a team of `threads` (threads/parallel.py); without it a
    node runs on one thread. A view (`emit` None) has no code: its result is its first operand's
    buffer. The code of a kernel may
    depend on its node's op, attributes, types and which operands are constants and packed, never on
    constant values (unless `reads_values`): nodes equal in those share one function (entry.py).
    """

    emit: Callable[[Kernel], None] | None
    dtypes: frozenset[DType]
    scratch_bytes: Callable[[Node, Target, frozenset[int]], int] | None = None
    pack_constant: Callable[[Node, int, Target], PackedConstant | None] | None = None
    parts: Callable[[Node, Target, int], int] | None = None
    always_pack: bool = False  # the kernel reads its constants only packed (also with build's pack=False)
    reads_values: bool = False  # the code depends on a constant operand's values (not only its type): never shared
    # whether the node's kernel can write its output's images kernel.output_image_stride elements apart
    # (an operand of a concat gathered in place along channels, memory.concat_sinks)
    image_strided: Callable[[Node, Target], bool] | None = None

    @property
    def is_view(self) -> bool:
        return self.emit is None


VIEW = Lowering(None, ALL)

LOWERINGS: dict[str, Lowering] = {}  # op -> its lowering, filled by the modules of ops/ as they are imported


def register_lowering(op: str, lowering: Lowering) -> Lowering:
    """Make `lowering` the way op `op` is compiled; an op has one lowering (ValueError on a second)."""
    if op in LOWERINGS:
        raise ValueError(f"op '{op}' already has a lowering (emit {_name(LOWERINGS[op].emit)}); "
                         f"cannot register emit {_name(lowering.emit)} for it too")
    LOWERINGS[op] = lowering
    return lowering


def _name(emit: Callable | None) -> str:
    return "None (a view)" if emit is None else f"{emit.__module__}.{emit.__qualname__}"


def lowering_for(node: Node, target: Target) -> Lowering:
    """The lowering of an op node; CodegenError if its op or dtype cannot be compiled."""
    dtype = node.inputs[0].dtype if node.inputs else node.dtype
    lowering = LOWERINGS.get(node.op)
    if lowering is None:
        raise CodegenError(f"cannot compile %{node.name} = {node.op}(...) : {node.type} for target {target.name}: "
                           f"op '{node.op}' has no lowering (ops with one: {', '.join(sorted(LOWERINGS))})")
    if dtype not in lowering.dtypes:
        supported = ", ".join(sorted(d.name for d in lowering.dtypes))
        raise CodegenError(f"cannot compile %{node.name} = {node.op}(...) : {node.type} for target {target.name}: "
                           f"op '{node.op}' does not support dtype {dtype.name} (supported: {supported})")
    return lowering


def writes_images_apart(node: Node, target: Target) -> bool:
    """Whether the kernel of computed node `node` can write its output's images apart (Lowering.image_strided)."""
    lowering = lowering_for(node, target)
    return lowering.image_strided is not None and lowering.image_strided(node, target)
