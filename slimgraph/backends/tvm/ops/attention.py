"""TE lowerings of attention and einsum.

Attention is five stages in one kernel: the scaled scores with the mask
applied, their row max, the sum of the exponentials, the weighted sum of the
values and the division by the sum. Masked-out scores are -inf; a row with no
visible key shifts by 0 instead of its -inf max, so it sums to 0 and gives
zeros, as the reference does. Sums run in float32 for half types, in float64 for float64.
On CPUs with static shapes the stages are those of the ``attention`` rule
(``schedules/cpu_matmul.py``): K transposed per head, padded rows and keys,
exponentials written once (see ``_cpu_attention``).

Example::

    >>> from slimgraph.backends.tvm.ops.attention import kv_index
    >>> kv_index((1, 5, 2, 3), 2)
    (1, 2, 2, 3)
"""

from __future__ import annotations

import math

import numpy as np
from tvm import te, tirx

from slimgraph.backends.tvm.lower import register
from slimgraph.backends.tvm.ops.common import (
    broadcast, compute_dtype, const, dims, down, dtype_of, is_float, spatial_compute, up, vector_exp,
)
from slimgraph.ir.ops.attention import attention_scale, einsum_sizes, einsum_subscripts


def kv_index(idx: tuple, group: int) -> tuple:
    """The key/value index that query index ``idx`` ([..., head, pos, feature]) reads when
    ``group`` query heads share each kv head."""
    return (*idx[:-3], idx[-3] // group, *idx[-2:])


#: Query rows per register tile of the CPU attention kernel's values product (the query rows are
#: padded to a multiple). The scores product takes twice as many when the keys make an odd number
#: of vectors, its tile then being one vector wide.
ROW_TILE = 4


@register("attention")
def lower_attention(call):
    """softmax(q k^T * scale + mask) v with grouped-query heads; a fully masked row gives zeros."""
    static = all(isinstance(d, int) for d in dims(call.args[0]) + dims(call.args[1]))
    if call.target.is_cpu and is_float(call.dtype()) and static:
        return _cpu_attention(call)
    q, k, v = call.args[:3]
    q_shape, k_shape = dims(q), dims(k)
    features, keys = q_shape[-1], k_shape[-2]
    group = q_shape[-3] // k_shape[-3]
    scale = attention_scale(features, call.attrs["scale"])
    score_shape = (*q_shape[:-1], keys)
    mask = broadcast(call.args[3], score_shape) if len(call.args) > 3 else None
    bool_mask = mask is not None and dtype_of(call.args[3]) == "bool"
    wide = compute_dtype(call.dtype())
    neg_inf = tirx.const(-math.inf, wide)

    re = te.reduce_axis((0, features), "re")
    dot = te.compute(
        score_shape,
        lambda *i: te.sum(up(q[(*i[:-1], re)]) * up(k[kv_index((*i[:-2], i[-1], re), group)]), axis=re),
        name="attention_dot", attrs={"sg.rule": "reduction"},
    )

    def masked(*i):
        s = dot[i] * tirx.const(scale, wide)
        if mask is not None and not bool_mask:
            s = s + up(mask(*i))
        visible = []
        if call.attrs["causal"]:
            visible.append(i[-1] <= i[-2])
        if bool_mask:
            visible.append(mask(*i))
        for cond in visible:
            s = tirx.Select(cond, s, neg_inf)
        return s

    scores = spatial_compute(score_shape, masked, name="attention_scores", rule="elementwise")
    row_shape = (*q_shape[:-1], 1)
    rm = te.reduce_axis((0, keys), "rm")
    top = te.compute(row_shape, lambda *i: te.max(scores[(*i[:-1], rm)], axis=rm), name="attention_max",
                     attrs={"sg.rule": "reduction"})

    def weight(i, j):
        shift = top[(*i[:-1], 0)]
        return tirx.exp(scores[(*i[:-1], j)] - tirx.Select(shift == neg_inf, tirx.const(0.0, wide), shift))

    rs = te.reduce_axis((0, keys), "rs")
    total = te.compute(row_shape, lambda *i: te.sum(weight(i, rs), axis=rs), name="attention_sum",
                       attrs={"sg.rule": "reduction"})
    rv = te.reduce_axis((0, keys), "rv")
    out_shape = call.shape()
    acc = te.compute(
        out_shape,
        lambda *i: te.sum(weight(i, rv) * up(v[kv_index((*i[:-2], rv, i[-1]), group)]), axis=rv),
        name="attention_values", attrs={"sg.rule": "reduction"},
    )

    def finish(*i):
        t = total[(*i[:-1], 0)]
        return down(acc[i] / tirx.Select(t > tirx.const(0.0, wide), t, tirx.const(1.0, wide)), call.dtype())

    return spatial_compute(out_shape, finish, name="attention", rule="elementwise")


def _cpu_attention(call):
    """Attention as the CPU ``attention`` rule computes it, one (batch, head) at a time with its
    stages in cache: K transposed once per head ([D, keys], so the scores' inner loop reads keys
    contiguously), the scores as a register-tiled product, row max, exponentials written once,
    their sum, their product with V, and that divided by the sum (once per output element, not
    once per score as normalizing the exponentials would). Query rows are padded to a multiple
    of the register tiles' rows (see ``ROW_TILE``) and keys to a multiple of the vector width
    (padded keys are masked out, padded rows read the last row and are never stored), so no
    loop of the kernel carries a remainder. The mask and the padded keys reach the scores as one
    addend (see :func:`_score_addend`)."""
    q, k, v = call.args[:3]
    q_shape, k_shape = dims(q), dims(k)
    *lead, rows, features = q_shape
    keys = k_shape[-2]
    group = q_shape[-3] // k_shape[-3]
    lanes = call.target.lanes
    keys_p = -(-keys // lanes) * lanes
    score_rows = ROW_TILE * (2 if keys_p // lanes % 2 else 1)
    rows_p = -(-rows // score_rows) * score_rows
    scale = attention_scale(features, call.attrs["scale"])
    mask = broadcast(call.args[3], (*lead, rows, keys)) if len(call.args) > 3 else None
    bool_mask = mask is not None and dtype_of(call.args[3]) == "bool"
    wide = compute_dtype(call.dtype())
    neg_inf = tirx.const(-math.inf, wide)
    zero = tirx.const(0.0, wide)
    n = len(lead)

    def row(i):
        return tirx.min(i, rows - 1) if rows_p != rows else i

    def key(j):
        return tirx.min(j, keys - 1) if keys_p != keys else j

    kt = te.compute((*lead, features, keys_p), lambda *i: up(k[kv_index((*i[:n], key(i[-1]), i[-2]), group)]),
                    name="attention_kt", attrs={"sg.rule": "attention"})
    addend = _score_addend(call, mask, bool_mask, (*lead, rows_p, keys_p), row, key, keys)
    re = te.reduce_axis((0, features), "re")
    dot = te.compute(
        (*lead, rows_p, keys_p),
        lambda *i: te.sum(up(q[(*i[:n], row(i[-2]), re)]) * kt[(*i[:n], re, i[-1])], axis=re),
        name="attention_dot", attrs={"sg.rule": "attention", "sg.rows": score_rows, "sg.lanes": lanes},
    )

    def score(*i):
        s = dot[i] * tirx.const(scale, wide)
        if addend is not None:
            s = s + addend(*i)
        if call.attrs["causal"]:
            s = tirx.Select(key(i[-1]) <= row(i[-2]), s, neg_inf)
        return s

    scores = spatial_compute((*lead, rows_p, keys_p), score, name="attention_scores", rule="elementwise")
    rm = te.reduce_axis((0, keys_p), "rm")
    top = te.compute((*lead, rows_p), lambda *i: te.max(scores[(*i, rm)], axis=rm), name="attention_max",
                     attrs={"sg.rule": "attention"})

    def exp(*i):
        shift = top[i[:-1]]
        return vector_exp(scores[i] - tirx.Select(shift == neg_inf, zero, shift), flush=True)

    e = te.compute((*lead, rows_p, keys_p), exp, name="attention_exp", attrs={"sg.rule": "attention"})
    rs = te.reduce_axis((0, keys_p), "rs")
    total = te.compute((*lead, rows_p), lambda *i: te.sum(e[(*i, rs)], axis=rs), name="attention_sum",
                       attrs={"sg.rule": "attention"})

    rv = te.reduce_axis((0, keys_p), "rv")
    acc = te.compute(
        (*lead, rows_p, call.shape()[-1]),
        lambda *i: te.sum(e[(*i[:-1], rv)] * up(v[kv_index((*i[:n], key(rv), i[-1]), group)]), axis=rv),
        name="attention_values", attrs={"sg.rule": "attention", "sg.rows": ROW_TILE, "sg.lanes": lanes},
    )

    def finish(*i):
        t = total[i[:-1]]
        return down(acc[i] * tirx.Select(t > zero, tirx.const(1.0, wide) / t, zero), call.dtype())

    return spatial_compute(call.shape(), finish, name="attention", rule="elementwise")


def _score_addend(call, mask, bool_mask: bool, padded: tuple, row, key, keys: int):
    """What the CPU kernel adds to the scaled scores, as an index function of the padded scores'
    index, or None: the mask (a bool one as 0 / -inf) with -inf on the padded keys.

    Read in place through the clamped key index, or as a Select's condition, a mask or the
    padded keys' bound made TVM scalarize the exponentials' vector loop (ViT's all-true mask
    made its attention 6x slower than none; Swin's 49 keys, padded to 64, 5x slower than 64
    unpadded keys). So with padded keys or a bool mask the mask is padded to the scores' shape
    once, in its own parallel loop ahead of the heads (dims it broadcasts over stay 1, so one
    copy serves every head), and padded keys without a mask add a constant 0 / -inf row. A
    float mask over unpadded keys is read in place. A masked score of +inf (q.k past float32)
    becomes NaN."""
    wide = compute_dtype(call.dtype())
    zero, neg_inf = tirx.const(0.0, wide), tirx.const(-math.inf, wide)
    padded_keys = padded[-1] != keys
    n = len(padded) - 2
    if mask is None:
        if not padded_keys:
            return None
        row_bias = call.param(np.where(np.arange(padded[-1]) < keys, 0.0, -np.inf).astype(wide), "key_bias")
        return lambda *i: row_bias[i[-1]]
    if not (padded_keys or bool_mask):
        return lambda *i: up(mask(*i[:n], row(i[-2]), i[-1]))
    spread = [1] * (n + 2 - len(dims(call.args[3]))) + list(dims(call.args[3]))
    shape = tuple(1 if m == 1 else d for m, d in zip(spread, padded))

    def value(*i):
        at = (*i[:n], row(i[-2]), key(i[-1]))
        v = tirx.Select(mask(*at), zero, neg_inf) if bool_mask else up(mask(*at))
        return tirx.Select(i[-1] < keys, v, neg_inf) if padded_keys else v

    bias = te.compute(shape, value, name="attention_bias", attrs={"sg.rule": "attention"})
    return lambda *i: bias[tuple(0 if d == 1 else a for a, d in zip(i, shape))]


@register("einsum")
def lower_einsum(call):
    """One reduction over the letters that are not in the output; size-1 dims broadcast."""
    shapes = [dims(x) for x in call.args]
    operands, output = einsum_subscripts(call.attrs["equation"], [len(s) for s in shapes])
    sizes = einsum_sizes(operands, shapes)
    summed = sorted(set("".join(operands)) - set(output))
    axes = {c: te.reduce_axis((0, int(sizes[c])), f"r{c}") for c in summed}
    acc = compute_dtype(call.dtype()) if is_float(call.dtype()) else "int64"

    def read(x, term, shape, env):
        return x[tuple(0 if d == 1 else env[c] for c, d in zip(term, shape))].astype(acc)

    def f(*idx):
        env = dict(zip(output, idx))
        env.update(axes)
        product = const(1, acc)
        for x, term, shape in zip(call.args, operands, shapes):
            product = product * read(x, term, shape, env)
        return te.sum(product, axis=list(axes.values())) if axes else product

    out = te.compute(call.shape(), f, name="einsum", attrs={"sg.rule": "reduction"} if axes else None)
    return out if dtype_of(out) == call.dtype() else spatial_compute(
        call.shape(), lambda *i: down(out[i], call.dtype()), name="cast", rule="elementwise"
    )
