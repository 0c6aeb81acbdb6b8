"""The ONNX importer: a ModelProto's graph becomes an ir.Graph, one registered converter per ONNX op.

    graph = load_onnx("resnet18.onnx", x)
    graph(%input: f32[1,3,224,224]) {
      %conv1.weight = constant() : f32[64,3,7,7]
      %node_Conv_0 = conv2d(%input, %conv1.weight, %conv1.bias) {stride=[2,2], padding=[3,3]} : f32[1,64,112,112]
      %node_Relu_1 = relu(%node_Conv_0) : f32[1,64,112,112]
      ...

A converter is a function of a `NodeContext` registered for one or more op types with
`@converter("Relu", "Sigmoid")`; it returns the IR node (or nodes, one per ONNX output) that
stand for the node's outputs. `until` is the newest version of the op (its schema's since_version)
whose meaning the converter knows: a model whose opset gives a newer version is refused rather
than imported with the old meaning. IR values keep the model's names (node names, initializer
names; characters the IR does not allow become "." or "_"). Shape arithmetic is folded as it is
imported: `ctx.static(i)` evaluates an input computed from constants only, so Reshape, Expand,
Slice... get their shapes from Shape/Gather/Concat chains of a model exported with dynamic axes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import ir
from ...ir.names import ir_name
from ..builder import GraphBuilder
from .inputs import bind_inputs
from .reader import OnnxImportError, UnsupportedOnnxOp, _onnx, opset_version, read_model, tensor_array

MIN_OPSET = 7


@dataclass(frozen=True)
class Converter:
    """How one ONNX op type becomes IR: `function(ctx)` and the newest op version it knows."""

    op_type: str
    function: Callable[[NodeContext], Any]
    until: int | None


CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str, until: int | None = None):
    """Decorator: register `function(ctx)` as the converter of `op_types` (of the default domain)."""
    def wrap(function):
        for op_type in op_types:
            if op_type in CONVERTERS:
                raise ValueError(f"ONNX op {op_type} has two converters")
            CONVERTERS[op_type] = Converter(op_type, function, until)
        return function

    return wrap


def supported_ops() -> list[str]:
    """The ONNX op types the importer converts (the one list: docs and conformance tests read it)."""
    _register()
    return sorted(CONVERTERS)


def _register() -> None:
    """Import the converter modules, which register themselves (they import this module)."""
    from . import ops_elementwise, ops_nn, ops_quant, ops_shape  # noqa: F401


class NodeContext:
    """What a converter sees of one ONNX node: its inputs as IR nodes, attributes, version and name."""

    def __init__(self, importer: Importer, node, version: int):
        self.importer = importer
        self.node = node
        self.version = version
        self.builder: GraphBuilder = importer.builder
        self.name = ir_name(node.name) or ir_name(node.output[0] if node.output else "") or None
        self.inputs = [importer.value(name, node) if name else None for name in node.input]
        self._attributes = {attribute.name: attribute for attribute in node.attribute}

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def output_count(self) -> int:
        return len(self.node.output)

    def input(self, index: int) -> ir.Node:
        """Input `index`, which the op requires."""
        if index >= len(self.inputs) or self.inputs[index] is None:
            raise OnnxImportError(f"{self.describe()} needs input {index}, which the model leaves out")
        return self.inputs[index]

    def optional(self, index: int) -> ir.Node | None:
        return self.inputs[index] if index < len(self.inputs) else None

    def static(self, index: int, what: str = "") -> np.ndarray:
        """The value of input `index`, which must be computed from constants only (a shape, axes, pads)."""
        value = self.builder.static(self.input(index))
        if value is None:
            raise UnsupportedOnnxOp(f"{self.describe()}: input {index}{f' ({what})' if what else ''} must be known "
                                    "at import (computed from constants and input shapes); here it depends on the "
                                    "model's input values")
        return value

    def optional_static(self, index: int, what: str = "") -> np.ndarray | None:
        return None if self.optional(index) is None else self.static(index, what)

    def has(self, name: str) -> bool:
        return name in self._attributes

    def attr(self, name: str, default=None):
        """An attribute's value as Python data (ints, floats, strings, lists, arrays); `default` when absent."""
        if name not in self._attributes:
            return default
        onnx = _onnx()
        value = onnx.helper.get_attribute_value(self._attributes[name])
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, onnx.TensorProto):
            return tensor_array(value, None, f"attribute '{name}' of {self.describe()}")
        if isinstance(value, list) and value and isinstance(value[0], bytes):
            return [v.decode() for v in value]
        return value

    def unsupported(self, detail: str, attribute: str | None = None):
        """Raise UnsupportedOnnxOp naming the node, op, opset and (if given) the attribute."""
        where = f" attribute '{attribute}'" if attribute else ""
        raise UnsupportedOnnxOp(f"{self.describe()}{where}: {detail}")

    def check(self, name: str, allowed, default=None) -> Any:
        """The attribute `name`, refused unless it is one of `allowed`."""
        value = self.attr(name, default)
        if value not in allowed:
            self.unsupported(f"value {value!r} is not supported (supported: {', '.join(map(repr, allowed))})", name)
        return value

    def describe(self) -> str:
        node = self.node
        label = f"'{node.name}'" if node.name else f"with outputs {list(node.output)}"
        return f"ONNX node {label} ({node.op_type}, opset {self.importer.opset}, op version {self.version})"

    def call(self, op: str, inputs, attrs: dict | None = None, last: bool = True) -> ir.Node:
        """builder.call named after the node when `last` (the node's result), else with a fresh name."""
        return self.builder.call(op, inputs, attrs, self.name if last else None)


