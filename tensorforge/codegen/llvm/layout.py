"""Index arithmetic on static shapes: strides, broadcasting and coalescing of loop nests.

All strides count elements, not bytes. A loop nest over an output shape reads each operand
through its own strides; a stride of 0 repeats an element (numpy broadcasting):

    contiguous_strides((2, 3, 4))            -> (12, 4, 1)
    broadcast_strides((3, 1), (2, 3, 4))     -> (0, 1, 0)
    coalesce((2, 3, 4), [(12, 4, 1), (0, 4, 1)])  -> ((2, 12), [(12, 1), (0, 1)])
"""

from __future__ import annotations

from collections.abc import Sequence

Strides = tuple[int, ...]


def contiguous_strides(shape: Sequence[int]) -> Strides:
    """The strides of a C-contiguous array of `shape`."""
    strides = []
    step = 1
    for extent in reversed(shape):
        strides.append(step)
        step *= extent
    return tuple(reversed(strides))


def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> Strides:
    """Strides that read a contiguous array of `shape` as if it had `out_shape` (numpy rules)."""
    missing = len(out_shape) - len(shape)
    own = contiguous_strides(shape)
    strides = [0] * missing
    for axis, extent in enumerate(shape):
        strides.append(0 if extent == 1 and out_shape[missing + axis] != 1 else own[axis])
    return tuple(strides)


def coalesce(shape: Sequence[int], strides: Sequence[Strides]) -> tuple[tuple[int, ...], list[Strides]]:
    """Drop axes of extent 1 and merge neighbouring axes that every access walks as one.

    Axes a and a+1 merge when, for every access, stride[a] == stride[a+1] * shape[a+1]. The
    result visits the same elements in the same order with fewer, longer loops.
    """
    kept = [axis for axis, extent in enumerate(shape) if extent != 1]
    merged_shape: list[int] = []
    merged: list[list[int]] = [[] for _ in strides]
    for axis in kept:
        if merged_shape and all(s[-1] == access[axis] * shape[axis] for s, access in zip(merged, strides)):
            merged_shape[-1] *= shape[axis]
            for s, access in zip(merged, strides):
                s[-1] = access[axis]
        else:
            merged_shape.append(shape[axis])
            for s, access in zip(merged, strides):
                s.append(access[axis])
    return tuple(merged_shape), [tuple(s) for s in merged]
