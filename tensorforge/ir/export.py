"""Export a graph to networkx (for analyses) and to graphviz DOT (for pictures).

    g.to_networkx()          nx.DiGraph; nodes keyed by value name, with op, type and attrs
    g.to_dot("after fuse")   graphviz.Digraph; render it with .render() or .pipe(format="svg")
"""

from __future__ import annotations

from .printer import INLINE_CONSTANT_LIMIT, format_attr
from .registry import OPS

OP_COLORS = {"input": "#cfe8ff", "constant": "#eeeeee", "contraction": "#ffd8a8", "elementwise": "#d3f9d8"}


def to_networkx(graph):
    import networkx as nx

    g = nx.DiGraph()
    for node in graph.nodes:
        g.add_node(node.name, op=node.op, type=str(node.type), attrs=dict(node.attrs),
                   output=node in graph.outputs)
        for operand in node.inputs:
            g.add_edge(operand.name, node.name)
    return g


def _label(node) -> str:
    attrs = {k: v for k, v in node.attrs.items() if k != "value" or v.size <= INLINE_CONSTANT_LIMIT}
    lines = [f"%{node.name} = {node.op}", str(node.type)]
    if node.meta.get("layer", node.name) != node.name:  # a pass's new node: the model's layer it computes
        lines.append(f"layer %{node.meta['layer']}")
    lines += [f"{k}={format_attr(v)}" for k, v in attrs.items()]
    return "\n".join(line if len(line) <= 48 else line[:45] + "..." for line in lines)


def _color(node) -> str:
    if node.op in OP_COLORS:
        return OP_COLORS[node.op]
    traits = OPS[node.op].traits
    for trait in ("contraction", "elementwise"):
        if trait in traits:
            return OP_COLORS[trait]
    return "#fff3bf"


def to_dot(graph, title: str | None = None):
    import graphviz

    dot = graphviz.Digraph(graph_attr={"rankdir": "TB", "label": title or "", "labelloc": "t"},
                           node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica",
                                      "fontsize": "10"})
    for node in graph.nodes:
        dot.node(node.name, _label(node), fillcolor=_color(node))
        for operand in node.inputs:
            dot.edge(operand.name, node.name, label=str(operand.type), fontsize="8")
    for i, node in enumerate(graph.outputs):
        dot.node(f"output{i}", f"output {i}", shape="oval", fillcolor="#ffc9c9")
        dot.edge(node.name, f"output{i}")
    return dot