class Importer:
    """The conversion of one graph: values by ONNX name, the builder, the opset."""

    def __init__(self, model, folder, example_inputs):
        self.model = model
        self.folder = folder
        self.opset = opset_version(model)
        if self.opset < MIN_OPSET:
            raise UnsupportedOnnxOp(f"the model's opset {self.opset} is older than the oldest supported, {MIN_OPSET}")
        self.graph = ir.Graph()
        self.builder = GraphBuilder(self.graph)
        self.values: dict[str, ir.Node] = {}
        self.example_inputs = example_inputs

    def value(self, name: str, node=None) -> ir.Node:
        if name not in self.values:
            user = f" of ONNX node '{node.name or node.op_type}'" if node is not None else ""
            raise OnnxImportError(f"value '{name}'{user} is not defined: no input, initializer or earlier node "
                                  "makes it")
        return self.values[name]

    def run(self) -> ir.Graph:
        onnx_graph = self.model.graph
        nodes = ordered_nodes(onnx_graph)
        check_ops(nodes, self.opset, self.model)
        initializers = {tensor.name for tensor in onnx_graph.initializer}
        for name, type_ in bind_inputs(onnx_graph, initializers, self.example_inputs):
            self.values[name] = self.graph.add_input(ir_name(name) or "x", type_)
        for tensor in onnx_graph.initializer:
            self.values[tensor.name] = self.builder.constant(tensor_array(tensor, self.folder), ir_name(tensor.name))
        for node in nodes:
            self.convert(node)
        outputs = []
        for output in onnx_graph.output:
            outputs.append(self.value(output.name))
        self.graph.outputs = outputs
        self._name_outputs(onnx_graph)
        for node in reversed(list(self.graph.nodes)):  # what no output needs: shape arithmetic, unused outputs
            if node.op != "input" and not node.users and node not in self.graph.outputs:
                self.graph.erase(node)
        ir.verify(self.graph)
        return self.graph

    def _name_outputs(self, onnx_graph) -> None:
        """Each computed output named as the model names it ('logits', not its node's '/fc/Gemm'), where the
        name is free and the value is that one output; so are the compiled model's outputs, pictures and
        saved files."""
        for node, output in zip(self.graph.outputs, onnx_graph.output):
            wanted = ir_name(output.name)
            if node.op in ("input", "constant") or not wanted or self.graph.outputs.count(node) > 1:
                continue
            with contextlib.suppress(ValueError):  # the name is another value's: the node keeps its own
                self.graph.rename(node, wanted)

    def convert(self, node) -> None:
        entry = CONVERTERS.get(node.op_type)
        version = schema_version(node.op_type, self.opset)
        ctx = NodeContext(self, node, version)
        if entry is None:
            self.evaluate(ctx)
            return
        if entry.until is not None and version > entry.until:
            ctx.unsupported(f"op version {version} is newer than the importer knows ({node.op_type}-{entry.until})")
        try:
            result = entry.function(ctx)
        except ir.OpError as error:
            raise OnnxImportError(f"{ctx.describe()}: {error}") from None
        results = list(result) if isinstance(result, (list, tuple)) else [result]
        for index, name in enumerate(node.output):
            if not name:
                continue
            if index >= len(results) or results[index] is None:
                ctx.unsupported(f"output {index} ('{name}') is not supported")
            self.values[name] = results[index]


    def evaluate(self, ctx: NodeContext) -> None:
        """A node without a converter whose inputs are all known at import (shape and mask arithmetic):
        its outputs computed by ONNX's own reference implementation, as constants."""
        node = ctx.node
        values = [None if value is None else self.builder.static(value) for value in ctx.inputs]
        if any(value is None and name for value, name in zip(values, node.input)):
            raise UnsupportedOnnxOp(f"ONNX op {node.op_type} (domain ai.onnx, opset {self.opset}) is not supported: "
                                    f"node '{node.name or node.output[0]}' computes it from the model's input values "
                                    f"(the importer evaluates it only on values known at import)")
        outputs = evaluate_node(node, values, self.opset)
        for index, (name, value) in enumerate(zip(node.output, outputs)):
            if name:
                self.values[name] = self.builder.constant(value, ir_name(name) if index else ctx.name)


