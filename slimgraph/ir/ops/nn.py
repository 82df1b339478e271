"""Compute ops: matmul, linear, convolutions, normalizations, pooling, softmax.

The numpy references are meant to run real models (ResNet-50, VGG-19) in a
few seconds: convolution is im2col (a strided window view copied once) plus
one matmul batched over groups, pooling folds a strided window view with
one ufunc call per kernel offset, and float16/bfloat16 inputs are computed in float32 and cast back. Spatial sizes
must be static; the batch dim may stay symbolic.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph("stem")
    >>> x = g.add_input("x", TensorType("f32", ("N", 3, 32, 32)))
    >>> w = g.const(np.ones((8, 3, 3, 3), np.float32))
    >>> y = g.call("conv", x, w, strides=(2, 2), pads=(1, 1, 1, 1))
    >>> str(y.type)
    'f32[N,8,16,16]'
    >>> g.set_outputs([y])
    >>> float(g.run(np.ones((2, 3, 32, 32), np.float32))[0][0, 0, 1, 1])
    27.0
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from slimgraph.errors import GraphError
from slimgraph.ir.registry import Attr, In, define_op, infer_same, require_float
from slimgraph.ir.types import DType, TensorType, broadcast_shapes, concrete, format_shape, normalize_axis

# ---------------------------------------------------------------------------
# Dtypes and dims


def _is_float(dtype: np.dtype) -> bool:
    # ml_dtypes' bfloat16 is not a numpy floating subtype
    return np.issubdtype(dtype, np.floating) or dtype == DType.bfloat16.numpy


def _acc(dtype: np.dtype) -> np.dtype:
    """The dtype to compute in: float32 for the narrow floats (numpy's float16 and
    ml_dtypes' bfloat16 matmuls are slow and lose precision), else the dtype."""
    return np.dtype(np.float32) if _is_float(dtype) and dtype != np.float64 else dtype


def _same_dtype(types: Sequence[TensorType], names: Sequence[str]) -> None:
    first = types[0]
    for t, name in zip(types[1:], names[1:]):
        if t.dtype != first.dtype:
            raise GraphError(f"{name} is {t} but {names[0]} is {first}: dtypes must match")


def _dims_agree(a, b) -> bool:
    """False only when two dims are known to differ (a symbol against an int is checked at run time)."""
    return a == b or isinstance(a, str) != isinstance(b, str)


def _require_static(t: TensorType, axes: Sequence[int], what: str) -> None:
    for axis in axes:
        if not isinstance(t.shape[axis], int):
            raise GraphError(f"{what} dim {axis} of {t} is symbolic ({t.shape[axis]!r}); it must be a static size")


def _fits(shape: tuple, target: tuple) -> bool:
    """Whether ``shape`` broadcasts to ``target`` without changing it."""
    if len(shape) > len(target):
        return False
    try:
        return broadcast_shapes(target, shape) == target
    except GraphError:
        return False


def _require_vector(t: TensorType, size, name: str, owner: str) -> None:
    if t.rank != 1 or not _dims_agree(t.shape[0], size):
        raise GraphError(f"{name} must be [{size}] (one per {owner}), got {t}")


def _require_matmul_dtype(t: TensorType, what: str) -> None:
    if not (t.dtype.is_float or t.dtype in (DType.int32, DType.int64)):
        raise GraphError(f"{what} must be a float, i32 or i64 tensor, got {t}")


# ---------------------------------------------------------------------------
# Window geometry shared by conv, conv_transpose and the pools


def _per_axis(name: str, values: tuple, k: int, fill: int, least: int) -> tuple[int, ...]:
    """Expand an empty tuple to ``fill`` per spatial axis and check the rest."""
    if not values:
        return (fill,) * k
    if len(values) != k:
        raise GraphError(f"{name}={list(values)} has {len(values)} values, expected {k} (one per spatial axis)")
    if any(v < least for v in values):
        raise GraphError(f"{name}={list(values)} must all be >= {least}")
    return tuple(values)


def _split_pads(pads: tuple, k: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """ONNX pads (all begins, then all ends) as (begins, ends)."""
    if not pads:
        return (0,) * k, (0,) * k
    if len(pads) != 2 * k:
        raise GraphError(f"pads={list(pads)} has {len(pads)} values, expected {2 * k} (begins then ends)")
    if any(p < 0 for p in pads):
        raise GraphError(f"pads={list(pads)} must all be >= 0")
    return tuple(pads[:k]), tuple(pads[k:])


def _window_out(
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    begins: Sequence[int],
    ends: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: bool = False,
) -> tuple[int, ...]:
    """Number of window positions per spatial axis.

    With ``ceil_mode`` a partial last window counts, but only if it starts
    inside the input or its left padding (the ONNX/torch rule).
    """
    out = []
    for axis, (n, k, s, pb, pe, d) in enumerate(zip(sizes, kernel, strides, begins, ends, dilations)):
        extent = d * (k - 1) + 1
        span = n + pb + pe - extent
        if span < 0:
            raise GraphError(
                f"kernel extent {extent} (kernel {k}, dilation {d}) on spatial axis {axis} is larger "
                f"than the padded input ({n} + {pb} + {pe} = {n + pb + pe})"
            )
        count = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (count - 1) * s >= n + pb:
            count -= 1
        out.append(count)
    return tuple(out)


def _pad(x: np.ndarray, begins: Sequence[int], ends: Sequence[int], fill) -> np.ndarray:
    """Pad (or, for negative amounts, crop) the spatial axes of ``x`` [N, C, ...]."""
    crop = tuple(slice(max(-b, 0), x.shape[2 + i] - max(-e, 0)) for i, (b, e) in enumerate(zip(begins, ends)))
    if any(b < 0 or e < 0 for b, e in zip(begins, ends)):
        x = x[(slice(None), slice(None)) + crop]
    widths = [(0, 0), (0, 0)] + [(max(b, 0), max(e, 0)) for b, e in zip(begins, ends)]
    if any(w != (0, 0) for w in widths):
        x = np.pad(x, widths, constant_values=fill)
    return x


def _windows(x, kernel, strides, begins, ends, dilations, out, fill) -> np.ndarray:
    """A strided view [N, C, *out, *kernel] of every window of ``x`` padded with ``fill``."""
    k = len(kernel)
    extents = [d * (kk - 1) + 1 for kk, d in zip(kernel, dilations)]
    # ceil_mode windows may run past the declared end padding; pad enough for the last one.
    ends = [
        max(pe, (o - 1) * s + e - (n + pb))
        for o, s, e, n, pb, pe in zip(out, strides, extents, x.shape[2:], begins, ends)
    ]
    xp = _pad(x, begins, ends, fill)
    view = sliding_window_view(xp, extents, axis=tuple(range(2, 2 + k)))
    index = (slice(None), slice(None))
    index += tuple(slice(0, o * s, s) for o, s in zip(out, strides))
    index += tuple(slice(None, None, d) for d in dilations)
    return view[index]


def _fold_windows(win: np.ndarray, k: int, ufunc: np.ufunc, dtype: np.dtype) -> np.ndarray:
    """Reduce the trailing ``k`` kernel axes of a window view with ``ufunc``.

    One whole-tensor ufunc call per kernel offset: some 20x faster than a
    numpy reduction over the tiny, strided kernel axes.
    """
    out = None
    for offset in np.ndindex(win.shape[win.ndim - k :]):
        part = win[(Ellipsis,) + offset]
        if out is None:
            out = part.astype(dtype, copy=True)
        else:
            ufunc(out, part, out=out)
    return out


# ---------------------------------------------------------------------------
# matmul


def _matmul_shapes(a: tuple, b: tuple) -> tuple:
    if not a or not b:
        raise GraphError(f"operands must have rank >= 1, got {format_shape(a)} and {format_shape(b)}")
    a2 = a if len(a) > 1 else (1,) + a
    b2 = b if len(b) > 1 else b + (1,)
    if not _dims_agree(a2[-1], b2[-2]):
        raise GraphError(
            f"contraction dims differ: {format_shape(a)} @ {format_shape(b)} ({a2[-1]} vs {b2[-2]})"
        )
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    return batch + a[-2:-1] * (len(a) > 1) + b[-1:] * (len(b) > 1)


def _infer_matmul(types, attrs):
    a, b = types
    _require_matmul_dtype(a, "a")
    _same_dtype(types, ("a", "b"))
    return [TensorType(a.dtype, _matmul_shapes(a.shape, b.shape))]


def _matmul(a, b):
    acc = _acc(a.dtype)
    return np.matmul(a.astype(acc, copy=False), b.astype(acc, copy=False)).astype(a.dtype, copy=False)


def _matmul_flops(ins, outs, attrs):
    return 2 * outs[0].numel() * concrete(ins[0].shape[-1])


define_op(
    "matmul",
    inputs=[In("a"), In("b")],
    infer=_infer_matmul,
    impl=_matmul,
    flops=_matmul_flops,
    category="compute",
    doc="Numpy matmul: batched, broadcast batch dims, 1-d operands. FLOPs: 2 per multiply-add.",
)


# ---------------------------------------------------------------------------
# linear (torch Linear, ONNX Gemm)


def _infer_linear(types, attrs):
    x, w = types[:2]
    _require_matmul_dtype(x, "x")
    _same_dtype(types, ("x", "w", "b"))
    if x.dtype.is_int and (attrs["alpha"] != 1.0 or attrs["beta"] != 1.0):
        raise GraphError(f"alpha and beta must be 1 for integer {x}")
    if w.rank != 2:
        raise GraphError(f"w must be 2-d, got {w}")
    if attrs["trans_a"]:
        if x.rank != 2:
            raise GraphError(f"x must be 2-d when trans_a is set, got {x}")
        k, lead = x.shape[0], (x.shape[1],)
    else:
        if x.rank < 1:
            raise GraphError(f"x must have rank >= 1, got {x}")
        k, lead = x.shape[-1], x.shape[:-1]
    wk, units = (w.shape[1], w.shape[0]) if attrs["trans_b"] else w.shape
    if not _dims_agree(k, wk):
        layout = "[out, in]" if attrs["trans_b"] else "[in, out]"
        raise GraphError(f"x has {k} input features but w {w} ({layout}) has {wk}")
    out = lead + (units,)
    if len(types) == 3:
        b = types[2]
        if not _fits(b.shape, out):
            raise GraphError(f"bias {b} does not broadcast to the output shape {format_shape(out)}")
    return [TensorType(x.dtype, out)]


def _linear(x, w, b=None, *, trans_a, trans_b, alpha, beta):
    acc = _acc(x.dtype)
    lhs = x.astype(acc, copy=False)
    rhs = w.astype(acc, copy=False)
    y = np.matmul(lhs.T if trans_a else lhs, rhs.T if trans_b else rhs)
    if alpha != 1.0:
        y *= alpha
    if b is not None:
        bias = b.astype(acc, copy=False)
        y += bias if beta == 1.0 else bias * beta
    return y.astype(x.dtype, copy=False)


def _linear_flops(ins, outs, attrs):
    k = ins[0].shape[0] if attrs["trans_a"] else ins[0].shape[-1]
    return 2 * outs[0].numel() * concrete(k) + (outs[0].numel() if len(ins) == 3 else 0)


define_op(
    "linear",
    inputs=[In("x"), In("w"), In("b", optional=True)],
    attrs=[
        Attr("trans_a", "bool", False, doc="x is [K, M] (2-d only)"),
        Attr("trans_b", "bool", True, doc="w is [out, in] (torch Linear); False: [in, out]"),
        Attr("alpha", "float", 1.0, doc="scales op(x) @ op(w)"),
        Attr("beta", "float", 1.0, doc="scales the bias"),
    ],
    infer=_infer_linear,
    impl=_linear,
    flops=_linear_flops,
    category="compute",
    doc="alpha * op(x) @ op(w) + beta * b (torch Linear, ONNX Gemm). FLOPs: 2 per multiply-add, 1 per bias add.",
)


# ---------------------------------------------------------------------------
# conv


def _check_conv_operands(types, what: str) -> tuple[TensorType, TensorType, int]:
    """Shared checks of (x, w, b?) for conv and conv_transpose; returns x, w and the spatial rank."""
    x, w = types[:2]
    require_float(x, "x")
    _same_dtype(types, ("x", "w", "b"))
    if x.rank != w.rank:
        raise GraphError(f"x {x} and w {w} must have the same rank ([N, C, *spatial] and [C, C, *kernel])")
    max_rank = 5 if what == "conv" else 4
    if not 3 <= x.rank <= max_rank:
        raise GraphError(f"{what} is 1-d to {max_rank - 2}-d: x must have rank 3 to {max_rank}, got {x}")
    if not w.is_static or 0 in w.shape:
        raise GraphError(f"w must have a static, non-empty shape, got {w}")
    _require_static(x, [1], "channel")
    _require_static(x, range(2, x.rank), "spatial")
    return x, w, x.rank - 2


def _conv_geometry(attrs, k: int):
    strides = _per_axis("strides", attrs["strides"], k, 1, 1)
    dilations = _per_axis("dilations", attrs["dilations"], k, 1, 1)
    begins, ends = _split_pads(attrs["pads"], k)
    if attrs["groups"] < 1:
        raise GraphError(f"groups={attrs['groups']} must be >= 1")
    return strides, begins, ends, dilations


def _infer_conv(types, attrs):
    x, w, k = _check_conv_operands(types, "conv")
    strides, begins, ends, dilations = _conv_geometry(attrs, k)
    groups, c_in, c_out = attrs["groups"], x.shape[1], w.shape[0]
    if c_in % groups or c_out % groups:
        raise GraphError(f"groups={groups} must divide both input channels ({c_in}) and output channels ({c_out})")
    if w.shape[1] * groups != c_in:
        raise GraphError(
            f"channel mismatch: x has {c_in} channels but w {w} expects {w.shape[1]} per group x {groups} groups"
        )
    if len(types) == 3:
        _require_vector(types[2], c_out, "bias", "output channel")
    out = _window_out(x.shape[2:], w.shape[2:], strides, begins, ends, dilations)
    return [TensorType(x.dtype, (x.shape[0], c_out) + out)]


def _conv_nd(x, w, b, strides, begins, ends, dilations, groups) -> np.ndarray:
    """Grouped N-d convolution of float32 arrays as im2col + one batched matmul."""
    n, k = x.shape[0], x.ndim - 2
    c_out, kernel = w.shape[0], w.shape[2:]
    out = _window_out(x.shape[2:], kernel, strides, begins, ends, dilations)
    win = _windows(x, kernel, strides, begins, ends, dilations, out, 0)
    # [N, C, *out, *kernel] -> [N, G, C/G * prod(kernel), prod(out)]: the one im2col copy,
    # read along the input's last axis so that it streams.
    order = (0, 1) + tuple(range(2 + k, 2 + 2 * k)) + tuple(range(2, 2 + k))
    cols = win.transpose(order).reshape(n, groups, -1, math.prod(out))
    # groups (and the batch) are matmul batch dims: one C loop, even for depthwise
    y = np.matmul(w.reshape(groups, c_out // groups, -1), cols).reshape((n, c_out) + out)
    if b is not None:
        y += b.reshape((c_out,) + (1,) * k)
    return y


def _conv(x, w, b=None, *, strides, pads, dilations, groups):
    k = x.ndim - 2
    strides, begins, ends, dilations = _conv_geometry(
        {"strides": strides, "pads": pads, "dilations": dilations, "groups": groups}, k
    )
    acc = _acc(x.dtype)
    y = _conv_nd(
        x.astype(acc, copy=False),
        w.astype(acc, copy=False),
        None if b is None else b.astype(acc, copy=False),
        strides,
        begins,
        ends,
        dilations,
        groups,
    )
    return y.astype(x.dtype, copy=False)


def _conv_flops(ins, outs, attrs):
    macs = outs[0].numel() * math.prod(ins[1].shape[1:])
    return 2 * macs + (outs[0].numel() if len(ins) == 3 else 0)


_WINDOW_ATTRS = [
    Attr("strides", "ints", (), doc="per spatial axis; () means 1"),
    Attr("pads", "ints", (), doc="ONNX order: all begins, then all ends; () means 0"),
    Attr("dilations", "ints", (), doc="per spatial axis; () means 1"),
]

define_op(
    "conv",
    inputs=[In("x"), In("w"), In("b", optional=True)],
    attrs=_WINDOW_ATTRS + [Attr("groups", "int", 1, doc="channel groups; depthwise is groups=C_in")],
    infer=_infer_conv,
    impl=_conv,
    flops=_conv_flops,
    category="compute",
    doc="1-d/2-d/3-d convolution, w [C_out, C_in/groups, *k]. FLOPs: 2 per multiply-add, 1 per bias add.",
)


# ---------------------------------------------------------------------------
# conv_transpose


def _transpose_geometry(attrs, k: int):
    strides, begins, ends, dilations = _conv_geometry(attrs, k)
    extra = _per_axis("output_padding", attrs["output_padding"], k, 0, 0)
    for axis, (p, s, d) in enumerate(zip(extra, strides, dilations)):
        if p >= s and p >= d:
            raise GraphError(
                f"output_padding {p} on spatial axis {axis} must be smaller than the stride ({s}) or the dilation ({d})"
            )
    return strides, begins, ends, dilations, extra


def _transpose_out(sizes, kernel, strides, begins, ends, dilations, extra) -> tuple[int, ...]:
    out = []
    for axis, (n, kk, s, pb, pe, d, p) in enumerate(zip(sizes, kernel, strides, begins, ends, dilations, extra)):
        size = (n - 1) * s + d * (kk - 1) + 1 + p - pb - pe
        if size < 1:
            raise GraphError(f"pads {pb} + {pe} on spatial axis {axis} leave no output (full size {size + pb + pe})")
        out.append(size)
    return tuple(out)


def _infer_conv_transpose(types, attrs):
    x, w, k = _check_conv_operands(types, "conv_transpose")
    strides, begins, ends, dilations, extra = _transpose_geometry(attrs, k)
    groups, c_in = attrs["groups"], x.shape[1]
    if w.shape[0] != c_in:
        raise GraphError(
            f"channel mismatch: x has {c_in} channels but w {w} ([C_in, C_out/groups, *k]) has {w.shape[0]}"
        )
    if c_in % groups:
        raise GraphError(f"groups={groups} must divide the input channels ({c_in})")
    c_out = w.shape[1] * groups
    if len(types) == 3:
        _require_vector(types[2], c_out, "bias", "output channel")
    out = _transpose_out(x.shape[2:], w.shape[2:], strides, begins, ends, dilations, extra)
    return [TensorType(x.dtype, (x.shape[0], c_out) + out)]


def _conv_transpose(x, w, b=None, *, strides, pads, dilations, output_padding, groups):
    """The adjoint of conv, run as a conv over the input with (stride - 1) zeros
    stuffed between elements and the kernel flipped, groups kept apart."""
    k = x.ndim - 2
    attrs = dict(strides=strides, pads=pads, dilations=dilations, output_padding=output_padding, groups=groups)
    strides, begins, ends, dilations, extra = _transpose_geometry(attrs, k)
    acc = _acc(x.dtype)
    n, c_in = x.shape[:2]
    kernel = w.shape[2:]
    stuffed = np.zeros((n, c_in) + tuple((s_ - 1) * s + 1 for s_, s in zip(x.shape[2:], strides)), acc)
    stuffed[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)] = x
    reach = [d * (kk - 1) for kk, d in zip(kernel, dilations)]
    c_out = w.shape[1] * groups
    # [C_in, C_out/G, *k] -> [G, C_out/G, C_in/G, *k] -> [C_out, C_in/G, *k], flipped in space
    wt = w.astype(acc, copy=False).reshape((groups, c_in // groups, w.shape[1]) + kernel).swapaxes(1, 2)
    wt = wt.reshape((c_out, c_in // groups) + kernel)[(Ellipsis,) + (slice(None, None, -1),) * k]
    y = _conv_nd(
        stuffed,
        wt,
        None if b is None else b.astype(acc, copy=False),
        (1,) * k,
        [r - pb for r, pb in zip(reach, begins)],
        [r - pe + p for r, pe, p in zip(reach, ends, extra)],
        dilations,
        groups,
    )
    return y.astype(x.dtype, copy=False)


def _conv_transpose_flops(ins, outs, attrs):
    macs = ins[0].numel() * math.prod(ins[1].shape[1:])
    return 2 * macs + (outs[0].numel() if len(ins) == 3 else 0)


define_op(
    "conv_transpose",
    inputs=[In("x"), In("w"), In("b", optional=True)],
    attrs=_WINDOW_ATTRS
    + [
        Attr("output_padding", "ints", (), doc="extra size at the end of each spatial axis; () means 0"),
        Attr("groups", "int", 1, doc="channel groups"),
    ],
    infer=_infer_conv_transpose,
    impl=_conv_transpose,
    flops=_conv_transpose_flops,
    category="compute",
    doc="1-d/2-d transposed convolution, w [C_in, C_out/groups, *k]. FLOPs: 2 per multiply-add, 1 per bias add.",
)


# ---------------------------------------------------------------------------
# Normalizations


def _infer_batch_norm(types, attrs):
    x = types[0]
    require_float(x, "x")
    _same_dtype(types, ("x", "scale", "bias", "mean", "var"))
    if x.rank < 2:
        raise GraphError(f"x must be [N, C, ...], got {x}")
    for t, name in zip(types[1:], ("scale", "bias", "mean", "var")):
        _require_vector(t, x.shape[1], name, "channel")
    return [x]


def _channel(v: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast along axis 1 of a rank-``rank`` tensor."""
    return v.reshape((-1,) + (1,) * (rank - 2))


def _batch_norm(x, scale, bias, mean, var, *, epsilon):
    acc = _acc(x.dtype)
    mul = scale.astype(acc) / np.sqrt(var.astype(acc) + np.asarray(epsilon, acc))
    add = bias.astype(acc) - mean.astype(acc) * mul
    return (x.astype(acc, copy=False) * _channel(mul, x.ndim) + _channel(add, x.ndim)).astype(x.dtype, copy=False)


def _per_element(count: int):
    def flops(ins, outs, attrs):
        return count * ins[0].numel()

    return flops


define_op(
    "batch_norm",
    inputs=[In("x"), In("scale"), In("bias"), In("mean"), In("var")],
    attrs=[Attr("epsilon", "float", 1e-5)],
    infer=_infer_batch_norm,
    impl=_batch_norm,
    flops=_per_element(2),
    category="compute",
    doc="Inference batch norm over channel axis 1. FLOPs: 2 per element (folded multiply and add).",
)


def _normalize(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) over ``axes``, in float32 for float inputs."""
    a = x.astype(_acc(x.dtype), copy=False)
    centred = a - a.mean(axis=axes, keepdims=True)
    var = np.mean(np.square(centred), axis=axes, keepdims=True)
    centred /= np.sqrt(var + np.asarray(epsilon, a.dtype))
    return centred


def _infer_channel_norm(types, min_rank: int):
    """A norm over [N, C, *spatial] with a scale and bias per channel: its one output type."""
    x = types[0]
    require_float(x, "x")
    _same_dtype(types, ("x", "scale", "bias"))
    if x.rank < min_rank:
        raise GraphError(f"x must be [N, C, *spatial], got {x}")
    for t, name in zip(types[1:], ("scale", "bias")):
        _require_vector(t, x.shape[1], name, "channel")
    return [x]


def _infer_instance_norm(types, attrs):
    return _infer_channel_norm(types, 3)


def _instance_norm(x, scale, bias, *, epsilon):
    y = _normalize(x, tuple(range(2, x.ndim)), epsilon)
    y = y * _channel(scale.astype(y.dtype), x.ndim) + _channel(bias.astype(y.dtype), x.ndim)
    return y.astype(x.dtype, copy=False)


define_op(
    "instance_norm",
    inputs=[In("x"), In("scale"), In("bias")],
    attrs=[Attr("epsilon", "float", 1e-5)],
    infer=_infer_instance_norm,
    impl=_instance_norm,
    flops=_per_element(7),
    category="compute",
    doc="Normalizes each (sample, channel) over its spatial axes, then scale and bias per channel. "
    "FLOPs: 7 per element (mean, centre, square, sum, divide, scale, shift).",
)


def _infer_group_norm(types, attrs):
    result = _infer_channel_norm(types, 2)
    groups, channels = attrs["groups"], types[0].shape[1]
    if groups < 1 or (isinstance(channels, int) and channels % groups):
        raise GraphError(f"groups={groups} must be >= 1 and divide the {channels} channels of {types[0]}")
    return result


def _group_norm(x, scale, bias, *, groups, epsilon):
    grouped = x.reshape(x.shape[:1] + (groups, -1))
    y = _normalize(grouped, (2,), epsilon).reshape(x.shape)
    y = y * _channel(scale.astype(y.dtype), x.ndim) + _channel(bias.astype(y.dtype), x.ndim)
    return y.astype(x.dtype, copy=False)


define_op(
    "group_norm",
    inputs=[In("x"), In("scale"), In("bias")],
    attrs=[Attr("groups", "int", doc="channel groups; C must divide evenly"), Attr("epsilon", "float", 1e-5)],
    infer=_infer_group_norm,
    impl=_group_norm,
    flops=_per_element(7),
    category="compute",
    doc="Splits the channels into `groups` and normalizes each (sample, group) over its channels and spatial "
    "axes, then scale and bias per channel (torch GroupNorm, ONNX GroupNormalization-21). "
    "FLOPs: 7 per element, as instance_norm.",
)


def _infer_layer_norm(types, attrs):
    x = types[0]
    require_float(x, "x")
    _same_dtype(types, ("x", "scale", "bias"))
    if x.rank < 1:
        raise GraphError(f"x must have rank >= 1, got {x}")
    axis = normalize_axis(attrs["axis"], x.rank)
    tail = x.shape[axis:]
    for t, name in zip(types[1:], ("scale", "bias")):
        if not _fits(t.shape, tail):
            raise GraphError(
                f"{name} {t} must match the normalized shape {format_shape(tail)} (axes {axis}..{x.rank - 1})"
            )
    return [x]


def _layer_norm(x, scale=None, bias=None, *, axis, epsilon):
    start = normalize_axis(axis, x.ndim)
    y = _normalize(x, tuple(range(start, x.ndim)), epsilon)
    if scale is not None:
        y *= scale.astype(y.dtype, copy=False)
    if bias is not None:
        y += bias.astype(y.dtype, copy=False)
    return y.astype(x.dtype, copy=False)


def _layer_norm_flops(ins, outs, attrs):
    return (5 + len(ins) - 1) * ins[0].numel()


define_op(
    "layer_norm",
    inputs=[In("x"), In("scale", optional=True), In("bias", optional=True)],
    attrs=[
        Attr("axis", "int", -1, doc="first normalized axis; normalizes axis..rank-1"),
        Attr("epsilon", "float", 1e-5),
    ],
    infer=_infer_layer_norm,
    impl=_layer_norm,
    flops=_layer_norm_flops,
    category="compute",
    doc="Normalizes over axes axis..rank-1, then optional elementwise scale and bias. "
    "FLOPs: 5 per element (mean, centre, square, sum, divide) + 1 each for scale and bias.",
)


# ---------------------------------------------------------------------------
# resize (torch interpolate, ONNX Resize)

RESIZE_MODES = ("nearest", "linear", "cubic")
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                    "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _source_coordinates(in_size: int, out_size: int, scale: float, mode: str) -> np.ndarray:
    """The input coordinate each output index samples, by ONNX Resize's coordinate_transformation_mode."""
    i = np.arange(out_size, dtype=np.float64)
    if mode == "align_corners":
        return i * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return i / scale
    if mode == "tf_half_pixel_for_nn":
        return (i + 0.5) / scale
    if mode == "pytorch_half_pixel" and out_size == 1:
        return np.zeros(out_size)
    if mode == "half_pixel_symmetric":
        adjustment = out_size / (scale * in_size)
        return in_size / 2 * (1 - adjustment) + (i + 0.5) / scale - 0.5
    return (i + 0.5) / scale - 0.5


def _cubic_weights(frac: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution weights of the 4 taps at offsets -1, 0, 1, 2 from floor(x)."""
    t = np.abs(np.stack([frac + 1, frac, 1 - frac, 2 - frac], axis=-1))
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def resize_taps(in_size: int, out_size: int, scale: float, *, mode: str, coordinate_mode: str, nearest_mode: str,
                cubic_coeff_a: float, exclude_outside: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per output index along one axis: the input indices it reads and their weights, each ``[out, taps]``.

    Resize is separable, so every backend applies these tables axis by axis
    (1 tap for nearest, 2 for linear, 4 for cubic). Indices are clamped to
    the edge; ``exclude_outside`` instead drops out-of-range taps and
    renormalizes the rest. ``scale`` is out/in unless the source gave one. The
    weights are float64; each backend rounds them to the dtype it computes in.
    """
    x = _source_coordinates(in_size, out_size, scale, coordinate_mode)
    if mode == "nearest":
        pick = {"round_prefer_floor": lambda v: np.ceil(v - 0.5), "round_prefer_ceil": lambda v: np.floor(v + 0.5),
                "floor": np.floor, "ceil": np.ceil}[nearest_mode]
        index = np.clip(pick(x), 0, in_size - 1).astype(np.int64)[:, None]
        return index, np.ones(index.shape)
    base = np.floor(x)
    frac = x - base
    if mode == "linear":
        offsets, weights = np.arange(2), np.stack([1 - frac, frac], axis=-1)
    else:
        offsets, weights = np.arange(-1, 3), _cubic_weights(frac, cubic_coeff_a)
    index = base[:, None].astype(np.int64) + offsets
    if exclude_outside:
        weights = np.where((index >= 0) & (index < in_size), weights, 0.0)
        weights = weights / weights.sum(axis=1, keepdims=True)
    return np.clip(index, 0, in_size - 1), weights.astype(np.float64)


def resize_tables(in_shape: Sequence[int], attrs: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`resize_taps` for each spatial axis of an input of shape ``in_shape``."""
    sizes, scales = attrs["sizes"], attrs["scales"] or (None,) * len(attrs["sizes"])
    options = {k: attrs[k] for k in ("mode", "coordinate_mode", "nearest_mode", "cubic_coeff_a", "exclude_outside")}
    return [resize_taps(n, m, s if s is not None else m / n, **options)
            for n, m, s in zip(in_shape[2:], sizes, scales)]


def _infer_resize(types, attrs):
    x = types[0]
    sizes, scales = attrs["sizes"], attrs["scales"]
    if not 3 <= x.rank <= 5:
        raise GraphError(f"x must be [N, C, *spatial] with 1 to 3 spatial axes, got {x}")
    if len(sizes) != x.rank - 2 or any(s < 1 for s in sizes):
        raise GraphError(f"sizes={list(sizes)} must hold one size >= 1 per spatial axis of {x}")
    if scales and (len(scales) != len(sizes) or any(s <= 0 for s in scales)):
        raise GraphError(f"scales={list(scales)} must be empty or one positive scale per spatial axis")
    if attrs["mode"] != "nearest":
        require_float(x, "x")
    _require_static(x, range(2, x.rank), "spatial")
    return [x.with_shape(x.shape[:2] + tuple(sizes))]


def _resize(x, *, sizes, scales, mode, coordinate_mode, nearest_mode, cubic_coeff_a, exclude_outside):
    attrs = dict(sizes=sizes, scales=scales, mode=mode, coordinate_mode=coordinate_mode, nearest_mode=nearest_mode,
                 cubic_coeff_a=cubic_coeff_a, exclude_outside=exclude_outside)
    y = x if mode == "nearest" else x.astype(_acc(x.dtype), copy=False)
    for axis, (index, weight) in enumerate(resize_tables(x.shape, attrs), start=2):
        taken = np.take(y, index, axis=axis)  # the tap axis lands right after `axis`
        if mode == "nearest":
            y = np.squeeze(taken, axis=axis + 1)
        else:
            w = weight.reshape(weight.shape + (1,) * (x.ndim - axis - 1)).astype(y.dtype)
            y = (taken * w).sum(axis=axis + 1)
    return y.astype(x.dtype, copy=False)


def _resize_flops(ins, outs, attrs):
    taps = {"nearest": 0, "linear": 2, "cubic": 4}[attrs["mode"]]
    return 2 * taps * (len(attrs["sizes"])) * outs[0].numel()


define_op(
    "resize",
    inputs=[In("x")],
    attrs=[
        Attr("sizes", "ints", doc="output size per spatial axis"),
        Attr("scales", "floats", default=(), doc="out/in per spatial axis as the source gave it; () means sizes/in"),
        Attr("mode", "str", "nearest", choices=RESIZE_MODES),
        Attr("coordinate_mode", "str", "half_pixel", choices=COORDINATE_MODES,
             doc="ONNX coordinate_transformation_mode"),
        Attr("nearest_mode", "str", "round_prefer_floor", choices=NEAREST_MODES),
        Attr("cubic_coeff_a", "float", -0.75),
        Attr("exclude_outside", "bool", False),
    ],
    infer=_infer_resize,
    impl=_resize,
    flops=_resize_flops,
    category="compute",
    doc="ONNX Resize / torch interpolate over the spatial axes of [N, C, *spatial]: nearest, (bi/tri)linear or "
    "cubic, separable, taps clamped to the edge. FLOPs: 2 per tap per axis per output element.",
)


# ---------------------------------------------------------------------------
# Pooling


def _check_pool_input(x: TensorType, kernel: tuple, floats_only: bool) -> int:
    if floats_only:
        require_float(x, "x")
    elif x.dtype is DType.bool or x.dtype is DType.int4:
        raise GraphError(f"x must be a float or 8/32/64-bit integer tensor, got {x}")
    k = len(kernel)
    if not 1 <= k <= 3:
        raise GraphError(f"kernel={list(kernel)} must have 1 to 3 values (1-d/2-d/3-d pooling)")
    if x.rank != k + 2:
        raise GraphError(f"x {x} must have rank {k + 2} for a {k}-d kernel {list(kernel)}")
    _require_static(x, range(2, x.rank), "spatial")
    return k


def _pool_geometry(attrs, k: int):
    kernel = _per_axis("kernel", attrs["kernel"], k, 1, 1)
    strides = _per_axis("strides", attrs["strides"], k, 1, 1)
    dilations = _per_axis("dilations", attrs.get("dilations", ()), k, 1, 1)
    begins, ends = _split_pads(attrs["pads"], k)
    return kernel, strides, begins, ends, dilations


def _pool_infer(floats_only: bool):
    def infer(types, attrs):
        x = types[0]
        k = _check_pool_input(x, attrs["kernel"], floats_only)
        kernel, strides, begins, ends, dilations = _pool_geometry(attrs, k)
        out = _window_out(x.shape[2:], kernel, strides, begins, ends, dilations, attrs["ceil_mode"])
        return [TensorType(x.dtype, x.shape[:2] + out)]

    return infer


def _lowest(dtype: np.dtype):
    return -np.inf if _is_float(dtype) else np.iinfo(dtype).min


def _max_pool(x, *, kernel, strides, pads, dilations, ceil_mode):
    k = x.ndim - 2
    kernel, strides, begins, ends, dilations = _pool_geometry(
        {"kernel": kernel, "strides": strides, "pads": pads, "dilations": dilations}, k
    )
    out = _window_out(x.shape[2:], kernel, strides, begins, ends, dilations, ceil_mode)
    # padding is the dtype's lowest value, so it never wins unless a window is all padding
    win = _windows(x, kernel, strides, begins, ends, dilations, out, _lowest(x.dtype))
    return _fold_windows(win, k, np.maximum, x.dtype)


def _window_counts(n, kernel, stride, begin, end, count, include_pad) -> np.ndarray:
    """Elements each window covers on one axis: inside the input, or also in the
    declared padding (never the extra padding ceil_mode adds)."""
    starts = np.arange(count) * stride - begin
    stops = starts + kernel
    if include_pad:
        return np.minimum(stops, n + end) - starts
    return np.minimum(stops, n) - np.maximum(starts, 0)


def _avg_pool(x, *, kernel, strides, pads, ceil_mode, count_include_pad):
    k = x.ndim - 2
    kernel, strides, begins, ends, dilations = _pool_geometry(
        {"kernel": kernel, "strides": strides, "pads": pads}, k
    )
    out = _window_out(x.shape[2:], kernel, strides, begins, ends, dilations, ceil_mode)
    acc = _acc(x.dtype)
    win = _windows(x.astype(acc, copy=False), kernel, strides, begins, ends, dilations, out, 0)
    total = _fold_windows(win, k, np.add, acc)
    divisor = np.ones((), acc)
    for n, kk, s, pb, pe, o in zip(x.shape[2:], kernel, strides, begins, ends, out):
        divisor = np.multiply.outer(divisor, _window_counts(n, kk, s, pb, pe, o, count_include_pad).astype(acc))
    # a window lying wholly in padding averages nothing; keep it 0 rather than NaN
    total /= np.maximum(divisor, 1)
    return total.astype(x.dtype, copy=False)


def _pool_flops(ins, outs, attrs):
    return outs[0].numel() * math.prod(attrs["kernel"])


define_op(
    "max_pool",
    inputs=[In("x")],
    attrs=[Attr("kernel", "ints", doc="window size per spatial axis")]
    + _WINDOW_ATTRS
    + [Attr("ceil_mode", "bool", False, doc="count a partial last window")],
    infer=_pool_infer(floats_only=False),
    impl=_max_pool,
    flops=_pool_flops,
    category="compute",
    doc="1-d/2-d/3-d max pooling; padding never wins the max. FLOPs: 1 comparison per window element.",
)

define_op(
    "avg_pool",
    inputs=[In("x")],
    attrs=[Attr("kernel", "ints", doc="window size per spatial axis")]
    + _WINDOW_ATTRS[:2]
    + [
        Attr("ceil_mode", "bool", False, doc="count a partial last window"),
        Attr("count_include_pad", "bool", False, doc="divide by the window size including declared padding"),
    ],
    infer=_pool_infer(floats_only=True),
    impl=_avg_pool,
    flops=_pool_flops,
    category="compute",
    doc="1-d/2-d/3-d average pooling. FLOPs: 1 add per window element (the divide folded in).",
)


def _infer_global_pool(floats_only: bool):
    def infer(types, attrs):
        x = types[0]
        if floats_only:
            require_float(x, "x")
        if x.rank < 3:
            raise GraphError(f"x must be [N, C, *spatial], got {x}")
        return [x.with_shape(x.shape[:2] + (1,) * (x.rank - 2))]

    return infer


def _global_avg_pool(x):
    axes = tuple(range(2, x.ndim))
    return x.astype(_acc(x.dtype), copy=False).mean(axis=axes, keepdims=True).astype(x.dtype, copy=False)


def _global_max_pool(x):
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


define_op(
    "global_avg_pool",
    inputs=[In("x")],
    infer=_infer_global_pool(floats_only=True),
    impl=_global_avg_pool,
    flops=_per_element(1),
    category="reduction",
    doc="Mean over all spatial axes, keeping them as 1s: [N,C,H,W] -> [N,C,1,1]. FLOPs: 1 per input element.",
)

define_op(
    "global_max_pool",
    inputs=[In("x")],
    infer=_infer_global_pool(floats_only=False),
    impl=_global_max_pool,
    flops=_per_element(1),
    category="reduction",
    doc="Max over all spatial axes, keeping them as 1s. FLOPs: 1 comparison per input element.",
)


# ---------------------------------------------------------------------------
# softmax, log_softmax


def _infer_softmax(types, attrs):
    x = types[0]
    require_float(x, "x")
    normalize_axis(attrs["axis"], x.rank)
    return infer_same(types, attrs)


def _shifted(x: np.ndarray, axis: int) -> np.ndarray:
    """x minus its max along ``axis``, in float32, so that exp cannot overflow."""
    a = x.astype(_acc(x.dtype), copy=False)
    return a - a.max(axis=axis, keepdims=True, initial=-np.inf)  # initial: an empty axis has no max


def _softmax(x, *, axis):
    e = np.exp(_shifted(x, axis))
    e /= e.sum(axis=axis, keepdims=True)
    return e.astype(x.dtype, copy=False)


def _log_softmax(x, *, axis):
    z = _shifted(x, axis)
    z -= np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return z.astype(x.dtype, copy=False)


define_op(
    "softmax",
    inputs=[In("x")],
    attrs=[Attr("axis", "int", -1)],
    infer=_infer_softmax,
    impl=_softmax,
    flops=_per_element(5),
    category="compute",
    doc="exp(x) / sum(exp(x)) along axis. FLOPs: 5 per element (max, subtract, exp, sum, divide).",
)

define_op(
    "log_softmax",
    inputs=[In("x")],
    attrs=[Attr("axis", "int", -1)],
    infer=_infer_softmax,
    impl=_log_softmax,
    flops=_per_element(5),
    category="compute",
    doc="x - log(sum(exp(x))) along axis. FLOPs: 5 per element (max, subtract, exp, sum, subtract).",
)
