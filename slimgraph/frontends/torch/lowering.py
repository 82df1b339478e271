"""Shared IR building blocks for the torch converters.

The same torch concept reaches the frontend under several names (``aten.view``,
``Tensor.view``, ``torch.reshape``; ``aten.convolution`` and ``nn.Conv2d``).
The converters translate their arguments and call one helper here, so each
torch concept is lowered to slimgraph ops in exactly one place.

Example::

    >>> from slimgraph.frontends.torch.context import Context
    >>> from slimgraph.ir import TensorType
    >>> ctx = Context("demo")
    >>> x = ctx.graph.add_input("x", TensorType("f32", ("N", 4, 4)))
    >>> str(reshape(ctx, x, ["N", 16]).type)
    'f32[N,16]'
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from slimgraph.errors import FrontendError
from slimgraph.frontends.torch.context import Context
from slimgraph.ir import DType, Value
from slimgraph.ir.types import normalize_axis, numel

#: Slice end meaning "to the end of the axis" (the IR clamps it).
END = 2**63 - 1


def is_value(x: Any) -> bool:
    return isinstance(x, Value)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float, bool)) and not isinstance(x, Value)


def require_value(ctx: Context, x: Any, what: str) -> Value:
    if not is_value(x):
        raise FrontendError(f"{ctx.where()}{what} must be a tensor, got {type(x).__name__} {x!r}")
    return x


def as_list(x: Any) -> list:
    """An int or a sequence of ints as a list (torch accepts both for sizes)."""
    return list(x) if isinstance(x, (list, tuple)) else [x]


def expand_param(x: Any, n: int) -> tuple[int, ...]:
    """A per-spatial-axis parameter given as one int or a list (``stride=2`` -> ``(2, 2)``)."""
    items = as_list(x)
    return tuple(int(v) for v in (items * n if len(items) == 1 else items))


def axis_of(ctx: Context, x: Value, axis: int) -> int:
    try:
        return normalize_axis(int(axis), max(x.type.rank, 1))
    except Exception as exc:
        raise FrontendError(f"{ctx.where()}{exc}") from None


# ---------------------------------------------------------------------------
# Operands, dtypes and elementwise arithmetic

_RANK = {DType.bool: 0, DType.uint8: 1, DType.int8: 1, DType.int32: 2, DType.int64: 3,
         DType.bfloat16: 4, DType.float16: 4, DType.float32: 5, DType.float64: 6}


def promote(a: DType, b: DType) -> DType:
    """The dtype torch computes ``a op b`` in (float beats int beats bool; wider wins)."""
    return a if _RANK[a] >= _RANK[b] else b


def cast(ctx: Context, x: Value, dtype: DType) -> Value:
    return x if x.type.dtype == dtype else ctx.call("cast", x, to=dtype)


def scalar_dtype(value: Any, like: DType) -> DType:
    """The dtype a Python scalar takes next to a tensor of dtype ``like``."""
    if isinstance(value, bool):
        return like
    if isinstance(value, float) and not like.is_float:
        return DType.float32
    return like


def operands(ctx: Context, *args: Any) -> list[Value]:
    """Tensors and Python scalars as Values of one dtype (scalars take the tensors' dtype)."""
    values = [a for a in args if is_value(a)]
    if not values:
        raise FrontendError(f"{ctx.where()}expected at least one tensor operand, got {args!r}")
    dtype = values[0].type.dtype
    for v in values[1:]:
        dtype = promote(dtype, v.type.dtype)
    for a in args:
        if not is_value(a):
            dtype = promote(dtype, scalar_dtype(a, dtype))
    out = []
    for a in args:
        if is_value(a):
            out.append(cast(ctx, a, dtype))
        elif a is None or not is_number(a):
            raise FrontendError(f"{ctx.where()}unsupported operand {a!r}")
        else:
            out.append(ctx.const(a, dtype))
    return out


def binary(ctx: Context, op: str, a: Any, b: Any) -> Value:
    """An elementwise binary op on tensors and/or scalars, with torch's type promotion."""
    x, y = operands(ctx, a, b)
    return ctx.call(op, x, y)


def true_divide(ctx: Context, a: Any, b: Any) -> Value:
    """torch's ``/``: integer operands divide as floats."""
    x, y = operands(ctx, a, b)
    if not x.type.dtype.is_float:
        x, y = cast(ctx, x, DType.float32), cast(ctx, y, DType.float32)
    return ctx.call("div", x, y)


def scaled(ctx: Context, x: Any, alpha: Any) -> Any:
    """``alpha * x`` for torch's ``add(x, y, alpha=...)``; no node when alpha is 1."""
    if alpha == 1:
        return x
    return x * alpha if is_number(x) else binary(ctx, "mul", x, alpha)


def prelu(ctx: Context, x: Value, weight: Value) -> Value:
    """PReLU with torch's per-channel weight [C] reshaped to broadcast over axis 1 ([C, 1, 1])."""
    if x.type.rank > 2 and weight.type.rank == 1 and weight.type.shape[0] != 1:
        weight = reshape(ctx, weight, [weight.type.shape[0]] + [1] * (x.type.rank - 2))
    return ctx.call("prelu", x, weight)


def power(ctx: Context, x: Any, exponent: Any) -> Value:
    """x ** exponent; squares and square roots of tensors are the cheaper mul and sqrt."""
    if is_value(x) and is_number(exponent) and exponent in (2, 0.5):
        return ctx.call("mul", x, x) if exponent == 2 else ctx.call("sqrt", x)
    return binary(ctx, "pow", x, exponent)


def divide(ctx: Context, a: Any, b: Any, rounding_mode: str | None = None) -> Value:
    """torch.div with rounding_mode None (true division), "trunc" or "floor"."""
    if rounding_mode is None:
        return true_divide(ctx, a, b)
    x, y = operands(ctx, a, b)
    if not x.type.dtype.is_float:
        if rounding_mode == "trunc":
            return ctx.call("div", x, y)  # the IR's integer division truncates
        raise FrontendError(f"{ctx.where()}floor division of integer tensors is not supported")
    q = ctx.call("div", x, y)
    if rounding_mode == "floor":
        return ctx.call("floor", q)
    return ctx.call("mul", ctx.call("sign", q), ctx.call("floor", ctx.call("abs", q)))


def fmod(ctx: Context, a: Any, b: Any) -> Value:
    """torch.fmod: the remainder of truncating division (its sign follows the dividend)."""
    return binary(ctx, "sub", a, binary(ctx, "mul", divide(ctx, a, b, "trunc"), b))


def compare(ctx: Context, op: str, a: Any, b: Any) -> Value:
    """``eq ne lt le gt ge`` as IR comparisons (``ne`` is ``not equal``)."""
    names = {"eq": "equal", "lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal"}
    x, y = operands(ctx, a, b)
    if op == "ne":
        return ctx.call("logical_not", ctx.call("equal", x, y))
    return ctx.call(names[op], x, y)


def clip(ctx: Context, x: Value, lo: Any = None, hi: Any = None) -> Value:
    """torch.clamp with scalar or tensor bounds."""
    if is_value(lo) or is_value(hi):
        if lo is not None:
            x = binary(ctx, "max", x, lo)
        return x if hi is None else binary(ctx, "min", x, hi)
    attrs = {}
    if lo is not None:
        attrs["min"] = float(lo)
    if hi is not None:
        attrs["max"] = float(hi)
    return ctx.call("clip", x, **attrs)


def where(ctx: Context, cond: Value, a: Any, b: Any) -> Value:
    x, y = operands(ctx, a, b)
    return ctx.call("where", cast(ctx, cond, DType.bool), x, y)


def full_like(ctx: Context, x: Value, value: Any, dtype: DType | None = None) -> Value:
    """A tensor shaped like ``x`` filled with ``value``.

    A constant when the shape is static; with a symbolic batch the shape is only
    known at run time, so it is ``where(x != 0, v, v)``, which broadcasts to
    exactly x's shape whatever x holds.
    """
    dtype = dtype or scalar_dtype(value, x.type.dtype)
    if x.type.is_static:
        return ctx.const(np.full(x.type.shape, value, dtype=dtype.numpy), dtype)
    fill = ctx.const(value, dtype)
    return ctx.call("where", cast(ctx, x, DType.bool), fill, fill)


def softplus(ctx: Context, x: Value, beta: float = 1.0, threshold: float = 20.0) -> Value:
    """torch's softplus(x, beta) = softplus(beta*x)/beta (the threshold only matters past f32 precision)."""
    if beta == 1:
        return ctx.call("softplus", x)
    return binary(ctx, "div", ctx.call("softplus", binary(ctx, "mul", x, float(beta))), float(beta))


def elu(ctx: Context, x: Value, alpha: float = 1.0, scale: float = 1.0, input_scale: float = 1.0) -> Value:
    """aten.elu covers elu (scale 1) and selu (scale = gamma)."""
    if input_scale != 1:
        x = binary(ctx, "mul", x, float(input_scale))
    if scale == 1:
        return ctx.call("elu", x, alpha=float(alpha))
    return ctx.call("selu", x, alpha=float(alpha), gamma=float(scale))


# ---------------------------------------------------------------------------
# Shapes


def sizes(ctx: Context, shape: Any) -> list:
    """A size list whose entries may be ints, IR dims or torch SymInts, as IR dims."""
    return [d if d == -1 else ctx.dim(d) for d in as_list(shape)]


def reshape(ctx: Context, x: Value, shape: Sequence[Any]) -> Value:
    """Reshape to ``shape`` (ints, -1, IR dims such as ``N`` or ``N*4``).

    The IR's reshape takes ints only, so a symbolic entry becomes 0 (copy the
    input dim) when the input has the same dim at that position, or -1 (infer)
    when it is the only unknown entry.
    """
    shape = sizes(ctx, shape)
    in_shape = x.type.shape
    out: list[int | None] = []
    for i, d in enumerate(shape):
        if isinstance(d, str):
            out.append(0 if i < len(in_shape) and in_shape[i] == d else None)
        else:
            out.append(int(d))
    unknown = [i for i, d in enumerate(out) if d is None]
    source = x.producer.inputs[0] if x.producer is not None and x.producer.op == "reshape" else None
    if len(unknown) > 1 and source is not None and list(source.type.shape) == shape:
        return source  # a view undone ([B, S, K] -> [B*S, K] -> [B, S, K]): the int form cannot say B and S
    if len(unknown) > 1 or (unknown and -1 in out):
        raise FrontendError(
            f"{ctx.where()}cannot express reshape of {x.type} to [{', '.join(map(str, shape))}] "
            "with one inferred dim"
        )
    if unknown:
        out[unknown[0]] = -1
    if len(out) == len(in_shape) and all(o == h or (o == 0 and isinstance(h, str)) for o, h in zip(out, in_shape)):
        return x
    return ctx.call("reshape", x, shape=tuple(out))


def flatten(ctx: Context, x: Value, start: int = 0, end: int = -1) -> Value:
    """torch.flatten: merge axes start..end into one."""
    rank = x.type.rank
    if rank == 0:
        return reshape(ctx, x, [1])
    start, end = axis_of(ctx, x, start), axis_of(ctx, x, end)
    if start == end:
        return x
    if start == 1 and end == rank - 1:
        return ctx.call("flatten", x, axis=1)
    shape = list(x.type.shape)
    return reshape(ctx, x, shape[:start] + [numel(shape[start : end + 1])] + shape[end + 1 :])


def expand(ctx: Context, x: Value, shape: Sequence[Any]) -> Value:
    """torch expand (-1 keeps a dim) as the IR's bidirectional expand."""
    shape = sizes(ctx, shape)
    in_shape = (1,) * (len(shape) - x.type.rank) + tuple(x.type.shape)
    target = []
    for d, have in zip(shape, in_shape):
        if d == -1 or d == have:
            target.append(1 if not isinstance(have, int) else have)
        elif isinstance(d, str):
            raise FrontendError(f"{ctx.where()}cannot expand {x.type} to a symbolic size {d}")
        else:
            target.append(int(d))
    if len(shape) == x.type.rank and all(d == -1 or d == h for d, h in zip(shape, x.type.shape)):
        return x
    return ctx.call("expand", x, shape=tuple(target))


def permute(ctx: Context, x: Value, dims: Sequence[int]) -> Value:
    perm = tuple(axis_of(ctx, x, d) for d in dims)
    if perm == tuple(range(len(perm))):
        return x
    return ctx.call("transpose", x, perm=perm)


def swap_axes(ctx: Context, x: Value, a: int, b: int) -> Value:
    perm = list(range(x.type.rank))
    a, b = axis_of(ctx, x, a), axis_of(ctx, x, b)
    perm[a], perm[b] = perm[b], perm[a]
    return permute(ctx, x, perm)


def unsqueeze(ctx: Context, x: Value, dim: int) -> Value:
    axis = normalize_axis(int(dim), x.type.rank + 1)
    return ctx.call("unsqueeze", x, axes=(axis,))


def squeeze(ctx: Context, x: Value, dims: Any = None) -> Value:
    """torch.squeeze: axes that are not size 1 are left alone (not an error, as in ONNX)."""
    rank = x.type.rank
    axes = range(rank) if dims is None else [axis_of(ctx, x, d) for d in as_list(dims)]
    keep = tuple(a for a in axes if x.type.shape[a] == 1)
    return ctx.call("squeeze", x, axes=keep) if keep else x


def slice_axis(ctx: Context, x: Value, dim: int, start: Any = None, end: Any = None, step: int = 1) -> Value:
    """x[start:end:step] along ``dim``; a slice that keeps everything is no node."""
    axis = axis_of(ctx, x, dim)
    start = 0 if start is None else ctx.dim(start)
    end = END if end is None else ctx.dim(end)
    length = x.type.shape[axis]
    if isinstance(start, str) or isinstance(end, str):
        if start == 0 and end == length and step == 1:
            return x
        if start == 0 and step == 1 and isinstance(length, int) and isinstance(end, str):
            # a table cut to a dynamic length (position ids[:, :seq]): gather its first rows; a size
            # past the table fails the gather's index check, as torch's slice would mismatch
            return ctx.call("gather", x, positions(ctx, end), axis=axis)
        raise FrontendError(f"{ctx.where()}slicing {x.type} at a symbolic bound is not supported")
    if start == 0 and step == 1 and (end >= END or (isinstance(length, int) and end >= length)):
        return x
    return ctx.call("slice", x, starts=(start,), ends=(end,), axes=(axis,), steps=(int(step),))


def positions(ctx: Context, size: str) -> Value:
    """``arange(size)`` (i64) for a symbolic ``size``."""
    return binary(ctx, "sub", _counts(ctx, size), 1)


def size_value(ctx: Context, size: str) -> Value:
    """A symbolic ``size`` as a 0-d i64 tensor (its count's last entry)."""
    return ctx.call("gather", _counts(ctx, size), ctx.const(-1, DType.int64), axis=0)


def _counts(ctx: Context, size: str) -> Value:
    """1..size (i64). The IR has no op whose shape comes from a number, so it is counted along
    an input that has that size as an axis."""
    for value in ctx.graph.inputs:
        if size in value.type.shape:
            axis = value.type.shape.index(size)
            row = value
            for other in reversed(range(value.type.rank)):
                if other != axis:
                    row = select(ctx, row, other, 0)
            ones = binary(ctx, "add", binary(ctx, "mul", cast(ctx, row, DType.int64), 0), 1)
            return cumsum(ctx, ones, 0)
    raise FrontendError(f"{ctx.where()}a range of symbolic length {size} needs an input with an axis of that size")


def select(ctx: Context, x: Value, dim: int, index: int) -> Value:
    """x.select(dim, index): a one-element slice with the axis squeezed away, or, on a
    symbolic axis (where a slice has no static length), a gather of a scalar index."""
    axis = axis_of(ctx, x, dim)
    index = int(index)
    if isinstance(x.type.shape[axis], str):
        return ctx.call("gather", x, ctx.const(index, DType.int64), axis=axis)
    end = END if index == -1 else index + 1
    part = ctx.call("slice", x, starts=(index,), ends=(end,), axes=(axis,))
    return ctx.call("squeeze", part, axes=(axis,))


def split(ctx: Context, x: Value, split_size: Any, dim: int = 0) -> tuple:
    """torch.split: an int chunk length or a list of lengths."""
    axis = axis_of(ctx, x, dim)
    length = x.type.shape[axis]
    if isinstance(split_size, (list, tuple)):
        lengths = [int(s) for s in split_size]
    else:
        if not isinstance(length, int):
            raise FrontendError(f"{ctx.where()}cannot split the symbolic axis {axis} of {x.type} into equal chunks")
        size = int(split_size)
        lengths = [size] * (length // size) + ([length % size] if length % size else [])
    if len(lengths) == 1:
        return (x,)
    out = ctx.call("split", x, axis=axis, sizes=tuple(lengths))
    return tuple(out)


def chunk(ctx: Context, x: Value, chunks: int, dim: int = 0) -> tuple:
    axis = axis_of(ctx, x, dim)
    length = x.type.shape[axis]
    if not isinstance(length, int):
        raise FrontendError(f"{ctx.where()}cannot chunk the symbolic axis {axis} of {x.type}")
    return split(ctx, x, math.ceil(length / int(chunks)), axis)


def concat(ctx: Context, tensors: Sequence[Value], dim: int = 0) -> Value:
    values = operands(ctx, *tensors)
    # torch.cat skips 1-D empty tensors beside others of any rank (a legacy rule that
    # transformers' DynamicCache relies on: its first keys are torch.tensor([]))
    kept = [v for v in values if v.type.shape != (0,)]
    values = kept if kept and len(kept) < len(values) and any(v.type.rank != 1 for v in kept) else values
    if len(values) == 1:
        return values[0]
    return ctx.call("concat", *values, axis=axis_of(ctx, values[0], dim))


def stack(ctx: Context, tensors: Sequence[Value], dim: int = 0) -> Value:
    axis = normalize_axis(int(dim), tensors[0].type.rank + 1)
    return concat(ctx, [ctx.call("unsqueeze", t, axes=(axis,)) for t in tensors], axis)


def pad(ctx: Context, x: Value, pads: Sequence[int], mode: str = "constant", value: float | None = None) -> Value:
    """torch pad lists run (last axis begin, end, previous axis begin, end, ...); the IR wants begins then ends."""
    modes = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}
    if mode not in modes:
        raise FrontendError(f"{ctx.where()}padding mode {mode!r} is not supported; supported: {', '.join(modes)}")
    rank = x.type.rank
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pads) // 2):
        begins[rank - 1 - i], ends[rank - 1 - i] = int(pads[2 * i]), int(pads[2 * i + 1])
    if not any(begins) and not any(ends):
        return x
    return ctx.call("pad", x, pads=tuple(begins + ends), mode=modes[mode], value=float(value or 0.0))


