"""sparse_linear: a linear whose weight is a CSR matrix, with work in proportion to its nonzeros.

    linear.py    the lowering: batch lanes for many rows of x, or slices.py for one row
    slices.py    the kernels for one row of x: slices of W's output rows, in lanes of a vector
    operands.py  the node's CSR operands as the kernels see them
    layout.py    the CSR weight regrouped into slices and windows at compile time
"""

from . import linear  # noqa: F401  (registers the lowering)