def evaluate_node(node, values: list, opset: int) -> list[np.ndarray]:
    """`node` run on `values` by onnx.reference (a one-node model), for ops the importer has no converter for."""
    onnx = _onnx()
    from onnx.reference import ReferenceEvaluator

    names = [name for name in node.input if name]
    inputs = [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
              for name, value in zip(names, [v for v in values if v is not None])]
    outputs = [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name]
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "fold", inputs, outputs),
                                   opset_imports=[onnx.helper.make_opsetid("", opset)])
    feeds = dict(zip(names, [v for v in values if v is not None]))
    results = iter(ReferenceEvaluator(model).run(None, feeds))
    return [np.asarray(next(results)) if name else None for name in node.output]


def schema_version(op_type: str, opset: int) -> int:
    """The version of `op_type` that opset `opset` defines (its schema's since_version)."""
    return _onnx().defs.get_schema(op_type, opset, "").since_version


def check_ops(nodes, opset: int, model) -> None:
    """Refuse, before converting anything, ops of other domains (an op type without a converter is
    refused when it is reached, unless its inputs are all known at import: then it is evaluated)."""
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            version = next((e.version for e in model.opset_import if e.domain == node.domain), "?")
            raise UnsupportedOnnxOp(f"ONNX node '{node.name}' ({node.op_type}) is in the custom domain "
                                    f"'{node.domain}' (opset {version}); only the default domain is supported")


def ordered_nodes(onnx_graph) -> list:
    """The graph's nodes in an order where each reads only values defined before it (ONNX requires the
    file's order to be one; a graph that has none has a cycle or reads a value nothing defines)."""
    defined = {value.name for value in onnx_graph.input} | {tensor.name for tensor in onnx_graph.initializer}
    defined.add("")
    pending = list(onnx_graph.node)
    order = []
    while pending:
        ready = [node for node in pending if all(name in defined for name in node.input)]
        if not ready:
            produced = {name for node in pending for name in node.output}
            for node in pending:
                undefined = [name for name in node.input if name not in defined and name not in produced]
                if undefined:
                    raise OnnxImportError(f"ONNX node '{node.name or node.op_type}' reads value '{undefined[0]}', "
                                          "which no input, initializer or node defines")
            names = ", ".join(f"'{node.name or node.op_type}'" for node in pending[:5])
            raise OnnxImportError(f"the ONNX graph has a cycle: nodes {names} each wait for another's output")
        order += ready
        defined.update(name for node in ready for name in node.output)
        ready_ids = {id(node) for node in ready}
        pending = [node for node in pending if id(node) not in ready_ids]
    return order


def load_onnx(source, example_inputs=None) -> ir.Graph:
    """The ONNX model `source` (path, bytes or ModelProto) as a verified ir.Graph.

    `example_inputs` (arrays by position, or a dict keyed by the ONNX input names) give the sizes of
    symbolic axes (a dynamic batch or sequence); without them every input's shape must be static.
    """
    _register()
    model, folder = read_model(source)
    return Importer(model, folder, example_inputs).run()
