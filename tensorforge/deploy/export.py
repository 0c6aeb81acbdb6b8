"""export: a compiled model as a self-contained C package for its target, run without Python.

    cm = tf.compile(model, x, target="armv8")
    cm.export("out/")                     # model.h model_io.h libmodel.a libmodel.so main.c Makefile README.md
    cm.export("out/", weights="file")     # the weights in out/model.weights instead of in the libraries
    gen.export("gpt/")                    # a Generator: generator.h, prefill and decode, generate.c

    cd out && make CC=aarch64-linux-gnu-gcc && qemu-aarch64 -L /usr/aarch64-linux-gnu ./main x.npy y.npy

The libraries are built here, with the target's C compiler (gcc for this machine's architecture,
aarch64-linux-gnu-gcc for armv8 on x86-64), from: the artifact's object code with its entry
`tf_run` renamed `<name>__run` (and `tf_pool_shutdown` `<name>__pool_shutdown`), hidden, so that
the two graphs of a generator link side by side; the wrapper c/model.c, compiled with the model's
constants (a generated `<io>_io.h`) and c/common.c; and the weights, either assembled into
`.rodata` (`.incbin`, 64-byte aligned) or written to a `.weights` file whose header
(c/tf_internal.h: magic, version, target, layout id, byte count, CRC-32) tf_model_open checks.
The package's Makefile builds only the program (main or generate) against libmodel.a.
Nothing is written outside `directory` but the build's temporary directory, removed at the end.
"""

from __future__ import annotations

import math
import platform
import shutil
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

import llvmlite.binding as llvm
import numpy as np
from tqdm.auto import tqdm

from ..codegen.target import Target
from ..codegen.threads.thread_pool import SHUTDOWN
from ..ir import DType, TensorType
from ..ir.ops_transformer import index_inputs
from ..runtime.cross import BUILD_TIMEOUT_SECONDS, CROSS_TOOLCHAINS
from ..runtime.errors import ToolMissingError

WEIGHTS_MAGIC = b"TFWEIGHT"
WEIGHTS_VERSION = 1
WEIGHTS_HEADER_BYTES = 128
WEIGHTS_TARGET_OFFSET, WEIGHTS_TARGET_BYTES = 64, 64
MAX_RANK = 8  # TF_MAX_RANK in c/model.h
WEIGHTS_MODES = ("linked", "file")
C_DTYPES = {DType.f32: "TF_F32", DType.i8: "TF_I8", DType.u8: "TF_U8", DType.i32: "TF_I32", DType.i64: "TF_I64",
            DType.bool: "TF_BOOL"}
WRAPPER_SOURCES = ("model.h", "tf_internal.h", "model.c", "common.c")
GENERATOR_SOURCES = ("generator.h", "generator.c")


def _c_source(name: str) -> str:
    return resources.files(__package__).joinpath("c", name).read_text()


def target_label(target: Target) -> str:
    """What a weights file and tf_model_describe() say the code is for: "aarch64 armv8", "x86_64 znver4"."""
    label = f"{target.arch} {target.cpu if target.name == 'host' else target.name}"
    return label[:WEIGHTS_TARGET_BYTES - 1]


