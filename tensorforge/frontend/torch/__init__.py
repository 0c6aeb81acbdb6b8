"""PyTorch models in: `load_torch(module | ExportedProgram, example_inputs) -> ir.Graph`, through torch.export.

    graph = load_torch(resnet.eval(), (x,))       # or tfg.compile(resnet.eval(), x)

PyTorch is an optional extra (`pip install 'tensorforge[torch]'`), imported only when a model is
imported. `supported_ops()` lists the ATen ops the importer converts; an op without a converter
whose operands are all known at import is folded by PyTorch itself; anything else raises
UnsupportedTorchOp naming the ATen op, the module path and the source line, before anything compiles.
"""

from .context import CONVERTERS, TorchImportError, UnsupportedTorchOp, converter, supported_ops
from .importer import is_torch_model, load_torch

__all__ = ["CONVERTERS", "TorchImportError", "UnsupportedTorchOp", "converter", "is_torch_model", "load_torch",
           "supported_ops"]
