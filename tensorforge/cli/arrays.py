"""Arrays in and out of the command line: .npy/.npz files, a model's declared inputs, random examples.

    specs = parse_named(["x=x.npy", "mask.npy"], "--input")     # [("x", "x.npy"), (None, "mask.npy")]
    arrays = read_arrays(specs, names, "--input")              # {"x": ndarray, "mask": ndarray}, by input name
    declared, outputs = onnx_io("model.onnx")                  # [Declared("x", float32, ("batch", 3, 32, 32))], ["y"]
    inputs = example_inputs(declared, arrays, shapes, seed=0)  # given arrays, the rest random of their shapes
    write_outputs(outputs, names, ["y.npy"])                   # or one directory: <dir>/<output name>.npy

Files are read with np.load(allow_pickle=False): an object array is refused, never unpickled. An
output file is written to exactly the path named (np.save would add ".npy" to a bare name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..ir.names import ir_name


class CliError(Exception):
    """Bad input on the command line: the message is the one line the user sees."""


# --- NAME=VALUE options -------------------------------------------------------------------------------

def parse_named(values: list[str], option: str) -> list[tuple[str | None, str]]:
    """`--input x=a.npy --input b.npy` -> [("x", "a.npy"), (None, "b.npy")]: a name or, without one, a position."""
    specs = []
    for value in values:
        name, sep, path = value.partition("=")
        if sep and name and not Path(value).exists():
            specs.append((name, path))
        else:
            specs.append((None, value))
    by_position = [path for name, path in specs if name is None and Path(path).suffix != ".npz"]
    if by_position and len(by_position) != len(specs):
        raise CliError(f"{option}: give every file by name (NAME=FILE) or every file in the model's input order, "
                       "not a mix")
    return specs


def parse_shapes(values: list[str]) -> dict[str, tuple[int, ...]]:
    """`--input-shape x=1,3,224,224 --input-shape batch=8` -> {"x": (1, 3, 224, 224), "batch": (8,)}."""
    shapes = {}
    for value in values:
        name, sep, dims = value.partition("=")
        try:
            shape = tuple(int(d) for d in re.split(r"[,x]", dims.strip("[]() ")) if d.strip()) if sep else None
        except ValueError:
            shape = None
        if not name or shape is None or any(d < 0 for d in shape):
            raise CliError(f"--input-shape {value!r}: expected NAME=D1,D2,... (an input's shape, e.g. "
                           "x=1,3,224,224) or SYMBOL=N (a symbolic axis' size, e.g. batch=1)")
        shapes[name] = shape
    return shapes


# --- reading arrays -------------------------------------------------------------------------------------

def load_array(path: str | Path, option: str) -> np.ndarray:
    """One array from a .npy file (no pickles); float64 becomes float32 (what tensorforge computes in)."""
    path = Path(path)
    if not path.is_file():
        raise CliError(f"{option} {path}: no such file")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise CliError(f"{option} {path}: not a plain .npy array ({error})") from None
    except (OSError, EOFError) as error:
        raise CliError(f"{option} {path}: cannot be read as a .npy file ({error})") from None
    if isinstance(array, np.lib.npyio.NpzFile):
        array.close()
        raise CliError(f"{option} {path}: an .npz archive where one array was expected (name the file with .npz)")
    return _narrowed(array, option, path)


def _narrowed(array: np.ndarray, option: str, path) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise CliError(f"{option} {path}: dtype {array.dtype} is not a number or bool array")
    return array.astype(np.float32) if array.dtype.kind == "f" and array.dtype != np.float32 else array


def load_archive(path: str | Path, option: str) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, by its name in the archive (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise CliError(f"{option} {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise CliError(f"{option} {path}: not an .npz archive")
            return {name: _narrowed(archive[name], option, path) for name in archive.files}
    except (ValueError, OSError, EOFError) as error:
        raise CliError(f"{option} {path}: cannot be read as an .npz archive ({error})") from None


def _match(name: str, names: list[str]) -> str | None:
    """The input `name` refers to: the model's own name, or its IR spelling ('input.1' -> 'input_1')."""
    if name in names:
        return name
    by_ir = {ir_name(n): n for n in names}
    return by_ir.get(ir_name(name))


def read_arrays(specs: list[tuple[str | None, str]], names: list[str], option: str) -> dict[str, np.ndarray]:
    """The arrays the files in `specs` give, keyed by the input names `names` (files without a name:
    in the inputs' order; an .npz: its arrays by their names in it)."""
    arrays: dict[str, np.ndarray] = {}
    position = 0

    def put(name: str | None, array: np.ndarray, source: str) -> None:
        nonlocal position
        if name is None:
            if position >= len(names):
                raise CliError(f"{option} {source}: the model takes {len(names)} input(s) ({', '.join(names)}), "
                               "more files were given")
            key = names[position]
            position += 1
        else:
            key = _match(name, names)
            if key is None:
                raise CliError(f"{option} {source}: '{name}' is not an input of the model (its inputs: "
                               f"{', '.join(names)})")
        if key in arrays:
            raise CliError(f"{option}: input '{key}' is given twice")
        arrays[key] = array

    for name, path in specs:
        if Path(path).suffix == ".npz":
            if name is not None:
                raise CliError(f"{option} {name}={path}: an .npz archive names its arrays itself; give it alone")
            for key, array in load_archive(path, option).items():
                put(key, array, f"{path}[{key}]")
        else:
            put(name, load_array(path, option), path if name is None else f"{name}={path}")
    return arrays


