"""TE lowerings of the reductions and the injective (data-movement) ops.

Shape arithmetic is not repeated here: output shapes come from the node's
types, and the ONNX index rules (slice clamping, pad crops, split points)
come from the op declarations' own helpers.

Example::

    >>> ravel((1, 2), (3, 4))
    6
"""

from __future__ import annotations

import math
from typing import Sequence

from tvm import te, tirx

from slimgraph.backends.tvm.lower import register
from slimgraph.backends.tvm.ops.common import (
    broadcast, compute_dtype, const, dims, down, dtype_of, highest, is_float, lowest, positions, spatial_compute,
)
from slimgraph.ir.ops.shape import _pad_widths, _perm, _slices, _split_points


def ravel(idx: Sequence, shape: Sequence[int]):
    """The row-major flat offset of ``idx`` in ``shape``."""
    flat = 0
    for i, d in zip(idx, shape):
        flat = flat * d + i
    return flat


def unravel(flat, shape: Sequence[int]) -> tuple:
    """The row-major index of a flat offset in ``shape``. The outermost index is the quotient
    itself: the offset is inside ``shape``, and a modulo there would hide that from TVM's
    simplifier (a vectorized read through it becomes a gather)."""
    out = []
    for n, d in enumerate(reversed(shape)):
        out.append(0 if d == 1 else flat if n == len(shape) - 1 else flat % d)
        flat = flat // d
    return tuple(reversed(out))


def reshape_groups(in_shape: Sequence, out_shape: Sequence) -> list[tuple[slice, slice]]:
    """The runs of input and output dims that a reshape maps onto each other: where the
    running products of both shapes meet, the reshape splits into independent reshapes.
    (198, 384) -> (1, 198, 6, 64) gives [(198,) <-> (1, 198), (384,) <-> (6, 64)], so each
    output index reads its input index through its own group only, and attention's per-head
    reads of one linear's output stay contiguous. Symbolic or empty shapes are one group.

        >>> reshape_groups((198, 384), (1, 198, 6, 64))
        [(slice(0, 1, None), slice(0, 2, None)), (slice(1, 2, None), slice(2, 4, None))]
    """
    whole = [(slice(0, len(in_shape)), slice(0, len(out_shape)))]
    if not all(isinstance(d, int) for d in (*in_shape, *out_shape)) or 0 in (*in_shape, *out_shape):
        return whole
    ends_out = {}
    running = 1
    for j, d in enumerate(out_shape):
        running *= d
        ends_out.setdefault(running, j + 1)  # the first dim that reaches a product ends its group
    groups, start_in, start_out, running = [], 0, 0, 1
    for i, d in enumerate(in_shape):
        running *= d
        j = ends_out.get(running)
        if d != 1 and j is not None and j > start_out:
            groups.append((slice(start_in, i + 1), slice(start_out, j)))
            start_in, start_out = i + 1, j
    if not groups:
        return whole
    last_in, last_out = groups[-1]
    groups[-1] = (slice(last_in.start, len(in_shape)), slice(last_out.start, len(out_shape)))  # trailing 1s
    return groups


def _inject(call, fn, i: int = 0, name: str | None = None):
    return spatial_compute(call.shape(i), fn, name=name or call.op, rule="elementwise")


# ---------------------------------------------------------------------------
# Reductions


def _reduce(call, combine, acc_dtype: str, finish=None):
    x = call.args[0]
    in_shape = dims(x)
    axes = [a % len(in_shape) for a in call.attrs["axes"]] or list(range(len(in_shape)))
    keep = call.attrs["keepdims"]
    red = {a: te.reduce_axis((0, in_shape[a]), f"r{a}") for a in axes}

    def f(*idx):
        it = iter(idx)
        full = []
        for a in range(len(in_shape)):
            if a in red:
                full.append(red[a])
                if keep:
                    next(it)
            else:
                full.append(next(it))
        return combine(x[tuple(full)].astype(acc_dtype), axis=list(red.values()))

    total = te.compute(call.shape(), f, name=call.op, attrs={"sg.rule": "reduction"})
    count = math.prod(in_shape[a] for a in axes)
    if finish is None and dtype_of(total) == call.dtype():
        return total
    return _inject(call, lambda *i: down(finish(total[i], count) if finish else total[i], call.dtype()), name="finish")


def _acc(dtype: str) -> str:
    # floats accumulate in float32 (float64 in float64), integers in int64 (the reference is wider still)
    return compute_dtype(dtype) if is_float(dtype) else "int64"


_prod = te.comm_reducer(lambda a, b: a * b, lambda t: tirx.const(1, t), name="prod")


@register("reduce_sum")
def lower_reduce_sum(call):
    return _reduce(call, te.sum, _acc(dtype_of(call.args[0])))


@register("reduce_mean")
def lower_reduce_mean(call):
    wide = compute_dtype(dtype_of(call.args[0]))
    return _reduce(call, te.sum, wide, finish=lambda t, n: t / tirx.const(n, wide))


