"""Integer compute ops: ``qconv`` and ``qlinear`` (int8 x int8 -> int32) and ``requantize``.

``qconv``/``qlinear`` multiply integer activations (i8 or u8, with a zero
point) by integer weights (i8, or i4 packed) and accumulate in int32, adding
an optional int32 bias: ``acc = sum((x - x_zero_point) * w) + b``. Padded
positions hold the zero point, so they add nothing. Weights are symmetric
(zero point 0), as in TFLite and ONNX Runtime's per-channel scheme.

``requantize`` takes the int32 accumulator to i8/u8 with a fixed-point
multiplier, as gemmlowp and TFLite do: ``real ~= multiplier * 2^(shift - 31)``
with ``multiplier`` in [2^30, 2^31); the product rounds with
SaturatingRoundingDoublingHighMul and then RoundingDivideByPOT, the zero
point is added and the result is clamped to ``clip`` (the fused activation,
in output units) and the dtype's range. :func:`quantize_multiplier` turns a
real multiplier into (multiplier, shift).

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("i8", (1, 3)))
    >>> acc = g.call("qlinear", x, g.const(np.array([[1, 2, 3]], np.int8)), x_zero_point=1)
    >>> m, s = quantize_multiplier(0.5)
    >>> g.set_outputs([acc, g.call("requantize", acc, multiplier=(m,), shift=(s,), zero_point=3)])
    >>> g.run(np.array([[5, 1, -3]], np.int8))
    [array([[-8]], dtype=int32), array([[-1]], dtype=int8)]
"""

from __future__ import annotations

import math

import numpy as np

from slimgraph.errors import GraphError
from slimgraph.ir.ops.nn import _conv_geometry, _conv_nd, _window_out
from slimgraph.ir.ops.quant import quant_range
from slimgraph.ir.registry import Attr, In, define_op, elementwise_flops
from slimgraph.ir.types import DType, TensorType, normalize_axis

#: Activation dtypes of the integer ops, and their weight dtypes.
ACT_DTYPES = (DType.int8, DType.uint8)
WEIGHT_DTYPES = (DType.int8, DType.int4)

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """A positive real multiplier as (Q31 multiplier, shift): ``real ~= m * 2^(shift - 31)``.

    >>> quantize_multiplier(0.75)
    (1610612736, 0)
    """
    if not (real > 0 and math.isfinite(real)):
        raise GraphError(f"requantize multiplier {real!r} must be a positive finite number")
    fraction, shift = math.frexp(real)  # real = fraction * 2^shift, fraction in [0.5, 1)
    m = round(fraction * 2**31)
    if m == 2**31:
        m, shift = m // 2, shift + 1
    if shift < -31:  # below the smallest representable multiplier: everything rounds to 0
        return 0, 0
    return m, shift


def _check_int_operands(types, what: str) -> tuple[TensorType, TensorType]:
    x, w = types[:2]
    if x.dtype not in ACT_DTYPES:
        raise GraphError(f"x must be i8 or u8, got {x}")
    if w.dtype not in WEIGHT_DTYPES:
        raise GraphError(f"w must be i8 or i4, got {w}")
    if not w.is_static:
        raise GraphError(f"w must have a static shape, got {w}")
    if len(types) == 3:
        b = types[2]
        out_channels = w.shape[0]
        if b.dtype is not DType.int32 or b.shape != (out_channels,):
            raise GraphError(f"bias must be i32[{out_channels}] (one per output channel), got {b}")
    return x, w


def _zero_point_ok(x: TensorType, zp: int) -> None:
    lo, hi = quant_range(x.dtype)
    if not lo <= zp <= hi:
        raise GraphError(f"x_zero_point {zp} is outside the {x.dtype.value} range {lo}..{hi}")


def _exact_int32(y: np.ndarray) -> np.ndarray:
    """A float64 sum of integer products (exact below 2^53) as int32, wrapping like int32 hardware."""
    return np.rint(y).astype(np.int64).astype(np.int32)


