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


@dataclass(frozen=True)
class WindowedWeight:
    """A CSR weight in slices of `lanes` consecutive output rows, each slice's entries taken in steps
    through a window of `window` consecutive columns of x, for kernels that fetch x with a register
    permute (ops/sparse/slices.py: emit_windowed_slices).

    Every lane (row) of a slice walks its entries by increasing column. A step's window starts at the
    smallest column any lane still waits for, rounded down to a multiple of `align` (so that x's two
    vectors load aligned); every lane whose next entry lies inside the window takes it, the others
    wait (byte PAD, weight 0). So a step serves up to `lanes` entries from `window` columns, and a
    slice takes about as many steps as its longest row, not one per chunk per row. A step record is
    the window's first column (i32) and each lane's column within the window (one byte). A slice's
    steps are padded to a multiple of `group` (the kernel's accumulators take them in turn):

        lanes=2, window=2, align=1     steps of the slice (r0, r1):
        r0: a b . . c .                (0; 0 1)    a f     window 0-1: r0 takes a, r1 takes f
        r1: . f g . . h                (1; 0 1)    b g     window 1-2: r0 takes b, r1 takes g
                                       (4; 0 1)    c h     window 4-5: c and h

    windowed(values, columns, row_starts, lanes=16, window=32, align=16, group=8)
      -> WindowedWeight(values f32[steps * lanes], records u8[steps * (4 + lanes)],
                        slice_starts i32[slices + 1]: the slices' first steps, then the step count)
    """

    values: np.ndarray
    records: np.ndarray
    slice_starts: np.ndarray
    lanes: int
    window: int
    per_window: int

    PAD = 0x80  # a lane's byte for "no entry this step": never inside a window

    @property
    def slices(self) -> int:
        return self.slice_starts.size - 1

    @property
    def record_bytes(self) -> int:
        return 4 + self.lanes


def windowed(values: np.ndarray, columns: np.ndarray, row_starts: np.ndarray, lanes: int, window: int,
             align: int, group: int, per_window: int = 1) -> WindowedWeight:
    """The windowed layout of CSR arrays (see WindowedWeight); all slices step together, in numpy."""
    if group % per_window:
        raise ValueError(f"groups of {group} steps do not hold whole windows of {per_window} steps")
    if not 0 < align <= window <= WindowedWeight.PAD:
        raise ValueError(f"a window of {window} columns aligned to {align} does not fit a byte below "
                         f"the pad {WindowedWeight.PAD}")
    out = row_starts.size - 1
    slices = -(-out // lanes)
    lengths = np.zeros(slices * lanes, np.int64)
    lengths[:out] = np.diff(row_starts.astype(np.int64))
    row = np.repeat(np.arange(out), lengths[:out])
    order = np.lexsort((columns, row))  # each row's entries by column
    sorted_columns = np.r_[columns[order].astype(np.int64), 0]  # one more: exhausted lanes read it
    sorted_values = np.r_[values[order].astype(np.float32), 0]
    first = (np.cumsum(lengths) - lengths).reshape(slices, lanes)
    ends = lengths.reshape(slices, lanes)
    heads = np.zeros((slices, lanes), np.int64)
    taken_slices, starts, lane_bytes, lane_values = [], [], [], []
    none = np.iinfo(np.int64).max
    while True:
        busy = np.flatnonzero((heads < ends).any(axis=1))
        if busy.size == 0:
            break
        start = None
        for _ in range(per_window):
            waiting = heads[busy] < ends[busy]
            at = np.where(waiting, first[busy] + heads[busy], sorted_columns.size - 1)
            head_columns = np.where(waiting, sorted_columns[at], none)
            if start is None:
                start = head_columns.min(axis=1) // align * align
            take = head_columns < start[:, None] + window
            heads[busy] += take
            taken_slices.append(busy)
            starts.append(start)
            lane_bytes.append(np.where(take, head_columns - start[:, None], WindowedWeight.PAD))
            lane_values.append(np.where(take, sorted_values[at], 0))
    steps = np.bincount(np.concatenate(taken_slices), minlength=slices) if taken_slices else np.zeros(slices, int)
    slice_steps = -(-steps // group) * group
    slice_starts = np.zeros(slices + 1, np.int64)
    np.cumsum(slice_steps, out=slice_starts[1:])
    total = int(slice_starts[-1])
    if total * lanes > INDEX_LIMIT:
        raise ValueError(f"{total * lanes} windowed entries do not fit i32 offsets")
    offsets = np.zeros(total, "<i4")  # padding steps: window 0, every lane PAD
    record_columns = np.full((total, lanes), WindowedWeight.PAD, np.uint8)
    record_values = np.zeros((total, lanes), np.float32)
    if taken_slices:
        slice_of_step = np.concatenate(taken_slices)
        by_slice = np.argsort(slice_of_step, kind="stable")  # a slice's steps in the order they were taken
        slot = slice_starts[slice_of_step[by_slice]] + _within(steps[steps > 0])
        offsets[slot] = np.concatenate(starts)[by_slice]
        record_columns[slot] = np.concatenate(lane_bytes)[by_slice]
        record_values[slot] = np.concatenate(lane_values)[by_slice]
    records = np.concatenate([offsets.view(np.uint8).reshape(total, 4), record_columns], axis=1).reshape(-1)
    return WindowedWeight(record_values.reshape(-1), np.ascontiguousarray(records),
                          slice_starts.astype(np.int32), lanes, window, per_window)


def _within(lengths: np.ndarray) -> np.ndarray:
    """Each element's index within its group, for groups of `lengths` elements one after another."""
    starts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
