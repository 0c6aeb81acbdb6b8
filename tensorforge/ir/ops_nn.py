"""Neural-network ops: matmul, linear, softmax, conv2d, pooling and batch norm (inference).

    %2 = matmul(%q, %k) {transpose_b=true} : f32[8,8]   q @ k^T (the last two axes of k swapped)

    %3 = linear(%x, %w, %b) : f32[4,32]          x @ w + b, w stored (in, out) as in TinyTorch
    %5 = conv2d(%x, %w, %b) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1} : f32[1,32,32,32]
    %6 = max_pool2d(%5) {kernel=[2,2], stride=[2,2], padding=[0,0]} : f32[1,32,16,16]
"""

from __future__ import annotations

import re

import numpy as np

from .ops_math import clip, gelu
from .ops_transformer import causal_allowed
from .registry import OpError, int_pair, need_float, normalize_axis, register_op, same_dtype
from .types import DType, TensorType, broadcast_shapes

F32 = np.float32


# --- matmul and linear ------------------------------------------------------------------------

def matrix_dims(shape: tuple[int, ...], transposed: bool) -> tuple[int, int]:
    """(rows, columns) of the matrices of an operand of rank >= 2, read transposed or not."""
    return (shape[-1], shape[-2]) if transposed else (shape[-2], shape[-1])


def _infer_matmul(types, attrs):
    a, b = types
    dtype = same_dtype("matmul", types)
    if a.rank < 2 or b.rank < 2:
        raise OpError(f"op 'matmul' needs operands of rank >= 2, got {a} and {b}")
    (m, k), (k2, n) = matrix_dims(a.shape, attrs["transpose_a"]), matrix_dims(b.shape, attrs["transpose_b"])
    if k != k2:
        flags = "".join(f" {name}" for name in ("transpose_a", "transpose_b") if attrs[name])
        raise OpError(f"op 'matmul'{flags}: inner dimensions differ: {a} @ {b} ({k} != {k2})")
    try:
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError as err:
        raise OpError(f"op 'matmul': batch {err}") from None
    return TensorType(batch + (m, n), dtype)


def _normalize_matmul(types, attrs):
    for name in ("transpose_a", "transpose_b"):
        if not isinstance(attrs[name], (bool, np.bool_)):
            raise OpError(f"op 'matmul': {name} must be a bool, got {attrs[name]!r}")
    return {name: bool(value) for name, value in attrs.items()}


@register_op("matmul", infer=_infer_matmul, operands=2, traits={"contraction"}, weights=(1,),
             attrs={"transpose_a": False, "transpose_b": False}, normalize=_normalize_matmul)
def matmul(a, b, *, transpose_a=False, transpose_b=False):
    """a @ b over the last two axes (batch axes broadcast); either read transposed (absorb-transpose)."""
    return np.matmul(np.swapaxes(a, -1, -2) if transpose_a else a, np.swapaxes(b, -1, -2) if transpose_b else b)


def split_contraction(operands: list, residual: bool) -> tuple:
    """(x, weight, bias or None, residual or None) of a linear's or conv2d's operands."""
    rest = list(operands[2:])
    extra = rest.pop() if residual and rest else None
    if residual and extra is None:
        raise OpError("a contraction with residual=true needs the residual as its last operand")
    if len(rest) > 1:
        raise OpError(f"a contraction takes x, weight, an optional bias and (with residual) a residual; "
                      f"got {len(operands)} operands")
    return operands[0], operands[1], rest[0] if rest else None, extra


def _check_residual(op: str, residual, result: TensorType) -> None:
    if residual is not None and (residual.shape != result.shape or residual.dtype != result.dtype):
        raise OpError(f"op '{op}': the residual must be {result} like the result, got {residual}")


def _infer_linear(types, attrs):
    x, w, bias, residual = split_contraction(types, attrs["residual"])
    dtype = same_dtype("linear", types)
    if w.rank != 2 or x.rank < 1 or x.shape[-1] != w.shape[0]:
        raise OpError(f"op 'linear' needs x[..., in] and weight[in, out], got {x} and {w}")
    if bias is not None and bias.shape != (w.shape[1],):
        raise OpError(f"op 'linear': bias must be [{w.shape[1]}], got {bias}")
    result = TensorType(x.shape[:-1] + (w.shape[1],), dtype)
    _check_residual("linear", residual, result)
    return result