def index(ctx: Context, x: Value, key: Any) -> Value:
    """Basic indexing ``x[key]``: ints, slices, None and Ellipsis."""
    key = list(key) if isinstance(key, tuple) else [key]
    if sum(k is Ellipsis for k in key) > 1:
        raise FrontendError(f"{ctx.where()}an index may hold one Ellipsis")
    consumed = sum(1 for k in key if k is not None and k is not Ellipsis)
    if Ellipsis in key:
        at = key.index(Ellipsis)
        key = key[:at] + [slice(None)] * (x.type.rank - consumed) + key[at + 1 :]
    if sum(is_value(k) for k in key) > 1:
        return _index_several(ctx, x, key)
    axis = 0
    for k in key:
        if k is None:
            x = ctx.call("unsqueeze", x, axes=(axis,))
            axis += 1
        elif isinstance(k, slice):
            x = slice_axis(ctx, x, axis, k.start, k.stop, 1 if k.step is None else k.step)
            axis += 1
        elif isinstance(k, int):
            x = select(ctx, x, axis, k)  # the axis goes away
        elif is_value(k):
            x = ctx.call("gather", x, k, axis=axis)
            axis += k.type.rank
        else:
            raise FrontendError(f"{ctx.where()}unsupported index {k!r}")
    return x


