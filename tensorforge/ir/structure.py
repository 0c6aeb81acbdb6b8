"""Output structures: how a model's flat list of output arrays nests into what the model returned.

    structure = {"last_hidden_state": 0, "pooler_output": 1}     # a Hugging Face ModelOutput, as a dict
    unflatten(structure, [h, p])     ->  {"last_hidden_state": h, "pooler_output": p}
    unflatten((0, [1, None]), [a, b]) ->  (a, [b, None])
    unflatten(0, [y])                ->  y

A structure is plain Python (no torch objects), so a compiled model applies it without its
frontend: an int is the position of an output in the graph's flat `outputs`, None a None the
model returned (not a graph output), and tuples, lists and dicts (string keys) nest them. Each
output position appears exactly once. The PyTorch importer records one from torch.export's output
TreeSpec (`graph.output_structure`); a graph without one has flat outputs (one array, or a tuple).
"""

from __future__ import annotations

from typing import Any

Structure = Any  # int | None | tuple[Structure, ...] | list[Structure] | dict[str, Structure]


def leaves(structure: Structure) -> list[int]:
    """The output positions in `structure`, in order (dict values in their insertion order)."""
    if structure is None:
        return []
    if isinstance(structure, bool) or not isinstance(structure, (int, tuple, list, dict)):
        raise TypeError(f"an output structure holds ints, None, tuples, lists and dicts, not {structure!r}")
    if isinstance(structure, int):
        return [structure]
    if isinstance(structure, dict):
        if not all(isinstance(key, str) for key in structure):
            raise TypeError(f"an output structure's dict keys are strings, got {list(structure)}")
        structure = list(structure.values())
    return [position for item in structure for position in leaves(item)]


def check_structure(structure: Structure, outputs: int) -> None:
    """Raise ValueError unless `structure` places each of `outputs` outputs exactly once."""
    positions = leaves(structure)
    if sorted(positions) != list(range(outputs)):
        raise ValueError(f"the output structure {structure!r} places outputs {positions}; the graph has {outputs} "
                         f"output(s) (each position 0..{outputs - 1} must appear once)")


def unflatten(structure: Structure, outputs) -> Any:
    """`outputs` (a sequence indexed by position) nested as `structure` says."""
    if structure is None:
        return None
    if isinstance(structure, int):
        return outputs[structure]
    if isinstance(structure, dict):
        return {key: unflatten(value, outputs) for key, value in structure.items()}
    return type(structure)(unflatten(item, outputs) for item in structure)
