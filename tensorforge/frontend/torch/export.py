"""torch.export of a module, for the importer: a module in eval mode and its example inputs become an
ExportedProgram in the core ATen opset, or a TorchImportError that says why not in a line or two.

    program = core_aten_program(model.eval(), (x,))     # or an ExportedProgram, decomposed
    arrays = to_numpy(tensor)                           # a torch tensor (or anything numpy takes) as an ndarray

A module in training mode, example inputs that do not fit its forward, data-dependent control flow
(with the model's own source line) and a Hugging Face cache output are named for the user.
"""

from __future__ import annotations

import inspect
import traceback

import numpy as np

from .context import TorchImportError, _torch


def to_numpy(value) -> np.ndarray:
    """A torch tensor (detached, on the CPU) or anything numpy takes, as an ndarray."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def to_torch_args(example_inputs) -> tuple:
    """Example inputs as torch tensors for torch.export (numpy arrays converted)."""
    torch = _torch()
    values = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return tuple(v if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v, order="C")) for v in values)


def export_module(module, example_inputs):
    """`torch.export.export(module, args, strict=False)` of a module in eval mode, in the core ATen opset."""
    torch = _torch()
    training = [(name, type(m).__name__) for name, m in module.named_modules() if m.training]
    if training:
        name, kind = training[0]
        where = f" (its submodule '{name}' ({kind}) is)" if name else ""
        raise TorchImportError(f"{type(module).__name__} is in training mode{where}: call model.eval() first "
                               "(the importer compiles inference: dropout off, batch norm on its running statistics)")
    if isinstance(example_inputs, dict):
        args, kwargs = (), {k: to_torch_args(v)[0] for k, v in example_inputs.items()}
    else:
        args, kwargs = to_torch_args(example_inputs), {}
    name = type(module).__name__
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):  # a builtin forward: torch.export will say
        signature = None
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as error:
            given = f"{len(args)} positional" if not kwargs else f"by name {sorted(kwargs)}"
            raise TorchImportError(f"the example inputs ({given}) do not fit {name}.forward{signature}: "
                                   f"{error}") from None
    try:
        return torch.export.export(module, args, kwargs=kwargs, strict=False)
    except Exception as error:  # noqa: BLE001 - whatever torch.export raises, named for the user
        raise TorchImportError(export_failure(name, error)) from error


def export_failure(name: str, error: Exception) -> str:
    """Why torch.export failed, in a line or two: the model's own source line where it failed (the
    traceback's last frame outside PyTorch and tensorforge) and the kind of problem."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if not frame.filename.startswith("<")
              and not any(part in frame.filename.replace("\\", "/") for part in ("/torch/", "/tensorforge/"))]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}: `{frames[-1].line}`)" if frames \
        else ""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    kind = type(error).__name__
    if "DataDependent" in kind or "data-dependent" in text:
        hint = ("the forward branches on (or sizes a tensor by) a tensor's value, data-dependent control flow "
                "that a graph cannot hold: compute both sides and select with torch.where, or move the "
                "decision out of forward")
    elif "cache_utils" in text and "not a known type" in text:
        hint = ("it returns a transformers Cache (past_key_values), which is not a tensor structure: set "
                "model.config.use_cache = False (or pass use_cache=False) to compile the forward; "
                "tfg.compile_generator adds a KV cache of its own")
    else:
        hint = f"{kind}: {text if len(text) <= 300 else text[:300].rsplit(' ', 1)[0] + ' ...'}"
    return f"torch.export could not export {name}{where}: {hint}"


def kept_whole(torch) -> tuple:
    """Ops left out of the core ATen decompositions, converted whole: scaled_dot_product_attention, whose
    decomposition on PyTorch 2.13 gives its output strides the meta kernel does not, so that GPT-2's
    `view` of it fails to re-trace at batch > 1 (and whole, it is one recognizable attention)."""
    return (torch.ops.aten.scaled_dot_product_attention.default,)


def core_aten_program(model, example_inputs=None):
    """A module (exported with `export_module`) or an ExportedProgram, lowered to the core ATen opset
    (`run_decompositions`), except the ops `kept_whole` converts whole."""
    torch = _torch()
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise TypeError("load_torch(module, example_inputs): a module needs example inputs to export it")
        program = export_module(model, example_inputs)
    elif isinstance(model, torch.export.ExportedProgram):
        program = model
    else:
        raise TypeError(f"load_torch takes a torch.nn.Module or a torch.export.ExportedProgram, got {type(model)}")
    table = torch.export.default_decompositions()
    for op in kept_whole(torch):
        table.pop(op, None)
    return program.run_decompositions(table)
