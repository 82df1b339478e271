"""Ops that index with data beyond ``gather``: element gathers and scatters, and one-hot.

Every index read from data follows the rule of :func:`slimgraph.ir.ops.shape.wrap_indices`
(docs/ops.md, "Indices read from data"): negatives count from the end, and anything
outside ``[-size, size)`` raises IndexOutOfRangeError. Shapes the other axes
would overrun are rejected statically, so only the data can be out of range.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir.registry import get_op
    >>> data = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    >>> get_op("gather_elements").impl(data, np.array([[1, 0], [-1, 1]]), axis=1)
    array([[2., 1.],
           [4., 4.]], dtype=float32)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from slimgraph.errors import GraphError
from slimgraph.ir.ops.shape import _axis, _index_dtype, wrap_indices
from slimgraph.ir.registry import Attr, In, define_op, elementwise_flops
from slimgraph.ir.types import format_shape

#: How a scatter combines an update with what is already there ("none" replaces it).
REDUCTIONS = ("none", "add", "mul", "max", "min")

_UFUNCS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _fits(inner: Sequence, outer: Sequence, skip: int, what: str) -> None:
    """Every known dim of ``inner`` but ``skip`` is at most ``outer``'s: element ops read
    (or write) the data at the indices' own positions on the other axes."""
    if len(inner) != len(outer):
        raise GraphError(f"{what} {format_shape(inner)} must have the rank of the data {format_shape(outer)}")
    for axis, (a, b) in enumerate(zip(inner, outer)):
        if axis == skip:
            continue
        if isinstance(a, int) and isinstance(b, int):
            if a > b:
                raise GraphError(
                    f"{what} {format_shape(inner)} is larger than the data {format_shape(outer)} on axis {axis}"
                )
        elif a != b and a != 1:
            raise GraphError(f"{what} {format_shape(inner)} must match the data {format_shape(outer)} on axis {axis}")


def _grid(indices: np.ndarray, axis: int, size: int, what: str) -> tuple:
    """The full numpy index of each entry of ``indices`` (checked along ``axis``)."""
    grid = list(np.indices(indices.shape, sparse=True))
    grid[axis] = wrap_indices(indices, size, what)
    return tuple(grid)


# ---------------------------------------------------------------------------
# gather_elements


def _infer_gather_elements(types, attrs):
    data, indices = types
    _index_dtype(indices)
    axis = _axis(attrs["axis"], data.rank)
    _fits(indices.shape, data.shape, axis, "indices")
    return [data.with_shape(indices.shape)]


def _gather_elements(data, indices, axis):
    axis = _axis(axis, data.ndim)
    return data[_grid(indices, axis, data.shape[axis], f"gather_elements axis {axis}")]


define_op(
    "gather_elements",
    inputs=[In("data"), In("indices", doc="i32 or i64, the data's rank; negative entries count from the end")],
    attrs=[Attr("axis", "int", default=0, doc="the axis indexed")],
    infer=_infer_gather_elements,
    impl=_gather_elements,
    category="injective",
    doc="ONNX GatherElements, torch.gather: out[i][j] = data[indices[i][j]][j] (axis 0).",
)


# ---------------------------------------------------------------------------
# scatter_elements and scatter_nd


def _scatter(data, where: tuple, updates, reduction: str):
    out = data.copy()
    if reduction == "none":
        out[where] = updates  # duplicate targets: the last update wins
    else:
        _UFUNCS[reduction].at(out, where, updates)
    return out


def _infer_scatter_elements(types, attrs):
    data, indices, updates = types
    _index_dtype(indices)
    axis = _axis(attrs["axis"], data.rank)
    if updates.dtype != data.dtype or updates.shape != indices.shape:
        raise GraphError(f"updates {updates} must be {data.with_shape(indices.shape)}: the indices' shape, "
                         "the data's dtype")
    _fits(indices.shape, data.shape, axis, "indices")
    return [data]


def _scatter_elements(data, indices, updates, axis, reduction):
    axis = _axis(axis, data.ndim)
    where = _grid(indices, axis, data.shape[axis], f"scatter_elements axis {axis}")
    return _scatter(data, where, updates, reduction)