@register("reduce_prod")
def lower_reduce_prod(call):
    return _reduce(call, _prod, _acc(dtype_of(call.args[0])))


@register("reduce_max", "reduce_min")
def lower_reduce_extreme(call):
    dtype = dtype_of(call.args[0])
    if dtype == "bool":  # max of bools is any, min is all
        wide = te.max if call.op == "reduce_max" else te.min
        return _reduce(call, wide, "int8")
    return _reduce(call, te.max if call.op == "reduce_max" else te.min, dtype)


def _arg_reducer(better):
    def combine(lhs, rhs):
        take_rhs = better(rhs[1], lhs[1])
        return tirx.Select(take_rhs, rhs[0], lhs[0]), tirx.Select(take_rhs, rhs[1], lhs[1])

    return combine


@register("argmax", "argmin")
def lower_arg_reduction(call):
    """Index of the first extreme along an axis; ties keep the lower index."""
    x = call.args[0]
    in_shape = dims(x)
    axis = call.attrs["axis"] % len(in_shape)
    keep = call.attrs["keepdims"]
    dtype = dtype_of(x)
    is_max = call.op == "argmax"
    init = lowest(dtype) if is_max else highest(dtype)
    if dtype == "bool":
        x = te.compute(x.shape, lambda *i: x[i].astype("int8"), name="widen")
        dtype, init = "int8", tirx.const(-1 if is_max else 2, "int8")
    # the scan runs in index order, so a strict comparison keeps the first extreme
    better = (lambda a, b: a > b) if is_max else (lambda a, b: a < b)
    reducer = te.comm_reducer(
        _arg_reducer(better), lambda t0, t1: (tirx.const(-1, t0), init), name=call.op
    )
    r = te.reduce_axis((0, in_shape[axis]), "r")

    def f(*idx):
        full = list(idx[:axis]) + [r] + list(idx[axis + (1 if keep else 0):])
        return reducer((r.var.astype("int64"), x[tuple(full)]), axis=r)

    index, _ = te.compute(call.shape(), f, name=call.op, attrs={"sg.rule": "reduction"})
    return index


@register("top_k")
def lower_top_k(call):
    """Selection by rank: an element's rank counts the elements that beat it (a tie goes to the
    lower index), and output slot r gathers the element of rank r. O(n^2) along the axis, no sort."""
    x = call.args[0]
    in_shape = dims(x)
    axis = call.attrs["axis"] % len(in_shape)
    n = in_shape[axis]
    beats = (lambda a, b: a > b) if call.attrs["largest"] else (lambda a, b: a < b)

    def at(idx, i):
        return x[tuple(idx[:axis]) + (i,) + tuple(idx[axis + 1 :])]

    j = te.reduce_axis((0, n), "j")
    rank = te.compute(
        in_shape,
        lambda *idx: te.sum(tirx.Select(tirx.Or(beats(at(idx, j), x[idx]),
                                                tirx.And(at(idx, j) == x[idx], j < idx[axis])),
                                        tirx.const(1, "int32"), tirx.const(0, "int32")), axis=j),
        name="top_k_rank", attrs={"sg.rule": "reduction"},
    )

    def pick(value_of, dtype, name):
        i = te.reduce_axis((0, n), "i")
        return te.compute(
            call.shape(),
            lambda *idx: te.sum(tirx.Select(rank[tuple(idx[:axis]) + (i,) + tuple(idx[axis + 1 :])] == idx[axis],
                                            value_of(idx, i), const(0, dtype)), axis=i),
            name=name, attrs={"sg.rule": "reduction"},
        )

    values = pick(lambda idx, i: at(idx, i), call.dtype(0), "top_k_values")
    indices = pick(lambda idx, i: i.var.astype("int64"), "int64", "top_k_indices")
    return values, indices


# ---------------------------------------------------------------------------
# Reshapes and permutations


@register("reshape", "flatten", "squeeze", "unsqueeze", "identity")
def lower_reshape(call):
    """Any reshape: read the input at the same row-major offset."""
    x = call.args[0]
    in_shape = dims(x)
    out_shape = call.shape()
    if in_shape == list(out_shape):
        return _inject(call, lambda *i: x[i])
    groups = reshape_groups(in_shape, out_shape)

    def read(*i):
        return x[tuple(a for g_in, g_out in groups for a in unravel(ravel(i[g_out], out_shape[g_out]), in_shape[g_in]))]

    return _inject(call, read)


@register("transpose")
def lower_transpose(call):
    x = call.args[0]
    perm = _perm(call.attrs["perm"], len(x.shape))
    inverse = [perm.index(a) for a in range(len(perm))]
    return _inject(call, lambda *i: x[tuple(i[inverse[a]] for a in range(len(perm)))])


@register("expand")
def lower_expand(call):
    read = broadcast(call.args[0], call.shape())
    return _inject(call, lambda *i: read(*i))


@register("tile")
def lower_tile(call):
    x = call.args[0]
    sizes = dims(x)
    return _inject(call, lambda *i: x[tuple(v % s if s != 1 else 0 for v, s in zip(i, sizes))])


