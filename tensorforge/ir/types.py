"""Tensor types: a dtype and a static shape.

    TensorType((4, 8), DType.f32)  prints as  f32[4,8]
    TensorType((), DType.i64)      prints as  i64[]
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np


class DType(enum.Enum):
    """The element types the IR knows. The value is the numpy dtype name."""

    f32 = "float32"
    i8 = "int8"
    u8 = "uint8"
    i32 = "int32"
    i64 = "int64"
    bool = "bool"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value)

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self is DType.f32

    @classmethod
    def from_numpy(cls, dtype) -> DType:
        name = np.dtype(dtype).name
        for member in cls:
            if member.value == name:
                return member
        known = ", ".join(m.value for m in cls)
        raise TypeError(f"dtype {name} is not supported by tensorforge (supported: {known})")

    @classmethod
    def parse(cls, text: str) -> DType:
        try:
            return cls[text]
        except KeyError:
            known = ", ".join(m.name for m in cls)
            raise ValueError(f"unknown dtype {text!r} (known: {known})") from None


@dataclass(frozen=True)
class TensorType:
    """The static type of a value: its shape (a tuple of non-negative ints) and dtype."""

    shape: tuple[int, ...]
    dtype: DType

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 0 for d in self.shape):
            raise ValueError(f"negative dimension in shape {self.shape}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __str__(self) -> str:
        return f"{self.dtype.name}[{','.join(str(d) for d in self.shape)}]"

    @classmethod
    def of(cls, array: np.ndarray) -> TensorType:
        return cls(array.shape, DType.from_numpy(array.dtype))


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy broadcasting of shapes; raises ValueError naming the shapes that do not broadcast."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(f"shapes {', '.join(str(s) for s in shapes)} do not broadcast") from None