def _index_several(ctx: Context, x: Value, key: list) -> Value:
    """``x[..., i, j, ...]`` with adjacent index tensors (as transformers' mask builders
    write ``mask[batch_idx, kv_idx]``): the indexed axes merge into one, read at the
    flat offset of the broadcast indices."""
    if any(not (is_value(k) or k == slice(None)) for k in key):
        raise FrontendError(f"{ctx.where()}indexing with several index tensors takes only ':' beside them")
    axes = [a for a, k in enumerate(key) if is_value(k)]
    if any(key[a].type.dtype not in (DType.int32, DType.int64) for a in axes):
        raise FrontendError(f"{ctx.where()}indexing with several index tensors takes integer indices only")
    if axes != list(range(axes[0], axes[0] + len(axes))):
        raise FrontendError(f"{ctx.where()}indexing with several index tensors needs them on adjacent axes")
    dims = x.type.shape[axes[0]:axes[-1] + 1]
    if not all(isinstance(d, int) or "*" not in d for d in dims):
        raise FrontendError(f"{ctx.where()}indexing axes of sizes {list(dims)} with several index tensors "
                            "is not supported")
    flat = None
    for axis, dim in zip(axes, dims):
        # read through a checked gather of 0..dim-1: it wraps negative indices and raises on one
        # outside its own axis, which the flat offset alone would turn into a wrong element
        table = ctx.const(np.arange(dim, dtype=np.int64)) if isinstance(dim, int) else positions(ctx, dim)
        index = ctx.call("gather", table, cast(ctx, key[axis], DType.int64), axis=0)
        size = dim if isinstance(dim, int) else size_value(ctx, dim)
        flat = index if flat is None else binary(ctx, "add", binary(ctx, "mul", flat, size), index)
    shape = list(x.type.shape)
    merged = shape[:axes[0]] + [numel(dims)] + shape[axes[-1] + 1:]
    return ctx.call("gather", reshape(ctx, x, merged), flat, axis=axes[0])