ACTIVATIONS = (None, "relu", "relu6")  # what a contraction may apply to its result (filled in by fuse-activation)
# relu6 is clip(y, 0, 6) (PyTorch's ReLU6, clip{min=0.0, max=6.0} from ONNX): f32 contractions only
RELU6_BOUNDS = (0.0, 6.0)
# an f32 linear may also end in a gelu, "gelu_" + its approximation (the GEMM epilogue computes it in registers)
GELU_ACTIVATIONS = ("gelu_tanh", "gelu_sigmoid", "gelu_exact")
LINEAR_ACTIVATIONS = ACTIVATIONS + GELU_ACTIVATIONS


def check_activation(op: str, activation, allowed: tuple = ACTIVATIONS, types=()):
    """`activation` if it is one of `allowed`; one computed in f32 only (relu6, a gelu) needs an f32 x
    (the first of `types`, when given)."""
    if activation not in allowed:
        raise OpError(f"op '{op}': activation must be one of {allowed}, got {activation!r}")
    if activation not in (None, "relu") and types and types[0].dtype is not DType.f32:
        raise OpError(f"op '{op}': activation {activation!r} needs f32, got {types[0].dtype.name}")
    return activation


def activate(y: np.ndarray, activation) -> np.ndarray:
    """The activation after a contraction: relu, relu6 (the clip op's own reference), or the gelu op's."""
    if activation in GELU_ACTIVATIONS:
        return gelu(y, approximation=activation.removeprefix("gelu_"))
    if activation == "relu6":
        return clip(y, min=RELU6_BOUNDS[0], max=RELU6_BOUNDS[1])
    return np.maximum(y, np.zeros((), y.dtype)) if activation == "relu" else y


def check_residual_flag(op: str, residual) -> bool:
    if not isinstance(residual, (bool, np.bool_)):
        raise OpError(f"op '{op}': residual must be a bool, got {residual!r}")
    return bool(residual)


def _normalize_linear(types, attrs):
    activation = check_activation("linear", attrs["activation"], LINEAR_ACTIVATIONS, types)
    return {"activation": activation, "residual": check_residual_flag("linear", attrs["residual"])}


@register_op("linear", infer=_infer_linear, operands=(2, 4), traits={"contraction"}, weights=(1, 2),
             attrs={"activation": None, "residual": False}, normalize=_normalize_linear)
def linear(x, weight, *rest, activation=None, residual=False):
    """x @ weight (+ bias) (+ residual), then the activation (none, relu, relu6 or a gelu).

    The residual (fuse-residual: a skip connection added to the result) is the last operand."""
    _, _, bias, skip = split_contraction([x, weight, *rest], residual)
    y = np.matmul(x, weight)
    y = y if bias is None else y + bias
    return activate(y if skip is None else y + skip, activation)


# --- softmax ----------------------------------------------------------------------------------

def _normalize_softmax(types, attrs):
    rank = types[0].rank if types else 1
    scale = attrs.get("scale")
    return {"axis": normalize_axis("softmax", int(attrs["axis"]), rank),
            "scale": None if scale is None else float(F32(scale)), "causal": bool(attrs.get("causal", False))}


def _infer_softmax(types, attrs):
    need_float("softmax", types[0])
    if len(types) == 2:
        mask = types[1]
        try:
            fits = mask.dtype is types[0].dtype and broadcast_shapes(types[0].shape, mask.shape) == types[0].shape
        except ValueError:
            fits = False
        if not fits:
            raise OpError(f"op 'softmax': the additive mask must be {types[0].dtype.name} and broadcast to the scores "
                          f"{types[0]}, got {mask}")
    if attrs["causal"] and (types[0].rank < 2 or attrs["axis"] != types[0].rank - 1):
        raise OpError(f"op 'softmax': causal=true masks [..., queries, keys] and needs the softmax over the last "
                      f"axis of a rank >= 2 operand, got axis {attrs['axis']} of {types[0]}")
    if attrs["causal"] and types[0].shape[-1] < types[0].shape[-2]:
        raise OpError(f"op 'softmax': causal=true with {types[0].shape[-2]} queries but only {types[0].shape[-1]} "
                      f"keys in {types[0]}; the queries are the last positions of the keys (as causal_mask's)")
    return types[0]


