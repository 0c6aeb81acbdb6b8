"""The op registry: one `OpDef` per op name, holding everything the compiler knows about the op.

Per op: how many operands it takes, which attributes (with defaults), type inference, the numpy
reference (the only definition of what the op means: the interpreter, constant folding and every
test oracle call it), traits such as "elementwise" or "commutative", and the facts the passes and
tools ask about: FLOPs per element (the profiler), cost per element (how a map splits among
threads), which operands are weights, and how the frontend spells it (`F.relu`, `np.maximum`,
`-x`). Nothing else keeps a list of ops: ask the registry (`ops_with("fusable", "unary")`).

    @register_op("relu", operands=1, traits={"elementwise", "unary", "fusable"}, flops=1,
                 functional=True, numpy=(...,))
    def relu(x):  ...  numpy reference ...

Traits in use:
    elementwise   out[i] depends on the operands at i only (operands broadcast as in numpy)
    fusable       an elementwise op that fused_elementwise/fused_reduce programs may hold (its
                  attributes are plain values); the codegen has an element function for each
    unary, binary one or two tensor operands; commutative: op(a, b) == op(b, a)
    total         finite and well conditioned for every finite operand (random test graphs use these;
                  not div, exp, log, sqrt)
    reduction     reduces axes (attrs axes, keepdims);  contraction: a GEMM-like op (x, w, ...)
    view          no code, the result is the operand's buffer reshaped;  constant;  fused
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .types import DType, TensorType

REQUIRED = object()  # marks an attribute that has no default


class OpError(ValueError):
    """An op was used with operands or attributes it does not accept."""


@dataclass(frozen=True)
class OpDef:
    """Everything the compiler knows about one op."""

    name: str
    reference: Callable[..., np.ndarray]
    infer: Callable[[list[TensorType], dict[str, Any]], TensorType]
    min_operands: int
    max_operands: int | None  # None: any number
    attrs: dict[str, Any] = field(default_factory=dict)  # name -> default (or REQUIRED)
    traits: frozenset[str] = frozenset()
    normalize: Callable[[list[TensorType], dict[str, Any]], dict[str, Any]] | None = None
    flops: int | Callable[[dict[str, Any]], int] | None = None  # FLOPs per output element (elementwise ops:
    # the profiler's roofline), or a function of the node's attributes
    cost: int = 1  # the work of one element in adds (a division or a polynomial exp counts 8): when a map splits
    weights: tuple[int, ...] = ()  # operand positions that hold the layer's weights (linear: w, bias)
    functional: bool = False  # the frontend generates F.<name>(*operands, **attrs) and records this op
    methods: tuple[str, ...] = ()  # Proxy methods/operators that record it ("__neg__"; "__add__" adds "__radd__")
    numpy: tuple[Callable, ...] = ()  # numpy functions that record it on a traced value (np.exp)

    def element_flops(self, attrs: dict[str, Any]) -> int:
        """FLOPs per output element of a node of this op with `attrs` (0 when the op declares none)."""
        if callable(self.flops):
            return self.flops(attrs)
        return self.flops or 0

    def has(self, *traits: str) -> bool:
        """True when the op has every one of `traits`."""
        return set(traits) <= self.traits

    def check_operands(self, count: int) -> None:
        if count < self.min_operands or (self.max_operands is not None and count > self.max_operands):
            if self.max_operands == self.min_operands:
                expected = str(self.min_operands)
            elif self.max_operands is None:
                expected = f"at least {self.min_operands}"
            else:
                expected = f"{self.min_operands} to {self.max_operands}"
            raise OpError(f"op '{self.name}' takes {expected} operands, got {count}")

    def complete_attrs(self, types: list[TensorType], attrs: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults, reject unknown or missing attributes, and canonicalize them."""
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            raise OpError(f"op '{self.name}' has no attribute(s) {unknown}; it takes {sorted(self.attrs)}")
        full = {}
        for key, default in self.attrs.items():
            value = attrs.get(key, default)
            if value is REQUIRED:
                raise OpError(f"op '{self.name}' needs attribute '{key}'")
            full[key] = value
        if self.normalize is not None:
            full = self.normalize(types, full)
        return full


OPS: dict[str, OpDef] = {}


def register_op(name: str, *, infer, operands: int | tuple[int, int | None] = 1, attrs=None,
                traits=(), normalize=None, flops: int | None = None, cost: int = 1, weights=(),
                functional: bool = False, methods=(), numpy=()):
    """Decorator: register the decorated numpy function as the reference of op `name`.

    The keyword arguments are OpDef's fields. An elementwise op must say its `flops` per element.
    """
    low, high = (operands, operands) if isinstance(operands, int) else operands
    traits = frozenset(traits)
    if "elementwise" in traits and flops is None:
        raise ValueError(f"op '{name}' is elementwise: register it with flops=<FLOPs per element> (the profiler's)")
    if "fusable" in traits and "elementwise" not in traits:
        raise ValueError(f"op '{name}': only an elementwise op can be 'fusable'")

    def wrap(reference):
        if name in OPS:
            raise ValueError(f"op '{name}' is registered twice")
        OPS[name] = OpDef(name, reference, infer, low, high, dict(attrs or {}), traits, normalize, flops, cost,
                          tuple(weights), functional, tuple(methods), tuple(numpy))
        return reference

    return wrap


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise OpError(f"unknown op '{name}' (known ops: {', '.join(sorted(OPS))})") from None


def ops_with(*traits: str) -> tuple[str, ...]:
    """The names of the ops that have every one of `traits`, sorted: `ops_with("fusable", "unary")`."""
    return tuple(sorted(name for name, opdef in OPS.items() if opdef.has(*traits)))


def infer_type(op: str, types: list[TensorType], attrs: dict[str, Any]) -> tuple[TensorType, dict[str, Any]]:
    """Check operands and attributes of `op` and return (result type, completed attributes)."""
    opdef = get_op(op)
    opdef.check_operands(len(types))
    full = opdef.complete_attrs(types, attrs)
    return opdef.infer(types, full), full


def evaluate(op: str, arrays: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    """Run the numpy reference of `op`; the result always has the dtype type inference says."""
    opdef = get_op(op)
    out_type, full = infer_type(op, [TensorType.of(a) for a in arrays], attrs)
    with np.errstate(all="ignore"):
        result = np.asarray(opdef.reference(*arrays, **full))
    if result.shape != out_type.shape or result.dtype != out_type.dtype.numpy:
        raise AssertionError(
            f"reference of '{op}' returned {result.dtype}{list(result.shape)}, type inference says {out_type}")
    return result


# --- helpers shared by the op definitions --------------------------------------------------

def same_dtype(op: str, types: list[TensorType]) -> DType:
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        raise OpError(f"op '{op}' needs operands of one dtype, got {', '.join(str(t) for t in types)}")
    return types[0].dtype


def need_float(op: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise OpError(f"op '{op}' needs a float operand, got {t}")


def normalize_axis(op: str, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise OpError(f"op '{op}': axis {axis} is out of range for rank {rank}")
    return axis % max(rank, 1)


def int_pair(op: str, name: str, value) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise OpError(f"op '{op}': attribute '{name}' must be an int or a pair, got {value!r}")
    return pair