#: torch.scatter_reduce's reductions that the IR's scatter_elements has (include_self=True only)
SCATTER_REDUCE = {"sum": "add", "prod": "mul", "amax": "max", "amin": "min"}


def scatter(ctx: Context, x: Value, dim: int, index: Value, src: Any, reduce: str = "none",
            include_self: bool = True) -> Value:
    """x.scatter / scatter_add / scatter_reduce as scatter_elements; a number ``src`` fills the index's shape."""
    if reduce != "none":
        if reduce not in SCATTER_REDUCE or not include_self:
            valid = ", ".join(SCATTER_REDUCE)
            raise FrontendError(f"{ctx.where()}scatter_reduce(reduce={reduce!r}, include_self={include_self}) is not "
                                f"supported; supported: {valid} with include_self=True")
        reduce = SCATTER_REDUCE[reduce]
    updates = src if is_value(src) else full_like(ctx, index, src, x.type.dtype)
    return ctx.call("scatter_elements", x, index, updates, axis=axis_of(ctx, x, dim), reduction=reduce)


def index_put(ctx: Context, x: Value, indices: Sequence[Any], values: Value, accumulate: bool = False) -> Value:
    """x.index_put(indices, values): index tensors of one shape address the leading axes
    (``x[i, j] = v``), so it is a scatter_nd of their coordinates stacked on a last axis."""
    if not indices or not all(is_value(i) for i in indices) or len({i.type.shape for i in indices}) > 1:
        raise FrontendError(f"{ctx.where()}index_put is supported with index tensors of one shape on the leading "
                            "axes (x[i] = v, x[i, j] = v)")
    coords = stack(ctx, list(indices), -1)
    want = indices[0].type.shape + x.type.shape[len(indices) :]
    if values.type.shape != want:
        values = expand(ctx, values, list(want))
    return ctx.call("scatter_nd", x, coords, values, reduction="add" if accumulate else "none")


