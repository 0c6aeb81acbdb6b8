"""Saved models: a compiled model or generator in one file, loaded without LLVM.

    cm = tfg.compile(model, x, target="armv8")
    cm.save("model.tfm")                     # object code, weights, graph text, io, build options, versions
    cm2 = tfg.load("model.tfm")              # links the saved object: LLJIT on the host, gcc + qemu for armv8
    cm2(x)                                   # the same bits as cm(x)
    tfg.load("model.tfm", target="host")     # SavedModelError: the file holds armv8 code, not host code
    gen.save("gpt.tfm"); gen2 = tfg.load_generator("gpt.tfm")    # the same greedy tokens

What a model's file holds (the container: deploy/container.py; JSON and raw bytes, no pickle):
the target (triple, cpu, features), the entry's name, LLVM level, threads, workspace bytes; the
inputs' names and types and the outputs' types; the ELF object (`Artifact.object_code()`: the
machine code the runtime ran, so a loaded model computes the same bits); the weights buffer as
segments (one per weight, stored once when two models or a graph constant share the bytes); the
optimized graph's text (ir/printer.py) and its large constants, read back with ir/parser.py so
`cm.graph`, `cm.memory_report()` and `cm.profile()` work; the LLVM IR (zlib), the split parts,
the workspace plan, the pass report; and the tensorforge, llvmlite, LLVM and numpy versions
(recorded, not required to match: the object needs none of them).

Loading checks the file (magic, format version, size, every checksum) and that this machine can
run its code (the same architecture with every CPU feature the code uses, or armv8 through the
cross tools) before any native code runs; `target=` also asks that the file be for that target.
A loaded model has no pass snapshots (`save_pictures` says so) and no source graph; its
`report()` is the compile's pass report, marked as loaded. A generator's file holds its prefill and
decode graphs too: a full prefill that was not compiled before saving is compiled (with LLVM) the
first time `logits()` needs it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
import platform
import zlib
from pathlib import Path

import numpy as np

from ..codegen.artifact import Artifact
from ..codegen.memory import WorkspacePlan
from ..codegen.target import KNOWN_TARGETS, Target, initialize_llvm
from ..ir import DType, Graph, TensorType
from ..ir.parser import ParseError, parse
from ..ir.printer import INLINE_CONSTANT_LIMIT, print_graph
from ..passes.manager import PassReport, PassRow
from ..runtime import CompiledModel
from ..runtime.cross import CROSS_TOOLCHAINS
from .container import ContainerReader, ContainerWriter, SavedModelError, aligned_buffer, byte_view

__all__ = ["SavedModelError", "load", "load_generator", "save_generator", "save_model"]

FORMAT_NAME = "tensorforge saved model"


@functools.cache
def versions() -> dict[str, str]:
    """The versions a saved model records (and the compile cache's key covers)."""
    import llvmlite
    import llvmlite.binding as llvm

    try:
        ours = importlib.metadata.version("tensorforge")
    except importlib.metadata.PackageNotFoundError:
        ours = "unknown"
    return {"tensorforge": ours, "llvmlite": llvmlite.__version__,
            "llvm": ".".join(map(str, llvm.llvm_version_info)), "numpy": np.__version__,
            "python": platform.python_version()}


# --- records: what goes into the header, and back --------------------------------------------------

def target_record(target: Target) -> dict:
    return {field.name: getattr(target, field.name) for field in dataclasses.fields(Target)}


def _target_from(record) -> Target:
    return Target(**{field.name: record[field.name] for field in dataclasses.fields(Target)})


def _type_record(type_: TensorType) -> list:
    return [type_.dtype.name, list(type_.shape)]


def _type_from(record) -> TensorType:
    dtype, shape = record
    return TensorType(tuple(int(d) for d in shape), DType.parse(dtype))


def _json_meta(meta: dict) -> dict:
    return {key: value for key, value in meta.items() if isinstance(value, (str, int, float, bool))}


def graph_record(writer: ContainerWriter, graph: Graph) -> dict:
    """The graph's text, its large constants (printed without their values) as sections, node metadata."""
    text = print_graph(graph)
    large = [node for node in graph.nodes if node.op == "constant" and node.value.size > INLINE_CONSTANT_LIMIT]
    digests = writer.add_all([node.value for node in large])
    meta = {node.name: _json_meta(node.meta) for node in graph.nodes if _json_meta(node.meta)}
    return {"text": text, "meta": meta,
            "constants": {node.name: [digest, *_type_record(node.type)] for node, digest in zip(large, digests)}}


def _section_array(reader: ContainerReader, known: dict, digest: str, type_: TensorType) -> np.ndarray:
    flat = known.get(digest)
    if flat is None:
        flat = reader.section(digest)
    if flat.nbytes != type_.nbytes:
        raise reader.fail(f"section {digest[:12]} is {flat.nbytes} bytes, not the {type_.nbytes} of a {type_}")
    return flat.view(type_.dtype.numpy).reshape(type_.shape)


def _read_graph(reader: ContainerReader, record: dict, known: dict) -> Graph:
    constants = {name: _section_array(reader, known, digest, _type_from((dtype, shape)))
                 for name, (digest, dtype, shape) in record["constants"].items()}
    try:
        graph = parse(record["text"], constants)
    except ParseError as error:
        raise reader.fail(f"its graph text does not parse: {error}") from None
    for name, meta in record.get("meta", {}).items():
        graph.node(name).meta.update(meta)
    return graph


def _weight_segments(artifact) -> list[tuple[str, int, int]]:
    """The weights buffer as (name, offset, size) segments; the bytes between them are zero (padding).
    A segment that holds a graph constant as it is has that constant's size, so it is stored once."""
    weights = byte_view(artifact.weights)
    flat = np.frombuffer(weights, np.uint8)
    offsets = sorted(getattr(artifact, "weight_offsets", {}).items(), key=lambda item: item[1])
    if not offsets or offsets[0][1] != 0:
        offsets.insert(0, ("", 0))
    constants = {node.name: node.value for node in artifact.graph.nodes if node.op == "constant"} \
        if isinstance(getattr(artifact, "graph", None), Graph) else {}
    segments = []
    for index, (name, offset) in enumerate(offsets):
        end = offsets[index + 1][1] if index + 1 < len(offsets) else flat.size
        size = end - offset
        constant = constants.get(name)
        if constant is not None and constant.nbytes <= size and not flat[offset + constant.nbytes:end].any():
            size = constant.nbytes
        segments.append((name, offset, size))
    return segments


def model_record(writer: ContainerWriter, model: CompiledModel) -> dict:
    """Everything a CompiledModel needs to be rebuilt without LLVM (its sections added to `writer`)."""
    artifact = model.artifact
    if not isinstance(artifact, Artifact):
        raise TypeError(f"only a model compiled by tensorforge can be saved, not one built from a "
                        f"{type(artifact).__name__}")
    weights = np.frombuffer(byte_view(artifact.weights), np.uint8)
    segments = _weight_segments(artifact)
    digests = writer.add_all([weights[offset:offset + size] for _, offset, size in segments])
    memory = artifact.memory
    report = model.pass_report
    return {
        "entry": artifact.entry, "opt_level": artifact.opt_level, "threads": artifact.threads,
        "workspace_bytes": int(artifact.workspace_bytes), "compile_seconds": float(artifact.compile_seconds),
        "inputs": [[name, *_type_record(t)] for name, t in zip(model.input_names, artifact.input_types)],
        "outputs": [[node.name, *_type_record(node.type)] for node in artifact.graph.outputs],
        "object": writer.add(artifact.object_code()),
        "llvm_ir": writer.add(zlib.compress(artifact.llvm_ir.encode(), 1)),
        "weights": {"bytes": int(weights.size), "offsets": artifact.weight_offsets,
                    "segments": [[offset, size, digest] for (_, offset, size), digest in zip(segments, digests)]},
        "graph": graph_record(writer, artifact.graph),
        "parts": artifact.parts,
        "memory": None if memory is None else {
            "values": {node.name: offset for node, offset in memory.values.items()},
            "scratch": {node.name: offset for node, offset in memory.scratch.items()},
            "size": memory.size, "unshared_bytes": memory.unshared_bytes,
            "in_place": {node.name: operand.name for node, operand in memory.in_place.items()}},
        "profile_offset": artifact.profile_offset, "profile_kernels": artifact.profile_kernels,
        "pass_report": None if report is None else {
            "rows": [dataclasses.astuple(row) for row in report.rows], "disabled": list(report.disabled)},
        "quantization": _report_record(getattr(model, "quantization", None)),
        "pruning": _report_record(getattr(model, "pruning", None)),
    }


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


def _read_weights(reader: ContainerReader, record: dict, known: dict) -> np.ndarray:
    buffer = aligned_buffer(int(record["bytes"]), zero=True)
    for offset, size, digest in record["segments"]:
        destination = buffer[offset:offset + size]
        if destination.size != size:
            raise reader.fail(f"a weights segment at {offset} ({size} bytes) lies outside the weights buffer")
        source = known.get(digest)
        if source is None and reader.has_read(digest):
            source = reader.section(digest)
        if source is not None:
            if source.nbytes != size:
                raise reader.fail(f"section {digest[:12]} is {source.nbytes} bytes, the weights segment {size}")
            destination[:] = source
        else:
            reader.read_into(digest, destination)
    return buffer


def _read_model(reader: ContainerReader, record: dict, target: Target, known: dict) -> Artifact:
    """The Artifact of a model record, its sections read (check them with reader.verify() before running it)."""
    graph = _read_graph(reader, record["graph"], known)
    input_types = [_type_from(entry[1:]) for entry in record["inputs"]]
    output_types = [_type_from(entry[1:]) for entry in record["outputs"]]
    if input_types != [node.type for node in graph.inputs] or output_types != [node.type for node in graph.outputs]:
        raise reader.fail("the inputs and outputs it lists are not its graph's")
    memory = record["memory"]
    if memory is not None:
        node = graph.node
        memory = WorkspacePlan({node(name): offset for name, offset in memory["values"].items()},
                               {node(name): offset for name, offset in memory["scratch"].items()},
                               memory["size"], memory["unshared_bytes"],
                               {node(name): node(operand) for name, operand in memory["in_place"].items()})
    object_code = bytes(reader.section(record["object"]))
    llvm_ir = reader.section(record["llvm_ir"])
    weights = _read_weights(reader, record["weights"], known)
    reader.verify()  # every section this model uses, before it is decompressed or run
    return Artifact(target=target, graph=graph, llvm_ir=zlib.decompress(llvm_ir).decode(), input_types=input_types,
                    output_types=output_types, weights=weights, weight_offsets=dict(record["weights"]["offsets"]),
                    workspace_bytes=int(record["workspace_bytes"]), compile_seconds=float(record["compile_seconds"]),
                    opt_level=int(record["opt_level"]), entry=record["entry"], threads=int(record["threads"]),
                    memory=memory, parts=dict(record["parts"]), profile_offset=record["profile_offset"],
                    profile_kernels=list(record["profile_kernels"]), object=object_code)


def _compiled(artifact: Artifact, record: dict, path: Path) -> CompiledModel:
    report = record.get("pass_report")
    if report is not None:
        report = PassReport([PassRow(*row) for row in report["rows"]], tuple(report["disabled"]))
    model = CompiledModel(artifact, report=report)
    model.loaded_from = path
    model.quantization = _report_from(record.get("quantization"))
    model.pruning = _report_from(record.get("pruning"))
    return model


# --- the target check ---------------------------------------------------------------------------------

def _os(triple: str) -> str:
    parts = triple.split("-")
    return parts[2] if len(parts) > 2 else ""


def check_target(reader: ContainerReader, requested) -> Target:
    """The file's target, once it is known this machine can run its code (and it is `requested`, if given)."""
    try:
        saved = _target_from(reader.header["target"])
    except (KeyError, TypeError) as error:
        raise reader.fail(f"its target record is malformed ({error})") from None
    if requested is not None:
        wanted = Target.parse(requested)
        if wanted.name != saved.name:
            raise reader.fail(f"the file holds code for target {saved.name} ({saved.triple}), not {wanted.name} "
                              f"({wanted.triple}); load it without target= or with target={saved.name!r}")
    initialize_llvm()
    host = Target.parse("host")
    if saved.arch == host.arch:
        if _os(saved.triple) != _os(host.triple):
            raise reader.fail(f"the file holds code for {saved.triple}; this machine is {host.triple}")
        missing = sorted(_features(saved) - _features(host))
        if missing:
            raise reader.fail(f"its {saved.name} code uses CPU features this machine lacks: {', '.join(missing)} "
                              f"(compile it for this machine, e.g. target='host')")
    elif saved.arch not in CROSS_TOOLCHAINS:
        raise reader.fail(f"the file holds {saved.arch} code ({saved.name}); this {host.arch} machine runs only "
                          f"its own code and, under qemu, {', '.join(CROSS_TOOLCHAINS)}'s")
    if saved.name in KNOWN_TARGETS and KNOWN_TARGETS[saved.name] == saved:
        return KNOWN_TARGETS[saved.name]
    return saved


def _features(target: Target) -> set[str]:
    return {feature[1:] for feature in target.features.split(",") if feature.startswith("+")}


# --- files ------------------------------------------------------------------------------------------

def _header(kind: str, target: Target, **fields) -> dict:
    return {"format": FORMAT_NAME, "kind": kind, "versions": versions(), "target": target_record(target), **fields}


def _open(path, kind: str, requested_target) -> tuple[ContainerReader, Target]:
    reader = ContainerReader(path)
    try:
        header = reader.header
        if header.get("format") != FORMAT_NAME:
            raise reader.fail(f"its header is not a {FORMAT_NAME}'s")
        if header.get("kind") != kind:
            other = {"model": "tfg.load", "generator": "tfg.load_generator"}.get(header.get("kind"), "?")
            raise reader.fail(f"the file holds a {header.get('kind')}, not a {kind}: open it with {other}(path)")
        return reader, check_target(reader, requested_target)
    except BaseException:
        reader.close()
        raise


def _malformed(reader: ContainerReader, error: Exception) -> SavedModelError:
    return reader.fail(f"its header is malformed ({type(error).__name__}: {error})")


def save_model(model: CompiledModel, path, *, atomic: bool = False, writer: ContainerWriter | None = None,
               **header) -> Path:
    """Write `model` to `path` (CompiledModel.save); returns the path."""
    writer = writer or ContainerWriter()
    record = model_record(writer, model)
    path = Path(path)
    writer.write(path, _header("model", model.target, model=record, **header), atomic=atomic)
    return path


def read_model(path, target=None, known: dict | None = None) -> CompiledModel:
    """tfg.load, with the arrays whose digests are `known` (flat uint8, by sha256) taken from memory."""
    reader, saved_target = _open(path, "model", target)
    with reader:
        try:
            artifact = _read_model(reader, reader.header["model"], saved_target, known or {})
        except SavedModelError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, zlib.error) as error:
            raise _malformed(reader, error) from None
        return _compiled(artifact, reader.header["model"], reader.path)