# ---------------------------------------------------------------------------
# qconv


def _infer_qconv(types, attrs):
    x, w = _check_int_operands(types, "qconv")
    _zero_point_ok(x, attrs["x_zero_point"])
    if x.rank != w.rank or not 3 <= x.rank <= 5:
        raise GraphError(f"x {x} and w {w} must have the same rank, 3 to 5")
    k = x.rank - 2
    strides, begins, ends, dilations = _conv_geometry(attrs, k)
    groups = attrs["groups"]
    if isinstance(x.shape[1], str) or any(isinstance(d, str) for d in x.shape[2:]):
        raise GraphError(f"x must have static channel and spatial dims, got {x}")
    if w.shape[1] * groups != x.shape[1] or w.shape[0] % groups:
        raise GraphError(f"channel mismatch: x {x}, w {w}, groups={groups}")
    out = _window_out(x.shape[2:], w.shape[2:], strides, begins, ends, dilations)
    return [TensorType(DType.int32, (x.shape[0], w.shape[0]) + out)]


def _qconv(x, w, b=None, *, strides, pads, dilations, groups, x_zero_point):
    k = x.ndim - 2
    strides, begins, ends, dilations = _conv_geometry(
        {"strides": strides, "pads": pads, "dilations": dilations, "groups": groups}, k
    )
    # float64 holds every int8 x int8 sum exactly, and runs as BLAS
    centered = x.astype(np.float64) - x_zero_point
    y = _conv_nd(centered, w.astype(np.float64), None, strides, begins, ends, dilations, groups)
    y = _exact_int32(y)
    return y if b is None else (y + b.reshape((-1,) + (1,) * k)).astype(np.int32)


def _qconv_flops(ins, outs, attrs):
    return 2 * outs[0].numel() * math.prod(ins[1].shape[1:])


_GEOMETRY = [
    Attr("strides", "ints", (), doc="per spatial axis; () means 1"),
    Attr("pads", "ints", (), doc="ONNX order: all begins, then all ends; () means 0"),
    Attr("dilations", "ints", (), doc="per spatial axis; () means 1"),
    Attr("groups", "int", 1, doc="channel groups"),
]
_X_ZERO = Attr("x_zero_point", "int", 0, doc="the activations' zero point (padding holds it)")

define_op(
    "qconv",
    inputs=[In("x"), In("w"), In("b", optional=True)],
    attrs=[*_GEOMETRY, _X_ZERO],
    infer=_infer_qconv,
    impl=_qconv,
    flops=_qconv_flops,
    category="compute",
    doc="Integer convolution: sum((x - x_zero_point) * w) + b, i8/u8 x i8/i4 -> i32.",
)


# ---------------------------------------------------------------------------
# qlinear


def _infer_qlinear(types, attrs):
    x, w = _check_int_operands(types, "qlinear")
    _zero_point_ok(x, attrs["x_zero_point"])
    if w.rank != 2 or x.rank < 1:
        raise GraphError(f"w must be [out, in] and x [..., in], got x {x}, w {w}")
    if x.shape[-1] != w.shape[1]:
        raise GraphError(f"x {x} has {x.shape[-1]} features but w {w} expects {w.shape[1]}")
    return [TensorType(DType.int32, x.shape[:-1] + (w.shape[0],))]


def _qlinear(x, w, b=None, *, x_zero_point):
    y = _exact_int32((x.astype(np.float64) - x_zero_point) @ w.astype(np.float64).T)
    return y if b is None else (y + b).astype(np.int32)


def _qlinear_flops(ins, outs, attrs):
    return 2 * outs[0].numel() * ins[1].shape[1]


define_op(
    "qlinear",
    inputs=[In("x"), In("w"), In("b", optional=True)],
    attrs=[_X_ZERO],
    infer=_infer_qlinear,
    impl=_qlinear,
    flops=_qlinear_flops,
    category="compute",
    doc="Integer linear layer: (x - x_zero_point) @ w.T + b, w [out, in], i8/u8 x i8/i4 -> i32.",
)