def _fnv1a64(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def layout_id(artifact) -> int:
    """FNV-1a 64 of the weights' layout: the target, the total size, each stored constant's name, offset
    and type (a packed copy `name@layout`: its constant's). Files of the same model, retrained, share
    it; another model's differ."""
    types = {node.name: node.type for node in artifact.graph.nodes if node.op == "constant"}
    entries = sorted(artifact.weight_offsets.items(), key=lambda item: (item[1], item[0]))
    text = f"tensorforge weights layout 1\n{target_label(artifact.target)}\n{int(artifact.weights.nbytes)}\n"
    text += "".join(f"{name}\t{offset}\t{types.get(name.split('@')[0], '?')}\n" for name, offset in entries)
    return _fnv1a64(text.encode())


def weights_header(artifact) -> bytes:
    """The header of the artifact's .weights file (c/tf_internal.h has the layout)."""
    data = np.ascontiguousarray(artifact.weights).reshape(-1).view(np.uint8)
    header = bytearray(WEIGHTS_HEADER_BYTES)
    header[0:8] = WEIGHTS_MAGIC
    header[8:16] = WEIGHTS_VERSION.to_bytes(4, "little") + WEIGHTS_HEADER_BYTES.to_bytes(4, "little")
    header[16:24] = int(data.nbytes).to_bytes(8, "little")
    header[24:32] = layout_id(artifact).to_bytes(8, "little")
    header[32:36] = zlib.crc32(memoryview(data)).to_bytes(4, "little")
    label = target_label(artifact.target).encode()
    header[WEIGHTS_TARGET_OFFSET:WEIGHTS_TARGET_OFFSET + len(label)] = label
    return bytes(header)


def write_weights(artifact, path) -> Path:
    """Write the artifact's weights as a .weights file (header, then the bytes) at `path`."""
    path = Path(path)
    with open(path, "wb") as file:
        file.write(weights_header(artifact))
        np.ascontiguousarray(artifact.weights).reshape(-1).view(np.uint8).tofile(file)
    return path


@dataclass(frozen=True)
class Toolchain:
    compiler: str
    archiver: str


def _machine_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def find_toolchain(target: Target) -> Toolchain:
    """The C compiler and archiver that build for `target`: this machine's gcc for its own
    architecture, the cross gcc of runtime/cross.py's table for another (no qemu needed)."""
    arch = target.arch
    if arch == _machine_arch():
        compiler = shutil.which("gcc") or shutil.which("cc")
        archiver = shutil.which("ar")
        if compiler is None or archiver is None:
            raise ToolMissingError("exporting a C package needs gcc and ar: install the Debian packages gcc and "
                                   "binutils (apt-get install gcc binutils)")
        return Toolchain(compiler, archiver)
    if arch not in CROSS_TOOLCHAINS:
        raise NotImplementedError(f"exporting {arch} code from a {_machine_arch()} machine is not supported "
                                  f"(cross compilers known for: {', '.join(CROSS_TOOLCHAINS)})")
    compiler_name, package = CROSS_TOOLCHAINS[arch][:2]
    compiler = shutil.which(compiler_name)
    archiver = shutil.which(compiler_name.removesuffix("gcc") + "ar")
    if compiler is None or archiver is None:
        raise ToolMissingError(f"exporting {arch} code needs the cross compiler {compiler_name}: install the Debian "
                               f"package {package} (apt-get install {package})")
    return Toolchain(compiler, archiver)


def _c_string(text: str) -> str:
    """`text` as a C string literal (anything but printable ASCII as octal escapes)."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        out.append(f"\\{char}" if char in '"\\' else char if 32 <= byte < 127 and char != "?" else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class Part:
    """One compiled graph in the library: its C prefix (tf_model: tf_model_open ...), the prefix of its
    constants (TF_MODEL: TF_MODEL_N_INPUTS ...) and header (model_io.h), and what it runs."""

    name: str
    io: str
    header: str
    artifact: object
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    @classmethod
    def of(cls, model, name: str) -> Part:
        artifact = model.artifact
        graph = artifact.graph
        outputs = [node.name for node in graph.outputs] if len(graph.outputs) == len(artifact.output_types) \
            else [""] * len(artifact.output_types)
        outputs = tuple(name if name and not name.isdigit() else f"output{i}" for i, name in enumerate(outputs))
        short = name.removeprefix("tf_")
        return cls(name, name.upper(), f"{short}_io.h", artifact, tuple(model.input_names), outputs)

    def id_checks(self) -> list[tuple[int, str, int]]:
        """(input, dtype, rows) for each integer input that indexes a gather's table directly (a cast
        between them, e.g. float ids, is left to the gather's clamp)."""
        checks = []
        for found in index_inputs(self.artifact.graph):
            dtype = self.artifact.input_types[found.position].dtype
            if dtype in (DType.i64, DType.i32) and not any(node.op == "cast" for node in found.chain):
                checks.append((found.position, C_DTYPES[dtype], found.rows))
        return checks

    def object_code(self) -> bytes:
        """The artifact's object with its global symbols renamed `<name>__run`, `<name>__pool_shutdown`, hidden."""
        module = llvm.parse_assembly(self.artifact.llvm_ir)
        for function in module.functions:
            if function.is_declaration or function.linkage.name in ("internal", "private"):
                continue
            if function.name == self.artifact.entry:
                function.name = f"{self.name}__run"
            elif function.name == SHUTDOWN:
                function.name = f"{self.name}__pool_shutdown"
            else:
                raise ValueError(f"the model's code exports an unexpected symbol {function.name!r}")
            function.visibility = "hidden"
        module.verify()
        return self.artifact.target.target_machine(self.artifact.opt_level).emit_object(module)

    def io_header(self, weights: str) -> str:
        """`<name>_io.h`: the number, names, dtypes and shapes of the inputs and outputs as macros, and
        the tables tf_model_describe() returns."""
        artifact, io = self.artifact, self.io
        lines = [f"/* {self.header}: the inputs and outputs of this model ({self.name}_* in the library), written",
                 " * by tensorforge's export. Buffers are C-contiguous and little-endian. */",
                 f"#ifndef {io}_IO_H", f"#define {io}_IO_H", "",
                 f"#define {io}_TARGET {_c_string(target_label(artifact.target))}",
                 f"#define {io}_N_INPUTS {len(artifact.input_types)}",
                 f"#define {io}_N_OUTPUTS {len(artifact.output_types)}",
                 f"#define {io}_THREADS {int(artifact.threads)}",
                 f"#define {io}_WEIGHTS_LINKED {int(weights == 'linked')}",
                 f"#define {io}_WEIGHTS_BYTES {int(artifact.weights.nbytes)}u",
                 f"#define {io}_WORKSPACE_BYTES {int(artifact.workspace_bytes)}u", ""]
        tables = {}
        for kind, names, types in (("INPUT", self.input_names, artifact.input_types),
                                   ("OUTPUT", self.output_names, artifact.output_types)):
            rows = []
            for index, (name, type_) in enumerate(zip(names, types, strict=True)):
                if type_.rank > MAX_RANK:
                    raise ValueError(f"{kind.lower()} '{name}' has rank {type_.rank}; the C API describes at most "
                                     f"{MAX_RANK} dimensions")
                prefix = f"{io}_{kind}{index}"
                shape = "{" + ", ".join(str(d) for d in type_.shape) + "}"
                lines += [f"/* {kind.lower()} {index}: {name} {type_} */",
                          f"#define {prefix}_NAME {_c_string(name)}", f"#define {prefix}_DTYPE {C_DTYPES[type_.dtype]}",
                          f"#define {prefix}_RANK {type_.rank}", f"#define {prefix}_SHAPE {shape}",
                          f"#define {prefix}_BYTES {type_.nbytes}u", ""]
                rows.append(f"{{{prefix}_NAME, {prefix}_DTYPE, {prefix}_RANK, {shape if type_.rank else '{0}'}, "
                            f"{prefix}_BYTES}}")
            tables[kind] = rows or ['{"", 0, 0, {0}, 0}']
        checks = self.id_checks()
        check_rows = [f"{{{position}, {dtype}, {rows}}}" for position, dtype, rows in checks] or ["{0, 0, 0}"]
        lines += ["/* for model.c: tf_model_describe()'s tables, the weights layout a .weights file must have, and",
                  " * the inputs of ids (input, dtype, rows of the table) checked before a run */",
                  f"#define {io}_INPUT_INFOS {{{', '.join(tables['INPUT'])}}}",
                  f"#define {io}_OUTPUT_INFOS {{{', '.join(tables['OUTPUT'])}}}",
                  f"#define {io}_LAYOUT_ID 0x{layout_id(artifact):016x}ull",
                  f"#define {io}_N_ID_CHECKS {len(checks)}",
                  f"#define {io}_ID_CHECKS {{{', '.join(check_rows)}}}", "", "#endif", ""]
        return "\n".join(lines)

    def weights_assembly(self) -> str:
        """weights.S: the weights bytes (`<name>_weights.bin`) in .rodata, 64-byte aligned, as `<name>__weights`."""
        symbol = f"{self.name}__weights"
        return "\n".join([
            f'\t.section .rodata.{symbol},"a"', "\t.balign 64", f"\t.globl {symbol}", f"\t.hidden {symbol}",
            f"\t.type {symbol}, %object", f"{symbol}:", f'\t.incbin "{self.name}_weights.bin"',
            "\t.balign 64", f"\t.size {symbol}, . - {symbol}", '\t.section .note.GNU-stack,"",%progbits', ""])


def _run(command: list[str], cwd: Path, what: str) -> None:
    try:
        result = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=BUILD_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} took over {BUILD_TIMEOUT_SECONDS} s ({' '.join(command)})") from None
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(command)}):\n{result.stdout}")


