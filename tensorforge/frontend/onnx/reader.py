"""Reading an ONNX model: the file (or bytes, or ModelProto), its opsets and its initializers as arrays.

    model, folder = read_model("resnet18.onnx")         # folder: where external data may live
    arrays = initializer_arrays(model.graph, folder)    # {"conv1.weight": ndarray, ...}

Nothing is read outside the model's folder: an external data file must be a relative path inside
it (no "..", no absolute path, no link that leaves it). A file that does not parse, a tensor
whose bytes do not fill its dims, or a dtype the IR lacks raises OnnxImportError naming the file
and the tensor.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...ir import DType


class OnnxImportError(ValueError):
    """The ONNX model cannot be read or converted: the message names the file, node or tensor."""


class UnsupportedOnnxOp(OnnxImportError):
    """An op, attribute value, element type or domain the importer does not support; raised before
    anything compiles."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("reading ONNX models needs the onnx package: pip install 'tensorforge[onnx]'") from None
    return onnx


def is_onnx_model(model) -> bool:
    """An ONNX model as tensorforge takes it: a ModelProto, serialized bytes, or a path ending in .onnx."""
    if isinstance(model, (bytes, bytearray)):
        return True
    if isinstance(model, (str, os.PathLike)):
        return str(model).endswith(".onnx")
    return type(model).__name__ == "ModelProto" and type(model).__module__.startswith("onnx")


def read_model(source):
    """(ModelProto, folder or None): from a path, serialized bytes, or a ModelProto as it is."""
    onnx = _onnx()
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise OnnxImportError(f"{path}: no such ONNX file")
        data, folder, label = path.read_bytes(), path.resolve().parent, str(path)
    elif isinstance(source, (bytes, bytearray)):
        data, folder, label = bytes(source), None, "the ONNX bytes"
    else:
        return source, None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:  # protobuf's DecodeError and friends
        raise OnnxImportError(f"{label} is not a valid ONNX model (the protobuf does not parse: {error})") from None
    if not model.HasField("graph"):
        raise OnnxImportError(f"{label} is not a valid ONNX model (it has no graph)")
    return model, folder


def opset_version(model) -> int:
    """The default domain's opset; a model that imports another domain's ops is refused where they are used."""
    versions = [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    if not versions:
        raise OnnxImportError("the model imports no opset of the default ONNX domain")
    return max(versions)


def numpy_dtype(onnx_dtype: int, what: str) -> np.dtype:
    """The numpy dtype of an ONNX element type that the IR has; OnnxImportError for any other."""
    onnx = _onnx()
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_dtype))
    except (KeyError, TypeError, ValueError):
        dtype = None
    known = onnx_dtype in onnx.TensorProto.DataType.values()
    name = onnx.TensorProto.DataType.Name(onnx_dtype) if known else onnx_dtype
    if dtype is None or dtype.kind == "f" and dtype != np.float32 and dtype != np.float64 or dtype.kind in "cOUSV":
        raise OnnxImportError(f"{what} has element type {name}, which tensorforge does not support "
                              f"(supported: {', '.join(d.value for d in DType)}; float64 is read as float32)")
    try:
        DType.from_numpy(np.float32 if dtype == np.float64 else dtype)
    except TypeError:
        raise OnnxImportError(f"{what} has element type {name}, which tensorforge does not support "
                              f"(supported: {', '.join(d.value for d in DType)})") from None
    return dtype


def _external_bytes(tensor, folder: Path | None) -> bytes:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if folder is None:
        raise OnnxImportError(f"initializer '{tensor.name}' keeps its data in the external file {location!r}, "
                              "but the model was not read from a file: pass its path")
    if not location or os.path.isabs(location) or ".." in Path(location).parts:
        raise OnnxImportError(f"initializer '{tensor.name}': external data location {location!r} is not a relative "
                              f"path inside the model's folder {folder}")
    path = (folder / location).resolve()
    if folder not in path.parents:
        raise OnnxImportError(f"initializer '{tensor.name}': external data {location!r} leads outside the model's "
                              f"folder {folder}")
    if not path.is_file():
        raise OnnxImportError(f"initializer '{tensor.name}': its external data file {location!r} is missing "
                              f"(looked in {folder})")
    offset, length = int(info.get("offset", 0)), info.get("length")
    size = path.stat().st_size
    length = size - offset if length is None else int(length)
    if offset < 0 or length < 0 or offset + length > size:
        raise OnnxImportError(f"initializer '{tensor.name}': external file {location!r} has {size} bytes, "
                              f"the tensor asks for {length} at offset {offset}")
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(length)


def tensor_array(tensor, folder: Path | None, what: str | None = None) -> np.ndarray:
    """A TensorProto as an ndarray (float64 narrowed to float32), external data read from `folder`."""
    onnx = _onnx()
    what = what or f"initializer '{tensor.name}'"
    dtype = numpy_dtype(tensor.data_type, what)
    dims = tuple(int(d) for d in tensor.dims)
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raw = _external_bytes(tensor, folder)
        count = int(np.prod(dims)) if dims else 1
        if dtype == np.bool_ or len(raw) != count * dtype.itemsize:
            raise OnnxImportError(f"{what}: its external data has {len(raw)} bytes, dims {list(dims)} of "
                                  f"{dtype} need {count * dtype.itemsize}")
        array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(dims).astype(dtype)
    else:
        try:
            array = onnx.numpy_helper.to_array(tensor)
        except Exception as error:
            raise OnnxImportError(f"{what}: its data does not match its dims {list(dims)} ({error})") from None
        if array.shape != dims:
            raise OnnxImportError(f"{what}: its data has shape {list(array.shape)}, its dims say {list(dims)}")
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    return np.require(array, requirements="C")
