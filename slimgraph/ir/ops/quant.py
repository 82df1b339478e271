"""Quantization ops: ``quantize`` and ``dequantize``, linear or log2 (power-of-two).

Scales are per tensor (one value) or per axis (one value per slice along
``axis``, which must then be a static dim). Arithmetic follows ONNX
QuantizeLinear/DequantizeLinear: the scales are rounded to float32 and the
division or product is done in float32. Linear quantization rounds halves to
even and saturates to the integer dtype (NaN goes to the zero point, +-inf to
the ends of the range). The log2 scheme is specified in docs/ops.md.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (4,)))
    >>> q = g.call("quantize", x, scale=(0.5,), zero_point=(1,), dtype="i8")
    >>> g.set_outputs([q, g.call("dequantize", q, scale=(0.5,), zero_point=(1,))])
    >>> g.run(np.array([0.25, 0.75, -1.0, 100.0], np.float32))
    [array([  1,   3,  -1, 127], dtype=int8), array([ 0.,  1., -1., 63.], dtype=float32)]
"""

from __future__ import annotations

from typing import Sequence

import ml_dtypes
import numpy as np

from slimgraph.errors import GraphError
from slimgraph.ir.registry import Attr, In, define_op, elementwise_flops, require_float
from slimgraph.ir.types import DType, TensorType, normalize_axis

#: The integer dtypes a tensor can be quantized to.
QUANT_DTYPES = (DType.int4, DType.int8, DType.uint8, DType.int32)


def quant_range(dtype: DType | str) -> tuple[int, int]:
    """The (lowest, highest) value of a quantized integer dtype.

    >>> quant_range("i4")
    (-8, 7)
    """
    dtype = DType.of(dtype)
    if dtype not in QUANT_DTYPES:
        raise GraphError(f"{dtype.value} is not a quantized dtype; valid: {', '.join(d.value for d in QUANT_DTYPES)}")
    info = ml_dtypes.iinfo(dtype.numpy)
    return int(info.min), int(info.max)


def _check_params(t: TensorType, dtype: DType, attrs: dict) -> None:
    """Validate scale, zero point, axis and log2 exponents against the tensor and the integer dtype."""
    scale, zero_point = attrs["scale"], attrs["zero_point"]
    if not scale:
        raise GraphError("scale is empty; give one scale, or one per slice along axis")
    with np.errstate(over="ignore"):
        as_f32 = np.asarray(scale, np.float64).astype(np.float32)
    bad = [s for s, s32 in zip(scale, as_f32) if not (np.isfinite(s32) and s32 > 0)]
    if bad:
        raise GraphError(f"scale {bad[0]!r} is not a positive finite float32; scales must be > 0")
    if len(zero_point) != len(scale):
        raise GraphError(
            f"{len(scale)} scales need {len(scale)} zero points (one per scale), got zero_point={list(zero_point)}"
        )
    lo, hi = quant_range(dtype)
    outside = [z for z in zero_point if not lo <= z <= hi]
    if outside:
        raise GraphError(f"zero_point {outside[0]} is outside the {dtype.value} range {lo}..{hi}")
    if len(scale) > 1:
        axis = normalize_axis(attrs["axis"], t.rank, "per-axis quantization axis")
        dim = t.shape[axis]
        if isinstance(dim, str):
            raise GraphError(f"per-axis scales along axis {axis} need a static dim, but {t} has {dim!r} there")
        if dim != len(scale):
            raise GraphError(f"{len(scale)} scales do not match {t}, which has {dim} slices along axis {axis}")
    if attrs["scheme"] == "log2":
        _check_log2(dtype, attrs, lo, hi)


def _check_log2(dtype: DType, attrs: dict, lo: int, hi: int) -> None:
    if any(attrs["zero_point"]):
        raise GraphError(f"the log2 scheme has no zero point, got zero_point={list(attrs['zero_point'])}")
    if lo >= 0:
        raise GraphError(f"log2 codes are signed; {dtype.value} cannot hold them (use i8, i4 or i32)")
    min_exp, max_exp = attrs["min_exp"], attrs["max_exp"]
    if min_exp > max_exp:
        raise GraphError(f"min_exp {min_exp} is above max_exp {max_exp}")
    top = max_exp - min_exp + 1
    if top > hi:
        raise GraphError(
            f"exponents {min_exp}..{max_exp} need codes up to +-{top}, beyond the {dtype.value} range {lo}..{hi}"
        )


def _per_axis(values: Sequence, rank: int, axis: int, dtype: type) -> np.ndarray:
    """A parameter list shaped to broadcast along ``axis`` (a 0-d array when there is one value)."""
    array = np.asarray(values, dtype)
    if array.size == 1:
        return array.reshape(())
    shape = [1] * rank
    shape[axis % rank] = array.size
    return array.reshape(shape)