def _check_weights_mode(weights: str) -> None:
    if weights not in WEIGHTS_MODES:
        raise ValueError(f"weights must be 'linked' (in the libraries) or 'file' (a .weights file), got {weights!r}")


def _build(parts: list[Part], weights: str, build: Path, toolchain: Toolchain, sources: tuple[str, ...],
           generated: dict[str, str], progress) -> list[Path]:
    """Compile and link libmodel.a and libmodel.so in `build`; returns their paths."""
    for name in (*WRAPPER_SOURCES, *sources):
        (build / name).write_text(_c_source(name))
    for name, text in generated.items():
        (build / name).write_text(text)
    objects = []
    for part in parts:
        (build / part.header).write_text(part.io_header(weights))
        code = build / f"{part.name}_code.o"
        code.write_bytes(part.object_code())
        objects.append(code.name)
        if weights == "linked":
            np.ascontiguousarray(part.artifact.weights).reshape(-1).view(np.uint8).tofile(
                build / f"{part.name}_weights.bin")
            (build / f"{part.name}_weights.S").write_text(part.weights_assembly())
        progress.update()
    flags = ["-O2", "-fPIC", "-fvisibility=hidden", "-Wall", "-c"]
    compiles = []
    for part in parts:
        compiles.append([toolchain.compiler, *flags, f"-DTF_NAME={part.name}", f"-DTF_IO={part.io}",
                         f'-DTF_IO_HEADER="{part.header}"', "model.c", "-o", f"{part.name}.o"])
        if weights == "linked":
            compiles.append([toolchain.compiler, "-c", f"{part.name}_weights.S", "-o", f"{part.name}_weights.o"])
    for source in ("common.c", *(name for name in sources if name.endswith(".c"))):
        compiles.append([toolchain.compiler, *flags, source, "-o", source.removesuffix(".c") + ".o"])
    for command in compiles:
        _run(command, build, f"compiling {command[-3]}")
        objects.append(command[-1])
    progress.update()
    _run([toolchain.archiver, "rcs", "libmodel.a", *objects], build, "archiving libmodel.a")
    _run([toolchain.compiler, "-shared", "-o", "libmodel.so", *objects, "-lm", "-lpthread"], build,
         "linking libmodel.so")
    progress.update()
    return [build / "libmodel.a", build / "libmodel.so"]