# ---------------------------------------------------------------------------
# requantize


def _clip_range(dtype: DType, clip: tuple) -> tuple[int, int]:
    lo, hi = quant_range(dtype)
    if not clip:
        return lo, hi
    return max(lo, clip[0]), min(hi, clip[1])


def _infer_requantize(types, attrs):
    (x,) = types
    if x.dtype is not DType.int32:
        raise GraphError(f"input must be i32 (an accumulator), got {x}")
    dtype = attrs["dtype"]
    if dtype not in ACT_DTYPES:
        raise GraphError(f"dtype must be i8 or u8, got {dtype.value}")
    multiplier, shift = attrs["multiplier"], attrs["shift"]
    if not multiplier or len(multiplier) != len(shift):
        raise GraphError(f"need one shift per multiplier, got {len(multiplier)} multipliers and {len(shift)} shifts")
    if any(not 0 <= m < 2**31 for m in multiplier):
        raise GraphError("multipliers must lie in 0..2^31-1 (Q31 fixed point)")
    if any(s > 31 or s < -31 for s in shift):
        raise GraphError("shifts must lie in -31..31")
    if len(multiplier) > 1:
        axis = normalize_axis(attrs["axis"], x.rank, "requantize axis")
        if x.shape[axis] != len(multiplier):
            raise GraphError(f"{len(multiplier)} multipliers do not match {x} along axis {axis}")
    _zero_point_ok(TensorType(dtype, ()), attrs["zero_point"])
    clip = attrs["clip"]
    if clip and (len(clip) != 2 or clip[0] > clip[1]):
        raise GraphError(f"clip must be (low, high) with low <= high, got {list(clip)}")
    return [x.with_dtype(dtype)]


def _per_axis(values, rank: int, axis: int) -> np.ndarray:
    array = np.asarray(values, np.int64)
    if array.size == 1:
        return array.reshape(())
    shape = [1] * rank
    shape[axis % rank] = array.size
    return array.reshape(shape)


def rounding_high_mul(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int64 arrays holding int32 values."""
    ab = a * m
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    # C integer division truncates toward zero
    return np.where(total >= 0, total >> 31, -((-total) >> 31))


def rounding_shift_right(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent, halves away from zero."""
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def fixed_point_multiply(x: np.ndarray, multiplier, shift) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier on int32 values (returned as int64)."""
    x = np.asarray(x, np.int64)
    multiplier, shift = np.asarray(multiplier, np.int64), np.asarray(shift, np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    shifted = np.clip(x << left, _INT32_MIN, _INT32_MAX)
    return rounding_shift_right(rounding_high_mul(shifted, multiplier), right)


def _requantize(x, multiplier, shift, axis, zero_point, dtype, clip):
    m = _per_axis(multiplier, x.ndim, axis)
    s = _per_axis(shift, x.ndim, axis)
    y = fixed_point_multiply(x, m, s) + zero_point
    lo, hi = _clip_range(dtype, clip)
    return np.clip(y, lo, hi).astype(dtype.numpy)


define_op(
    "requantize",
    inputs=[In("x")],
    attrs=[
        Attr("multiplier", "ints", doc="Q31 multipliers: one, or one per slice along axis"),
        Attr("shift", "ints", doc="one per multiplier: real = multiplier * 2^(shift - 31)"),
        Attr("axis", "int", 1, doc="the channel axis when there are several multipliers"),
        Attr("zero_point", "int", 0, doc="the output zero point"),
        Attr("dtype", "dtype", DType.int8, doc="i8 or u8"),
        Attr("clip", "ints", (), doc="(low, high) in output units: a fused relu/clip; () is the dtype range"),
    ],
    infer=_infer_requantize,
    impl=_requantize,
    flops=elementwise_flops,
    category="elementwise",
    doc="int32 to i8/u8: fixed-point multiply (gemmlowp rounding), add the zero point, clamp.",
)