def _infer_quantize(types, attrs):
    (x,) = types
    require_float(x, "x")
    quant_range(attrs["dtype"])  # rejects dtypes that are not quantized ones
    _check_params(x, attrs["dtype"], attrs)
    return [x.with_dtype(attrs["dtype"])]


def _quantize(x, scale, zero_point, axis, dtype, scheme, min_exp, max_exp):
    x32 = x.astype(np.float32)
    s = _per_axis(scale, x.ndim, axis, np.float32)
    if scheme == "linear":
        # Integers are exact in float64, so adding the zero point and clipping there is exact.
        q = np.nan_to_num(np.rint(x32 / s), nan=0.0).astype(np.float64)
        q = q + _per_axis(zero_point, x.ndim, axis, np.float64)
    else:
        magnitude = np.abs(x32).astype(np.float64) / s
        exponent = np.clip(np.rint(np.log2(magnitude)), min_exp, max_exp)
        q = np.nan_to_num(np.sign(x32) * (exponent - min_exp + 1), nan=0.0)
    lo, hi = quant_range(dtype)
    return np.asarray(np.clip(q, lo, hi)).astype(np.int64).astype(dtype.numpy)


def _infer_dequantize(types, attrs):
    (q,) = types
    if q.dtype not in QUANT_DTYPES:
        raise GraphError(f"input must be quantized ({', '.join(d.value for d in QUANT_DTYPES)}), got {q}")
    if not attrs["to"].is_float:
        raise GraphError(f"to={attrs['to'].value} is not a float dtype")
    _check_params(q, q.dtype, attrs)
    return [q.with_dtype(attrs["to"])]


def _dequantize(q, scale, zero_point, axis, scheme, min_exp, max_exp, to):
    s = _per_axis(scale, q.ndim, axis, np.float32)
    codes = q.astype(np.int64)
    if scheme == "linear":
        y = (codes - _per_axis(zero_point, q.ndim, axis, np.int64)).astype(np.float32) * s
    else:
        y = np.sign(codes).astype(np.float32) * s * np.exp2(np.abs(codes) - 1 + min_exp).astype(np.float32)
    return np.asarray(y).astype(to.numpy)


_COMMON = [
    Attr("scale", "floats", doc="one scale, or one per slice along axis"),
    Attr("zero_point", "ints", (0,), doc="one per scale"),
    Attr("axis", "int", 1, doc="the quantized axis when there are several scales"),
]
_SCHEME = [
    Attr("scheme", "str", "linear", choices=("linear", "log2")),
    Attr("min_exp", "int", -8, doc="log2: smallest exponent"),
    Attr("max_exp", "int", 0, doc="log2: largest exponent"),
]

define_op(
    "quantize",
    inputs=[In("x")],
    attrs=[*_COMMON, Attr("dtype", "dtype", DType.int8, doc="the integer dtype"), *_SCHEME],
    infer=_infer_quantize,
    impl=_quantize,
    flops=elementwise_flops,
    category="elementwise",
    doc="Float to integer: saturate(round_half_even(x / scale) + zero_point), or log2 codes.",
)

define_op(
    "dequantize",
    inputs=[In("q")],
    attrs=[*_COMMON, *_SCHEME, Attr("to", "dtype", DType.float32, doc="the float dtype")],
    infer=_infer_dequantize,
    impl=_dequantize,
    flops=elementwise_flops,
    category="elementwise",
    doc="Integer to float: (q - zero_point) * scale, or the value of a log2 code.",
)


def log2_codes(q: np.ndarray, max_shift: int = 6) -> np.ndarray | None:
    """The signed log2 codes of integers that are all 0 or +-2^k (k <= ``max_shift``), else None.

    Code ``c`` stands for ``sign(c) * 2^(|c| - 1)`` (0 for 0): the integer form of a log2
    weight with ``min_exp = max_exp - max_shift``, which 4 bits hold.

    >>> log2_codes(np.array([0, 1, -2, 64], np.int8)).tolist()
    [0, 1, -2, 7]
    >>> log2_codes(np.array([3], np.int8)) is None
    True
    """
    q = np.asarray(q).astype(np.int64)
    magnitude = np.abs(q)
    exponent = np.zeros(q.shape, np.int64)
    nonzero = magnitude > 0
    exponent[nonzero] = np.round(np.log2(magnitude[nonzero])).astype(np.int64)
    if np.any(nonzero & ((exponent > max_shift) | (np.left_shift(1, exponent) != magnitude))):
        return None
    return (np.sign(q) * np.where(nonzero, exponent + 1, 0)).astype(np.int8)