def _write_package(directory, parts: list[Part], weights: str, program: str, sources: tuple[str, ...],
                   generated: dict[str, str], readme: str, verbose: bool) -> Path:
    """Build the libraries in a temporary directory, then write the package into `directory`:
    the libraries, model.h and the headers among `sources` and `generated`, each part's io header
    and .weights file, the program's source, the Makefile, the README, and src/ (the C sources)."""
    directory = Path(directory)
    _check_weights_mode(weights)
    target = parts[0].artifact.target
    toolchain = find_toolchain(target)
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tqdm(total=len(parts) + 3, desc="export", unit="step", disable=not verbose) as progress, \
            tempfile.TemporaryDirectory(prefix="tensorforge-export-") as temporary:
        build = Path(temporary)
        for library in _build(parts, weights, build, toolchain, sources, generated, progress):
            shutil.copyfile(library, directory / library.name)
        headers = ["model.h", *(name for name in sources if name.endswith(".h")), *generated,
                   *(part.header for part in parts)]
        for name in headers:
            shutil.copyfile(build / name, directory / name)
        for part in parts:
            if weights == "file":
                write_weights(part.artifact, directory / f"{part.name.removeprefix('tf_')}.weights")
        (directory / f"{program}.c").write_text(_c_source(f"{program}.c"))
        (directory / "src").mkdir(exist_ok=True)
        for name in ("tf_internal.h", *(name for name in (*WRAPPER_SOURCES, *sources) if name.endswith(".c"))):
            shutil.copyfile(build / name, directory / "src" / name)
        (directory / "Makefile").write_text(Template(_c_source("Makefile")).substitute(
            program=program, headers=" ".join(headers), target_description=target_label(target)))
        (directory / "README.md").write_text(readme)
        progress.update()
    if verbose:
        print(f"exported to {directory} in {time.perf_counter() - start:.2f} s")
    return directory


