"""The graph builder the importers share: one place for the conversions ONNX and PyTorch both need.

    b = GraphBuilder(graph)
    y = b.conv2d(x, w, bias, strides=(2, 2), pads=(0, 0, 1, 1), dilations=(1, 1), groups=1, name="conv1")
        %conv1_pad = concat(...)       (asymmetric padding: zeros appended below and right)
        %conv1 = conv2d(%conv1_pad, %w, %bias) {stride=[2,2], padding=[0,0]} : f32[1,64,56,56]
    shape = b.static(node)             the value of a node computed from constants only (shape arithmetic)

Frameworks write padding as (begin..., end...), pools with ceil_mode and count_include_pad, Gemm
with transposes and scalars, broadcasting to a target shape; the IR has symmetric padding, floor
pools that count padding as zeros, and `linear(x, w[in, out], bias)`. Each conversion below is
exact: padding beyond what the IR op takes is a concat of constant blocks, a pool's divisor is
corrected by a constant multiplier, an expand is a multiplication by ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .. import ir


class GraphBuilder:
    """Adds nodes to `graph`, and evaluates the parts of it that depend on constants only."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self._values: dict[ir.Node, np.ndarray | None] = {}

    # --- nodes and constants ---------------------------------------------------------------------

    def constant(self, value, name: str | None = None, dtype=None) -> ir.Node:
        array = np.asarray(value, dtype=dtype)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        node = self.graph.constant(np.require(array, requirements="C"), name)
        self._values[node] = node.value
        return node

    def call(self, op: str, inputs: Sequence[ir.Node], attrs: dict | None = None, name: str | None = None) -> ir.Node:
        return self.graph.call(op, list(inputs), attrs or {}, name)

    def static(self, node: ir.Node) -> np.ndarray | None:
        """The value of `node` when it depends on constants only (evaluated by the op references), else None."""
        if node in self._values:
            return self._values[node]
        if node.op == "input":
            value = None
        elif node.op == "constant":
            value = node.value
        else:
            operands = [self.static(operand) for operand in node.inputs]
            value = None if any(v is None for v in operands) else ir.evaluate(node.op, operands, node.attrs)
        self._values[node] = value
        return value

    # --- padding -----------------------------------------------------------------------------------

    def pad(self, x: ir.Node, pads: Sequence[tuple[int, int]], value: float, name: str | None = None) -> ir.Node:
        """x with `pads[axis] = (before, after)` elements of `value` around each axis (a concat per padded axis)."""
        current = x
        padded_axes = [axis for axis, (before, after) in enumerate(pads) if before or after]
        for count, axis in enumerate(padded_axes):
            before, after = pads[axis]
            parts = []
            for size in (before, after):
                shape = list(current.shape)
                shape[axis] = size
                parts.append(self.constant(np.full(shape, value, current.dtype.numpy)) if size else None)
            operands = [p for p in (parts[0], current, parts[1]) if p is not None]
            last = count == len(padded_axes) - 1
            current = self.call("concat", operands, {"axis": axis}, name if last else None)
        return current

    # --- convolution and pooling --------------------------------------------------------------------

    def conv2d(self, x: ir.Node, weight: ir.Node, bias: ir.Node | None, *, strides, pads, dilations, groups: int,
               name: str | None = None) -> ir.Node:
        """NCHW convolution with pads (top, left, bottom, right); padding beyond a symmetric part is explicit."""
        top, left, bottom, right = pads
        symmetric = (min(top, bottom), min(left, right))
        extra = [(0, 0), (0, 0), (top - symmetric[0], bottom - symmetric[0]),
                 (left - symmetric[1], right - symmetric[1])]
        if any(before or after for before, after in extra):
            x = self.pad(x, extra, 0.0)
        operands = [x, weight] if bias is None else [x, weight, bias]
        attrs = {"stride": tuple(strides), "padding": symmetric, "dilation": tuple(dilations), "groups": groups}
        return self.call("conv2d", operands, attrs, name)

    def pool2d(self, kind: str, x: ir.Node, *, kernel, strides, pads, ceil_mode: bool = False,
               count_include_pad: bool = False, name: str | None = None) -> ir.Node:
        """max or average pooling with pads (top, left, bottom, right), ceil_mode and count_include_pad
        as ONNX and PyTorch define them (a window never starts past the padded input)."""
        (kh, kw), (sh, sw) = kernel, strides
        top, left, bottom, right = pads
        height, width = x.shape[2], x.shape[3]
        out_h = _pool_size(height, kh, sh, top, bottom, ceil_mode)
        out_w = _pool_size(width, kw, sw, left, right, ceil_mode)
        # the padded extent every window fits in: the pads, and for ceil_mode what the last window needs
        bottom_all = max(bottom, (out_h - 1) * sh + kh - height - top)
        right_all = max(right, (out_w - 1) * sw + kw - width - left)
        if kind == "max":
            fill = -np.inf if x.dtype.is_float else np.iinfo(x.dtype.numpy).min
            symmetric = top == bottom_all and left == right_all and 2 * top <= kh and 2 * left <= kw
            if not symmetric:
                x = self.pad(x, [(0, 0), (0, 0), (top, bottom_all), (left, right_all)], fill)
            padding = (top, left) if symmetric else (0, 0)
            return self.call("max_pool2d", [x], {"kernel": (kh, kw), "stride": (sh, sw), "padding": padding}, name)
        if top or left or bottom_all or right_all:
            x = self.pad(x, [(0, 0), (0, 0), (top, bottom_all), (left, right_all)], 0.0)
        counts = _window_counts(height, width, (kh, kw), (sh, sw), (top, left, bottom, right), (out_h, out_w),
                                count_include_pad)
        full = counts == kh * kw
        average = self.call("avg_pool2d", [x], {"kernel": (kh, kw), "stride": (sh, sw), "padding": (0, 0)},
                            None if full.all() else f"{name}_sum" if name else None)
        if full.all():
            return average
        factor = self.constant((kh * kw / counts).astype(np.float32).reshape(1, 1, out_h, out_w))
        return self.call("mul", [average, factor], {}, name)

    # --- contractions and broadcasting ------------------------------------------------------------------

    def gemm(self, a: ir.Node, b: ir.Node, c: ir.Node | None, *, alpha: float = 1.0, beta: float = 1.0,
             trans_a: bool = False, trans_b: bool = False, name: str | None = None) -> ir.Node:
        """alpha * A' @ B' + beta * C for 2-D A and B (A' = A^T if trans_a...): a linear when B is a weight."""
        if trans_a:
            a = self.call("transpose", [a], {"perm": (1, 0)})
        weight = self.call("transpose", [b], {"perm": (1, 0)}) if trans_b else b
        if alpha != 1.0:
            weight = self.call("mul", [weight, self.constant(np.float32(alpha))])
        bias = None
        if c is not None:
            if beta != 1.0:
                c = self.call("mul", [c, self.constant(np.asarray(beta, c.dtype.numpy))])
            n = weight.shape[1]
            if c.type.size == n and c.shape[-1:] == (n,) or c.shape == (1,) and n == 1:
                bias = c if c.shape == (n,) else self.call("reshape", [c], {"shape": (n,)})
        operands = [a, weight] if bias is None else [a, weight, bias]
        result = self.call("linear", operands, {}, name if bias is not None or c is None else None)
        if c is not None and bias is None:
            result = self.call("add", [result, c], {}, name)
        return result

    def layer_norm(self, x: ir.Node, scale: ir.Node | None, bias: ir.Node | None, axes: int, eps: float,
                   name: str | None = None) -> ir.Node:
        """Normalization over the last `axes` axes (ONNX's axis, PyTorch's normalized_shape): the IR's
        layer_norm over the last axis, of x with those axes flattened into one when there are several;
        scale and bias (None: ones and zeros) broadcast to the normalized shape, then flattened alike."""
        normalized = x.shape[x.type.rank - axes:]
        features = int(np.prod(normalized, dtype=np.int64))
        parameters = []
        for value, default in ((scale, 1.0), (bias, 0.0)):
            value = self.constant(np.full(normalized, default, np.float32)) if value is None else value
            value = self.expand(value, normalized) if value.shape != normalized else value
            parameters.append(value if value.shape == (features,) else
                              self.call("reshape", [value], {"shape": (features,)}))
        if axes == 1:
            return self.call("layer_norm", [x, *parameters], {"eps": eps}, name)
        flat = self.call("reshape", [x], {"shape": (*x.shape[:x.type.rank - axes], features)})
        result = self.call("layer_norm", [flat, *parameters], {"eps": eps})
        return self.call("reshape", [result], {"shape": x.shape}, name)

    def reduce_min(self, x: ir.Node, axes: Sequence[int], keepdims: bool, name: str | None = None) -> ir.Node:
        """The minimum over `axes`: -max(-x) (the IR reduces by sum, mean and max)."""
        negated = self.call("neg", [x])
        return self.call("neg", [self.call("reduce_max", [negated], {"axes": tuple(axes), "keepdims": keepdims})],
                         {}, name)

    def expand(self, x: ir.Node, shape: Sequence[int], name: str | None = None) -> ir.Node:
        """x broadcast to `shape` (numpy's rules, both ways as ONNX Expand): a product with ones."""
        target = tuple(int(d) for d in np.broadcast_shapes(x.shape, tuple(shape)))
        if target == x.shape:
            return x
        rank = len(target)
        padded = (1,) * (rank - len(x.shape)) + x.shape
        ones_shape = tuple(t if p == 1 else 1 for t, p in zip(target, padded))
        one = True if x.dtype is ir.DType.bool else 1
        return self.call("mul", [x, self.constant(np.full(ones_shape, one, x.dtype.numpy))], {}, name)


def _pool_size(size: int, kernel: int, stride: int, begin: int, end: int, ceil_mode: bool) -> int:
    span = size + begin + end - kernel
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + begin:  # the last window would start in the end padding
        out -= 1
    return out


def _window_counts(height, width, kernel, strides, pads, out_shape, count_include_pad: bool) -> np.ndarray:
    """How many elements each average-pool window divides by: those inside the input, or with
    count_include_pad inside the input and its pads (never the extension ceil_mode adds)."""
    top, left, bottom, right = pads
    counts = []
    for size, k, s, begin, end, out in ((height, kernel[0], strides[0], top, bottom, out_shape[0]),
                                        (width, kernel[1], strides[1], left, right, out_shape[1])):
        low, high = (-begin, size + end) if count_include_pad else (0, size)
        starts = np.arange(out) * s - begin
        counts.append(np.clip(starts + k, low, high) - np.clip(starts, low, high))
    return np.outer(counts[0], counts[1]).astype(np.float32)
