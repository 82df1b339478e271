"""Reductions and injective (data-movement) ops, with ONNX semantics.

Every shape rule is written once over dims (ints or symbols such as ``N``) and
serves both the type inference and the numpy reference, which calls it with
the array's concrete shape; so the two cannot disagree. A rule that would need
a symbolic sum (concatenating ``N`` and ``3``) raises GraphError instead of
guessing.

Example::

    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", ("N", 16, 4, 4)))
    >>> str(g.call("reshape", x, shape=(0, -1)).type)
    'f32[N,256]'
    >>> str(g.call("reduce_mean", x, axes=(2, 3), keepdims=False).type)
    'f32[N,16]'
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from slimgraph.errors import GraphError, IndexOutOfRangeError
from slimgraph.ir.registry import Attr, In, define_op, require_float
from slimgraph.ir.types import (
    Dim,
    DType,
    TensorType,
    broadcast_shapes,
    concrete,
    dim_div,
    dim_mul,
    format_shape,
    normalize_axis,
    numel,
)

#: Slice bounds at least this large (in magnitude) mean "to the end of the axis",
#: whatever its length: exporters write INT32_MAX, INT64_MAX or sys.maxsize.
HUGE = 2**31 - 1


# ---------------------------------------------------------------------------
# Axis and dim helpers


def _axis(axis: int, rank: int, attr: str = "axis") -> int:
    if rank == 0:
        raise GraphError(f"{attr}={axis}: a scalar has no axes")
    return normalize_axis(axis, rank, attr)


def _axes(axes: Sequence[int], rank: int, attr: str = "axes") -> tuple[int, ...]:
    """Normalize a list of distinct axes of a tensor of rank ``rank``."""
    out = tuple(_axis(a, rank, f"{attr}={tuple(axes)}: axis") for a in axes)
    for i, a in enumerate(out):
        if a in out[:i]:
            raise GraphError(f"{attr}={tuple(axes)} names axis {a} twice")
    return out


def _dim_add(a: Dim, b: Dim) -> Dim | None:
    """Sum of two dims when it is a dim (``N*2 + N == N*3``), else None."""
    if a == 0 or b == 0:
        return b if a == 0 else a
    coeff_a, coeff_b = concrete(a), concrete(b)  # symbols taken as 1 leave the factor
    symbols = dim_div(a, coeff_a)
    if symbols != dim_div(b, coeff_b):
        return None
    return dim_mul(symbols, coeff_a + coeff_b)


def _same_dtype(types: Sequence[TensorType]) -> None:
    for i, t in enumerate(types[1:], 1):
        if t.dtype != types[0].dtype:
            raise GraphError(f"input {i} is {t} but input 0 is {types[0]}: dtypes must match")


def _shape(x: np.ndarray) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


# ---------------------------------------------------------------------------
# Reductions


def _reduced_shape(shape: tuple, axes: Sequence[int], keepdims: bool) -> tuple[tuple, tuple[int, ...]]:
    """The output shape and the normalized reduced axes (all of them for ``()``)."""
    reduced = _axes(axes, len(shape)) or tuple(range(len(shape)))
    out = tuple(1 if i in reduced else d for i, d in enumerate(shape) if keepdims or i not in reduced)
    return out, reduced


def _accumulator(dtype: np.dtype) -> np.dtype:
    # Narrow floats and ints lose precision or overflow when summed in place;
    # the result is cast back to the input dtype at the end.
    return np.dtype(np.float64 if np.issubdtype(dtype, np.floating) or dtype == DType.bfloat16.numpy else np.int64)


def _mean(a: np.ndarray, axis, keepdims: bool) -> np.ndarray:
    total = np.sum(a, axis=axis, keepdims=keepdims)
    count = a.size // total.size if total.size else 1
    with np.errstate(invalid="ignore"):  # the mean of nothing is NaN, as in numpy and ONNX
        return total / count


def _define_reduction(name: str, fn, doc: str, *, accumulate: bool, kind: str) -> None:
    """Declare a reduce_* op. ``kind``: "float" (float inputs only), "number"
    (no bool) or "any"; ``accumulate`` computes in a wide dtype first."""

    def infer(types, attrs):
        (t,) = types
        if kind == "float":
            require_float(t)
        elif kind == "number" and t.dtype is DType.bool:
            raise GraphError(f"input must be a numeric tensor, got {t}")
        shape, reduced = _reduced_shape(t.shape, attrs["axes"], attrs["keepdims"])
        if not accumulate:
            for axis in reduced:
                if t.shape[axis] == 0:
                    raise GraphError(f"cannot reduce axis {axis} of {t}: it is empty and {name} has no identity")
        return [t.with_shape(shape)]

    def impl(x, axes, keepdims):
        data = x.astype(_accumulator(x.dtype)) if accumulate else x
        result = fn(data, axis=tuple(axes) or None, keepdims=keepdims)
        return np.asarray(result).astype(x.dtype, copy=False)

    define_op(
        name,
        inputs=[In("x")],
        attrs=[
            Attr("axes", "ints", default=(), doc="axes to reduce; () reduces all"),
            Attr("keepdims", "bool", default=True, doc="keep reduced axes as size 1"),
        ],
        infer=infer,
        impl=impl,
        flops=lambda ins, outs, attrs: ins[0].numel(),
        category="reduction",
        doc=doc,
    )


_define_reduction("reduce_sum", np.sum, "Sum over axes.", accumulate=True, kind="number")
_define_reduction("reduce_mean", _mean, "Mean over axes.", accumulate=True, kind="float")
_define_reduction("reduce_prod", np.prod, "Product over axes.", accumulate=True, kind="number")
_define_reduction("reduce_max", np.max, "Maximum over axes.", accumulate=False, kind="any")
_define_reduction("reduce_min", np.min, "Minimum over axes.", accumulate=False, kind="any")


def _define_arg_reduction(name: str, fn, doc: str) -> None:
    def infer(types, attrs):
        (t,) = types
        axis = _axis(attrs["axis"], t.rank)
        if t.shape[axis] == 0:
            raise GraphError(f"axis={attrs['axis']}: axis {axis} of {t} is empty")
        shape, _ = _reduced_shape(t.shape, (axis,), attrs["keepdims"])
        return [TensorType(DType.int64, shape)]

    def impl(x, axis, keepdims):
        return fn(x, axis=axis, keepdims=keepdims).astype(np.int64, copy=False)

    define_op(
        name,
        inputs=[In("x")],
        attrs=[
            Attr("axis", "int", default=0, doc="the axis searched"),
            Attr("keepdims", "bool", default=True, doc="keep the axis as size 1"),
        ],
        infer=infer,
        impl=impl,
        flops=lambda ins, outs, attrs: ins[0].numel(),
        category="reduction",
        doc=doc,
    )


def _infer_top_k(types, attrs):
    (t,) = types
    axis = _axis(attrs["axis"], t.rank)
    size, k = t.shape[axis], attrs["k"]
    if t.dtype is DType.bool or t.dtype is DType.int4:
        raise GraphError(f"x must be a float or 8/32/64-bit integer tensor, got {t}")
    if k < 1 or (isinstance(size, int) and k > size):
        raise GraphError(f"k={k} must be between 1 and the {size} elements of axis {axis} of {t}")
    shape = t.shape[:axis] + (k,) + t.shape[axis + 1 :]
    return [t.with_shape(shape), TensorType(DType.int64, shape)]


def _top_k(x, *, k, axis, largest):
    # a stable sort on the negated key keeps equal values in index order, as ONNX asks
    key = x.astype(np.float64) if x.dtype.kind in "iu" or x.dtype == np.float64 else x.astype(np.float32, copy=False)
    order = np.argsort(-key if largest else key, axis=axis, kind="stable")
    index = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, index, axis=axis), index.astype(np.int64)


define_op(
    "top_k",
    inputs=[In("x")],
    attrs=[
        Attr("k", "int", doc="how many elements to keep"),
        Attr("axis", "int", default=-1, doc="the axis searched"),
        Attr("largest", "bool", default=True, doc="the largest (else the smallest) k"),
    ],
    infer=_infer_top_k,
    impl=_top_k,
    flops=lambda ins, outs, attrs: ins[0].numel() * concrete(ins[0].shape[attrs["axis"]]),
    category="reduction",
    doc="The k largest (or smallest) elements along an axis, sorted, and their int64 indices; equal values keep "
    "index order (ONNX TopK, torch.topk). FLOPs: one comparison per pair of elements along the axis.",
)


_define_arg_reduction("argmax", np.argmax, "Index (int64) of the first maximum along an axis.")
_define_arg_reduction("argmin", np.argmin, "Index (int64) of the first minimum along an axis.")


# ---------------------------------------------------------------------------
# Scans and triangles


def _infer_cumsum(types, attrs):
    (t,) = types
    if t.dtype in (DType.bool, DType.int4):
        raise GraphError(f"input must be a numeric tensor, got {t} (cast a bool mask to an integer first)")
    _axis(attrs["axis"], t.rank)
    return [t]


def _cumsum(x: np.ndarray, axis: int, exclusive: bool, reverse: bool) -> np.ndarray:
    data = x.astype(_accumulator(x.dtype))
    if reverse:
        data = np.flip(data, axis)
    total = np.cumsum(data, axis=axis)
    if exclusive:
        total = total - data
    if reverse:
        total = np.flip(total, axis)
    return total.astype(x.dtype)


define_op(
    "cumsum",
    inputs=[In("x")],
    attrs=[
        Attr("axis", "int", doc="the axis summed along"),
        Attr("exclusive", "bool", False, doc="each sum leaves out its own element"),
        Attr("reverse", "bool", False, doc="sum from the end of the axis"),
    ],
    infer=_infer_cumsum,
    impl=_cumsum,
    flops=lambda ins, outs, attrs: outs[0].numel(),
    category="reduction",
    doc="Running sum along an axis (ONNX CumSum, torch.cumsum); narrow types accumulate wide.",
)


def _infer_trilu(types, attrs):
    (t,) = types
    if t.rank < 2:
        raise GraphError(f"trilu needs a tensor of rank 2 or more, got {t}")
    return [t]


def _trilu(x: np.ndarray, k: int, upper: bool) -> np.ndarray:
    return np.triu(x, k) if upper else np.tril(x, k)


define_op(
    "trilu",
    inputs=[In("x")],
    attrs=[Attr("k", "int", 0, doc="the diagonal kept: 0 main, >0 above, <0 below"),
           Attr("upper", "bool", True, doc="keep the upper triangle (else the lower)")],
    infer=_infer_trilu,
    impl=_trilu,
    category="injective",
    doc="Zeroes all but the upper (j - i >= k) or lower (j - i <= k) triangle of the last two axes (ONNX Trilu).",
)


# ---------------------------------------------------------------------------
# Reshapes


def _reshape_dims(shape: tuple, target: Sequence[int]) -> tuple:
    """ONNX Reshape: 0 copies the input dim at that position, -1 takes the rest."""
    spec = f"shape={tuple(target)}"
    if list(target).count(-1) > 1:
        raise GraphError(f"{spec} has more than one -1")
    out: list = []
    for i, d in enumerate(target):
        if d < -1:
            raise GraphError(f"{spec}: entry {d} at position {i} is negative (only -1 is allowed)")
        if d == 0:
            if i >= len(shape):
                raise GraphError(
                    f"{spec}: 0 at position {i} copies an input dim, "
                    f"but the input {format_shape(shape)} has rank {len(shape)}"
                )
            d = shape[i]
        out.append(d)
    total = numel(shape)
    if -1 in out:
        known = numel(d for d in out if d != -1)
        inferred = dim_div(total, known) if known != 0 else None
        if inferred is None:
            raise GraphError(
                f"cannot reshape {format_shape(shape)} to {spec}: its {total} elements do not divide "
                f"into {format_shape(d for d in out if d != -1)} (the -1 must be a whole dim)"
            )
        out[out.index(-1)] = inferred
    elif numel(out) != total:
        raise GraphError(
            f"cannot reshape {format_shape(shape)} to {spec}: element count mismatch ({total} vs {numel(out)})"
        )
    return tuple(out)


define_op(
    "reshape",
    inputs=[In("x")],
    attrs=[Attr("shape", "ints", doc="target shape; 0 copies the input dim, -1 is inferred")],
    infer=lambda types, attrs: [types[0].with_shape(_reshape_dims(types[0].shape, attrs["shape"]))],
    impl=lambda x, shape: x.reshape(_reshape_dims(_shape(x), shape)),
    category="injective",
    doc="Reshape with ONNX rules (0 copies, -1 infers).",
)


def _flatten_dims(shape: tuple, axis: int) -> tuple:
    rank = len(shape)
    if not -rank <= axis <= rank:
        raise GraphError(f"axis={axis} is out of range for rank {rank} (valid: {-rank}..{rank})")
    axis = axis + rank if axis < 0 else axis
    return numel(shape[:axis]), numel(shape[axis:])


define_op(
    "flatten",
    inputs=[In("x")],
    attrs=[Attr("axis", "int", default=1, doc="dims before it form the rows, the rest the columns")],
    infer=lambda types, attrs: [types[0].with_shape(_flatten_dims(types[0].shape, attrs["axis"]))],
    impl=lambda x, axis: x.reshape(_flatten_dims(_shape(x), axis)),
    category="injective",
    doc="ONNX Flatten: a 2-d result [prod(dims[:axis]), prod(dims[axis:])].",
)


def _perm(perm: Sequence[int], rank: int) -> tuple[int, ...]:
    if not perm:
        return tuple(reversed(range(rank)))
    if len(perm) != rank:
        raise GraphError(f"perm={tuple(perm)} is not a permutation: it has {len(perm)} entries for rank {rank}")
    return _axes(perm, rank, "perm")


define_op(
    "transpose",
    inputs=[In("x")],
    attrs=[Attr("perm", "ints", default=(), doc="output axis i is input axis perm[i]; () reverses")],
    infer=lambda types, attrs: [
        types[0].with_shape(types[0].shape[i] for i in _perm(attrs["perm"], types[0].rank))
    ],
    impl=lambda x, perm: np.transpose(x, _perm(perm, x.ndim)),
    category="injective",
    doc="Permutes the axes.",
)


def _squeeze_axes(shape: tuple, axes: Sequence[int]) -> tuple[int, ...]:
    if not axes:
        if any(isinstance(d, str) for d in shape):
            # A symbol may be 1 at run time; squeezing it then would change the rank.
            raise GraphError(f"axes=() on {format_shape(shape)} is ambiguous with symbolic dims: give the axes")
        return tuple(i for i, d in enumerate(shape) if d == 1)
    out = _axes(axes, len(shape))
    for axis in out:
        if shape[axis] != 1:
            raise GraphError(f"axes={tuple(axes)}: axis {axis} has size {shape[axis]}, not 1")
    return out


def _infer_squeeze(types, attrs):
    (t,) = types
    drop = _squeeze_axes(t.shape, attrs["axes"])
    return [t.with_shape(d for i, d in enumerate(t.shape) if i not in drop)]


define_op(
    "squeeze",
    inputs=[In("x")],
    attrs=[Attr("axes", "ints", default=(), doc="size-1 axes to remove; () removes all")],
    infer=_infer_squeeze,
    impl=lambda x, axes: np.squeeze(x, _squeeze_axes(_shape(x), axes)),
    category="injective",
    doc="Removes size-1 axes.",
)


def _infer_unsqueeze(types, attrs):
    (t,) = types
    rank = t.rank + len(attrs["axes"])
    new = _axes(attrs["axes"], rank)
    dims = iter(t.shape)
    return [t.with_shape(1 if i in new else next(dims) for i in range(rank))]


define_op(
    "unsqueeze",
    inputs=[In("x")],
    attrs=[Attr("axes", "ints", doc="positions of the new size-1 axes in the output")],
    infer=_infer_unsqueeze,
    impl=lambda x, axes: np.expand_dims(x, tuple(axes)),
    category="injective",
    doc="Inserts size-1 axes.",
)


def _expand_dims(shape: tuple, target: Sequence[int]) -> tuple:
    if any(d < 0 for d in target):
        raise GraphError(f"shape={tuple(target)} has a negative entry")
    try:
        return broadcast_shapes(shape, tuple(target))
    except GraphError as exc:
        raise GraphError(f"shape={tuple(target)} does not broadcast with the input: {exc}") from None


define_op(
    "expand",
    inputs=[In("x")],
    attrs=[Attr("shape", "ints", doc="broadcast against the input shape (bidirectional)")],
    infer=lambda types, attrs: [types[0].with_shape(_expand_dims(types[0].shape, attrs["shape"]))],
    impl=lambda x, shape: np.broadcast_to(x, _expand_dims(_shape(x), shape)),
    category="injective",
    doc="ONNX Expand: broadcasts the input and the shape against each other.",
)


def _tile_dims(shape: tuple, repeats: Sequence[int]) -> tuple:
    if len(repeats) != len(shape):
        raise GraphError(f"repeats={tuple(repeats)} has {len(repeats)} entries but the input has rank {len(shape)}")
    if any(r < 0 for r in repeats):
        raise GraphError(f"repeats={tuple(repeats)} has a negative entry")
    return tuple(dim_mul(d, r) for d, r in zip(shape, repeats))


define_op(
    "tile",
    inputs=[In("x")],
    attrs=[Attr("repeats", "ints", doc="copies along each axis")],
    infer=lambda types, attrs: [types[0].with_shape(_tile_dims(types[0].shape, attrs["repeats"]))],
    impl=lambda x, repeats: np.tile(x, tuple(repeats)),
    category="injective",
    doc="Repeats the input along each axis.",
)


# ---------------------------------------------------------------------------
# Joining and cutting


def _infer_concat(types, attrs):
    _same_dtype(types)
    first = types[0]
    axis = _axis(attrs["axis"], first.rank)
    length: Dim = 0
    for i, t in enumerate(types):
        if t.rank != first.rank or any(a != b for j, (a, b) in enumerate(zip(t.shape, first.shape)) if j != axis):
            raise GraphError(
                f"input {i} is {t} but input 0 is {first}: all dims but axis={attrs['axis']} must match"
            )
        total = _dim_add(length, t.shape[axis])
        if total is None:
            raise GraphError(
                f"cannot concat on symbolic axis {axis}: {length} + {t.shape[axis]} is not a single dim"
            )
        length = total
    return [first.with_shape(length if j == axis else d for j, d in enumerate(first.shape))]


define_op(
    "concat",
    inputs=[In("xs", variadic=True)],
    attrs=[Attr("axis", "int", doc="the axis joined along")],
    infer=_infer_concat,
    impl=lambda *xs, axis: np.concatenate(xs, axis=axis),
    category="injective",
    doc="Joins tensors along an axis.",
)


def _split_points(shape: tuple, axis: int, sizes: Sequence[int]) -> tuple[int, list[int]]:
    """The normalized axis and the offsets where the pieces start (after the first)."""
    axis = _axis(axis, len(shape))
    spec = f"sizes={tuple(sizes)}"
    if not sizes:
        raise GraphError(f"{spec} is empty: split needs at least one output")
    if any(s < 0 for s in sizes):
        raise GraphError(f"{spec} has a negative entry")
    if isinstance(shape[axis], str):
        raise GraphError(f"cannot split on symbolic axis {axis} (size {shape[axis]}) into {spec}")
    if sum(sizes) != shape[axis]:
        raise GraphError(f"{spec} sums to {sum(sizes)} but axis {axis} has size {shape[axis]}")
    return axis, np.cumsum(sizes[:-1]).tolist()


def _infer_split(types, attrs):
    (t,) = types
    axis, _ = _split_points(t.shape, attrs["axis"], attrs["sizes"])
    return [t.with_shape(s if j == axis else d for j, d in enumerate(t.shape)) for s in attrs["sizes"]]


def _split(x, axis, sizes):
    axis, points = _split_points(_shape(x), axis, sizes)
    return tuple(np.split(x, points, axis=axis))


define_op(
    "split",
    inputs=[In("x")],
    attrs=[
        Attr("axis", "int", default=0, doc="the axis cut"),
        Attr("sizes", "ints", doc="length of each output along the axis; they sum to the axis length"),
    ],
    infer=_infer_split,
    impl=_split,
    category="injective",
    doc="Cuts a tensor into pieces along an axis: one output per size.",
)


def _slice_range(dim: Dim, axis: int, start: int, end: int, step: int) -> tuple[slice, Dim]:
    """ONNX Slice on one axis: the numpy slice and the resulting length."""
    if isinstance(dim, str):
        # Without the length only a full pass (forward or backward) is known.
        forward = step == 1 and (start == 0 or start <= -HUGE) and end >= HUGE
        backward = step == -1 and (start == -1 or start >= HUGE) and end <= -HUGE
        if not (forward or backward):
            raise GraphError(
                f"cannot slice symbolic axis {axis} (size {dim}) with start={start}, end={end}, step={step}: "
                f"only the whole axis (end >= {HUGE}) keeps a known length"
            )
        return slice(None, None, step), dim
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    # An end of -1 (before index 0, for a negative step) is written as None for numpy.
    return slice(start, end if end >= 0 else None, step), len(range(start, end, step))


def _slices(shape: tuple, starts, ends, axes, steps) -> tuple[tuple[slice, ...], tuple]:
    """The numpy index and the output shape of an ONNX Slice."""
    if len(ends) != len(starts):
        raise GraphError(f"starts={tuple(starts)} and ends={tuple(ends)} differ in length")
    if not axes and len(starts) > len(shape):
        raise GraphError(f"starts={tuple(starts)} has {len(starts)} entries but the input has rank {len(shape)}")
    axes = _axes(axes or range(len(starts)), len(shape))
    if len(axes) != len(starts):
        raise GraphError(f"axes={tuple(axes)} has {len(axes)} entries but starts has {len(starts)}")
    steps = tuple(steps) or (1,) * len(starts)
    if len(steps) != len(starts):
        raise GraphError(f"steps={steps} has {len(steps)} entries but starts has {len(starts)}")
    if 0 in steps:
        raise GraphError(f"steps={steps} has a 0 step")
    index = [slice(None)] * len(shape)
    out = list(shape)
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[axis], out[axis] = _slice_range(shape[axis], axis, start, end, step)
    return tuple(index), tuple(out)


def _slice(x, starts, ends, axes, steps):
    index, _ = _slices(_shape(x), starts, ends, axes, steps)
    return x[index]


define_op(
    "slice",
    inputs=[In("x")],
    attrs=[
        Attr("starts", "ints", doc="first index per sliced axis (negative counts from the end)"),
        Attr("ends", "ints", doc="end (exclusive) per sliced axis; clamped, so huge means the end"),
        Attr("axes", "ints", default=(), doc="the sliced axes; () means 0..len(starts)-1"),
        Attr("steps", "ints", default=(), doc="stride per sliced axis, may be negative; () means 1s"),
    ],
    infer=lambda types, attrs: [
        types[0].with_shape(
            _slices(types[0].shape, attrs["starts"], attrs["ends"], attrs["axes"], attrs["steps"])[1]
        )
    ],
    impl=_slice,
    category="injective",
    doc="ONNX Slice: strided ranges with clamping and negative steps.",
)


def _index_dtype(t: TensorType, what: str = "indices") -> None:
    """Indices read from data are i32 or i64."""
    if t.dtype not in (DType.int32, DType.int64):
        raise GraphError(f"{what} must be i32 or i64, got {t}")


def _infer_gather(types, attrs):
    data, indices = types
    _index_dtype(indices)
    axis = _axis(attrs["axis"], data.rank)
    return [data.with_shape(data.shape[:axis] + indices.shape + data.shape[axis + 1 :])]


def wrap_indices(indices: np.ndarray, size: int, what: str) -> np.ndarray:
    """``indices`` (int64) with negative entries counted from the end of an axis of
    ``size``, as ONNX and torch do; any entry outside ``[-size, size)`` raises
    IndexOutOfRangeError naming ``what``. Every op that indexes with data reads its
    indices through this one rule, and the backends check the same bounds."""
    idx = np.asarray(indices).astype(np.int64)
    bad = (idx < -size) | (idx >= size)
    if bad.any():
        raise IndexOutOfRangeError(
            f"{what}: index {int(idx[bad].flat[0])} is out of range for an axis of size {size} "
            f"({int(bad.sum())} of {idx.size} indices outside [{-size}, {size}))"
        )
    return np.where(idx < 0, idx + size, idx)


def _gather(data, indices, axis):
    axis = _axis(axis, data.ndim)
    return np.take(data, wrap_indices(indices, data.shape[axis], f"gather axis {axis}"), axis=axis)


define_op(
    "gather",
    inputs=[In("data"), In("indices", doc="i32 or i64; negative entries count from the end")],
    attrs=[Attr("axis", "int", default=0, doc="the axis indexed")],
    infer=_infer_gather,
    impl=_gather,
    category="injective",
    doc="ONNX Gather: picks entries along an axis by index.",
)


def _pad_widths(shape: tuple, pads: Sequence[int], mode: str) -> list[tuple[int, int]]:
    """(begin, end) per axis, checked; negative values crop."""
    rank = len(shape)
    spec = f"pads={tuple(pads)}"
    if len(pads) != 2 * rank:
        raise GraphError(f"{spec} has {len(pads)} entries; a rank-{rank} input needs {2 * rank} (begins, then ends)")
    widths = list(zip(pads[:rank], pads[rank:]))
    for axis, (dim, (begin, end)) in enumerate(zip(shape, widths)):
        if isinstance(dim, str):
            if begin + end != 0:
                raise GraphError(
                    f"cannot pad symbolic axis {axis} (size {dim}) by {spec}: the length would be {dim}{begin + end:+d}"
                )
            continue
        kept = dim + min(begin, 0) + min(end, 0)
        if kept < 0:
            raise GraphError(f"{spec} crops axis {axis} of size {dim} by more than its length")
        grow = max(begin, end, 0)
        if mode == "reflect" and grow >= max(kept, 1):
            raise GraphError(f"{spec}: mode='reflect' needs pads smaller than axis {axis} (size {kept})")
        if mode == "edge" and grow and not kept:
            raise GraphError(f"{spec}: mode='edge' cannot pad the empty axis {axis}")
    return widths


def _infer_pad(types, attrs):
    (t,) = types
    widths = _pad_widths(t.shape, attrs["pads"], attrs["mode"])
    return [t.with_shape(d if isinstance(d, str) else d + b + e for d, (b, e) in zip(t.shape, widths))]


def _pad(x, pads, mode, value):
    widths = _pad_widths(_shape(x), pads, mode)
    # Crop first, then pad what is left: ONNX Runtime's reading of negative pads.
    kept = x[tuple(slice(-min(b, 0), d + min(e, 0)) for d, (b, e) in zip(x.shape, widths))]
    grow = [(max(b, 0), max(e, 0)) for b, e in widths]
    if mode == "constant":
        return np.pad(kept, grow, mode="constant", constant_values=np.asarray(value).astype(x.dtype))
    return np.pad(kept, grow, mode=mode)


define_op(
    "pad",
    inputs=[In("x")],
    attrs=[
        Attr("pads", "ints", doc="all begins, then all ends, one per axis; negative values crop"),
        Attr("mode", "str", default="constant", choices=("constant", "reflect", "edge")),
        Attr("value", "float", default=0.0, doc="fill value of mode='constant'"),
    ],
    infer=_infer_pad,
    impl=_pad,
    category="injective",
    doc="ONNX Pad: constant, reflect or edge padding; negative pads crop.",
)

