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

import functools
import importlib.metadata
import os
import platform
import zlib
from pathlib import Path

import numpy as np

from ..codegen.target import KNOWN_TARGETS, Target, initialize_llvm
from ..runtime import CompiledModel
from ..runtime.cross import CROSS_TOOLCHAINS
from .container import ContainerReader, ContainerWriter, SavedModelError
from .records import (
    Records,
    compiled_model,
    read_artifact,
    read_graph,
    take_model,
    target_from,
    target_record,
    type_from,
    type_record,
)

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


# --- the target check ---------------------------------------------------------------------------------

def _os(triple: str) -> str:
    parts = triple.split("-")
    return parts[2] if len(parts) > 2 else ""


def check_target(reader: ContainerReader, requested) -> Target:
    """The file's target, once it is known this machine can run its code (and it is `requested`, if given)."""
    try:
        saved = target_from(reader.header["target"])
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
            artifact = read_artifact(reader, reader.header["model"], saved_target)
        except SavedModelError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, zlib.error) as error:
            raise _malformed(reader, error) from None
        return compiled_model(artifact, reader.header["model"], reader.path)


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
        "cache_types": [type_record(t) for t in graphs.cache_types],
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
                    take_model(reader, model)
            graphs = KVCacheGraphs(prefill=read_graph(reader, record["graphs"]["prefill"]),
                                   decode=read_graph(reader, record["graphs"]["decode"]), attentions=(),
                                   prompt_len=int(record["prompt_len"]), max_len=int(record["max_len"]),
                                   cache_types=tuple(type_from(t) for t in record["cache_types"]))
            artifacts = {name: None if model is None else read_artifact(reader, model, saved_target)
                         for name, model in record["models"].items()}
            options = dict(record["options"])
        except SavedModelError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, zlib.error) as error:
            raise _malformed(reader, error) from None
        reader.verify()
    models = {name: None if artifact is None else compiled_model(artifact, record["models"][name], reader.path)
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
