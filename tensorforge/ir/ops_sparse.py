"""Sparse ops (issue 4): a linear layer whose weight is stored in CSR, only its nonzero entries.

    %y = sparse_linear(%x, %values, %columns, %row_starts, %b) {activation="relu"} : f32[1,1024]
         x f32[..., in], values f32[nnz], columns i32[nnz], row_starts i32[out + 1], b f32[out]

The CSR arrays hold the transpose of linear's weight w[in, out]: row j lists output neuron j's
inputs, so y[..., j] = sum over p in row_starts[j] .. row_starts[j+1] of values[p] * x[..., columns[p]]
(+ bias[j]) (+ residual[..., j]), then the activation. `to_csr(w)` makes the arrays (passes/sparsify.py
calls it) and `densify` gives w back. The operands after the three arrays are linear's: an optional
bias and, with residual=true, the residual last.

Semantics: linear(x, densify(...), bias) for finite x. Only stored entries are multiplied, so an
inf or NaN in x reaches only the outputs whose rows read it (a dense product also spreads
0 * inf = NaN through every zero weight); a column repeated in a row adds up.
"""

from __future__ import annotations

import math

import numpy as np

from .ops_nn import activate, check_activation, check_residual_flag
from .registry import OpError, register_op
from .types import DType, TensorType

F32 = np.float32
INDEX = DType.i32  # columns and row_starts
INDEX_LIMIT = np.iinfo(np.int32).max


def to_csr(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values f32[nnz], columns i32[nnz], row_starts i32[out + 1]) of the nonzeros of w[in, out], by output."""
    if weight.ndim != 2:
        raise OpError(f"a CSR weight is made from a matrix w[in, out], got shape {list(weight.shape)}")
    if weight.size >= INDEX_LIMIT:
        raise OpError(f"a CSR weight indexes with i32: w{list(weight.shape)} is too big")
    transposed = np.ascontiguousarray(weight.T)
    rows, columns = np.nonzero(transposed)  # row-major order: by output neuron, then input
    row_starts = np.zeros(weight.shape[1] + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=weight.shape[1]), out=row_starts[1:])
    return transposed[rows, columns].astype(weight.dtype), columns.astype(np.int32), row_starts


def densify(values: np.ndarray, columns: np.ndarray, row_starts: np.ndarray, in_features: int) -> np.ndarray:
    """The dense w[in, out] of CSR arrays (repeated entries add up)."""
    check_csr(values, columns, row_starts, in_features)
    weight = np.zeros((in_features, row_starts.size - 1), values.dtype)
    np.add.at(weight, (columns, _row_of_entries(row_starts)), values)
    return weight


def check_csr(values: np.ndarray, columns: np.ndarray, row_starts: np.ndarray, in_features: int) -> None:
    """OpError unless the arrays are CSR of some w[in_features, out]: row_starts from 0 up to nnz,
    never decreasing; every column in [0, in_features)."""
    nnz = values.size
    if row_starts.size == 0 or row_starts[0] != 0 or row_starts[-1] != nnz:
        raise OpError(f"op 'sparse_linear': row_starts must run from 0 to the {nnz} stored entries, got "
                      f"{row_starts[:1].tolist()} .. {row_starts[-1:].tolist()}")
    decreasing = np.diff(row_starts) < 0
    if np.any(decreasing):
        raise OpError(f"op 'sparse_linear': row_starts must never decrease (it does after row "
                      f"{int(np.argmax(decreasing))})")
    if nnz and (columns.min() < 0 or columns.max() >= in_features):
        raise OpError(f"op 'sparse_linear': columns must lie in [0, {in_features}) (x has {in_features} features), "
                      f"got {int(columns.min())} .. {int(columns.max())}")


def _row_of_entries(row_starts: np.ndarray) -> np.ndarray:
    """The row (output neuron) of every stored entry."""
    return np.repeat(np.arange(row_starts.size - 1), np.diff(row_starts))


def split_sparse_operands(operands: list, residual: bool) -> tuple:
    """(x, values, columns, row_starts, bias or None, residual or None) of a sparse_linear's operands."""
    rest = list(operands[4:])
    extra = rest.pop() if residual and rest else None
    if residual and extra is None:
        raise OpError("op 'sparse_linear' with residual=true needs the residual as its last operand")
    if len(rest) > 1:
        raise OpError(f"op 'sparse_linear' takes x, values, columns, row_starts, an optional bias and (with "
                      f"residual) a residual; got {len(operands)} operands")
    return (*operands[:4], rest[0] if rest else None, extra)


def _normalize(types, attrs):
    return {"activation": check_activation("sparse_linear", attrs["activation"]),
            "residual": check_residual_flag("sparse_linear", attrs["residual"])}


def _infer(types, attrs):
    x, values, columns, row_starts, bias, residual = split_sparse_operands(types, attrs["residual"])
    if x.dtype is not DType.f32 or x.rank < 1:
        raise OpError(f"op 'sparse_linear' needs x f32[..., in], got {x}")
    if values.dtype is not DType.f32 or values.rank != 1:
        raise OpError(f"op 'sparse_linear': values must be f32[nnz], got {values}")
    if columns.dtype is not INDEX or columns.shape != values.shape:
        raise OpError(f"op 'sparse_linear': columns must be i32{list(values.shape)} like values, got {columns}")
    if row_starts.dtype is not INDEX or row_starts.rank != 1 or row_starts.shape[0] < 1:
        raise OpError(f"op 'sparse_linear': row_starts must be i32[out + 1], got {row_starts}")
    out = row_starts.shape[0] - 1
    if bias is not None and (bias.dtype is not DType.f32 or bias.shape != (out,)):
        raise OpError(f"op 'sparse_linear': bias must be f32[{out}], got {bias}")
    result = TensorType(x.shape[:-1] + (out,), DType.f32)
    if residual is not None and residual != result:
        raise OpError(f"op 'sparse_linear': the residual must be {result} like the result, got {residual}")
    return result


@register_op("sparse_linear", infer=_infer, operands=(4, 6), traits={"contraction"},
             attrs={"activation": None, "residual": False}, normalize=_normalize)
def sparse_linear(x, values, columns, row_starts, *rest, activation=None, residual=False):
    """sum of values[p] * x[..., columns[p]] per row (+ bias) (+ residual), then the activation."""
    _, _, _, _, bias, skip = split_sparse_operands([x, values, columns, row_starts, *rest], residual)
    check_csr(values, columns, row_starts, x.shape[-1])
    out = row_starts.size - 1
    rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
    products = rows[:, columns] * values  # [batch, nnz], f32
    y = np.zeros((rows.shape[0], out), F32)
    np.add.at(y.T, _row_of_entries(row_starts), products.T)
    y = y.reshape(x.shape[:-1] + (out,))
    y = y if bias is None else y + bias
    y = y if skip is None else y + skip
    assert y.dtype == F32, y.dtype
    return activate(y, activation)