@register_op("softmax", infer=_infer_softmax, operands=(1, 2), attrs={"axis": -1, "scale": None, "causal": False},
             normalize=_normalize_softmax)
def softmax(x, mask=None, *, axis, scale, causal):
    """exp(x - max) / sum(exp(x - max)) along `axis`. fuse-softmax's prologue: x * scale first (an f32
    multiply, as mul by a scalar constant), then + mask (an additive attention mask that broadcasts
    to x), then with `causal` the causal_mask (-inf after the query)."""
    if scale is not None:
        x = x * F32(scale)
    if mask is not None:
        x = x + mask
    if causal:
        x = np.where(causal_allowed(*x.shape[-2:]), x, F32(-np.inf))
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


# --- conv2d and pooling (NCHW) -----------------------------------------------------------------

def out_size(op, size, kernel, stride, pad, dilation=1):
    span = dilation * (kernel - 1) + 1
    if size + 2 * pad < span:
        raise OpError(f"op '{op}': window {span} is larger than the padded input {size + 2 * pad}")
    return (size + 2 * pad - span) // stride + 1


# conv2d's fused pool (the fuse-pool pass): None, or a max_pool2d window named by fused_pool_name:
# "max_2x2" (kernel 2, stride 2, no padding: the one Winograd fuses too) or "max_3x3_s2x2_p1x1" and so on.
_FUSED_POOL = re.compile(r"max_(\d+)x(\d+)(?:_s(\d+)x(\d+)_p(\d+)x(\d+))?")


def fused_pool_name(kernel, stride, padding) -> str:
    """conv2d's `pool` attribute for a max_pool2d of these (normalized) kernel, stride and padding."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if (kh, kw) == (sh, sw) == (2, 2) and (ph, pw) == (0, 0):
        return "max_2x2"
    return f"max_{kh}x{kw}_s{sh}x{sw}_p{ph}x{pw}"


def fused_pool_window(pool: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, stride, padding) of conv2d's `pool` attribute (fused_pool_name's inverse); OpError if it
    names no max pool window."""
    match = _FUSED_POOL.fullmatch(pool) if isinstance(pool, str) else None
    if match is None:
        raise OpError(f"op 'conv2d': pool must be None or a max pool window such as 'max_2x2' or "
                      f"'max_3x3_s2x2_p1x1', got {pool!r}")
    kh, kw, sh, sw, ph, pw = match.groups()
    kernel = (int(kh), int(kw))
    window = (kernel, (int(sh), int(sw)) if sh else kernel, (int(ph), int(pw)) if ph else (0, 0))
    if min(*window[0], *window[1]) < 1 or fused_pool_name(*window) != pool:
        raise OpError(f"op 'conv2d': pool {pool!r} is not a canonical max pool window (kernel and stride "
                      f"at least 1; 'max_2x2' for kernel 2, stride 2 and no padding)")
    return window


def normalize_window(op):
    def normalize(types, attrs):
        full = {k: int_pair(op, k, v) for k, v in attrs.items()
                if k not in ("groups", "activation", "residual", "pool", "winograd")}
        if "pool" in attrs:
            if attrs["pool"] is not None:
                fused_pool_window(attrs["pool"])
            full["pool"] = attrs["pool"]
        if "groups" in attrs:
            full["groups"] = int(attrs["groups"])
        if "residual" in attrs:
            full["residual"] = check_residual_flag(op, attrs["residual"])
        if "activation" in attrs:
            full["activation"] = check_activation(op, attrs["activation"], types=types)
        if any(s <= 0 for s in full.get("stride", (1, 1))) or any(p < 0 for p in full["padding"]):
            raise OpError(f"op '{op}': stride must be positive and padding non-negative, got {full}")
        if "winograd" in attrs:
            full["winograd"] = _check_winograd(types, full, attrs["winograd"])
        return full

    return normalize


