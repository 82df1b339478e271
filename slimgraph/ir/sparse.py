"""The sparse form a mostly-zero weight ships in: one rule for the backend and the size report.

A linear layer's or 1x1 conv's constant float weight [N, K] (output channel,
input) whose share of non-zeros is at most :data:`MAX_DENSITY` is stored row
by row in a padded block-ELL form: each row keeps its non-zero blocks of
``width`` consecutive inputs (``width`` :data:`BLOCK` when the zeros come in
aligned 1x16 blocks, as ``prune{method=block,block=[1,16]}`` leaves them, else
1), as ``values`` [N, B, width] and ``columns`` [N, B] int32 (the block's first
input / width), B being the most blocks any row keeps; shorter rows are padded
with zero blocks at column 0. The TVM backend computes with it on CPUs
(``backends/tvm/ops/sparse.py``), and :func:`slimgraph.analysis.size_report`
counts such a weight at these bytes, so the IR's figure is what ships.

:func:`sparse_weight` says which weights take the form: those of a layer whose
kernel the backend can run sparse (:func:`sparse_layer`), when the form is
smaller than the dense weight.

Example::

    >>> import numpy as np
    >>> w = np.zeros((2, 32), np.float32); w[0, 3] = 1.0; w[1, 17] = 2.0
    >>> plan = ell_plan(w)
    >>> plan.width, plan.values.shape, plan.columns.tolist(), plan.nbytes
    (1, (2, 1, 1), [[3], [17]], 16)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from slimgraph.ir.ops.nn import _conv_geometry
from slimgraph.ir.types import DType

#: The highest share of non-zero weights at which a layer takes the sparse kernel. The
#: crossover measured by benchmarks/compression_pays.py (768x3072 at sequence 128, the
#: 2-core AVX-512 Xeon, two runs under load) lay between 30% and 40% density, unstructured
#: and 1x16 blocks alike (between 40% and 60% for rows balanced by ``prune{scope=row}``);
#: the bound keeps a margin below it.
MAX_DENSITY = 0.25
#: Block width used when the zeros come in aligned blocks of it.
BLOCK = 16
#: The sparse kernel computes its accumulator rows in whole vectors of 16, 8 or 4 float32
#: lanes: a layer whose rows (tokens, pixels) are no multiple of 4 stays dense.
LANES = 4


@dataclass(frozen=True)
class EllPlan:
    """A weight [N, K] as padded block-ELL: ``values`` [N, B, width], ``columns`` [N, B] (int32)."""

    width: int
    values: np.ndarray
    columns: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.columns.nbytes


def ell_plan(weight: np.ndarray) -> EllPlan:
    """The block-ELL form of ``weight`` [N, K]: 1x16 blocks when its zeros are aligned in them."""
    n, k = weight.shape
    width = 1
    if k % BLOCK == 0:
        blocks = np.any(weight.reshape(n, k // BLOCK, BLOCK) != 0, axis=2)
        if blocks.sum() * BLOCK <= 1.25 * np.count_nonzero(weight):
            width = BLOCK
    grid = weight.reshape(n, k // width, width)
    keep = np.any(grid != 0, axis=2)
    per_row = max(int(keep.sum(axis=1).max(initial=0)), 1)
    values = np.zeros((n, per_row, width), weight.dtype)
    columns = np.zeros((n, per_row), np.int32)
    for row in range(n):
        where = np.flatnonzero(keep[row])
        values[row, : where.size] = grid[row, where]
        columns[row, : where.size] = where
    return EllPlan(width, values, columns)


def sparse_plan(weight_nk: np.ndarray) -> EllPlan | None:
    """The block-ELL form of a float weight [N, K] when it is mostly zeros and the form is
    smaller than the dense weight, else None."""
    if weight_nk.size == 0 or np.count_nonzero(weight_nk) > MAX_DENSITY * weight_nk.size:
        return None
    plan = ell_plan(weight_nk)
    return plan if plan.nbytes < weight_nk.nbytes else None


def sparse_layer(op: str, attrs: Mapping, x_shape: tuple, out_dtype: DType, weight: np.ndarray) -> np.ndarray | None:
    """The weight as [N, K] when the layer ``op`` (``linear`` or ``conv``, with ``attrs``, an input of
    ``x_shape`` and a float32 result) has a sparse kernel on CPUs, else None: a linear layer
    without ``trans_a``; a 2-d 1x1, stride-1, unpadded, ungrouped conv of a fixed input. Its rows
    (tokens, or images x pixels) must be a multiple of :data:`LANES`; a symbolic dim in them
    counts as a fit (its size is bound at compile)."""
    if out_dtype is not DType.float32 or weight.dtype != np.float32:
        return None
    if op == "linear":
        if attrs["trans_a"]:
            return None
        rows = x_shape[:-1]
        nk = weight if attrs["trans_b"] else weight.T
    elif op == "conv":
        if weight.ndim != 4 or len(x_shape) != 4 or attrs["groups"] != 1 or weight.shape[2:] != (1, 1):
            return None
        strides, begins, ends, dilations = _conv_geometry(attrs, 2)
        if set(strides) | set(dilations) != {1} or any(begins) or any(ends):
            return None
        rows = (x_shape[0], *x_shape[2:])
        nk = weight.reshape(weight.shape[0], -1)
    else:
        return None
    fixed = [d for d in rows if isinstance(d, int)]
    return nk if math.prod(fixed) % LANES == 0 or len(fixed) < len(rows) else None


def sparse_weight(op: str, attrs: Mapping, x_shape: tuple, out_dtype: DType, weight: np.ndarray) -> EllPlan | None:
    """The sparse form the weight of such a layer ships in, or None (it ships dense)."""
    nk = sparse_layer(op, attrs, x_shape, out_dtype, weight)
    return None if nk is None else sparse_plan(nk)
