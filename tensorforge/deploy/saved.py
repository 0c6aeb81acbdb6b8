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
machine code the runtime ran, so a loaded model computes the same bits); the weights buffer, as
it is (loaded as a view of the mapped file: no copy); the optimized graph's text (ir/printer.py)
and its large constants (a slice of the weights buffer when stored there as they are, else a
section of their own, stored once however many graphs hold them), read back with ir/parser.py so
`cm.graph`, `cm.memory_report()` and `cm.profile()` work; the LLVM IR (zlib), the split parts,
the workspace plan, the pass, quantization and pruning reports; and the tensorforge, llvmlite,
LLVM, numpy and Python versions (recorded, not required to match: the object needs none of them).
A file is about twice the model's weights: the weights as the kernels read them (packed panels)
plus the graph's constants as they are. A generator's compiled graphs (first-token prefill and
decode) share one weights buffer (a WeightsPool): the file stores it once, each model's buffer
being a prefix of it (`weights_bytes`), and loaded they share it again.

Loading checks the file (magic, format version, size, every checksum) and that this machine can
run its code (the same architecture with every CPU feature the code uses, or armv8 through the
cross tools) before any native code runs; `target=` also asks that the file be for that target.
A loaded model has no pass snapshots (`save_pictures` says so) and no source graph; its
`report()` is the compile's pass report, marked as loaded. A generator's file holds its prefill and
decode graphs too: a full prefill that was not compiled before saving is compiled (with LLVM) the
first time `logits()` needs it.

The file is mapped into memory, not read (container.py): a loaded model runs on the file's pages,
shared by every process that loads it. Like a shared library, it must not be truncated or rewritten
in place while a model loaded from it is alive; cm.save and the cache replace files by renaming.
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
from .container import ContainerReader, ContainerWriter, SavedModelError, byte_view

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
                constants[node.name] = ["slice", found[1], found[2], *_type_record(node.type)]
            else:
                separate.append(node)
        for node, digest in zip(separate, self.writer.add_all([node.value for node in separate])):
            constants[node.name] = ["section", digest, *_type_record(node.type)]
        meta = {node.name: _json_meta(node.meta) for node in graph.nodes if _json_meta(node.meta)}
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
            "inputs": [[name, *_type_record(t)] for name, t in zip(model.input_names, artifact.input_types)],
            "outputs": [[node.name, *_type_record(node.type)] for node in artifact.graph.outputs],
            "object": self.writer.add(artifact.object_code()),
            "llvm_ir": self.writer.add(zlib.compress(artifact.llvm_ir.encode(), 1)),
            "weights": weights, "weights_bytes": weights_bytes, "weight_offsets": artifact.weight_offsets,
            "graph": self.graph(artifact.graph),
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
    type_ = _type_from((dtype, shape))
    if not 0 <= offset <= whole.nbytes - type_.nbytes or (kind == "section" and whole.nbytes != type_.nbytes):
        raise reader.fail(f"a constant's {type_.nbytes} bytes lie outside section {digest[:12]} ({whole.nbytes} bytes)")
    return whole[offset:offset + type_.nbytes].view(type_.dtype.numpy).reshape(type_.shape)


def _read_graph(reader: ContainerReader, record: dict) -> Graph:
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


def _take_model(reader: ContainerReader, record: dict) -> None:
    """Take a model's large sections first, so that their checks run (in threads) while graphs are parsed."""
    for name in (record["weights"], record["object"], record["llvm_ir"]):
        reader.section(name)


def _read_model(reader: ContainerReader, record: dict, target: Target) -> Artifact:
    """The Artifact of a model record, its sections taken (check them with reader.verify() before running it)."""
    _take_model(reader, record)
    graph = _read_graph(reader, record["graph"])
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


