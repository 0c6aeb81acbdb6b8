"""KV-cache ops: cache_write (rows of a cache replaced at a run-time position), position_mask
(the causal mask of queries that start at a run-time position) and cached_attention (the two
cache_writes, the scaled q @ k^T, the mask, the softmax and @ v in one op that reads only the cache
rows before pos and the new rows, and copies no cache).

    %k2 = cache_write(%k_cache, %k, %pos) : f32[1,2,16,4]     k_cache: f32[1,2,16,4], k: f32[1,2,1,4], pos: i64[1]
    %m = position_mask(%scores, %pos) : f32[1,2,1,16]         -inf where key j > pos + query i

A decode step of causal attention over a cache of max_len rows (generate/kv_cache.py) is written with them:

    %k2 = cache_write(%k_cache, %k, %pos) ; %v2 = cache_write(%v_cache, %v, %pos)
    %s = matmul(%q, %k2) {transpose_b=true} : f32[1,H,1,L] ; %m = position_mask(mul(%s, %scale), %pos)
    %p = softmax(%m) {axis=3} ; %o = matmul(%p, %v2) : f32[1,H,1,D]
    %o = cached_attention(%q, %k_cache, %v_cache, %k, %v, %pos) {scale=0.5} : f32[1,H,1,D]   (the same)

An int8 cache (compile_generator(kv_cache="int8")) holds i8 codes and an f32 scale per row (one
position of one head): code = quantize(x, scale, 0), scale = max|row| / 127. cached_attention
then takes the four scales after pos, and writes and reads the new rows quantized too:

    %o = cached_attention(%q, %kc, %vc, %k, %v, %pos, %kcs, %vcs, %ks, %vs) {scale=0.5} : f32[1,H,1,D]
         kc, vc: i8[1,H,L,D]  kcs, vcs: f32[1,H,L,1]  k, v: i8[1,H,1,D]  ks, vs: f32[1,H,1,1]
       = attention over dequantize(cache_write(kc, k, pos), cache_write(kcs, ks, pos), 0), the same for v

`pos` is one integer (shape [] or [1], any integer dtype). A cache_write whose rows pos..pos+T do
not fit in the cache is an OpError in the reference; the compiled code clamps the start into
[0, L - T], so it never writes outside the cache (the generator checks positions before calling).
"""

from __future__ import annotations

import numpy as np

from .ops_quant import dequantize
from .registry import OpError, need_float, register_op
from .types import DType, TensorType

POSITION_DTYPES = (DType.i32, DType.i64)


def _check_position(op: str, pos: TensorType) -> None:
    if pos.dtype not in POSITION_DTYPES or pos.size != 1 or pos.rank > 1:
        raise OpError(f"op '{op}' needs the position as one integer, i32[] / i64[] or i32[1] / i64[1], got {pos}")


def _position(pos: np.ndarray) -> int:
    return int(np.asarray(pos).reshape(()))


# --- cache_write ------------------------------------------------------------------------------

def _infer_cache_write(types, attrs):
    cache, new, pos = types
    _check_position("cache_write", pos)
    if cache.rank < 2 or new.rank != cache.rank:
        raise OpError(f"op 'cache_write' needs cache[..., rows, features] and new[..., count, features] of one rank, "
                      f"got {cache} and {new}")
    if new.dtype != cache.dtype:
        raise OpError(f"op 'cache_write': new {new} must have the cache's dtype {cache.dtype.name}")
    if new.shape[:-2] != cache.shape[:-2] or new.shape[-1] != cache.shape[-1]:
        raise OpError(f"op 'cache_write': new {new} must match cache {cache} on every axis but the rows (axis -2)")
    if new.shape[-2] > cache.shape[-2]:
        raise OpError(f"op 'cache_write': {new.shape[-2]} new rows do not fit in a cache of {cache.shape[-2]} rows")
    return cache


@register_op("cache_write", infer=_infer_cache_write, operands=3)
def cache_write(cache, new, pos):
    """A copy of `cache` whose rows pos..pos+T (axis -2) are `new`'s T rows; OpError if they do not fit."""
    start, count, rows = _position(pos), new.shape[-2], cache.shape[-2]
    if not 0 <= start <= rows - count:
        raise OpError(f"op 'cache_write': rows {start}..{start + count} are outside a cache of {rows} rows")
    out = cache.copy()
    out[..., start:start + count, :] = new
    return out


