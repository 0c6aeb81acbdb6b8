"""ONNX models in: `load_onnx(path | bytes | ModelProto, example_inputs) -> ir.Graph`.

    graph = load_onnx("model.onnx", {"input_ids": ids})     # or tfg.compile("model.onnx", ids)

The `onnx` package is an optional extra (`pip install 'tensorforge[onnx]'`), imported only when a
model is read. `supported_ops()` lists the op types the importer converts; anything else, or an
attribute value a converter does not handle, raises UnsupportedOnnxOp before anything compiles.
"""

from .importer import CONVERTERS, converter, ir_name, load_onnx, supported_ops
from .reader import OnnxImportError, UnsupportedOnnxOp, is_onnx_model

__all__ = ["CONVERTERS", "OnnxImportError", "UnsupportedOnnxOp", "converter", "ir_name", "is_onnx_model",
           "load_onnx", "supported_ops"]