def load(path: str | os.PathLike, *, target=None) -> CompiledModel:
    """The CompiledModel saved at `path` by cm.save: its outputs are bit for bit the saved model's.

    `target` (a name such as "host" or "armv8", or a Target) asks that the file hold code for that
    target. SavedModelError (a ValueError) names the file and the problem: not a saved model, another
    format version, truncated, altered (a checksum differs), for another target, or code this
    machine cannot run (e.g. AVX-512 instructions on a CPU without them).
    """
    return read_model(path, target)


def save_generator(generator, path, *, atomic: bool = False, **header) -> Path:
    """Write a Generator (Generator.save): its compiled models, prefill and decode graphs and settings."""
    writer = ContainerWriter()
    graphs = generator.graphs
    prefill = generator._prefill_model if isinstance(generator._prefill_model, CompiledModel) else None
    models = {"decode": generator.decode_model, "first": generator.first_model, "prefill": prefill}
    record = {
        "max_len": graphs.max_len, "prompt_len": graphs.prompt_len,
        "cache_types": [_type_record(t) for t in graphs.cache_types],
        "options": dict(generator.options),
        "graphs": {"prefill": graph_record(writer, graphs.prefill), "decode": graph_record(writer, graphs.decode)},
        "models": {name: None if model is None else model_record(writer, model) for name, model in models.items()},
    }
    path = Path(path)
    writer.write(path, _header("generator", generator.decode_model.target, generator=record, **header), atomic=atomic)
    return path


