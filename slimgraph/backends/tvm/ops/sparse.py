"""Sparse weights x dense activations: the CPU form of a linear layer or 1x1 conv whose
constant weight is mostly zeros (magnitude or block pruning).

Which weights take it, and their padded block-ELL layout (``values`` [N, B,
width], ``columns`` [N, B]), is :mod:`slimgraph.ir.sparse`'s rule, which the size
report counts by too. The kernel computes ``acc[n, m] = sum over the row's blocks
of values * x^T[column*width + i, m]``: each weight scalar multiplies a
contiguous vector of ``x^T`` (the activations, transposed once per call for a
linear layer; a 1x1 conv's NCHW input is already so), and the CPU rule
``sparse_rows`` keeps a row of ``acc`` in registers (see ``schedules/cpu.py``).
"""

from __future__ import annotations

import math

from slimgraph.ir.sparse import EllPlan, sparse_weight


def sparse_form(call, x) -> EllPlan | None:
    """The sparse form of ``call``'s constant weight (a ``linear`` or ``conv`` reading ``x``) when
    it runs sparse here: weights kept compressed, a CPU target, fixed shapes, and the IR's rule."""
    from tvm import tirx

    weight = call.consts[1]
    if weight is None or not call.compress or not call.target.is_cpu:
        return None
    if any(not isinstance(d, (int, tirx.IntImm)) for d in x.shape):
        return None
    return sparse_weight(call.op, call.attrs, tuple(int(d) for d in x.shape), call.out_types[0].dtype, weight)


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
    acc = sparse_rows(call, plan, lambda k, m: x[m // pixels, k, (m % pixels) // width, m % width],
                      batch * pixels, "sparse_conv", epilogue_in_tile=False)
    return te.compute((batch, plan.values.shape[0], height, width),
                      lambda b, o, h, w: acc[o, b * pixels + h * width + w], name="sparse_out")