def _io_table(part: Part) -> str:
    artifact = part.artifact
    rows = [f"| input {i} | `{name}` | {t} | {t.nbytes} |" for i, (name, t) in
            enumerate(zip(part.input_names, artifact.input_types))]
    rows += [f"| output {i} | `{name}` | {t} | {t.nbytes} |" for i, (name, t) in
             enumerate(zip(part.output_names, artifact.output_types))]
    return "| | name | type | bytes |\n|---|---|---|---|\n" + "\n".join(rows)


def _make_line(target: Target) -> str:
    if target.arch == "aarch64":
        return ("make                                # on the board (any aarch64 Linux with gcc)\n"
                "make CC=aarch64-linux-gnu-gcc       # or cross-compiled on an x86-64 machine")
    return "make"


def export_model(model, directory, *, weights: str = "linked", verbose: bool = False) -> Path:
    """Write the C package of the CompiledModel `model` into `directory` (created if missing); see the
    module docstring. `weights="file"` keeps the weights out of the libraries, in model.weights."""
    _check_weights_mode(weights)
    part = Part.of(model, "tf_model")
    target = part.artifact.target
    readme = Template(_c_source("README.model.md")).substitute(
        target=target_label(target), threads=part.artifact.threads, io_table=_io_table(part),
        make_line=_make_line(target), weights_note=WEIGHTS_NOTES[weights],
        weights_option=" -w model.weights" if weights == "file" else "",
        args=" ".join(f"{name}.npy" for name in part.input_names) + " "
        + " ".join(f"{name}.npy" for name in part.output_names))
    return _write_package(directory, [part], weights, "main", (), {}, readme, verbose)


def _check_generator(prefill: Part, decode: Part, first: bool, prompt_len: int, max_len: int) -> list[tuple[int, int]]:
    """(outer, row bytes) of each cache, after checking the graphs have the layout generator.c assumes."""
    def fail(problem: str) -> ValueError:
        return ValueError(f"this generator's graphs cannot be exported: {problem}")

    p, d = prefill.artifact, decode.artifact
    caches = d.input_types[2:]
    vocab = d.output_types[0].shape[-1]
    expected_prefill = [TensorType((1, prompt_len), DType.i64)] + ([TensorType((1,), DType.i64)] if first else [])
    if list(p.input_types) != expected_prefill:
        raise fail(f"the prefill takes {[str(t) for t in p.input_types]}")
    if list(d.input_types[:2]) != [TensorType((1, 1), DType.i64), TensorType((1,), DType.i64)]:
        raise fail(f"the decode step takes {[str(t) for t in d.input_types[:2]]} before its caches")
    logits = TensorType((1, 1 if first else prompt_len, vocab), DType.f32)
    if p.output_types[0] != logits or d.output_types[0] != TensorType((1, 1, vocab), DType.f32):
        raise fail(f"logits {p.output_types[0]} and {d.output_types[0]}")
    if len(p.output_types) != 1 + len(caches) or len(d.output_types) != 1 + len(caches):
        raise fail("the graphs do not return one row block per cache")
    layout = []
    for cache, prefill_rows, decode_rows in zip(caches, p.output_types[1:], d.output_types[1:]):
        shape = cache.shape
        if len(shape) < 3 or shape[2] != max_len or prefill_rows.shape != (*shape[:2], prompt_len, *shape[3:]) \
                or decode_rows.shape != (*shape[:2], 1, *shape[3:]) \
                or not cache.dtype == prefill_rows.dtype == decode_rows.dtype:
            raise fail(f"a cache {cache} with rows {prefill_rows} and {decode_rows}")
        layout.append((math.prod(shape[:2]), math.prod(shape[3:]) * cache.dtype.itemsize))
    return layout


