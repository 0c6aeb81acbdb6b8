"""The graph inputs of an ONNX model, bound to the example inputs' sizes.

    graph input  input_ids: int64[batch, sequence]     example  int64[1, 128]
        -> %input_ids : i64[1,128]      (batch = 1, sequence = 128 for every input that names them)

An input's declared dims may be numbers or symbols (dim_param); the example inputs give every
symbol its size. A declared number that differs, a symbol bound to two sizes, a wrong rank or
element type: InputError-like OnnxImportError naming the input and the axis.
"""

from __future__ import annotations

import numpy as np

from ... import ir
from .reader import OnnxImportError, UnsupportedOnnxOp, numpy_dtype


def element_dtype(onnx_dtype: int, what: str) -> ir.DType:
    """The IR dtype of an ONNX element type of a value the model computes or takes (not double: the IR
    computes in float32, and a double input or output would silently change type)."""
    dtype = numpy_dtype(onnx_dtype, what)
    if dtype == np.float64:
        raise UnsupportedOnnxOp(f"{what} is DOUBLE: tensorforge computes floats in float32 (weights stored as "
                                "double are read as float32, but inputs, outputs and casts must be float)")
    return ir.DType.from_numpy(dtype)


def _arrays_by_name(names: list[str], example_inputs) -> dict[str, np.ndarray] | None:
    if example_inputs is None:
        return None
    if isinstance(example_inputs, dict):
        unknown = sorted(set(example_inputs) - set(names))
        if unknown:
            raise OnnxImportError(f"example input {unknown[0]!r} is not an input of the model (its inputs: "
                                  f"{', '.join(names)})")
        missing = [name for name in names if name not in example_inputs]
        if missing:
            raise OnnxImportError(f"the model's input '{missing[0]}' has no example input (inputs: {', '.join(names)})")
        values = [example_inputs[name] for name in names]
    else:
        values = list(example_inputs) if isinstance(example_inputs, (tuple, list)) else [example_inputs]
        if len(values) != len(names):
            raise OnnxImportError(f"the model takes {len(names)} inputs ({', '.join(names)}), "
                                  f"{len(values)} example inputs were given")
    arrays = {}
    for name, value in zip(names, values):
        array = np.asarray(value)
        arrays[name] = array.astype(np.float32) if array.dtype == np.float64 else array
    return arrays


def bind_inputs(onnx_graph, initializers: set[str], example_inputs) -> list[tuple[str, ir.TensorType]]:
    """(name, type) of each graph input that is not an initializer, with every symbolic axis sized."""
    declared = [value for value in onnx_graph.input if value.name not in initializers]
    arrays = _arrays_by_name([value.name for value in declared], example_inputs)
    symbols: dict[str, tuple[int, str]] = {}
    bound = []
    for value in declared:
        what = f"input '{value.name}'"
        if not value.type.HasField("tensor_type"):
            raise OnnxImportError(f"{what} is not a tensor (sequences, maps and optionals are not supported)")
        tensor_type = value.type.tensor_type
        dtype = element_dtype(tensor_type.elem_type, what)
        dims = list(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
        if arrays is None:
            if dims is None or any(not d.HasField("dim_value") for d in dims):
                raise OnnxImportError(f"{what} has symbolic or unknown dims ({_dims_text(dims)}): pass example inputs "
                                      "to give them sizes")
            bound.append((value.name, ir.TensorType(tuple(d.dim_value for d in dims), dtype)))
            continue
        array = arrays[value.name]
        if array.dtype != dtype.numpy:
            raise OnnxImportError(f"{what} is {dtype.name}, the example input is {array.dtype} "
                                  f"(convert it: x.astype(np.{dtype.numpy.name}))")
        if dims is not None:
            if len(dims) != array.ndim:
                raise OnnxImportError(f"{what} has rank {len(dims)} ({_dims_text(dims)}), the example input has "
                                      f"shape {list(array.shape)}")
            for axis, (dim, size) in enumerate(zip(dims, array.shape)):
                if dim.HasField("dim_value") and dim.dim_value != size:
                    raise OnnxImportError(f"{what} axis {axis} has size {dim.dim_value}, the example input "
                                          f"{size} (shape {list(array.shape)})")
                if dim.HasField("dim_param"):
                    seen = symbols.setdefault(dim.dim_param, (size, f"{what} axis {axis}"))
                    if seen[0] != size:
                        raise OnnxImportError(f"{what} axis {axis} is '{dim.dim_param}' = {size}, but {seen[1]} made "
                                              f"it {seen[0]}")
        bound.append((value.name, ir.TensorType(tuple(array.shape), dtype)))
    return bound


def _dims_text(dims) -> str:
    if dims is None:
        return "no shape"
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + "]"
