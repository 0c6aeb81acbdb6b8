"""The PyTorch importer: `torch.export` a module, lower it to the core ATen opset, walk its FX graph.

    graph = load_torch(model.eval(), (x,))
    graph(%x: f32[2,16,12,12]) {
      %conv1.0.weight = constant() : f32[32,16,3,3]                 parameters and buffers: module paths
      %convolution = conv2d(%x, %conv1.0.weight) {stride=[2,2], padding=[1,1]} : f32[2,32,6,6]
      ...

A converter is a function of a `NodeContext` registered for one or more ATen ops with
`@converter(aten.relu.default, ...)`; it returns the IR node (or a list, one per output of a
multi-output op; None for an output it does not compute) standing for the FX node's value. IR values
are named after the FX nodes (`convolution_3`, `addmm`), constants after the module path of the
parameter, buffer or tensor constant they hold. What depends on constants only is folded at import:
an op without a converter whose tensor operands are all known (arange, full, the index arithmetic
of a mask) is run by PyTorch itself and becomes a constant; so is every integer or bool result of
known operands. Symbolic sizes (`sym_size`, SymInt arithmetic) are evaluated on the example inputs'
sizes. Anything else raises UnsupportedTorchOp naming the ATen op, the module and the source line.
A transpose of a parameter (a linear layer's `t(weight)`) is done at import and keeps the
parameter's name, so the linear reads a constant named by its module path.

The outputs: `graph.outputs` lists the tensors the module returns, flat; `graph.output_structure`
(ir/structure.py) says how they nest into what it returned, from the program's output TreeSpec
(a tuple, a list, a dict or a Hugging Face ModelOutput, as a dict of its fields that are not None).
A module torch.export cannot export (data-dependent control flow, example inputs that do not fit
its forward) raises TorchImportError naming the module and, when it is the model's, the line.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import sys
from typing import Any

import numpy as np

from ... import ir
from ..builder import GraphBuilder
from .context import (
    CONVERTERS,
    Missing,
    NodeContext,
    TorchImportError,
    UnsupportedTorchOp,
    _register,
    _torch,
    ir_dtype,
    where_from,
)
from .export import core_aten_program, to_numpy


class Importer:
    """The conversion of one ExportedProgram: FX values -> IR values (or Python values for sizes)."""

    def __init__(self, program, example_inputs):
        self.program = program
        self.example_inputs = example_inputs
        self.graph = ir.Graph()
        self.builder = GraphBuilder(self.graph)
        self.env: dict[Any, Any] = {}
        self.symbols: dict[Any, int] = {}

    # --- sizes -------------------------------------------------------------------------------------

    def size(self, dim) -> int:
        """A size (int or SymInt) as an int: symbols bound from the example inputs."""
        if isinstance(dim, int):
            return dim
        expr = dim.node.expr
        try:
            return int(expr.subs(self.symbols))
        except TypeError:
            raise TorchImportError(f"the size {dim} is not determined by the example inputs' sizes") from None

    def bind(self, placeholder, shape: tuple[int, ...], name: str) -> None:
        """Bind the symbolic sizes of a user input's exported shape to the example input's sizes."""
        value = placeholder.meta.get("val")
        if value is None:
            return
        if len(value.shape) != len(shape):
            raise TorchImportError(f"input '{name}' has rank {len(shape)}; the program was exported with rank "
                                   f"{len(value.shape)} ({list(value.shape)})")
        for dim, size in zip(value.shape, shape):
            if isinstance(dim, int):
                if dim != size:
                    raise TorchImportError(f"input '{name}' has shape {list(shape)}; the program was exported "
                                           f"for {list(value.shape)} (export with dynamic_shapes to vary a size)")
            elif dim.node.expr.is_symbol:
                self.symbols[dim.node.expr] = size

    # --- values ------------------------------------------------------------------------------------

    def resolve(self, value, user=None):
        """An FX argument with FX nodes replaced by their values (IR nodes, ints, lists of them)."""
        torch = _torch()
        if isinstance(value, torch.fx.Node):
            result = self.env[value]
            if isinstance(result, Missing):
                module, line = where_from(result.node)
                raise UnsupportedTorchOp(f"output {result.index} of ATen op {result.node.target} (node "
                                         f"'{result.node.name}', in {module}, at {line}) is not supported "
                                         f"(it is read by node '{getattr(user, 'name', '?')}')")
            return result
        if isinstance(value, (list, tuple)):
            return type(value)(self.resolve(v, user) for v in value)
        if isinstance(value, torch.SymInt):
            return self.size(value)
        return value

    def run(self) -> ir.Graph:
        torch = _torch()
        signature = self.program.graph_signature
        constants = {}
        state = self.program.state_dict
        for spec in signature.input_specs:
            kind = spec.kind.name
            if kind in ("PARAMETER", "BUFFER"):
                tensor = state[spec.target] if spec.target in state else self.program.constants[spec.target]
                constants[spec.arg.name] = (spec.target, tensor)
            elif kind == "CONSTANT_TENSOR":
                constants[spec.arg.name] = (spec.target, self.program.constants[spec.target])
            elif kind != "USER_INPUT":
                raise TorchImportError(f"the exported program's input '{spec.arg.name}' is a {kind}; only tensors "
                                       "(user inputs, parameters, buffers, constants) are supported")
        user_inputs = [spec.arg.name for spec in signature.input_specs if spec.kind.name == "USER_INPUT"]
        examples = _example_arrays(self.example_inputs, user_inputs)
        nodes = list(self.program.graph.nodes)
        _check_ops(nodes)
        for node in nodes:
            if node.op == "placeholder":
                if node.name in constants:
                    target, tensor = constants[node.name]
                    array = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
                    self.env[node] = _LazyConstant(array, _constant_name(target))
                else:
                    self.env[node] = self.add_input(node, examples)
            elif node.op == "call_function":
                self.convert(node)
            elif node.op == "output":
                self.set_outputs(node, signature)
            elif node.op != "get_attr":
                raise TorchImportError(f"FX node '{node.name}' ({node.op}) is not supported")
        for node in reversed(list(self.graph.nodes)):  # what no output needs: unused weights, folded sizes
            if node.op != "input" and not node.users and node not in self.graph.outputs:
                self.graph.erase(node)
        ir.verify(self.graph)
        return self.graph

    def add_input(self, node, examples: dict) -> ir.Node:
        value = node.meta.get("val")
        if node.name in examples:
            array = examples[node.name]
            shape, dtype = tuple(array.shape), ir_dtype_of_array(array, node.name)
        elif value is not None and hasattr(value, "shape"):
            shape = tuple(self.size(d) if isinstance(d, int) else d for d in value.shape)
            if not all(isinstance(d, int) for d in shape):
                raise TorchImportError(f"input '{node.name}' has symbolic sizes {list(value.shape)}: pass example "
                                       "inputs to size them")
            dtype = ir_dtype(value.dtype, f"input '{node.name}'")
        else:
            raise TorchImportError(f"input '{node.name}' is not a tensor ({value!r}); only tensor inputs are supported")
        if value is not None and hasattr(value, "dtype") and ir_dtype(value.dtype, node.name) is not dtype:
            raise TorchImportError(f"input '{node.name}' is {dtype.name}; the program was exported for {value.dtype}")
        self.bind(node, shape, node.name)
        return self.graph.add_input(node.name, ir.TensorType(shape, dtype))

    def convert(self, node) -> None:
        torch = _torch()
        target = node.target
        args = [self.resolve(a, node) for a in node.args]
        kwargs = {k: self.resolve(v, node) for k, v in node.kwargs.items()}
        if target in _weight_layouts() and args and isinstance(args[0], _LazyConstant) and not kwargs:
            self.env[node] = args[0].relaid(target, args[1:])
            return
        args = [self.materialize(a) for a in args]
        kwargs = {k: self.materialize(v) for k, v in kwargs.items()}
        if not isinstance(target, torch._ops.OpOverload):
            # Python-level functions: getitem of a multi-output op, SymInt arithmetic (operator.mul, sym_max ...)
            self.env[node] = target(*args, **kwargs)
            return
        if target in IGNORED:
            self.env[node] = None
            return
        if target is torch.ops.aten.sym_size.int:
            self.env[node] = args[0].shape[args[1]]
            return
        entry = CONVERTERS.get(target)
        ctx = NodeContext(self, node, args, kwargs)
        if self.foldable(node, entry, args, kwargs):
            self.env[node] = self.fold(ctx)
            return
        if entry is None:
            ctx.unsupported("no converter, and its operands depend on the model's inputs "
                            "(supported ops: tensorforge.frontend.torch.supported_ops())")
        try:
            result = entry.function(ctx)
        except ir.OpError as error:
            raise TorchImportError(f"{ctx.describe()}: {error}") from None
        if isinstance(result, (list, tuple)):
            result = [Missing(node, i) if r is None else r for i, r in enumerate(result)]
        self.env[node] = result

    def materialize(self, value):
        if isinstance(value, _LazyConstant):
            return value.node(self.builder)
        if isinstance(value, (list, tuple)):
            return type(value)(self.materialize(v) for v in value)
        return value

    def foldable(self, node, entry, args, kwargs) -> bool:
        """Fold at import: every tensor operand known, and no converter or an integer/bool result."""
        tensors = [v for v in _flatten([args, kwargs]) if isinstance(v, ir.Node)]
        if any(self.builder.static(t) is None for t in tensors):
            return False
        if entry is None:
            return True
        value = node.meta.get("val")
        values = value if isinstance(value, (tuple, list)) else [value]
        return all(getattr(v, "dtype", None) is not None and not v.dtype.is_floating_point for v in values)

    def fold(self, ctx: NodeContext):
        """Run the op with PyTorch on the known operands; the results become constants."""
        torch = _torch()

        def to_torch(value):
            if isinstance(value, ir.Node):
                return torch.from_numpy(np.array(self.builder.static(value)))
            if isinstance(value, (list, tuple)):
                return type(value)(to_torch(v) for v in value)
            return value

        try:
            result = ctx.op(*to_torch(ctx.args), **{k: to_torch(v) for k, v in ctx.kwargs.items()})
        except Exception as error:  # noqa: BLE001 - whatever the op raises on these values
            raise TorchImportError(f"{ctx.describe()}: evaluating it on values known at import failed: "
                                   f"{error}") from None

        def to_ir(value, name):
            if isinstance(value, torch.Tensor):
                array = value.detach().cpu().numpy()
                ir_dtype_of_array(array, ctx.name)
                return self.builder.constant(array, name)
            return value

        if isinstance(result, (tuple, list)):
            return [to_ir(v, None) for v in result]
        return to_ir(result, ctx.name)

    def set_outputs(self, node, signature) -> None:
        kinds = [spec.kind.name for spec in signature.output_specs]
        values = node.args[0] if isinstance(node.args[0], (tuple, list)) else [node.args[0]]
        outputs, positions = [], []  # positions: per user output, its index in outputs (None: a None returned)
        for kind, value in zip(kinds, values):
            if kind != "USER_OUTPUT":
                if kind == "BUFFER_MUTATION":
                    raise TorchImportError("the model updates a buffer in its forward (a BatchNorm in training mode, "
                                           "a cache): call model.eval() first, or keep state out of forward")
                continue
            if value is None:
                positions.append(None)
                continue
            result = self.materialize(self.resolve(value))
            if not isinstance(result, ir.Node):
                raise TorchImportError(f"an output of the model is not a tensor ({result!r})")
            positions.append(len(outputs))
            outputs.append(result)
        self.graph.outputs = outputs
        self.graph.output_structure = output_structure(self.program.call_spec.out_spec, positions)


def output_structure(spec, positions: list):
    """torch.export's output TreeSpec as a plain-Python structure (ir/structure.py): each leaf replaced
    by its output position (None for a None); tuples and lists (a namedtuple as a tuple) kept; a dict,
    a Hugging Face ModelOutput (an OrderedDict of its fields that are not None) or a dataclass
    registered with torch.export as a dict keyed by field name (a ModelOutput's None fields are not
    among its keys). None when the program carries no spec (then the outputs are flat)."""
    if spec is None:
        return None
    if spec.num_leaves != len(positions):
        raise TorchImportError(f"the exported program returns {len(positions)} values but its output spec has "
                               f"{spec.num_leaves} leaves")
    leaves = iter(positions)

    def walk(node):
        if node.is_leaf():
            return next(leaves)
        children = [walk(child) for child in node.children()]
        kind, context = node.type, node.context
        if isinstance(kind, type) and issubclass(kind, dict):
            keys = context[1] if kind is collections.defaultdict else context
            return dict(zip((str(key) for key in keys), children, strict=True))
        if isinstance(kind, type) and issubclass(kind, list):
            return children
        if isinstance(kind, type) and issubclass(kind, tuple) or _is_namedtuple_spec(node):
            return tuple(children)
        if dataclasses.is_dataclass(kind) and isinstance(context, (list, tuple)) and len(context) == 2:
            return dict(zip(context[0], children, strict=True))  # register_dataclass: [fields set, fields None]
        if isinstance(context, (list, tuple)) and len(context) == len(children) and \
                all(isinstance(key, str) for key in context):  # another node keyed by its fields' names
            return dict(zip(context, children, strict=True))
        return tuple(children)

    return walk(spec)


def _is_namedtuple_spec(node) -> bool:
    """pytree registers namedtuples with their class as the context (the node type is a function)."""
    return isinstance(node.context, type) and issubclass(node.context, tuple)


class _LazyConstant:
    """A parameter, buffer or constant tensor: an IR constant made when a converter first reads it."""

    def __init__(self, array: np.ndarray, name: str):
        self.array, self.name, self._node = array, name, None

    def relaid(self, op, args) -> _LazyConstant:
        """The parameter transposed by `op` (aten.t, permute, transpose) at import, under the parameter's
        name: a linear layer's weight arrives as `t(weight)`, and the linear then reads a constant
        named by its module path (what quantization and the pictures name the layer by)."""
        result = op(_torch().from_numpy(self.array), *args)
        return _LazyConstant(np.ascontiguousarray(result.numpy()), self.name)

    def node(self, builder: GraphBuilder) -> ir.Node:
        if self._node is None:
            ir_dtype_of_array(self.array, self.name)
            self._node = builder.constant(self.array, self.name)
        return self._node


IGNORED_NAMES = ("_assert_tensor_metadata.default", "_assert_scalar.default", "sym_constrain_range_for_size.default",
                 "sym_constrain_range.default", "_assert_async.msg")


def _ignored():
    torch = _torch()
    found = set()
    for name in IGNORED_NAMES:
        packet, overload = name.split(".")
        op = getattr(torch.ops.aten, packet, None)
        if op is not None and hasattr(op, overload):
            found.add(getattr(op, overload))
    return found


IGNORED: set = set()


def _weight_layouts() -> tuple:
    """The ATen ops that only transpose their operand: applied to a parameter, they are done at import."""
    aten = _torch().ops.aten
    return (aten.t.default, aten.permute.default, aten.transpose.int)


def _flatten(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flatten(v)
    else:
        yield value


_INVALID = re.compile(r"[^A-Za-z0-9_.]")


def _constant_name(target: str) -> str:
    name = _INVALID.sub("_", target) or "constant"
    return f"v{name}" if name[0].isdigit() else name


def ir_dtype_of_array(array: np.ndarray, name: str) -> ir.DType:
    key = "float32" if array.dtype == np.float64 else str(array.dtype)
    return ir_dtype(key, f"'{name}'")


def _example_arrays(example_inputs, names: list[str]) -> dict[str, np.ndarray]:
    """Example inputs (a tuple by position, or a dict by the forward's parameter names) as numpy arrays."""
    if example_inputs is None:
        return {}
    if isinstance(example_inputs, dict):
        unknown = sorted(set(example_inputs) - set(names))
        if unknown:
            raise TorchImportError(f"inputs {unknown} are not inputs of the model ({', '.join(names)})")
        pairs = [(name, example_inputs[name]) for name in names if name in example_inputs]
    else:
        values = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        if len(values) != len(names):
            raise TorchImportError(f"the model takes {len(names)} tensor inputs ({', '.join(names)}); "
                                   f"got {len(values)}")
        pairs = list(zip(names, values))
    return {name: to_numpy(value) for name, value in pairs}


def _check_ops(nodes) -> None:
    """Refuse, before converting anything, ATen ops outside the core opset that nothing converts or folds:
    higher-order ops (control flow) and ops of other namespaces."""
    torch = _torch()
    for node in nodes:
        if node.op != "call_function":
            continue
        if isinstance(node.target, torch._ops.HigherOrderOperator):
            module, line = where_from(node)
            raise UnsupportedTorchOp(f"{node.target} (node '{node.name}', in {module}, at {line}) is control flow "
                                     "(torch.cond, a loop); only straight-line graphs are supported")


def load_torch(model, example_inputs=None) -> ir.Graph:
    """A torch.nn.Module (in eval mode) or a torch.export.ExportedProgram as a verified ir.Graph.

    A module is exported with `torch.export.export(model, example_inputs, strict=False)`; the program is
    lowered to the core ATen opset (`run_decompositions()`) and converted op by op. `example_inputs`
    (torch tensors or numpy arrays, by position or in a dict by the forward's parameter names) also
    size the symbolic dimensions of a program exported with dynamic shapes.
    """
    _register()
    if not IGNORED:
        IGNORED.update(_ignored())
    program = core_aten_program(model, example_inputs)
    return Importer(program, example_inputs).run()


def is_torch_model(model) -> bool:
    """A torch.nn.Module or ExportedProgram, told without importing torch (it is imported if the model is one)."""
    torch = sys.modules.get("torch")  # a torch model exists only once torch is imported
    if torch is None or not hasattr(torch, "nn") or not hasattr(torch, "export"):
        return False
    return isinstance(model, (torch.nn.Module, torch.export.ExportedProgram))