# --- position_mask ----------------------------------------------------------------------------

def _infer_position_mask(types, attrs):
    scores, pos = types
    need_float("position_mask", scores)
    _check_position("position_mask", pos)
    if scores.rank < 2:
        raise OpError(f"op 'position_mask' needs scores[..., queries, keys], got {scores}")
    return scores


def position_allowed(queries: int, keys: int, pos: int) -> np.ndarray:
    """bool[queries, keys]: query i (at position pos + i) may attend to keys 0..pos + i."""
    return np.arange(keys)[None, :] <= np.arange(queries)[:, None] + pos


@register_op("position_mask", infer=_infer_position_mask, operands=2)
def position_mask(scores, pos):
    """scores[..., i, j] where j <= pos + i, -inf elsewhere: causal_mask for queries starting at `pos`."""
    allowed = position_allowed(*scores.shape[-2:], _position(pos))
    return np.where(allowed, scores, np.float32(-np.inf))


# --- cached_attention -------------------------------------------------------------------------

def _normalize_cached_attention(types, attrs):
    scale = attrs["scale"]
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.number)) \
            or not np.isfinite(scale):
        raise OpError(f"op 'cached_attention': scale must be a finite number, got {scale!r}")
    return {"scale": float(scale)}


def _infer_cached_attention(types, attrs):
    if len(types) not in (6, 10):
        raise OpError(f"op 'cached_attention' takes 6 operands (f32 caches) or 10 (int8 caches and their scales), "
                      f"got {len(types)}")
    q, k_cache, v_cache, k, v, pos = types[:6]
    _check_position("cached_attention", pos)
    need_float("cached_attention", q)
    if len(types) == 6:
        for t in types[1:5]:
            need_float("cached_attention", t)
    else:
        for name, t in (("k cache", k_cache), ("v cache", v_cache), ("k", k), ("v", v)):
            if t.dtype is not DType.i8:
                raise OpError(f"op 'cached_attention' with scales needs i8 codes, got {name} {t}")
        for name, scales, codes in zip(("k cache", "v cache", "k", "v"), types[6:], (k_cache, v_cache, k, v)):
            if scales.dtype is not DType.f32 or scales.shape != codes.shape[:-1] + (1,):
                raise OpError(f"op 'cached_attention': the scales of the {name} must be "
                              f"f32{list(codes.shape[:-1] + (1,))} (one a row), got {scales}")
    if q.rank < 2 or k_cache.shape != v_cache.shape or k.shape != v.shape or k.shape != q.shape \
            or any(t.rank != q.rank for t in (k_cache, k)) or k_cache.shape[:-2] != q.shape[:-2] \
            or k_cache.shape[-1] != q.shape[-1] or k_cache.shape[-2] < q.shape[-2]:
        raise OpError(f"op 'cached_attention' needs q, k, v [..., queries, D] and k, v caches [..., rows, D] "
                      f"(rows >= queries) with the same leading axes, got {', '.join(str(t) for t in types[:5])}")
    return q


@register_op("cached_attention", infer=_infer_cached_attention, operands=(6, 10), attrs={"scale": 1.0},
             normalize=_normalize_cached_attention)
def cached_attention(q, k_cache, v_cache, k, v, pos, *scales, scale):
    """Attention of q over the caches with k and v written at pos (cache_write's OpError if they do not
    fit): softmax(position_mask(q @ keys^T * scale, pos)) @ values, query i seeing rows 0..pos + i.
    With `scales` (k cache, v cache, k, v) the caches and rows are int8 codes, dequantized after the write."""
    keys, values = cache_write(k_cache, k, pos), cache_write(v_cache, v, pos)
    if scales:
        k_cache_scales, v_cache_scales, k_scales, v_scales = scales
        keys = dequantize(keys, cache_write(k_cache_scales, k_scales, pos), np.int32(0))
        values = dequantize(values, cache_write(v_cache_scales, v_scales, pos), np.int32(0))
    scores = np.matmul(q, np.swapaxes(keys, -1, -2)) * np.float32(scale)
    masked = np.where(position_allowed(q.shape[-2], keys.shape[-2], _position(pos)), scores, np.float32(-np.inf))
    shifted = np.exp(masked - masked.max(axis=-1, keepdims=True))
    return np.matmul(shifted / shifted.sum(axis=-1, keepdims=True), values)
