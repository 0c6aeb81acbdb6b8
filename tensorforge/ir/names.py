"""Names: a model's own value names as IR names, and inputs given by name put in the graph's order.

    ir_name("/layer1/layer1.0/conv1/Conv")   -> "layer1.layer1.0.conv1.Conv"
    in_input_order(["input_ids", "attention_mask"], {"attention_mask": m, "input_ids": ids})  -> (ids, m)
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_INVALID = re.compile(r"[^A-Za-z0-9_.]")


def ir_name(name: str) -> str | None:
    """A model's value name as an IR name: '/layer1/layer1.0/conv1/Conv' -> 'layer1.layer1.0.conv1.Conv',
    'onnx::Gemm_12' -> 'onnx.Gemm_12', '1' -> '1'. None for an empty name."""
    name = name.strip("/").replace("::", ".").replace("/", ".")
    name = _INVALID.sub("_", name)
    if not name:
        return None
    if name[0].isdigit() and not name.isdigit():
        name = f"v{name}"
    return name


def in_input_order(names: list[str], inputs: Mapping, error: type[Exception] = ValueError) -> tuple:
    """The values of `inputs` (keyed by the model's own input names, or by their IR names `names`) in the
    order of `names`; `error` naming the inputs when a key is unknown or an input is missing."""
    by_ir_name = {ir_name(str(key)): value for key, value in inputs.items()}
    unknown = sorted(str(key) for key in inputs if ir_name(str(key)) not in names)
    if unknown or len(by_ir_name) != len(names):
        missing = [name for name in names if name not in by_ir_name]
        detail = (f"unknown {', '.join(unknown)}" if unknown else "") + \
                 ("; " if unknown and missing else "") + (f"missing {', '.join(missing)}" if missing else "")
        raise error(f"inputs by name must name each of the model's inputs once ({', '.join(names)}); "
                    f"got {', '.join(map(str, inputs)) or 'none'} ({detail or 'a name given twice'})")
    return tuple(by_ir_name[name] for name in names)