# --- a model's inputs, and example inputs for tracing -----------------------------------------------------

@dataclass(frozen=True)
class Declared:
    """An input as the model declares it: name, numpy dtype, dims (ints; a str for a symbolic axis; None unknown)."""

    name: str
    dtype: np.dtype
    dims: tuple | None

    def text(self) -> str:
        dims = "?" if self.dims is None else ", ".join("?" if d is None else str(d) for d in self.dims)
        return f"{self.name}: {self.dtype}[{dims}]"


def onnx_io(path: str | Path) -> tuple[list[Declared], list[str]]:
    """The graph inputs of the ONNX file `path` that are not initializers, and its output names (reads and
    checks the file)."""
    from ..frontend.onnx.inputs import element_dtype
    from ..frontend.onnx.reader import OnnxImportError, read_model

    model, _ = read_model(path)
    initializers = {tensor.name for tensor in model.graph.initializer}
    declared = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        if not value.type.HasField("tensor_type"):
            raise OnnxImportError(f"input '{value.name}' is not a tensor (sequences, maps and optionals are not "
                                  "supported)")
        tensor = value.type.tensor_type
        dtype = element_dtype(tensor.elem_type, f"input '{value.name}'").numpy
        dims = None
        if tensor.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        declared.append(Declared(value.name, np.dtype(dtype), dims))
    return declared, [value.name for value in model.graph.output]


RANDOM_HELP = ("inputs not given as files are random, of the model's declared shapes: floats standard normal, "
               "integers (token ids, token types) in [0, 2) and inputs whose name contains 'mask' all ones, bools "
               "random; a symbolic axis (batch, sequence) needs its size: --input-shape NAME=D1,D2,.. "
               "for an input or SYMBOL=N for an axis (e.g. batch=1), or an --input file. Real token ids: give "
               "them as an int64 .npy file")


def example_inputs(declared: list[Declared], given: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
                   seed: int = 0) -> dict[str, np.ndarray]:
    """One array per declared input, by name: the given arrays, the rest random (see RANDOM_HELP)."""
    names = [d.name for d in declared]
    symbols = {d for item in declared for d in (item.dims or ()) if isinstance(d, str)}
    input_shapes, sizes = {}, {}
    for key, shape in shapes.items():
        name = _match(key, names)
        if name is not None:
            input_shapes[name] = shape
        elif key in symbols and len(shape) == 1:
            sizes[key] = shape[0]
        else:
            hint = f"; symbolic axes: {', '.join(sorted(symbols))}" if symbols else ""
            raise CliError(f"--input-shape {key}: not an input of the model (inputs: {', '.join(names)}{hint})")
    # symbols sized by the arrays and shapes given for other inputs
    for item in declared:
        shape = given[item.name].shape if item.name in given else input_shapes.get(item.name)
        if shape is not None and item.dims is not None and len(shape) == len(item.dims):
            for dim, size in zip(item.dims, shape):
                if isinstance(dim, str):
                    sizes.setdefault(dim, size)
    rng = np.random.default_rng(seed)
    inputs = {}
    for item in declared:
        if item.name in given:
            inputs[item.name] = given[item.name]
            continue
        shape = input_shapes.get(item.name)
        if shape is None:
            dims = item.dims
            if dims is None or any(d is None or (isinstance(d, str) and d not in sizes) for d in dims):
                raise CliError(f"input {item.text()} has symbolic or unknown dims: give its shape with "
                               f"--input-shape {item.name}=D1,D2,... (or each symbol's size, e.g. --input-shape "
                               f"batch=1), or its values with --input {item.name}=FILE.npy")
            shape = tuple(sizes[d] if isinstance(d, str) else d for d in dims)
        inputs[item.name] = random_array(item.name, item.dtype, shape, rng)
    return inputs


def random_array(name: str, dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A random example for an input: floats N(0, 1); 'mask' inputs ones; other integers in [0, 2); bools random."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if "mask" in name.lower():
        return np.ones(shape, dtype)
    return rng.integers(0, 2, shape).astype(dtype)


def describe(arrays: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{name} {array.dtype}{list(array.shape)}" for name, array in arrays.items())


# --- writing outputs -------------------------------------------------------------------------------------

def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "output"


def output_paths(names: list[str], destinations: list[str]) -> list[Path]:
    """Where each output goes: one .npy file per output (in order), or one directory (any other name) that
    receives <output name>.npy for each."""
    if len(destinations) == 1 and Path(destinations[0]).suffix != ".npy":
        folder = Path(destinations[0])
        if folder.exists() and not folder.is_dir():
            raise CliError(f"--output {folder}: exists and is not a directory (an output file's name ends in .npy)")
        files = [_file_name(name) for name in names]
        files = [f"{index}_{file}" if files.count(file) > 1 else file for index, file in enumerate(files)]
        return [folder / f"{file}.npy" for file in files]
    if any(Path(d).suffix != ".npy" for d in destinations):
        raise CliError("--output: give one .npy file per output, or a single directory")
    if len(destinations) != len(names):
        raise CliError(f"--output: the model has {len(names)} output(s) ({', '.join(names)}), {len(destinations)} "
                       "file(s) were given; give one .npy file per output or a directory")
    paths = [Path(d) for d in destinations]
    if len({p.resolve() for p in paths}) != len(paths):
        raise CliError("--output: the same file is named twice")
    return paths


def write_array(path: Path, array: np.ndarray) -> None:
    """`array` as a .npy file at exactly `path` (its folder created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        np.save(file, array, allow_pickle=False)
