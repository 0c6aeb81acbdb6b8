"""Read the text form written by `printer.print_graph` back into a Graph.

    g2 = parse(str(g), g.constants())     # large constants are not in the text: pass their arrays

Errors name the line and what was expected there.
"""

from __future__ import annotations

import json
import re

import numpy as np

from .graph import Graph, Node
from .types import DType, TensorType

TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<value>%[A-Za-z0-9_.]+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?(?:inf|nan|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()\[\]{},:=])
""", re.VERBOSE)


class ParseError(ValueError):
    """The text is not a graph in tensorforge's text form."""


class _Tokens:
    def __init__(self, text: str, line_no: int):
        self.items: list[tuple[str, str]] = []
        self.line_no = line_no
        pos = 0
        while pos < len(text):
            match = TOKEN_RE.match(text, pos)
            if match is None:
                self.fail(f"unexpected character {text[pos]!r}")
            if match.lastgroup != "ws":
                self.items.append((match.lastgroup, match.group()))
            pos = match.end()
        self.pos = 0

    def fail(self, message: str):
        raise ParseError(f"line {self.line_no}: {message}")

    def peek(self) -> tuple[str, str]:
        return self.items[self.pos] if self.pos < len(self.items) else ("end", "")

    def take(self, kind: str, text: str | None = None) -> str:
        got_kind, got = self.peek()
        if got_kind != kind or (text is not None and got != text):
            self.fail(f"expected {text or kind}, found {got or 'end of line'!r}")
        self.pos += 1
        return got

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text:
            self.pos += 1
            return True
        return False

    def done(self) -> None:
        if self.pos != len(self.items):
            self.fail(f"unexpected {self.peek()[1]!r} at end of line")

    def type_(self) -> TensorType:
        word = self.take("word")
        try:
            dtype = DType.parse(word)
        except ValueError as err:
            self.fail(str(err))
        self.take("punct", "[")
        dims = []
        while not self.accept("]"):
            dims.append(int(self.take("number")))
            self.accept(",")
        return TensorType(tuple(dims), dtype)

    def attr_value(self):
        kind, text = self.peek()
        if text == "[":
            self.pos += 1
            items = []
            while not self.accept("]"):
                items.append(self.attr_value())
                self.accept(",")
            return tuple(items)
        self.pos += 1
        if kind == "string":
            return json.loads(text)
        if kind == "number":
            return float(text) if any(c in text for c in ".eEna") else int(text)
        if kind == "word":
            if text in ("true", "false"):
                return text == "true"
            if text == "none":
                return None
            try:
                return DType.parse(text)
            except ValueError:
                self.fail(f"unknown attribute word {text!r}")
        self.fail(f"expected an attribute value, found {text!r}")

    def attrs(self) -> dict:
        attrs = {}
        if self.accept("{"):
            while not self.accept("}"):
                key = self.take("word")
                self.take("punct", "=")
                attrs[key] = self.attr_value()
                self.accept(",")
        return attrs


def parse(text: str, constants: dict[str, np.ndarray] | None = None) -> Graph:
    """Parse a graph; `constants` supplies the arrays of constants printed without a value."""
    constants = constants or {}
    graph = Graph()
    values: dict[str, Node] = {}
    lines = [(i + 1, line.strip()) for i, line in enumerate(text.splitlines()) if line.strip()]
    if not lines or not lines[0][1].startswith("graph(") or lines[-1][1] != "}":
        raise ParseError("a graph starts with 'graph(...) {' and ends with '}'")

    header = _Tokens(lines[0][1], lines[0][0])
    header.take("word", "graph")
    header.take("punct", "(")
    while not header.accept(")"):
        name = header.take("value")[1:]
        header.take("punct", ":")
        type_ = header.type_()
        values[name] = graph.add_input(name, type_, **header.attrs())
        header.accept(",")
    header.take("punct", "{")
    header.done()

    for line_no, line in lines[1:-1]:
        tokens = _Tokens(line, line_no)
        if tokens.accept("return"):
            graph.outputs = [_lookup(tokens, values, tokens.take("value")[1:])]
            while tokens.accept(","):
                graph.outputs.append(_lookup(tokens, values, tokens.take("value")[1:]))
            tokens.done()
            continue
        name = tokens.take("value")[1:]
        if name in values:
            tokens.fail(f"%{name} is defined twice")
        tokens.take("punct", "=")
        op = tokens.take("word")
        tokens.take("punct", "(")
        operands = []
        while not tokens.accept(")"):
            operands.append(_lookup(tokens, values, tokens.take("value")[1:]))
            tokens.accept(",")
        attrs = tokens.attrs()
        tokens.take("punct", ":")
        type_ = tokens.type_()
        tokens.done()
        if op == "constant":
            node = graph.constant(_constant_value(tokens, name, type_, attrs, constants), name)
        else:
            try:
                node = graph.call(op, operands, attrs, name)
            except ValueError as err:
                tokens.fail(str(err))
        if node.type != type_:
            tokens.fail(f"%{name} is written as {type_} but its op gives {node.type}")
        values[name] = node
    return graph


def _lookup(tokens: _Tokens, values: dict[str, Node], name: str) -> Node:
    if name not in values:
        tokens.fail(f"%{name} is used before it is defined")
    return values[name]


def _constant_value(tokens, name, type_, attrs, constants) -> np.ndarray:
    if "value" in attrs:
        return np.array(attrs["value"], dtype=type_.dtype.numpy).reshape(type_.shape)
    if name not in constants:
        tokens.fail(f"constant %{name} has no inline value and none was passed to parse()")
    value = np.asarray(constants[name])
    if TensorType.of(value) != type_:
        tokens.fail(f"constant %{name} is {type_} but the array passed is {TensorType.of(value)}")
    return value