def read_generator(path, target=None, known: dict | None = None, cache=True):
    """tfg.load_generator, with `known` arrays as for read_model. `cache`: the compile cache setting
    for a full prefill compiled later (logits())."""
    from ..generate.generator import Generator
    from ..generate.kv_cache import KVCacheGraphs

    known = known or {}
    reader, saved_target = _open(path, "generator", target)
    with reader:
        try:
            record = reader.header["generator"]
            graphs = KVCacheGraphs(prefill=_read_graph(reader, record["graphs"]["prefill"], known),
                                   decode=_read_graph(reader, record["graphs"]["decode"], known), attentions=(),
                                   prompt_len=int(record["prompt_len"]), max_len=int(record["max_len"]),
                                   cache_types=tuple(_type_from(t) for t in record["cache_types"]))
            artifacts = {name: None if model is None else _read_model(reader, model, saved_target, known)
                         for name, model in record["models"].items()}
            options = dict(record["options"])
        except SavedModelError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, zlib.error) as error:
            raise _malformed(reader, error) from None
        reader.verify()
    models = {name: None if artifact is None else _compiled(artifact, record["models"][name], reader.path)
              for name, artifact in artifacts.items()}

    def prefill():
        from ..api import compile

        return compile(graphs.prefill, target=saved_target, opt_level=options["opt_level"],
                       threads=options["threads"])

    generator = Generator(graphs, models["prefill"] or prefill, models["decode"], models["first"])
    generator.options = options
    generator.loaded_from = reader.path
    return generator


def load_generator(path: str | os.PathLike, *, target=None):
    """The Generator saved at `path` by gen.save: the same greedy tokens as the saved one. Errors as for load."""
    return read_generator(path, target)