def winograd_computes(types, attrs) -> bool:
    """Whether Winograd's F(2x2, 3x3) computes a conv2d of these operand types and (normalized)
    attributes: f32, a 3 x 3 kernel, stride 1, dilation 1, one group, no fused pool but the 2 x 2 one, and
    not both a residual and a pool."""
    return (len(types) > 1 and types[0].dtype is DType.f32 and types[1].shape[2:] == (3, 3)
            and attrs["stride"] == (1, 1) and attrs["dilation"] == (1, 1) and attrs["groups"] == 1
            and attrs.get("pool") in (None, "max_2x2") and not (attrs["residual"] and attrs.get("pool")))


def _check_winograd(types, attrs, winograd) -> bool:
    """conv2d's `winograd` (set by the select-winograd pass): the codegen computes it by Winograd's
    F(2x2, 3x3), which exists only where `winograd_computes`."""
    if not isinstance(winograd, (bool, np.bool_)):
        raise OpError(f"op 'conv2d': winograd must be a bool, got {winograd!r}")
    if winograd:
        if not winograd_computes(types, attrs):
            raise OpError("op 'conv2d': winograd=true needs an f32 3 x 3 kernel, stride 1, dilation 1, groups 1 "
                          f"and not both a residual and a pool, got {[str(t) for t in types[:2]]} with {attrs}")
    return bool(winograd)


def _normalize_pool(types, attrs):
    attrs = dict(attrs)
    if attrs["stride"] is None:
        attrs["stride"] = attrs["kernel"]
    return normalize_window("pool")(types, attrs)


def _infer_conv2d(types, attrs):
    x, w, bias, residual = split_contraction(types, attrs["residual"])
    dtype = same_dtype("conv2d", types)
    groups = attrs["groups"]
    if x.rank != 4 or w.rank != 4:
        raise OpError(f"op 'conv2d' needs x[N,C,H,W] and weight[O,C/groups,kh,kw], got {x} and {w}")
    n, c, h, wd = x.shape
    o, ci, kh, kw = w.shape
    if groups < 1 or c % groups or o % groups or ci != c // groups:
        raise OpError(f"op 'conv2d': {c} input channels, weight {w} and groups={groups} do not fit")
    if bias is not None and bias.shape != (o,):
        raise OpError(f"op 'conv2d': bias must be [{o}], got {bias}")
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    result = TensorType((n, o, out_size("conv2d", h, kh, sh, ph, dh), out_size("conv2d", wd, kw, sw, pw, dw)),
                        dtype)
    _check_residual("conv2d", residual, result)
    if attrs.get("pool") is not None:
        if residual is not None:
            raise OpError("op 'conv2d': a fused pool and a residual do not go together")
        result = _infer_pool("conv2d")([result], dict(zip(("kernel", "stride", "padding"),
                                                          fused_pool_window(attrs["pool"]))))
    return result


def unpooled_conv2d_type(node) -> TensorType:
    """The type of a conv2d node's convolution before its fused pool (its own type without one)."""
    return _infer_conv2d([operand.type for operand in node.inputs], {**node.attrs, "pool": None})


def _windows(x, kh, kw, stride, dilation, out_h, out_w):
    """Yield (i, j, view) for each kernel tap: view[n, c, y, x] = x[n, c, y*s + i*d, x*s + j*d]."""
    (sh, sw), (dh, dw) = stride, dilation
    for i in range(kh):
        for j in range(kw):
            yield i, j, x[:, :, i * dh: i * dh + sh * (out_h - 1) + 1: sh, j * dw: j * dw + sw * (out_w - 1) + 1: sw]


@register_op("conv2d", infer=_infer_conv2d, operands=(2, 4), traits={"contraction"}, weights=(1, 2),
             attrs={"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "activation": None, "residual": False,
                    "pool": None, "winograd": False},
             normalize=normalize_window("conv2d"))