def one_hot(ctx: Context, x: Value, num_classes: int = -1) -> Value:
    """F.one_hot: int64 classes on a new last axis (the class count must be given: it sets the shape)."""
    if num_classes < 0:
        raise FrontendError(f"{ctx.where()}one_hot needs num_classes: without it the shape depends on the data")
    return ctx.call("one_hot", x, ctx.const(np.array([0, 1], np.int64)), depth=int(num_classes), axis=-1)


# ---------------------------------------------------------------------------
# Reductions


def reduce(ctx: Context, op: str, x: Value, dims: Any = None, keepdim: bool = False) -> Value:
    """reduce_{sum,mean,max,min,prod} over ``dims`` (None or [] means all)."""
    axes = () if dims is None or dims == [] else tuple(axis_of(ctx, x, d) for d in as_list(dims))
    if op == "reduce_mean" and keepdim and x.type.rank >= 3 and sorted(axes) == list(range(2, x.type.rank)):
        return ctx.call("global_avg_pool", x)
    return ctx.call(op, x, axes=axes, keepdims=bool(keepdim))


def vector_norm(ctx: Context, x: Value, ord: float = 2, dims: Any = None, keepdim: bool = False) -> Value:  # noqa: A002
    """torch.linalg.vector_norm from reductions (weight norm's ``g * v / ||v||`` folds at import)."""
    if ord == 2:
        return ctx.call("sqrt", reduce(ctx, "reduce_sum", ctx.call("mul", x, x), dims, keepdim))
    magnitude = ctx.call("abs", x)
    if ord in (math.inf, -math.inf):
        return reduce(ctx, "reduce_max" if ord > 0 else "reduce_min", magnitude, dims, keepdim)
    if ord == 0:
        nonzero = cast(ctx, compare(ctx, "ne", x, 0.0), x.type.dtype)
        return reduce(ctx, "reduce_sum", nonzero, dims, keepdim)
    total = reduce(ctx, "reduce_sum", power(ctx, magnitude, float(ord)), dims, keepdim)
    return power(ctx, total, 1.0 / float(ord))


