"""The sliced layout of a CSR weight (SELL-C-sigma), packed once at compile time for the sparse kernel.

The CSR rows (output neurons) are sorted by length, longest first, and cut into slices of `lanes`
rows, one vector of outputs. A slice of the longest length L among its rows stores L steps; step t
holds entry t of each of its rows side by side, so one vector load gives `lanes` weights and one
FMA adds a step to all of the slice's outputs:

    rows (CSR)     length     sorted, lanes=2:  r1 r0 | r3 r2     slice 0 (r1, r0)    slice 1 (r3, r2)
    r0: a . . b       2                                          t0: c a             t0: g f
    r1: . c d e       3                                          t1: d b             t1: h 0
    r2: f . . .       1                                          t2: e 0
    r3: g h . .       2

Shorter rows are padded with weight 0 at column `pad_column` (the kernel's zero after its copy of
x, so 0 * 0 adds nothing even when x holds an inf). Sorting keeps the padding small, and the
slices' loop counts few: one per `lanes` rows instead of one per row.

    sliced(values, columns, row_starts, lanes=8, pad_column=in)
      -> SlicedWeight(values f32[steps * lanes], columns i32[steps * lanes],
                      index i32[slices + 1 + slices * lanes]: the slices' first steps, then each lane's row)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INDEX_LIMIT = np.iinfo(np.int32).max


@dataclass(frozen=True)
class SlicedWeight:
    values: np.ndarray  # f32[steps * lanes]
    columns: np.ndarray  # i32[steps * lanes]
    index: np.ndarray  # i32[slices + 1 + slices * lanes]: slice_starts, then rows
    lanes: int

    @property
    def slices(self) -> int:
        return (self.index.size - 1) // (1 + self.lanes)

    @property
    def slice_starts(self) -> np.ndarray:
        """The first step of each slice, and the total step count last."""
        return self.index[:self.slices + 1]

    @property
    def rows(self) -> np.ndarray:
        """The output row of every lane of every slice (lanes past the last row: row 0, never stored)."""
        return self.index[self.slices + 1:]


def sliced(values: np.ndarray, columns: np.ndarray, row_starts: np.ndarray, lanes: int,
           pad_column: int) -> SlicedWeight:
    """The sliced layout of CSR arrays (see the module docstring)."""
    out = row_starts.size - 1
    lengths = np.diff(row_starts.astype(np.int64))
    slices = -(-out // lanes)
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = np.zeros(slices * lanes, np.int64)
    sorted_lengths[:out] = lengths[order]
    starts = np.zeros(slices + 1, np.int64)
    np.cumsum(sorted_lengths.reshape(slices, lanes).max(axis=1, initial=0), out=starts[1:])
    if starts[-1] * lanes > INDEX_LIMIT:
        raise ValueError(f"{starts[-1] * lanes} sliced entries do not fit i32 offsets")
    position = np.empty(out, np.int64)  # where each row went in the sorted order
    position[order] = np.arange(out)
    row_of_entry = np.repeat(np.arange(out), lengths)
    step = np.arange(values.size) - row_starts[row_of_entry]
    slot = (starts[position[row_of_entry] // lanes] + step) * lanes + position[row_of_entry] % lanes
    sliced_values = np.zeros(starts[-1] * lanes, values.dtype)
    sliced_columns = np.full(starts[-1] * lanes, pad_column, np.int32)
    sliced_values[slot] = values
    sliced_columns[slot] = columns
    rows = np.zeros(slices * lanes, np.int64)
    rows[:out] = order
    return SlicedWeight(sliced_values, sliced_columns, np.concatenate([starts, rows]).astype(np.int32), lanes)