def conv2d(x, weight, *rest, stride, padding, dilation, groups, activation=None, residual=False, pool=None,
           winograd=False):
    """The convolution (+ bias per output channel) (+ residual, the last operand), then the activation,
    then (pool="max_2x2" or another fused_pool_name, made by the fuse-pool pass) that max_pool2d.
    `winograd` (the select-winograd pass) changes how the codegen computes it, not what."""
    _, _, bias, skip = split_contraction([x, weight, *rest], residual)
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    og = o // groups
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out_h = out_size("conv2d", h, kh, stride[0], ph, dilation[0])
    out_w = out_size("conv2d", w, kw, stride[1], pw, dilation[1])
    out = np.zeros((n, o, out_h, out_w), dtype=x.dtype)
    for i, j, view in _windows(xp, kh, kw, stride, dilation, out_h, out_w):
        for g in range(groups):
            tap = weight[g * og:(g + 1) * og, :, i, j]  # [og, cg]
            out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", view[:, g * cg:(g + 1) * cg], tap)
    if bias is not None:
        out += bias.reshape(1, o, 1, 1)
    if skip is not None:
        out += skip
    out = activate(out, activation)
    if pool is None:
        return out
    kernel, stride, padding = fused_pool_window(pool)
    return max_pool2d(out, kernel=kernel, stride=stride, padding=padding)


def _infer_pool(op):
    def infer(types, attrs):
        x = types[0]
        if x.rank != 4:
            raise OpError(f"op '{op}' needs x[N,C,H,W], got {x}")
        if op == "avg_pool2d":
            need_float(op, x)
        if x.dtype is DType.bool:
            raise OpError(f"op '{op}' is not defined on a bool operand ({x})")
        (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["padding"]
        if ph * 2 > kh or pw * 2 > kw:
            raise OpError(f"op '{op}': padding {attrs['padding']} must be at most half the kernel {attrs['kernel']}")
        n, c, h, w = x.shape
        return TensorType((n, c, out_size(op, h, kh, sh, ph), out_size(op, w, kw, sw, pw)), x.dtype)

    return infer


def _pool(op, x, kernel, stride, padding, fill, combine):
    (kh, kw), (ph, pw) = kernel, padding
    out_type = _infer_pool(op)([TensorType.of(x)], {"kernel": kernel, "stride": stride, "padding": padding})
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    out = None
    for _, _, view in _windows(xp, kh, kw, stride, (1, 1), out_type.shape[2], out_type.shape[3]):
        out = view.copy() if out is None else combine(out, view)
    return out


POOL_ATTRS = {"kernel": None, "stride": None, "padding": 0}


@register_op("max_pool2d", infer=_infer_pool("max_pool2d"), attrs=POOL_ATTRS, normalize=_normalize_pool)
def max_pool2d(x, *, kernel, stride, padding):
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    return _pool("max_pool2d", x, kernel, stride, padding, fill, np.maximum)


@register_op("avg_pool2d", infer=_infer_pool("avg_pool2d"), attrs=POOL_ATTRS, normalize=_normalize_pool)
def avg_pool2d(x, *, kernel, stride, padding):
    """Padding counts as zeros in the average (PyTorch's count_include_pad=True)."""
    total = _pool("avg_pool2d", x, kernel, stride, padding, 0, np.add)
    return total / F32(kernel[0] * kernel[1])


# --- batch norm (inference) -------------------------------------------------------------------

def _infer_batch_norm(types, attrs):
    x = types[0]
    same_dtype("batch_norm", types)
    need_float("batch_norm", x)
    if x.rank < 2:
        raise OpError(f"op 'batch_norm' needs x[N,C,...], got {x}")
    for name, t in zip(("gamma", "beta", "mean", "var"), types[1:]):
        if t.shape != (x.shape[1],):
            raise OpError(f"op 'batch_norm': {name} must be [{x.shape[1]}], got {t}")
    return x


@register_op("batch_norm", infer=_infer_batch_norm, operands=5, attrs={"eps": 1e-5})
def batch_norm(x, gamma, beta, mean, var, *, eps):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta, per channel (axis 1)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = gamma / np.sqrt(var + F32(eps))
    return (x - mean.reshape(shape)) * scale.reshape(shape) + beta.reshape(shape)
