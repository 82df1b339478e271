"""TE lowerings of ``quantize`` and ``dequantize`` (linear and log2 schemes).

The arithmetic mirrors the reference: float32 division or product by the
scale, round half to even, saturation to the integer range (int4 is held as
int8 clamped to -8..7), NaN to the zero point.

Example::

    >>> from slimgraph.backends.tvm.lower import lowering_table
    >>> "quantize" in lowering_table()
    True
"""

from __future__ import annotations

import numpy as np
from tvm import tirx

from slimgraph.backends.tvm.lower import register
from slimgraph.backends.tvm.ops.common import spatial_compute, up
from slimgraph.ir.ops.quant import quant_range


def _param_reader(call, values, name: str, dtype: str):
    """Index -> the parameter of the slice it lies in: an inline constant
    for one value, else a lookup in a small parameter buffer along ``axis``."""
    if len(values) == 1:
        value = tirx.const(values[0], dtype)
        return lambda idx: value
    axis = call.attrs["axis"] % len(call.shape())
    buf = call.param(np.asarray(values, dtype=dtype), name)
    return lambda idx: buf[idx[axis]]


@register("quantize")
def lower_quantize(call):
    x = call.args[0]
    lo, hi = quant_range(call.out_types[0].dtype)
    scale = _param_reader(call, np.float32(call.attrs["scale"]).tolist(), "scale", "float32")
    zero = _param_reader(call, call.attrs["zero_point"], "zero_point", "float32")
    min_exp, max_exp = call.attrs["min_exp"], call.attrs["max_exp"]
    out_dtype = call.dtype()
    f32 = lambda v: tirx.const(v, "float32")  # noqa: E731

    def f(*idx):
        v = up(x[idx]).astype("float32")
        if call.attrs["scheme"] == "linear":
            q = tirx.nearbyint(v / scale(idx))
            q = tirx.Select(tirx.isnan(q), f32(0), q) + zero(idx)
        else:
            exponent = tirx.nearbyint(tirx.log2(tirx.abs(v) / scale(idx)))
            exponent = tirx.min(tirx.max(exponent, f32(min_exp)), f32(max_exp))
            sign = tirx.Select(v > f32(0), f32(1), tirx.Select(v < f32(0), f32(-1), f32(0)))
            q = tirx.Select(tirx.isnan(v), f32(0), sign * (exponent - f32(min_exp - 1)))
        q = tirx.min(tirx.max(q, f32(lo)), f32(hi))
        return q.astype(out_dtype)

    return spatial_compute(call.shape(), f, name="quantize", rule="elementwise")


@register("dequantize")
def lower_dequantize(call):
    q = call.args[0]
    scale = _param_reader(call, np.float32(call.attrs["scale"]).tolist(), "scale", "float32")
    zero = _param_reader(call, call.attrs["zero_point"], "zero_point", "int32")
    min_exp = call.attrs["min_exp"]
    out_dtype = call.dtype()

    def f(*idx):
        code = q[idx].astype("int32")
        if call.attrs["scheme"] == "linear":
            y = (code - zero(idx)).astype("float32") * scale(idx)
        else:
            magnitude = tirx.abs(code)
            sign = tirx.Select(code > 0, tirx.const(1.0, "float32"), tirx.Select(code < 0, tirx.const(-1.0, "float32"), tirx.const(0.0, "float32")))
            y = sign * scale(idx) * tirx.exp2((magnitude - 1 + min_exp).astype("float32"))
        return y.astype(out_dtype)

    return spatial_compute(call.shape(), f, name="dequantize", rule="elementwise")