_REDUCTION = Attr("reduction", "str", default="none", choices=REDUCTIONS,
                  doc="how an update combines with the value there; none replaces it")

define_op(
    "scatter_elements",
    inputs=[In("data"), In("indices", doc="i32 or i64, the data's rank"), In("updates", doc="the indices' shape")],
    attrs=[Attr("axis", "int", default=0, doc="the axis indexed"), _REDUCTION],
    infer=_infer_scatter_elements,
    impl=_scatter_elements,
    flops=lambda ins, outs, attrs: 0 if attrs["reduction"] == "none" else ins[2].numel(),
    category="opaque",  # an output element is not a function of its index: a kernel of its own
    doc="ONNX ScatterElements, torch scatter/scatter_add/scatter_reduce: a copy of data with "
        "out[indices[i][j]][j] = f(out[...], updates[i][j]) (axis 0).",
)


def _infer_scatter_nd(types, attrs):
    data, indices, updates = types
    _index_dtype(indices)
    depth = indices.shape[-1] if indices.rank else None
    if not isinstance(depth, int) or not 1 <= depth <= data.rank:
        raise GraphError(f"indices {indices} must end in a known axis of 1 to {data.rank} coordinates")
    want = indices.shape[:-1] + data.shape[depth:]
    if updates.dtype != data.dtype or updates.shape != want:
        raise GraphError(f"updates {updates} must be {data.with_shape(want)}")
    return [data]


def _scatter_nd(data, indices, updates, reduction):
    depth = indices.shape[-1]
    where = tuple(
        wrap_indices(indices[..., j], data.shape[j], f"scatter_nd axis {j}") for j in range(depth)
    )
    return _scatter(data, where, updates, reduction)


define_op(
    "scatter_nd",
    inputs=[
        In("data"),
        In("indices", doc="i32 or i64 [..., k]: each row the coordinates of the first k axes"),
        In("updates", doc="indices.shape[:-1] + data.shape[k:]"),
    ],
    attrs=[_REDUCTION],
    infer=_infer_scatter_nd,
    impl=_scatter_nd,
    flops=lambda ins, outs, attrs: 0 if attrs["reduction"] == "none" else ins[2].numel(),
    category="opaque",  # an output element is not a function of its index: a kernel of its own
    doc="ONNX ScatterND: a copy of data with out[indices[i]] = f(out[indices[i]], updates[i]).",
)


# ---------------------------------------------------------------------------
# one_hot


def _infer_one_hot(types, attrs):
    indices, values = types
    _index_dtype(indices)
    if values.shape != (2,):
        raise GraphError(f"values must be [off, on] (2 entries), got {values}")
    if attrs["depth"] < 1:
        raise GraphError(f"depth={attrs['depth']} must be positive")
    axis = _axis(attrs["axis"], indices.rank + 1)
    return [values.with_shape(indices.shape[:axis] + (attrs["depth"],) + indices.shape[axis:])]


def _one_hot(indices, values, depth, axis):
    axis = _axis(axis, indices.ndim + 1)
    idx = indices.astype(np.int64)
    idx = np.where(idx < 0, idx + depth, idx)  # still out of range if below -depth: every class is off
    classes = np.arange(depth).reshape((depth,) + (1,) * (indices.ndim - axis))
    return np.where(np.expand_dims(idx, axis) == classes, values[1], values[0]).astype(values.dtype)


define_op(
    "one_hot",
    inputs=[In("indices", doc="i32 or i64 classes; negative entries count from the end"),
            In("values", doc="[off, on]: the output's dtype and its two values")],
    attrs=[Attr("depth", "int", doc="the number of classes"),
           Attr("axis", "int", default=-1, doc="the new axis of the classes in the output")],
    infer=_infer_one_hot,
    impl=_one_hot,
    flops=elementwise_flops,
    category="injective",
    doc="ONNX OneHot: on where the class is the index, off elsewhere; an index outside "
        "[-depth, depth) gives all off (no memory is read by index).",
)
