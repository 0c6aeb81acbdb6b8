"""Ops that move data without arithmetic: reshape, flatten, transpose, concat, slice.

    %1 = reshape(%0) {shape=[4,16]} : f32[4,16]
    %2 = transpose(%1) {perm=[1,0]} : f32[16,4]
    %3 = slice(%2) {starts=[0,1], stops=[16,4], steps=[1,2]} : f32[16,2]
"""

from __future__ import annotations

import math

import numpy as np

from .registry import OpError, normalize_axis, register_op, same_dtype
from .types import TensorType


def _normalize_reshape(types, attrs):
    shape = [int(d) for d in attrs["shape"]]
    if types and shape.count(-1) == 1:  # resolve one -1 from the operand's size
        known = math.prod(d for d in shape if d != -1)
        size = types[0].size
        if known == 0 or size % known:
            raise OpError(f"op 'reshape': cannot reshape {types[0]} into {tuple(shape)}")
        shape[shape.index(-1)] = size // known
    return {"shape": tuple(shape)}


def _infer_reshape(types, attrs):
    shape = attrs["shape"]
    if any(d < 0 for d in shape) or math.prod(shape) != types[0].size:
        raise OpError(f"op 'reshape': cannot reshape {types[0]} ({types[0].size} elements) into {shape}")
    return TensorType(shape, types[0].dtype)


@register_op("reshape", infer=_infer_reshape, attrs={"shape": None}, traits={"view"},
             normalize=_normalize_reshape)
def reshape(x, *, shape):
    return x.reshape(shape)


def _normalize_flatten(types, attrs):
    rank = types[0].rank if types else 1
    return {"start_axis": normalize_axis("flatten", int(attrs["start_axis"]), rank)}


def _infer_flatten(types, attrs):
    shape = types[0].shape
    start = attrs["start_axis"]
    return TensorType(shape[:start] + (math.prod(shape[start:]),), types[0].dtype)


@register_op("flatten", infer=_infer_flatten, attrs={"start_axis": 1}, traits={"view"},
             normalize=_normalize_flatten)
def flatten(x, *, start_axis):
    return x.reshape(x.shape[:start_axis] + (math.prod(x.shape[start_axis:]),))


def _normalize_transpose(types, attrs):
    rank = types[0].rank if types else 0
    perm = attrs["perm"]
    if perm is None:  # default: reverse the axes, like numpy
        perm = tuple(reversed(range(rank)))
    return {"perm": tuple(int(p) for p in perm)}


def _infer_transpose(types, attrs):
    perm = attrs["perm"]
    if sorted(perm) != list(range(types[0].rank)):
        raise OpError(f"op 'transpose': perm {perm} is not a permutation of the axes of {types[0]}")
    return TensorType(tuple(types[0].shape[p] for p in perm), types[0].dtype)


@register_op("transpose", infer=_infer_transpose, attrs={"perm": None}, normalize=_normalize_transpose)
def transpose(x, *, perm):
    return np.require(np.transpose(x, perm), requirements="C")


def _normalize_concat(types, attrs):
    rank = types[0].rank if types else 1
    return {"axis": normalize_axis("concat", int(attrs["axis"]), rank)}


def _infer_concat(types, attrs):
    dtype = same_dtype("concat", types)
    axis = attrs["axis"]
    first = types[0].shape
    for t in types[1:]:
        if t.rank != len(first) or any(a != b for i, (a, b) in enumerate(zip(t.shape, first)) if i != axis):
            raise OpError(f"op 'concat': shapes {', '.join(str(t) for t in types)} differ outside axis {axis}")
    shape = list(first)
    shape[axis] = sum(t.shape[axis] for t in types)
    return TensorType(tuple(shape), dtype)


@register_op("concat", infer=_infer_concat, operands=(1, None), attrs={"axis": 0}, normalize=_normalize_concat)
def concat(*xs, axis):
    return np.concatenate(xs, axis=axis)


def _normalize_slice(types, attrs):
    """Canonical form: starts/stops/steps with one entry per axis, as range(start, stop, step) bounds."""
    shape = types[0].shape if types else ()
    rank = len(shape)
    starts, stops, steps = (list(attrs[k]) if attrs[k] is not None else None for k in ("starts", "stops", "steps"))
    starts = starts if starts is not None else [0] * rank
    stops = stops if stops is not None else list(shape)
    steps = steps if steps is not None else [1] * len(starts)
    if not len(starts) == len(stops) == len(steps) <= rank:
        raise OpError(f"op 'slice': starts, stops and steps need one entry per axis of {types[0]}")
    n = len(starts)
    if any(int(s) <= 0 for s in steps):
        raise OpError(f"op 'slice': steps must be positive, got {tuple(steps)}")
    bounds = [slice(int(a), int(b), int(c)).indices(d) for a, b, c, d in zip(starts, stops, steps, shape)]
    bounds += [(0, d, 1) for d in shape[n:]]
    return {"starts": tuple(b[0] for b in bounds), "stops": tuple(b[1] for b in bounds),
            "steps": tuple(b[2] for b in bounds)}


def _infer_slice(types, attrs):
    shape = tuple(len(range(a, b, c)) for a, b, c in zip(attrs["starts"], attrs["stops"], attrs["steps"]))
    if len(shape) != types[0].rank:
        raise OpError(f"op 'slice': needs one start per axis of {types[0]}")
    return TensorType(shape, types[0].dtype)


@register_op("slice", infer=_infer_slice, attrs={"starts": None, "stops": None, "steps": None},
             normalize=_normalize_slice)
def slice_(x, *, starts, stops, steps):
    return np.require(x[tuple(slice(a, b, c) for a, b, c in zip(starts, stops, steps))], requirements="C")
