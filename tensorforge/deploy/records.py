"""The records of a saved model's header (deploy/saved.py): what a compiled model, its graph, weights
and reports become in the container (deploy/container.py: JSON and raw sections), and back.

    records = Records(writer); record = records.model(cm)     # the model's record; sections added to writer
    artifact = read_artifact(reader, record, target)          # the Artifact it describes, its weights a view

The file's layout (what a model's file holds, how weights buffers and graph constants are shared) is
described in saved.py; the compile cache (deploy/cache.py) uses the same records.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np

from ..codegen.artifact import Artifact
from ..codegen.memory import WorkspacePlan
from ..codegen.target import Target
from ..ir import DType, Graph, TensorType
from ..ir.parser import ParseError, parse
from ..ir.printer import INLINE_CONSTANT_LIMIT, print_graph
from ..passes.manager import PassReport, PassRow
from ..runtime import CompiledModel
from .container import ContainerReader, ContainerWriter, byte_view


def target_record(target: Target) -> dict:
    return {field.name: getattr(target, field.name) for field in dataclasses.fields(Target)}


def target_from(record) -> Target:
    return Target(**{field.name: record[field.name] for field in dataclasses.fields(Target)})


def type_record(type_: TensorType) -> list:
    return [type_.dtype.name, list(type_.shape)]


def type_from(record) -> TensorType:
    dtype, shape = record
    return TensorType(tuple(int(d) for d in shape), DType.parse(dtype))


def json_meta(meta: dict) -> dict:
    return {key: value for key, value in meta.items() if isinstance(value, (str, int, float, bool))}


class Records:
    """Builds the header's records, adding their bytes to a ContainerWriter: a weights buffer is one
    section (loaded as a view of the mapped file, no copy), shared by the models whose buffers are
    one memory (a generator's, from a WeightsPool: each is a prefix of the largest); a graph constant
    stored as it is in a weights buffer (or an array in a weights buffer's memory, as a loaded model's
    are) is a slice of that section; any other large constant is a section of its own (content-addressed:
    two graphs' equal constants are stored once)."""

    def __init__(self, writer: ContainerWriter | None = None):
        self.writer = writer or ContainerWriter()
        self._slices: dict[int, tuple[np.ndarray, str, int]] = {}  # id(array) -> (array, weights digest, offset)
        self._weights: dict[int, tuple[Artifact, str, int]] = {}  # id(artifact) -> (it, section, its bytes)
        self._regions: list[tuple[np.ndarray, str]] = []  # the weights buffers added, as sections

    def weights(self, artifacts: list[Artifact]) -> None:
        """Add the artifacts' weights buffers: those starting at the same address (one WeightsPool's
        memory, so each a prefix of the largest) as one region, cut at every weight any of them placed
        (a constant stored as it is: exactly its bytes)."""
        groups: dict[int, list[tuple[Artifact, np.ndarray]]] = {}
        for artifact in artifacts:
            if id(artifact) not in self._weights:
                flat = np.frombuffer(byte_view(artifact.weights), np.uint8)
                groups.setdefault(flat.ctypes.data if flat.size else id(flat), []).append((artifact, flat))
        for members in groups.values():
            whole = max((flat for _, flat in members), key=len)
            placed: dict[int, list] = {}  # offset -> the constants stored there as they are, by any model
            for artifact, _ in members:
                constants = {node.name: node.value for node in artifact.graph.nodes if node.op == "constant"}
                for name, offset in artifact.weight_offsets.items():
                    placed.setdefault(offset, []).extend([constants[name]] if name in constants else [])
            offsets = sorted(placed)
            cuts, hints, as_is = [], {}, []
            for index, offset in enumerate(offsets):
                end = offsets[index + 1] if index + 1 < len(offsets) else whole.size
                size = min((value.nbytes for value in placed[offset]), default=0)
                values = [value for value in placed[offset] if value.nbytes == size]
                if values and size <= end - offset and not whole[offset + size:end].any():
                    end = offset + size
                    as_is.extend((value, offset) for value in values)
                    known = next(filter(None, map(self.writer.digest_of, values)), None)
                    if known is not None:
                        hints[len(cuts)] = known
                cuts.append((offset, end - offset))
            name = self.writer.add_region(whole, cuts, hints)
            self._regions.append((whole, name))
            for value, offset in as_is:
                self._slices[id(value)] = (value, name, offset)
            for artifact, flat in members:
                self._weights[id(artifact)] = (artifact, name, flat.size)

    def graph(self, graph: Graph) -> dict:
        """The graph's text, its large constants (printed without their values), node metadata."""
        large = [node for node in graph.nodes if node.op == "constant" and node.value.size > INLINE_CONSTANT_LIMIT]
        constants, separate = {}, []
        for node in large:
            found = self._slices.get(id(node.value))
            if found is None or found[0] is not node.value:
                found = self._inside_weights(node.value)
            if found is not None:
                constants[node.name] = ["slice", found[1], found[2], *type_record(node.type)]
            else:
                separate.append(node)
        for node, digest in zip(separate, self.writer.add_all([node.value for node in separate])):
            constants[node.name] = ["section", digest, *type_record(node.type)]
        meta = {node.name: json_meta(node.meta) for node in graph.nodes if json_meta(node.meta)}
        return {"text": print_graph(graph), "meta": meta, "constants": dict(sorted(constants.items()))}

    def _inside_weights(self, value: np.ndarray) -> tuple[np.ndarray, str, int] | None:
        """(value, section, offset) when `value` is an array in the memory of a weights buffer added."""
        if not isinstance(value, np.ndarray) or not value.flags.c_contiguous or not value.nbytes:
            return None
        address = value.ctypes.data
        for whole, name in self._regions:
            start = whole.ctypes.data
            if start <= address and address + value.nbytes <= start + whole.nbytes:
                return value, name, address - start
        return None

    def model(self, model: CompiledModel) -> dict:
        """Everything a CompiledModel needs to be rebuilt without LLVM."""
        artifact = model.artifact
        if not isinstance(artifact, Artifact):
            raise TypeError(f"only a model compiled by tensorforge can be saved, not one built from a "
                            f"{type(artifact).__name__}")
        self.weights([artifact])
        _, weights, weights_bytes = self._weights[id(artifact)]
        memory = artifact.memory
        report = model.pass_report
        return {
            "entry": artifact.entry, "opt_level": artifact.opt_level, "threads": artifact.threads,
            "workspace_bytes": int(artifact.workspace_bytes), "compile_seconds": float(artifact.compile_seconds),
            "inputs": [[name, *type_record(t)] for name, t in zip(model.input_names, artifact.input_types)],
            "outputs": [[node.name, *type_record(node.type)] for node in artifact.graph.outputs],
            "object": self.writer.add(artifact.object_code()),
            "llvm_ir": self.writer.add(zlib.compress(artifact.llvm_ir.encode(), 1)),
            "weights": weights, "weights_bytes": weights_bytes, "weight_offsets": artifact.weight_offsets,
            "graph": self.graph(artifact.graph),
            "parts": artifact.parts,
            "memory": None if memory is None else {
                "values": {node.name: offset for node, offset in memory.values.items()},
                "scratch": {node.name: offset for node, offset in memory.scratch.items()},
                "size": memory.size, "unshared_bytes": memory.unshared_bytes,
                "in_place": {node.name: operand.name for node, operand in memory.in_place.items()},
                "gathered": sorted(node.name for node in memory.gathered)},
            "profile_offset": artifact.profile_offset, "profile_kernels": artifact.profile_kernels,
            "pass_report": None if report is None else {
                "rows": [dataclasses.astuple(row) for row in report.rows], "disabled": list(report.disabled)},
            "quantization": _report_record(getattr(model, "quantization", None)),
            "pruning": _report_record(getattr(model, "pruning", None)),
        }


def _constant(reader: ContainerReader, record: list) -> np.ndarray:
    kind, digest, *rest = record
    if kind == "slice":
        offset, dtype, shape = rest
        whole = reader.section(digest)
    elif kind == "section":  # an array with its digest in memory is taken from there
        offset, (dtype, shape) = 0, rest
        whole = reader.known.get(digest)
        if whole is None:
            whole = reader.section(digest)
    else:
        raise reader.fail(f"unknown constant record {kind!r}")
    type_ = type_from((dtype, shape))
    if not 0 <= offset <= whole.nbytes - type_.nbytes or (kind == "section" and whole.nbytes != type_.nbytes):
        raise reader.fail(f"a constant's {type_.nbytes} bytes lie outside section {digest[:12]} ({whole.nbytes} bytes)")
    return whole[offset:offset + type_.nbytes].view(type_.dtype.numpy).reshape(type_.shape)


def read_graph(reader: ContainerReader, record: dict) -> Graph:
    constants = {name: _constant(reader, entry) for name, entry in record["constants"].items()}
    try:
        graph = parse(record["text"], constants)
    except ParseError as error:
        raise reader.fail(f"its graph text does not parse: {error}") from None
    for name, meta in record.get("meta", {}).items():
        graph.node(name).meta.update(meta)
    return graph


def _report_record(report) -> dict | None:
    """A QuantReport or PruneReport as JSON (their config is a dataclass of plain values)."""
    if report is None:
        return None
    fields = {field.name: getattr(report, field.name) for field in dataclasses.fields(report)}
    fields["config"] = dataclasses.asdict(report.config)
    return {"kind": type(report).__name__, **fields}


def _report_from(record):
    if record is None:
        return None
    from ..prune.config import PruneConfig, PruneReport
    from ..quant import QuantConfig
    from ..quant.report import QuantReport

    kinds = {"QuantReport": (QuantReport, QuantConfig), "PruneReport": (PruneReport, PruneConfig)}
    record = dict(record)
    report_type, config_type = kinds[record.pop("kind")]
    record["config"] = config_type(**record["config"])
    record["rows"] = [tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in record["rows"]]
    if "weight_bytes" in record:
        record["weight_bytes"] = tuple(record["weight_bytes"])
    return report_type(**record)


def take_model(reader: ContainerReader, record: dict) -> None:
    """Take a model's large sections first, so that their checks run (in threads) while graphs are parsed."""
    for name in (record["weights"], record["object"], record["llvm_ir"]):
        reader.section(name)


def read_artifact(reader: ContainerReader, record: dict, target: Target) -> Artifact:
    """The Artifact of a model record, its sections taken (check them with reader.verify() before running it)."""
    take_model(reader, record)
    graph = read_graph(reader, record["graph"])
    input_types = [type_from(entry[1:]) for entry in record["inputs"]]
    output_types = [type_from(entry[1:]) for entry in record["outputs"]]
    if input_types != [node.type for node in graph.inputs] or output_types != [node.type for node in graph.outputs]:
        raise reader.fail("the inputs and outputs it lists are not its graph's")
    memory = record["memory"]
    if memory is not None:
        node = graph.node
        memory = WorkspacePlan({node(name): offset for name, offset in memory["values"].items()},
                               {node(name): offset for name, offset in memory["scratch"].items()},
                               memory["size"], memory["unshared_bytes"],
                               {node(name): node(operand) for name, operand in memory["in_place"].items()},
                               frozenset(node(name) for name in memory.get("gathered", ())))
    object_code = reader.section(record["object"])
    llvm_ir = reader.section(record["llvm_ir"])
    weights = reader.section(record["weights"])
    size = record["weights_bytes"]
    if not isinstance(size, int) or not 0 <= size <= weights.size:
        raise reader.fail(f"a model's weights ({size} bytes) lie outside section {record['weights'][:12]}")
    weights = weights[:size]  # one of the buffers that share the section: a prefix of it
    reader.verify()  # every section taken so far, before any is decompressed or run
    return Artifact(target=target, graph=graph, llvm_ir=zlib.decompress(llvm_ir).decode(), input_types=input_types,
                    output_types=output_types, weights=weights, weight_offsets=dict(record["weight_offsets"]),
                    workspace_bytes=int(record["workspace_bytes"]), compile_seconds=float(record["compile_seconds"]),
                    opt_level=int(record["opt_level"]), entry=record["entry"], threads=int(record["threads"]),
                    memory=memory, parts=dict(record["parts"]), profile_offset=record["profile_offset"],
                    profile_kernels=list(record["profile_kernels"]), object=bytes(object_code))


def compiled_model(artifact: Artifact, record: dict, path: Path) -> CompiledModel:
    report = record.get("pass_report")
    if report is not None:
        report = PassReport([PassRow(*row) for row in report["rows"]], tuple(report["disabled"]))
    model = CompiledModel(artifact, report=report)
    model.loaded_from = path
    model.quantization = _report_from(record.get("quantization"))
    model.pruning = _report_from(record.get("pruning"))
    return model