def top_k(ctx: Context, x: Value, k: int, dim: int = -1, largest: bool = True) -> tuple[Value, Value]:
    """torch.topk as (values, indices); always sorted, which is one of the orders sorted=False allows."""
    return tuple(ctx.call("top_k", x, k=int(k), axis=axis_of(ctx, x, dim), largest=bool(largest)))


def any_(ctx: Context, x: Value, dims: Any = None, keepdim: bool = False) -> Value:
    """torch.any: the max of the 0/1 values, back to bool."""
    ones = cast(ctx, x, DType.float32)
    return cast(ctx, reduce(ctx, "reduce_max", ones, dims, keepdim), DType.bool)


def argreduce(ctx: Context, op: str, x: Value, dim: Any = None, keepdim: bool = False) -> Value:
    if dim is None:
        return ctx.call(op, reshape(ctx, x, [-1]), axis=0, keepdims=False)
    return ctx.call(op, x, axis=axis_of(ctx, x, dim), keepdims=bool(keepdim))


# ---------------------------------------------------------------------------
# Compute ops


def untransposed(x: Value) -> Value | None:
    """The input of a 2-d ``transpose`` node, or None: lets ``x @ W.t()`` become linear(x, W)."""
    node = x.producer
    if node is not None and node.op == "transpose" and x.type.rank == 2 and node.attrs["perm"] in ((1, 0), ()):
        return node.inputs[0]
    return None


def matmul_or_linear(ctx: Context, x: Value, w: Value, bias: Value | None = None,
                     alpha: float = 1.0, beta: float = 1.0) -> Value:
    """``alpha * x @ w + beta * bias``; a transposed 2-d w becomes a torch-layout linear."""
    weight = untransposed(w)
    rows = _unflattened(x)
    if rows is not None:
        # x is [B*S, K] viewed from [B, S, K] with dynamic B, S: multiply the rows unflattened, so
        # the view back to [B, S, N] (which reshape's ints cannot say) undoes this one
        out = matmul_or_linear(ctx, rows, w, bias, alpha, beta)
        return reshape(ctx, out, [numel(out.type.shape[:-1]), out.type.shape[-1]])
    if weight is None and bias is None and alpha == 1:
        return ctx.call("matmul", x, w)
    inputs = [x, weight if weight is not None else w] + ([bias] if bias is not None else [])
    return ctx.call("linear", *inputs, trans_b=weight is not None, alpha=float(alpha), beta=float(beta))


def _unflattened(x: Value) -> Value | None:
    """The [..., K] value a 2-d [rows, K] ``x`` is a view of, when its leading dims are several
    and symbolic; else None."""
    if x.type.rank != 2 or x.producer is None or x.producer.op != "reshape":
        return None
    source = x.producer.inputs[0]
    leading = source.type.shape[:-1]
    if source.type.rank < 3 or source.type.shape[-1] != x.type.shape[-1]:
        return None
    if not any(isinstance(d, str) for d in leading):
        return None
    return source


def attention(ctx: Context, q: Value, k: Value, v: Value, mask: Value | None = None, is_causal: bool = False,
              scale: float | None = None) -> tuple[Value, Value]:
    """softmax(q @ k^T * scale + mask) @ v over the last two axes; returns (output, probabilities).

    A bool mask keeps the positions where it is True; a float mask is added.
    """
    head_dim = q.type.shape[-1]
    scores = ctx.call("matmul", q, swap_axes(ctx, k, -1, -2))
    scores = binary(ctx, "mul", scores, scale if scale is not None else 1.0 / math.sqrt(head_dim))
    if is_causal:
        rows, cols = scores.type.shape[-2:]
        if not isinstance(rows, int) or not isinstance(cols, int):
            raise FrontendError(f"{ctx.where()}causal attention over a symbolic sequence length is not supported")
        mask = ctx.const(np.tril(np.ones((rows, cols), dtype=bool)))
    if mask is None:
        probs = ctx.call("softmax", scores, axis=-1)
        return ctx.call("matmul", probs, v), probs
    if mask.type.dtype == DType.bool:
        scores = where(ctx, mask, scores, -math.inf)
    else:
        scores = binary(ctx, "add", scores, mask)
    # as torch's safe softmax: a row with every position masked gives zeros, not NaN
    live = any_(ctx, compare(ctx, "ne", scores, -math.inf), -1, True)
    probs = where(ctx, live, ctx.call("softmax", scores, axis=-1), 0.0)
    return ctx.call("matmul", probs, v), probs


def sdpa(ctx: Context, q: Value, k: Value, v: Value, mask: Value | None = None, is_causal: bool = False,
         scale: float | None = None, enable_gqa: bool = False) -> Value:
    """F.scaled_dot_product_attention as the one ``attention`` op; a float mask takes q's dtype."""
    if q.type.shape[-3:-2] != k.type.shape[-3:-2] and not enable_gqa:
        raise FrontendError(f"{ctx.where()}q has {q.type.shape[-3]} heads and k {k.type.shape[-3]}: "
                            "grouped-query attention needs enable_gqa=True")
    inputs = [q, k, v]
    if mask is not None:
        inputs.append(mask if mask.type.dtype == DType.bool else cast(ctx, mask, q.type.dtype))
    return ctx.call("attention", *inputs, causal=bool(is_causal), scale=None if scale is None else float(scale))