def _open(path, kind: str, requested_target, known: dict | None,
          cache_key: str | None) -> tuple[ContainerReader, Target]:
    reader = ContainerReader(path, known)
    try:
        header = reader.header
        if header.get("format") != FORMAT_NAME:
            raise reader.fail(f"its header is not a {FORMAT_NAME}'s")
        if cache_key is not None and header.get("cache_key") != cache_key:
            raise reader.fail(f"it is not the compile cache's entry for key {cache_key}")
        if header.get("kind") != kind:
            other = {"model": "tfg.load", "generator": "tfg.load_generator"}.get(header.get("kind"), "?")
            raise reader.fail(f"the file holds a {header.get('kind')}, not a {kind}: open it with {other}(path)")
        return reader, check_target(reader, requested_target)
    except BaseException:
        reader.close()
        raise


def _malformed(reader: ContainerReader, error: Exception) -> SavedModelError:
    return reader.fail(f"its header is malformed ({type(error).__name__}: {error})")


def save_model(model: CompiledModel, path, *, private: bool = False, writer: ContainerWriter | None = None,
               **header) -> Path:
    """Write `model` to `path` (CompiledModel.save); returns the path. `private`: the cache's file mode."""
    records = Records(writer)
    record = records.model(model)
    path = Path(path)
    records.writer.write(path, _header("model", model.target, model=record, **header), private=private)
    return path


def read_model(path, target=None, known: dict | None = None, cache_key: str | None = None) -> CompiledModel:
    """tfg.load, with the arrays whose digests are `known` (flat uint8 arrays by hex digest) taken from
    memory, or compared to the file's bytes rather than hashed;
    `cache_key`: the file must be the compile cache's entry of that key."""
    reader, saved_target = _open(path, "model", target, known, cache_key)
    with reader:
        try:
            artifact = _read_model(reader, reader.header["model"], saved_target)
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


def save_generator(generator, path, *, private: bool = False, writer: ContainerWriter | None = None,
                   **header) -> Path:
    """Write a Generator (Generator.save): its compiled models, prefill and decode graphs and settings."""
    records = Records(writer)
    graphs = generator.graphs
    prefill = generator._prefill_model if isinstance(generator._prefill_model, CompiledModel) else None
    models = {"decode": generator.decode_model, "first": generator.first_model, "prefill": prefill}
    records.weights([model.artifact for model in models.values() if model is not None])  # shared buffers once
    models = {name: None if model is None else records.model(model) for name, model in models.items()}
    record = {
        "max_len": graphs.max_len, "prompt_len": graphs.prompt_len,
        "cache_types": [_type_record(t) for t in graphs.cache_types],
        "options": dict(generator.options), "models": models,
        "graphs": {"prefill": records.graph(graphs.prefill), "decode": records.graph(graphs.decode)},
    }
    path = Path(path)
    records.writer.write(path, _header("generator", generator.decode_model.target, generator=record, **header),
                         private=private)
    return path


def read_generator(path, target=None, known: dict | None = None, cache_key: str | None = None, cache=True):
    """tfg.load_generator, with `known` arrays and `cache_key` as for read_model. `cache`: the compile
    cache setting for a full prefill compiled later (logits())."""
    from ..generate.generator import Generator
    from ..generate.kv_cache import KVCacheGraphs

    reader, saved_target = _open(path, "generator", target, known, cache_key)
    with reader:
        try:
            record = reader.header["generator"]
            for model in record["models"].values():  # their checks run while the graphs are parsed
                if model is not None:
                    _take_model(reader, model)
            graphs = KVCacheGraphs(prefill=_read_graph(reader, record["graphs"]["prefill"]),
                                   decode=_read_graph(reader, record["graphs"]["decode"]), attentions=(),
                                   prompt_len=int(record["prompt_len"]), max_len=int(record["max_len"]),
                                   cache_types=tuple(_type_from(t) for t in record["cache_types"]))
            artifacts = {name: None if model is None else _read_model(reader, model, saved_target)
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
                       threads=options["threads"], cache=cache)

    generator = Generator(graphs, models["prefill"] or prefill, models["decode"], models["first"])
    generator.options = options
    generator.loaded_from = reader.path
    return generator


def load_generator(path: str | os.PathLike, *, target=None):
    """The Generator saved at `path` by gen.save: the same greedy tokens as the saved one. Errors as for load."""
    return read_generator(path, target)
