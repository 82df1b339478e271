"""Converters of the ONNX ops that index with data beyond Gather: GatherElements,
ScatterElements, ScatterND, OneHot. Their indices follow the IR's one rule
(docs/ops.md, "Indices read from data")."""

from __future__ import annotations

import numpy as np

from slimgraph.frontends.onnx.context import NodeContext, Operand
from slimgraph.frontends.onnx.registry import converter
from slimgraph.ir import DType


@converter("GatherElements")
def _gather_elements(ctx: NodeContext) -> Operand:
    return ctx.emit("gather_elements", ctx.input(0), ctx.input(1), axis=ctx.attr("axis", 0))


@converter("ScatterElements")
def _scatter_elements(ctx: NodeContext) -> Operand:
    return ctx.emit("scatter_elements", ctx.input(0), ctx.input(1), ctx.input(2), axis=ctx.attr("axis", 0),
                    reduction=ctx.attr("reduction", "none"))


@converter("ScatterND")
def _scatter_nd(ctx: NodeContext) -> Operand:
    return ctx.emit("scatter_nd", ctx.input(0), ctx.input(1), ctx.input(2), reduction=ctx.attr("reduction", "none"))


@converter("OneHot")
def _one_hot(ctx: NodeContext) -> Operand:
    depth = ctx.const(1, "the depth")
    indices = ctx.input(0)
    if isinstance(indices, np.ndarray):
        indices = indices.astype(np.int64)  # ONNX casts non-integer indices to int64
    elif indices.type.dtype not in (DType.int32, DType.int64):
        indices = ctx.emit("cast", indices, to=DType.int64)
    depth = int(np.asarray(depth).ravel()[0])
    return ctx.emit("one_hot", indices, ctx.input(2), depth=depth, axis=ctx.attr("axis", -1))