def logical(ctx: Context, op: str, a: Any, b: Any) -> Value:
    """``and or xor`` of two tensors taken as truth values (non-zero is true)."""
    x, y = operands(ctx, a, b)
    return ctx.call(f"logical_{op}", cast(ctx, x, DType.bool), cast(ctx, y, DType.bool))


def bitwise(ctx: Context, op: str, a: Any, b: Any) -> Value:
    """``& | ^`` on bool tensors (the masks transformers build); integer bit operations are not supported."""
    x, y = operands(ctx, a, b)
    if x.type.dtype != DType.bool:
        raise FrontendError(f"{ctx.where()}bitwise_{op} is supported on bool tensors only, got {x.type}")
    return ctx.call(f"logical_{op}", x, y)


def bitwise_not(ctx: Context, x: Value) -> Value:
    """``~`` on a bool tensor."""
    if x.type.dtype != DType.bool:
        raise FrontendError(f"{ctx.where()}bitwise_not is supported on bool tensors only, got {x.type}")
    return ctx.call("logical_not", x)


def isnan(ctx: Context, x: Value) -> Value:
    # NaN is the one value unequal to itself
    return compare(ctx, "ne", x, x)


def cumsum(ctx: Context, x: Value, dim: int, dtype: DType | None = None) -> Value:
    """torch.cumsum: bool and integer inputs sum in int64 unless a dtype is given."""
    if dtype is None:
        dtype = x.type.dtype if x.type.dtype.is_float else DType.int64
    return ctx.call("cumsum", cast(ctx, x, dtype), axis=axis_of(ctx, x, dim))


def linear(ctx: Context, x: Value, weight: Value, bias: Value | None = None) -> Value:
    """torch Linear: weight is [out, in]."""
    return ctx.call("linear", *([x, weight] + ([bias] if bias is not None else [])))


def conv(ctx: Context, x: Value, weight: Value, bias: Value | None, stride: Any, padding: Any,
         dilation: Any, transposed: bool = False, output_padding: Any = 0, groups: int = 1) -> Value:
    """Convolution (or transposed convolution) with torch's symmetric padding."""
    n = weight.type.rank - 2
    if isinstance(padding, str):
        padding = _same_padding(ctx, weight, expand_param(dilation, n)) if padding == "same" else [0] * n
    pads = expand_param(padding, n)
    if isinstance(pads[0], tuple):
        raise FrontendError(f"{ctx.where()}asymmetric convolution padding {padding} is not supported")
    attrs = dict(strides=expand_param(stride, n), pads=pads + pads, dilations=expand_param(dilation, n),
                 groups=int(groups))
    inputs = [x, weight] + ([bias] if bias is not None else [])
    if transposed:
        return ctx.call("conv_transpose", *inputs, output_padding=expand_param(output_padding, n), **attrs)
    return ctx.call("conv", *inputs, **attrs)


