"""Converters of ONNX QuantizeLinear / DequantizeLinear to explicit IR
``quantize`` / ``dequantize`` nodes; scales and zero points must be constants."""

from __future__ import annotations

import numpy as np

from slimgraph.errors import FrontendError
from slimgraph.frontends.onnx.context import NodeContext, Operand
from slimgraph.frontends.onnx.registry import converter
from slimgraph.frontends.onnx.typemap import onnx_dtype
from slimgraph.ir.types import DType


def _params(ctx: NodeContext) -> tuple[dict, np.ndarray | None]:
    if ctx.attr("block_size", 0):
        raise ctx.error("blocked quantization (block_size) is not supported")
    scale = ctx.const(1, "the scale")
    zero_point = ctx.const(2, "the zero point") if ctx.has_input(2) else None
    params = {"scale": tuple(float(s) for s in scale.ravel())}
    if zero_point is not None:
        params["zero_point"] = tuple(int(z) for z in zero_point.ravel())
    if scale.size > 1:
        params["axis"] = ctx.attr("axis", 1) % ctx.rank(0)
    return params, zero_point


@converter("QuantizeLinear")
def _quantize(ctx: NodeContext) -> Operand:
    params, zero_point = _params(ctx)
    if zero_point is not None:
        dtype = ctx.dtype_of(zero_point)
    elif ctx.attr("output_dtype", 0):
        try:
            dtype = onnx_dtype(ctx.attr("output_dtype"), "the output_dtype")
        except FrontendError as exc:
            raise ctx.error(str(exc)) from None
    else:
        dtype = DType.uint8  # the ONNX default without a zero point
    return ctx.emit("quantize", ctx.input(0), dtype=dtype, **params)


@converter("DequantizeLinear")
def _dequantize(ctx: NodeContext) -> Operand:
    params, _ = _params(ctx)
    return ctx.emit("dequantize", ctx.input(0), to=ctx.dtype(1), **params)