# ---------------------------------------------------------------------------
# Joining and cutting


@register("concat")
def lower_concat(call):
    axis = call.attrs["axis"] % len(call.shape())
    starts, offset = [], 0
    for t in call.args:
        starts.append(offset)
        offset += int(t.shape[axis])

    def f(*i):
        p = i[axis]
        value = None
        for t, start in zip(call.args, starts):
            # clamped, so that no branch reads out of bounds even once vectorized into a select
            inner = tirx.max(tirx.min(p - start, int(t.shape[axis]) - 1), 0)
            local = i[:axis] + (inner,) + i[axis + 1 :]
            read = t[local]
            value = read if value is None else tirx.if_then_else(p >= start, read, value)
        return value

    return _inject(call, f)


@register("split")
def lower_split(call):
    x = call.args[0]
    shape = dims(x)
    axis, points = _split_points(tuple(shape), call.attrs["axis"], call.attrs["sizes"])
    starts = [0] + list(points)

    def piece(k: int, start: int):
        return spatial_compute(
            call.shape(k), lambda *i: x[i[:axis] + (i[axis] + start,) + i[axis + 1 :]], name=f"split{k}",
            rule="elementwise",
        )

    return [piece(k, s) for k, s in enumerate(starts)]


@register("cumsum")
def lower_cumsum(call):
    """Running sum: element i sums the inputs at positions r <= i (r < i exclusive; from the end reversed)."""
    x = call.args[0]
    shape = call.shape()
    axis = call.attrs["axis"] % len(shape)
    exclusive, reverse = call.attrs["exclusive"], call.attrs["reverse"]
    acc = _acc(dtype_of(x))
    r = te.reduce_axis((0, shape[axis]), "r")

    def f(*idx):
        i = idx[axis]
        if reverse:
            keep = r > i if exclusive else r >= i
        else:
            keep = r < i if exclusive else r <= i
        return te.sum(tirx.Select(keep, x[idx[:axis] + (r,) + idx[axis + 1:]].astype(acc), const(0, acc)), axis=r)

    total = te.compute(shape, f, name="cumsum", attrs={"sg.rule": "reduction"})
    if dtype_of(total) == call.dtype():
        return total
    return _inject(call, lambda *i: down(total[i], call.dtype()), name="finish")


@register("trilu")
def lower_trilu(call):
    """Keep one triangle of the last two axes, zero the rest."""
    x = call.args[0]
    k, upper, zero = call.attrs["k"], call.attrs["upper"], const(0, call.dtype())

    def f(*idx):
        offset = idx[-1] - idx[-2]
        keep = offset >= k if upper else offset <= k
        return tirx.Select(keep, x[idx], zero)

    return _inject(call, f)


@register("slice")
def lower_slice(call):
    x = call.args[0]
    shape = tuple(dims(x))
    index, _ = _slices(shape, call.attrs["starts"], call.attrs["ends"], call.attrs["axes"], call.attrs["steps"])
    # an axis left whole may be dynamic (a batch or sequence dim beside merge-linears' sliced last axis)
    ranges = [(0, d, 1) if s == slice(None) else s.indices(d) for s, d in zip(index, shape)]
    return _inject(call, lambda *i: x[tuple(start + v * step for v, (start, _, step) in zip(i, ranges))])


@register("gather")
def lower_gather(call):
    data, indices = call.args
    axis = call.attrs["axis"] % len(data.shape)
    rank_i = len(indices.shape)
    pos = positions(call, 1, dims(data)[axis], f"gather axis {axis}")

    def f(*i):
        return data[i[:axis] + (pos(*i[axis : axis + rank_i]),) + i[axis + rank_i :]]

    return _inject(call, f)


@register("pad")
def lower_pad(call):
    x = call.args[0]
    shape = tuple(dims(x))
    mode = call.attrs["mode"]
    widths = _pad_widths(shape, call.attrs["pads"], mode)
    lows = [max(-b, 0) for b, _ in widths]
    highs = [d + min(e, 0) for d, (_, e) in zip(shape, widths)]
    fill = const(call.attrs["value"], dtype_of(x))

    def f(*i):
        src = [v - b for v, (b, _) in zip(i, widths)]
        if mode == "constant":
            inside = tirx.const(True, "bool")
            for s, lo, hi in zip(src, lows, highs):
                inside = tirx.And(inside, tirx.And(s >= lo, s < hi))
            return tirx.if_then_else(inside, x[tuple(tirx.max(tirx.min(s, d - 1), 0) for s, d in zip(src, shape))], fill)
        fixed = []
        for s, lo, hi in zip(src, lows, highs):
            if mode == "edge":
                fixed.append(tirx.max(tirx.min(s, hi - 1), lo))
            else:  # reflect about the first and last kept elements
                s = tirx.Select(s < lo, 2 * lo - s, s)
                fixed.append(tirx.Select(s >= hi, 2 * (hi - 1) - s, s))
        return x[tuple(fixed)]

    return _inject(call, f)

