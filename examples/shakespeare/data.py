"""Tiny Shakespeare at the character level: the text, its 65-character vocabulary and the model size
that train.py and generate.py share.

    text = load_text()                    # ../shared/data/tinyshakespeare.txt beside the repository
    ids = encode(text)                    # int64 ids into VOCAB
    model = build_model()                 # nn.GPT(65, **MODEL)

The text (1.1 MB) is read from the shared data folder next to the repository and never copied into
it; `load_text` says where it looked when it is absent. The vocabulary is fixed here, so generation
works without the text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import tensorforge.nn as nn

REPOSITORY = Path(__file__).resolve().parents[2]
TEXT = REPOSITORY / ".." / "shared" / "data" / "tinyshakespeare.txt"
VOCAB = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MODEL = {"embed_dim": 128, "num_layers": 4, "num_heads": 4, "max_seq_len": 128}
VALIDATION_FRACTION = 0.1  # the last 10% of the text


def load_text(path: str | Path = TEXT) -> str:
    """The whole text; FileNotFoundError naming the path when it is absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tiny Shakespeare is not at {path.resolve()}: the example reads it from the shared "
                                "data folder beside the repository (shared/data/tinyshakespeare.txt)")
    return path.read_text(encoding="utf-8")


def encode(text: str) -> np.ndarray:
    """Character ids (int64); ValueError naming the first character outside VOCAB."""
    index = {character: i for i, character in enumerate(VOCAB)}
    unknown = next((character for character in text if character not in index), None)
    if unknown is not None:
        raise ValueError(f"character {unknown!r} is not in the vocabulary of {len(VOCAB)} characters")
    return np.array([index[character] for character in text], dtype=np.int64)


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)


def split(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation): the text cut once, the validation part at the end."""
    cut = int(len(ids) * (1 - VALIDATION_FRACTION))
    return ids[:cut], ids[cut:]


def build_model(rng: np.random.Generator | None = None) -> nn.GPT:
    """The example's GPT (4 layers, 128 wide, 4 heads, 128 characters of context), randomly initialized."""
    return nn.GPT(len(VOCAB), **MODEL, rng=rng)
