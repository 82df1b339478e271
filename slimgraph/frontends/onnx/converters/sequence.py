"""Converters of the ONNX ops that sequence models bring: CumSum, Trilu, Einsum, GatherND.

Exported attention stays decomposed (MatMul, Softmax, Where); the ``attention``
op is reached from the torch frontend.
"""

from __future__ import annotations

import numpy as np

from slimgraph.frontends.onnx.context import NodeContext, Operand
from slimgraph.frontends.onnx.registry import converter


@converter("CumSum")
def _cumsum(ctx: NodeContext) -> Operand:
    (axis,) = ctx.ints(1, "the axis")
    return ctx.emit("cumsum", ctx.input(0), axis=axis, exclusive=bool(ctx.attr("exclusive", 0)),
                    reverse=bool(ctx.attr("reverse", 0)))


@converter("Trilu")
def _trilu(ctx: NodeContext) -> Operand:
    (k,) = ctx.optional_ints(1, "the diagonal k") or (0,)
    return ctx.emit("trilu", ctx.input(0), k=k, upper=bool(ctx.attr("upper", 1)))


@converter("Einsum")
def _einsum(ctx: NodeContext) -> Operand:
    inputs = [ctx.input(i) for i in range(ctx.num_inputs)]
    return ctx.emit("einsum", *inputs, equation=ctx.attr("equation"))


@converter("GatherND")
def _gather_nd(ctx: NodeContext) -> Operand:
    """The m leading axes that the last index axis addresses merge into one, read at the flat offset."""
    if ctx.attr("batch_dims", 0) != 0:
        raise ctx.error("GatherND with batch_dims != 0 is not supported")
    data, indices = ctx.input(0), ctx.input(1)
    shape, index_shape = ctx.shape(0), ctx.shape(1)
    depth = index_shape[-1]
    if not isinstance(depth, int) or not all(isinstance(d, int) for d in shape):
        raise ctx.error(f"GatherND over symbolic dims (data {list(shape)}, indices {list(index_shape)}) "
                        "is not supported")
    flat = None
    for t, dim in enumerate(shape[:depth]):
        index = ctx.emit("squeeze", ctx.emit("slice", indices, starts=(t,), ends=(t + 1,), axes=(-1,)), axes=(-1,))
        # a checked gather of 0..dim-1 wraps negatives and raises on an index outside its own
        # axis, which the flat offset alone would turn into a wrong element
        index = ctx.emit("gather", np.arange(dim, dtype=np.int64), ctx.emit("cast", index, to="i64"), axis=0)
        flat = index if flat is None else ctx.emit("add", ctx.emit("mul", flat, np.asarray(dim, np.int64)), index)
    data = ctx.emit("reshape", data, shape=(int(np.prod(shape[:depth])), *shape[depth:]))
    return ctx.emit("gather", data, flat, axis=0)
