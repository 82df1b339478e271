"""Sparse weights x dense activations: the CPU form of a linear layer or 1x1 conv whose
constant weight is mostly zeros (magnitude or block pruning).

The weight [N, K] (output channel, input) is stored row by row in a padded
block-ELL form: each row keeps its non-zero blocks of ``width`` consecutive
inputs (``width`` 16 when the zeros come in aligned 1x16 blocks, as
``prune{method=block,block=[1,16]}`` leaves them, else 1), as ``values``
[N, B, width] float and ``columns`` [N, B] int32 (the block's first input /
width), B being the most blocks any row keeps; shorter rows are padded with
zero blocks at column 0. The kernel computes ``acc[n, m] = sum over the row's
blocks of values * x^T[column*width + i, m]``: each weight scalar multiplies a
contiguous vector of ``x^T`` (the activations, transposed once per call for
a linear layer; a 1x1 conv's NCHW input is already so), and the CPU rule
``sparse_rows`` keeps a row of ``acc`` in registers (see ``schedules/cpu.py``).

A layer goes sparse when its density is at most :data:`MAX_DENSITY` and the
stored form is smaller than the dense weight; ``benchmarks/compression_pays.py``
measures the crossover density on BERT-base's 768x3072 layer that
:data:`MAX_DENSITY` is set below.

Example::

    >>> import numpy as np
    >>> w = np.zeros((2, 32), np.float32); w[0, 3] = 1.0; w[1, 17] = 2.0
    >>> plan = ell_plan(w)
    >>> plan.width, plan.values.shape, plan.columns.tolist()
    (1, (2, 1, 1), [[3], [17]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: The highest share of non-zero weights at which a layer takes the sparse kernel. The
#: crossover measured by benchmarks/compression_pays.py (768x3072 at sequence 128, the
#: 2-core AVX-512 Xeon, two runs under load) lay between 30% and 40% density, unstructured
#: and 1x16 blocks alike (between 40% and 60% for rows balanced by ``prune{scope=row}``);
#: the bound keeps a margin below it.
MAX_DENSITY = 0.25
#: Block width used when the zeros come in aligned blocks of it.
BLOCK = 16
#: The accumulator rows are computed in whole vectors of 16, 8 or 4 float32 lanes: a layer
#: whose rows (tokens, pixels) are no multiple of 4 stays dense.
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


def sparse_plan(call, weight_nk: np.ndarray) -> EllPlan | None:
    """The sparse form of a constant float weight [N, K] when the layer should take it, else None."""
    n, k = weight_nk.shape
    if not call.compress or weight_nk.size == 0:
        return None
    if np.count_nonzero(weight_nk) > MAX_DENSITY * weight_nk.size:
        return None
    plan = ell_plan(weight_nk)
    return plan if plan.nbytes < weight_nk.nbytes else None


def sparse_rows(call, plan: EllPlan, read_xt, m_dim: int, name: str, epilogue_in_tile: bool):
    """``acc[n, m] = sum_j sum_i values[n, j, i] * xt(columns[n, j] * width + i, m)`` (float32),
    ``read_xt(k, m)`` reading the activations transposed. ``epilogue_in_tile``: the consumer reads ``acc`` at indices affine in ``m``, so the
    schedule may compute it inside the register tile (else ``acc`` is written out first)."""
    from tvm import te

    from slimgraph.backends.tvm.ops.common import up

    values = call.param(plan.values, "w_sparse_values", compressed=True)
    columns = call.param(plan.columns, "w_sparse_columns", compressed=True)
    n_dim, blocks, width = plan.values.shape
    rj, ri = te.reduce_axis((0, blocks), "rj"), te.reduce_axis((0, width), "ri")
    return te.compute(
        (n_dim, m_dim),
        lambda n, m: te.sum(up(values[n, rj, ri]) * up(read_xt(columns[n, rj] * width + ri, m)), axis=[rj, ri]),
        name=name,
        attrs={"sg.rule": "sparse_rows", "sg.epilogue_in_tile": int(epilogue_in_tile)},
    )


def sparse_matmul(call, x, plan: EllPlan, lead_shape: tuple):
    """``x @ W.T`` [..., N] for x [..., K] (static shape): x^T materialized, then :func:`sparse_rows`."""
    from tvm import te

    if any(not isinstance(d, int) for d in lead_shape) or math.prod(lead_shape) % LANES:
        return None
    m_dim, k_dim = math.prod(lead_shape), int(x.shape[-1])
    strides = [math.prod(lead_shape[i + 1 :]) for i in range(len(lead_shape))]

    def row(m):
        return tuple((m // s) % d for s, d in zip(strides, lead_shape))

    xt = te.compute((k_dim, m_dim), lambda k, m: x[row(m) + (k,)], name="sparse_xt", attrs={"sg.rule": "sparse_input"})
    acc = sparse_rows(call, plan, lambda k, m: xt[k, m], m_dim, "sparse_matmul", epilogue_in_tile=True)
    flat = lambda idx: sum((i * s for i, s in zip(idx, strides)), 0)  # noqa: E731
    return te.compute(tuple(lead_shape) + (plan.values.shape[0],), lambda *idx: acc[idx[-1], flat(idx[:-1])],
                      name="sparse_out")


def sparse_conv1x1(call, x, plan: EllPlan):
    """A 1x1, stride-1, unpadded conv [B, C, H, W] -> [B, N, H, W]: per image, the input
    [C, H*W] is already x^T, so :func:`sparse_rows` reads it in place."""
    from tvm import te

    batch, _, height, width = (int(d) for d in x.shape)
    pixels = height * width
    if batch * pixels % LANES:
        return None
    acc = sparse_rows(call, plan, lambda k, m: x[m // pixels, k, (m % pixels) // width, m % width],
                      batch * pixels, "sparse_conv", epilogue_in_tile=False)
    return te.compute((batch, plan.values.shape[0], height, width),
                      lambda b, o, h, w: acc[o, b * pixels + h * width + w], name="sparse_out")