def _same_padding(ctx: Context, weight: Value, dilation: tuple[int, ...]) -> list[int]:
    pads = []
    for k, d in zip(weight.type.shape[2:], dilation):
        total = d * (k - 1)
        if total % 2:
            raise FrontendError(f"{ctx.where()}padding='same' with an even kernel pads unevenly; not supported")
        pads.append(total // 2)
    return pads


def max_pool(ctx: Context, x: Value, kernel: Any, stride: Any = None, padding: Any = 0,
             dilation: Any = 1, ceil_mode: bool = False) -> Value:
    n = x.type.rank - 2
    kernel = expand_param(kernel, n)
    strides = expand_param(stride, n) if stride not in (None, [], ()) else kernel
    pads = expand_param(padding, n)
    return ctx.call("max_pool", x, kernel=kernel, strides=strides, pads=pads + pads,
                    dilations=expand_param(dilation, n), ceil_mode=bool(ceil_mode))


def avg_pool(ctx: Context, x: Value, kernel: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
             count_include_pad: bool = True, divisor_override: Any = None) -> Value:
    if divisor_override is not None:
        raise FrontendError(f"{ctx.where()}avg_pool with divisor_override is not supported")
    n = x.type.rank - 2
    kernel = expand_param(kernel, n)
    strides = expand_param(stride, n) if stride not in (None, [], ()) else kernel
    pads = expand_param(padding, n)
    return ctx.call("avg_pool", x, kernel=kernel, strides=strides, pads=pads + pads, ceil_mode=bool(ceil_mode),
                    count_include_pad=bool(count_include_pad))


def adaptive_avg_pool(ctx: Context, x: Value, output_size: Any) -> Value:
    """Adaptive average pooling: global pooling, identity, or an even tiling as avg_pool."""
    spatial = x.type.shape[2:]
    sizes_ = list(output_size) if isinstance(output_size, (list, tuple)) else [output_size] * len(spatial)
    out = [s if o is None else int(o) for o, s in zip(sizes_, spatial)]
    if all(o == 1 for o in out):
        return ctx.call("global_avg_pool", x)
    if list(out) == list(spatial):
        return x
    if all(isinstance(s, int) and s % o == 0 for s, o in zip(spatial, out)):
        kernel = tuple(s // o for s, o in zip(spatial, out))
        return ctx.call("avg_pool", x, kernel=kernel, strides=kernel)
    raise FrontendError(
        f"{ctx.where()}adaptive average pooling of {x.type} to {tuple(out)} has uneven windows; not supported"
    )


def batch_norm(ctx: Context, x: Value, weight: Value | None, bias: Value | None, mean: Value, var: Value,
               eps: float) -> Value:
    """Inference batch norm; a missing affine weight/bias is 1/0."""
    channels = mean.type.shape[0]
    scale = weight if weight is not None else full_vec(ctx, 1.0, channels, mean.type.dtype)
    shift = bias if bias is not None else full_vec(ctx, 0.0, channels, mean.type.dtype)
    return ctx.call("batch_norm", x, scale, shift, mean, var, epsilon=float(eps))


def layer_norm(ctx: Context, x: Value, normalized_shape: Any, weight: Value | None, bias: Value | None,
               eps: float) -> Value:
    inputs = [x]
    if weight is not None or bias is not None:
        size = as_list(normalized_shape)
        inputs.append(weight if weight is not None else full_shape(ctx, 1.0, size, x.type.dtype))
        if bias is not None:
            inputs.append(bias)
    return ctx.call("layer_norm", *inputs, axis=-len(as_list(normalized_shape)), epsilon=float(eps))


def group_norm(ctx: Context, x: Value, groups: int, weight: Value | None, bias: Value | None, eps: float) -> Value:
    """torch GroupNorm; a missing affine weight/bias is 1/0."""
    scale, shift = _affine(ctx, x, weight, bias)
    return ctx.call("group_norm", x, scale, shift, groups=int(groups), epsilon=float(eps))


def instance_norm(ctx: Context, x: Value, weight: Value | None, bias: Value | None, eps: float) -> Value:
    """torch InstanceNorm with its own statistics; a missing affine weight/bias is 1/0."""
    scale, shift = _affine(ctx, x, weight, bias)
    return ctx.call("instance_norm", x, scale, shift, epsilon=float(eps))


def _affine(ctx: Context, x: Value, weight: Value | None, bias: Value | None) -> tuple[Value, Value]:
    channels = x.type.shape[1]
    if not isinstance(channels, int):
        raise FrontendError(f"{ctx.where()}normalization of {x.type} needs a static channel count")
    scale = weight if weight is not None else full_vec(ctx, 1.0, channels, x.type.dtype)
    shift = bias if bias is not None else full_vec(ctx, 0.0, channels, x.type.dtype)
    return scale, shift


#: torch interpolate modes -> (IR resize mode, nearest rounding) ; linear covers bilinear and trilinear
_INTERPOLATE = {"nearest": ("nearest", "floor"), "nearest-exact": ("nearest", "round_prefer_ceil"),
                "linear": ("linear", ""), "bilinear": ("linear", ""), "trilinear": ("linear", ""),
                "bicubic": ("cubic", "")}


def interpolate(ctx: Context, x: Value, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None) -> Value:
    """torch interpolate as one ``resize``: out = size, else floor(in * scale_factor). A given
    scale_factor is also what torch samples at (input = output / scale_factor) unless
    ``recompute_scale_factor``, which samples at in/out as if the size had been given."""
    spatial = x.type.shape[2:]
    if not all(isinstance(s, int) for s in spatial):
        raise FrontendError(f"{ctx.where()}interpolate of {x.type} needs static spatial sizes")
    scales = () if scale_factor is None else _per_axis_floats(scale_factor, spatial)
    sizes = expand_param(size, len(spatial)) if size is not None else tuple(
        int(math.floor(s * f)) for s, f in zip(spatial, scales))
    if recompute_scale_factor:
        scales = ()
    if mode == "area":
        return adaptive_avg_pool(ctx, x, list(sizes))
    if mode not in _INTERPOLATE:
        raise FrontendError(f"{ctx.where()}interpolate mode {mode!r} is not supported; valid: "
                            f"{', '.join(sorted(_INTERPOLATE) + ['area'])}")
    resize_mode, rounding = _INTERPOLATE[mode]
    if resize_mode == "nearest":
        coordinate = "asymmetric" if mode == "nearest" else "half_pixel"
        return ctx.call("resize", x, sizes=sizes, scales=scales, mode="nearest", coordinate_mode=coordinate,
                        nearest_mode=rounding)
    return ctx.call("resize", x, sizes=sizes, scales=scales, mode=resize_mode,
                    coordinate_mode="align_corners" if align_corners else "half_pixel")


def _per_axis_floats(values: Any, spatial: Sequence[Any]) -> tuple[float, ...]:
    items = as_list(values)
    return tuple(float(v) for v in (items * len(spatial) if len(items) == 1 else items))


def full_vec(ctx: Context, value: float, n: int, dtype: DType) -> Value:
    return full_shape(ctx, value, [n], dtype)


def full_shape(ctx: Context, value: Any, shape: Sequence[int], dtype: DType) -> Value:
    return ctx.const(np.full(tuple(int(s) for s in shape), value, dtype=dtype.numpy), dtype)
