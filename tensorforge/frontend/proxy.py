"""Traced values: `Proxy` stands for a value known only at run time, `Tracer` records the graph.

    x = Proxy(tracer, graph.add_input("x", f32[4,64]))
    y = F.relu(x @ w)            records  %0 = matmul(%x, %w) : f32[4,32]
                                          %1 = relu(%0) : f32[4,32]

A Proxy behaves like the numpy array it stands for. Shapes are static, so `x.shape` and `len(x)`
are plain Python values. Its operators (`+ - * / @ **`, `-x`, `abs(x)`, indexing, `reshape`,
`sum`...) and numpy functions (`np.exp(x)`) are installed by `functional.py`, which says what
each records (from the op registry where the op is a plain tensor function). Anything that needs
the contents (`if x.sum() > 0`, `float(x)`, `np.asarray(x)`) raises `TraceError` saying what to
do instead; so does an op recorded on a value of a finished trace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import ir


class TraceError(Exception):
    """The model does something a static trace cannot record; the message says what to do instead."""


# --- operands ----------------------------------------------------------------------------------

def narrow_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype.kind == "f" else dtype


def narrow_float(array: np.ndarray) -> np.ndarray:
    return array.astype(narrow_dtype(array.dtype), copy=False)


def tensor_dtype(operands: Sequence) -> np.dtype | None:
    """The dtype of the first tensor (Proxy or ndarray) operand; Python scalars and lists adopt it."""
    for value in operands:
        if isinstance(value, Proxy):
            return value.dtype
        if isinstance(value, np.ndarray):
            return narrow_dtype(value.dtype)
    return None


def operand_array(value, dtype: np.dtype | None, op: str) -> np.ndarray:
    """An operand of `op` that is not traced, as an array of a dtype the IR has.

    Arrays keep their dtype, except float64/float16, which become float32 (the IR's one float type,
    as `ir.coerce_input` does). Python scalars, lists and numpy scalars are weakly typed, as in
    numpy's NEP 50: they take `dtype`, the dtype of the op's tensor operand, so f32 x + 1.0 stays
    f32; a float joining an int tensor, or an int that does not fit its dtype, is refused.
    """
    if isinstance(value, np.ndarray):
        return narrow_float(value)
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ir.OpError(f"op '{op}': operand {value!r} ({type(value).__name__}) is not a number or an array")
    if dtype is None or array.dtype == dtype:
        return narrow_float(array)
    if array.dtype.kind == "f" and dtype.kind != "f":
        raise ir.OpError(f"op '{op}': the float value {value!r} cannot join a {dtype} tensor without losing its "
                         f"fraction; cast the tensor first (x.astype(np.float32))")
    if dtype.kind == "b" and array.dtype.kind != "b":
        raise ir.OpError(f"op '{op}': the number {value!r} cannot join a bool tensor; use True/False")
    if dtype.kind in "iu" and array.dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise ir.OpError(f"op '{op}': the value {value!r} does not fit the {dtype} tensor it joins")
    return array.astype(dtype)


class Tracer:
    """The graph being recorded and the names of the arrays the model holds (by identity)."""

    def __init__(self, graph: ir.Graph, array_names: dict[int, str], copy_constants: bool = True):
        self.graph = graph
        self.array_names = array_names
        self.copy_constants = copy_constants
        self.active = True  # False once trace() has returned: the graph is finished
        self._constants: dict[int, tuple[np.ndarray, ir.Node]] = {}

    def constant(self, value, dtype: np.dtype | None = None, op: str = "output") -> ir.Node:
        """The constant node of an untraced operand; one node per array object, named by its path if it has one."""
        key = id(value) if isinstance(value, np.ndarray) else None
        if key in self._constants:
            return self._constants[key][1]
        # a copy: changing the model's arrays after tracing does not change the graph (or, without
        # copy_constants, a read-only view of the model's array: the graph cannot change it)
        array = operand_array(value, dtype, op)
        if self.copy_constants:
            array = np.array(array)
        elif isinstance(array, np.ndarray):
            array = array.view()
            array.flags.writeable = False
        node = self.graph.constant(array, self.array_names.get(key))
        if key is not None:
            self._constants[key] = (value, node)  # keeps `value` alive, so its id is not reused
        return node

    def record(self, op: str, operands: Sequence, attrs: dict[str, Any]) -> Proxy:
        """Add `op(operands) {attrs}` to the graph; untraced operands become constants."""
        for value in operands:
            if isinstance(value, Proxy) and value.tracer is not self:
                raise TraceError(f"'{op}' mixes values of two different traces")
        if not self.active:
            raise TraceError(f"'{op}' was applied to a traced value after trace() returned; traced values are "
                             "only valid while the model runs")
        dtype = tensor_dtype(operands)
        try:
            nodes = [value.node if isinstance(value, Proxy) else self.constant(value, dtype, op) for value in operands]
            node = self.graph.call(op, nodes, attrs)
        except ir.OpError as error:
            raise TraceError(f"while tracing: {error}") from None
        return Proxy(self, node)


# --- Proxy -------------------------------------------------------------------------------------

def _refuse(what: str, hint: str) -> Callable:
    def method(self, *args, **kwargs):
        raise TraceError(f"{what} of the traced value %{self.node.name} ({self.node.type}) needs its contents, "
                         f"which are only known at run time; {hint}")

    return method


BRANCH_HINT = ("branch on what is static (x.shape, x.ndim, x.dtype) instead, or compute both branches and "
               "select element by element: np.where(x > 0, a, b)")


class Proxy:
    """A traced value: a node of the graph being recorded, with the operators of a numpy array."""

    def __init__(self, tracer: Tracer, node: ir.Node):
        self.tracer = tracer
        self.node = node

    # static facts: plain Python values
    @property
    def shape(self) -> tuple[int, ...]:
        return self.node.type.shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.node.type.dtype.numpy

    @property
    def size(self) -> int:
        return self.node.type.size

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object (a 0-d traced value)")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Proxy(%{self.node.name}: {self.node.type})"

    __hash__ = object.__hash__  # by identity; == records an `equal` node, as numpy's == makes an array

    def __pos__(self) -> Proxy:
        return self

    def __iter__(self):
        raise TraceError(f"Iteration over the traced value %{self.node.name} ({self.node.type}) is not supported; "
                         "index it instead: [x[i] for i in range(x.shape[0])]")

    def __setitem__(self, key, value):
        raise TraceError(f"assigning into the traced value %{self.node.name} ({self.node.type}) is not supported: "
                         "traced values are immutable; build a new value (concat, arithmetic with a mask)")

    # TinyTorch's Tensor.data / .numpy(): the raw array, which a trace does not have
    data = property(_refuse("Reading .data", "use tensor operations on the value itself, not its raw array"))
    numpy = _refuse(".numpy()", "use tensor operations on the value itself, not its raw array")


# what needs the contents of a value -> (what it is, what to do instead)
REFUSED = {
    "__bool__": ("Python control flow on the truth (if, while, and, or, not)", BRANCH_HINT),
    "__float__": ("float()", "keep it a tensor: tensor ops and operators accept traced values"),
    "__int__": ("int()", "keep it a tensor, or take sizes from x.shape, which is static"),
    "__index__": ("Using as an index or a size", "index with Python ints and slices; take sizes from x.shape"),
    "__complex__": ("complex()", "keep it a tensor"),
    "__array__": ("Converting to a numpy array (np.asarray, np.array)",
                  "use tensorforge ops, operators and the numpy functions that have an op"),
    "item": (".item()", "keep it a tensor: tensor ops and operators accept traced values"),
    "tolist": (".tolist()", "keep it a tensor: tensor ops and operators accept traced values"),
}

for _name, (_what, _hint) in REFUSED.items():
    setattr(Proxy, _name, _refuse(_what, _hint))
