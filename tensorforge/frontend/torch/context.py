"""What a converter of the PyTorch importer sees: the converter registry, the errors, dtype mapping, and
`NodeContext` (an FX node's operands as IR nodes, its constant arguments, its module path and line).

    @converter(aten.relu.default)
    def relu(ctx: NodeContext):
        return ctx.call("relu", [ctx.input(0)])
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import ir
from ..builder import GraphBuilder

if TYPE_CHECKING:  # annotations only: the importer imports this module
    from .importer import Importer

class TorchImportError(ValueError):
    """The module or its exported program cannot be imported (training mode, inputs, outputs)."""


class UnsupportedTorchOp(TorchImportError):
    """An ATen op (or an argument of it) the importer does not convert; names the op, module and line."""


def _torch():
    try:
        import torch
    except ImportError as error:  # pragma: no cover - the extra is missing
        raise ImportError("importing a PyTorch model needs PyTorch: pip install 'tensorforge[torch]'") from error
    return torch


@dataclass(frozen=True)
class Converter:
    """How one ATen op overload becomes IR: `function(ctx)`."""

    op: Any
    function: Callable[[NodeContext], Any]


CONVERTERS: dict[Any, Converter] = {}


def converter(*ops):
    """Decorator: register `function(ctx)` as the converter of the ATen op overloads `ops`."""
    def wrap(function):
        for op in ops:
            if op in CONVERTERS:
                raise ValueError(f"ATen op {op} has two converters")
            CONVERTERS[op] = Converter(op, function)
        return function

    return wrap


def _register() -> None:
    """Import the converter modules, which register themselves (they import this module)."""
    from . import ops_elementwise, ops_nn, ops_shape  # noqa: F401


def supported_ops() -> list[str]:
    """The ATen ops with a converter, as `aten.relu.default` (ops of known operands fold without one)."""
    _register()
    return sorted(str(op) for op in CONVERTERS)


TORCH_DTYPES = {"float32": ir.DType.f32, "float64": ir.DType.f32, "int8": ir.DType.i8, "uint8": ir.DType.u8,
                "int32": ir.DType.i32, "int64": ir.DType.i64, "bool": ir.DType.bool}


def ir_dtype(torch_dtype, what: str = "a value") -> ir.DType:
    name = str(torch_dtype).removeprefix("torch.")
    if name not in TORCH_DTYPES:
        raise UnsupportedTorchOp(f"{what} has dtype {torch_dtype}, which the IR does not have "
                                 f"(supported: {', '.join(TORCH_DTYPES)})")
    return TORCH_DTYPES[name]


class Missing:
    """An output of a multi-output op the converter does not compute (batch norm's saved statistics)."""

    def __init__(self, node, index: int):
        self.node, self.index = node, index


def where_from(node) -> tuple[str, str]:
    """(module path and class, source line) of an FX node, from its nn_module_stack and stack_trace."""
    stack = node.meta.get("nn_module_stack") or {}
    module = "the root module"
    if stack:
        path, kind = list(stack.values())[-1]
        kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
        kind = kind.rsplit(".", 1)[-1]
        module = f"module '{path}' ({kind})" if path else f"the root module ({kind})"
    return module, source_line(node.meta.get("stack_trace") or "")


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


def source_line(stack_trace: str) -> str:
    """The stack trace's last frame outside PyTorch's own code ('model.py:12 in forward: x = ...')."""
    frames = _FRAME.findall(stack_trace)
    if not frames:
        return "unknown source line"
    outside = [f for f in frames if "/torch/" not in f[0].replace("\\", "/")]
    file, line, function, code = (outside or frames)[-1]
    return f"{file}:{line} in {function}: {code.strip()}"


class NodeContext:
    """What a converter sees of one FX node: its arguments (IR nodes for tensors), its output's type."""

    def __init__(self, importer: Importer, node, args: list, kwargs: dict):
        self.importer = importer
        self.node = node
        self.args = args
        self.kwargs = kwargs
        self.builder: GraphBuilder = importer.builder
        self.name = node.name

    @property
    def op(self):
        return self.node.target

    def arg(self, index: int, name: str | None = None, default=None):
        """Argument `index` (positional, or keyword `name`), `default` when absent."""
        if index < len(self.args):
            return self.args[index]
        if name is not None and name in self.kwargs:
            return self.kwargs[name]
        return default

    def tensor(self, index: int, name: str | None = None) -> ir.Node:
        value = self.arg(index, name)
        if not isinstance(value, ir.Node):
            self.unsupported(f"argument {index} must be a tensor, got {value!r}")
        return value

    @property
    def value(self):
        """The FX node's example value (a FakeTensor, or a tuple of them)."""
        return self.node.meta.get("val")

    @property
    def dtype(self) -> ir.DType:
        """The IR dtype of the (first) output."""
        value = self.value
        value = value[0] if isinstance(value, (tuple, list)) else value
        return ir_dtype(value.dtype, f"the output of {self.describe()}")

    @property
    def shape(self) -> tuple[int, ...]:
        """The (first) output's shape, symbolic sizes evaluated on the example inputs."""
        value = self.value
        value = value[0] if isinstance(value, (tuple, list)) else value
        return tuple(self.importer.size(d) for d in value.shape)

    def constant(self, value, dtype: ir.DType | None = None) -> ir.Node:
        array = np.asarray(value, dtype=None if dtype is None else dtype.numpy)
        return self.builder.constant(array)

    def as_tensor(self, value, dtype: ir.DType) -> ir.Node:
        """`value` (an IR node or a Python number) as an IR value of `dtype` (a cast or a scalar constant)."""
        if isinstance(value, ir.Node):
            return value if value.dtype is dtype else self.call("cast", [value], {"dtype": dtype}, last=False)
        return self.constant(value, dtype)

    def static(self, value: ir.Node) -> np.ndarray | None:
        return self.builder.static(value)

    def call(self, op: str, inputs, attrs: dict | None = None, last: bool = True) -> ir.Node:
        """builder.call named after the FX node when `last` (the node's result), else with a fresh name."""
        return self.builder.call(op, inputs, attrs, self.name if last else None)

    def describe(self) -> str:
        module, line = where_from(self.node)
        return f"ATen op {self.node.target} (node '{self.node.name}', in {module}, at {line})"

    def unsupported(self, detail: str):
        raise UnsupportedTorchOp(f"{self.describe()}: {detail}")
