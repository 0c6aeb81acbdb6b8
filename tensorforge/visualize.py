"""Pictures of the graph after every pass, and an index.html that shows them in pipeline order.

    save_pictures(snapshots, report, "out/mlp")   ->  out/mlp/00_input.svg, 01_fold-constants.svg, ...
                                                      out/mlp/index.html
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

from .ir import Graph

PICTURE_FORMATS = ("svg", "png")


class GraphvizMissingError(RuntimeError):
    """graphviz's `dot` program is not installed."""


def render(graph: Graph, title: str, fmt: str = "svg") -> bytes:
    """The picture of `graph` as svg or png bytes (needs graphviz's `dot` on the PATH)."""
    if fmt not in PICTURE_FORMATS:
        raise ValueError(f"picture format must be one of {PICTURE_FORMATS}, got {fmt!r}")
    if shutil.which("dot") is None:
        raise GraphvizMissingError("drawing graphs needs graphviz's `dot` program: apt-get install graphviz")
    return graph.to_dot(title).pipe(format=fmt)


def _file_name(index: int, pass_name: str, fmt: str) -> str:
    return f"{index:02d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', pass_name)}.{fmt}"


def save_pictures(snapshots: list[tuple[str, Graph]], report, directory, fmt: str = "svg") -> Path:
    """Write one picture per snapshot plus index.html into `directory` (created if needed); returns it.

    Nothing is written outside `directory`.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for index, (pass_name, graph) in enumerate(snapshots):
        name = _file_name(index, pass_name, fmt)
        (out / name).write_bytes(render(graph, f"after {pass_name}" if index else "traced graph", fmt))
        sections.append(
            f"<section><h2>{index}. {html.escape(pass_name)} <small>({len(graph.nodes)} nodes)</small></h2>"
            f"<img src=\"{name}\" alt=\"graph after {html.escape(pass_name)}\"></section>")
    report_html = report.to_html() if report is not None else ""
    page = (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tensorforge passes</title>"
        "<style>body{font-family:sans-serif;margin:2em} img{max-width:100%;border:1px solid #ddd}"
        "table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "</style></head><body><h1>tensorforge: the graph after each pass</h1>"
        f"{report_html}{''.join(sections)}</body></html>")
    (out / "index.html").write_text(page)
    return out