def export_generator(generator, directory, *, weights: str = "linked", verbose: bool = False) -> Path:
    """Write the C package of a Generator into `directory`: its prefill (the first-token prefill when it
    has one) and decode graphs, generator.c's greedy loop and the generate program (c/generator.h)."""
    _check_weights_mode(weights)
    first = generator.first_model is not None
    prefill = Part.of(generator.first_model if first else generator.prefill_model, "tf_prefill")
    decode = Part.of(generator.decode_model, "tf_decode")
    if prefill.artifact.target != decode.artifact.target:
        raise ValueError("the generator's prefill and decode graphs were compiled for different targets")
    layout = _check_generator(prefill, decode, first, generator.prompt_len, generator.max_len)
    vocab = decode.artifact.output_types[0].shape[-1]
    target = decode.artifact.target
    header = "\n".join([
        "/* generator_io.h: this generator's sizes and cache layout (generator.h), written by tensorforge. */",
        "#ifndef TF_GENERATOR_IO_H", "#define TF_GENERATOR_IO_H",
        f"#define TF_GENERATOR_PROMPT_LEN {generator.prompt_len}", f"#define TF_GENERATOR_MAX_LEN {generator.max_len}",
        f"#define TF_GENERATOR_VOCAB {vocab}", f"#define TF_GENERATOR_FIRST_TOKEN {int(first)}",
        "#define TF_GENERATOR_PAD_ID 0", f"#define TF_GENERATOR_N_CACHES {len(layout)}",
        "/* each cache: the product of its dims before the position axis (2), and one position's bytes */",
        f"#define TF_GENERATOR_CACHE_OUTER {{{', '.join(str(outer) for outer, _ in layout)}}}",
        f"#define TF_GENERATOR_CACHE_ROW_BYTES {{{', '.join(str(row) for _, row in layout)}}}",
        "#endif", ""])
    readme = Template(_c_source("README.generator.md")).substitute(
        target=target_label(target), make_line=_make_line(target), weights_note=WEIGHTS_NOTES[weights],
        weights_option=" -w prefill.weights decode.weights" if weights == "file" else "",
        prompt_len=generator.prompt_len, max_len=generator.max_len, vocab=vocab,
        caches=f"caches of {len(layout)} arrays such as {decode.artifact.input_types[2]}" if layout else "no caches",
        prefill_table=_io_table(prefill), decode_table=_io_table(decode))
    return _write_package(directory, [prefill, decode], weights, "generate", GENERATOR_SOURCES,
                          {"generator_io.h": header}, readme, verbose)


WEIGHTS_NOTES = {
    "linked": "The weights are linked into `libmodel.a` and `libmodel.so`: `tf_model_open(NULL)` uses them. "
              "`tf_model_open(\"other.weights\")` reads a weights file of the same model instead.",
    "file": "The weights are in a file beside the libraries (`.weights`): `tf_model_open(path)` reads it and checks "
            "its header (magic, format version, target, the model's weights layout, size, CRC-32), returning "
            "NULL with `tf_model_last_error()` saying why for a file of another model or target, a truncated "
            "or a damaged one.",
}
