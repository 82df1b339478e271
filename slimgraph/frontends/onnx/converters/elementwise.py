"""Converters of elementwise ONNX ops (activations, arithmetic, comparisons, Clip, Cast)."""

from __future__ import annotations

import numpy as np

from slimgraph.errors import FrontendError
from slimgraph.frontends.onnx.context import NodeContext, Operand
from slimgraph.frontends.onnx.registry import converter
from slimgraph.frontends.onnx.typemap import onnx_dtype

_UNARY = {
    "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Log": "log", "Sqrt": "sqrt",
    "Neg": "neg", "Abs": "abs", "Reciprocal": "reciprocal", "Floor": "floor", "Ceil": "ceil",
    "Round": "round", "Sign": "sign", "Sin": "sin", "Cos": "cos", "Erf": "erf", "Softplus": "softplus",
    "Mish": "mish", "HardSwish": "hardswish", "Not": "logical_not",
}  # fmt: skip

_BINARY = {
    "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Equal": "equal",
    "Less": "less", "LessOrEqual": "less_equal", "Greater": "greater", "GreaterOrEqual": "greater_equal",
}  # fmt: skip


@converter(*_UNARY)
def _unary(ctx: NodeContext) -> Operand:
    return ctx.emit(_UNARY[ctx.op_type], ctx.input(0))


@converter(*_BINARY)
def _binary(ctx: NodeContext) -> Operand:
    a, b = ctx.input(0), legacy_broadcast(ctx, ctx.input(1))
    if ctx.op_type == "Pow":
        # ONNX lets the exponent have its own type; the IR op wants the base's.
        b = cast_like(ctx, b, a)
    return ctx.emit(_BINARY[ctx.op_type], a, b)


@converter("IsNaN")
def _isnan(ctx: NodeContext) -> Operand:
    # NaN is the one value unequal to itself
    x = ctx.input(0)
    return ctx.emit("logical_not", ctx.emit("equal", x, x))


def legacy_broadcast(ctx: NodeContext, b: Operand) -> Operand:
    """Opsets before 7 align a broadcast B at attribute ``axis`` of A, not at the end."""
    if ctx.opset >= 7 or not ctx.attr("broadcast", 0) or not ctx.has_attr("axis"):
        return b
    rank_a, rank_b = ctx.rank(0), ctx.rank(1)
    axis = ctx.attr("axis") % rank_a if rank_a else 0
    trailing = rank_a - axis - rank_b
    if trailing <= 0:
        return b
    return ctx.emit("unsqueeze", b, axes=tuple(range(rank_b, rank_b + trailing)))


def cast_like(ctx: NodeContext, x: Operand, like: Operand) -> Operand:
    """``x`` in the dtype of ``like`` (no node when it already is)."""
    want = ctx.dtype_of(like)
    if isinstance(x, np.ndarray):
        return x if x.dtype == want.numpy else x.astype(want.numpy)
    return x if x.type.dtype == want else ctx.emit("cast", x, to=want)


@converter("Max", "Min")
def _min_max(ctx: NodeContext) -> Operand:
    inputs = [ctx.input(i) for i in range(ctx.num_inputs) if ctx.has_input(i)]
    return ctx.emit(ctx.op_type.lower(), *inputs)


@converter("Sum", "Mean")
def _sum_mean(ctx: NodeContext) -> Operand:
    inputs = [ctx.input(i) for i in range(ctx.num_inputs) if ctx.has_input(i)]
    total = inputs[0]
    for x in inputs[1:]:
        total = ctx.emit("add", total, x)
    if ctx.op_type == "Mean" and len(inputs) > 1:
        total = ctx.emit("div", total, ctx.scalar(len(inputs), inputs[0]))
    elif len(inputs) == 1:
        total = ctx.emit("identity", total)
    return total


@converter("Identity")
def _identity(ctx: NodeContext) -> Operand:
    return ctx.emit("identity", ctx.input(0))


@converter("Where")
def _where(ctx: NodeContext) -> Operand:
    return ctx.emit("where", ctx.input(0), ctx.input(1), ctx.input(2))


@converter("LeakyRelu")
def _leaky_relu(ctx: NodeContext) -> Operand:
    return ctx.emit("leaky_relu", ctx.input(0), alpha=ctx.attr("alpha", 0.01))


@converter("Elu")
def _elu(ctx: NodeContext) -> Operand:
    return ctx.emit("elu", ctx.input(0), alpha=ctx.attr("alpha", 1.0))


@converter("Selu")
def _selu(ctx: NodeContext) -> Operand:
    return ctx.emit(
        "selu", ctx.input(0), alpha=ctx.attr("alpha", 1.6732632423543772), gamma=ctx.attr("gamma", 1.0507009873554805)
    )


@converter("HardSigmoid")
def _hard_sigmoid(ctx: NodeContext) -> Operand:
    return ctx.emit("hardsigmoid", ctx.input(0), alpha=ctx.attr("alpha", 0.2), beta=ctx.attr("beta", 0.5))


@converter("Gelu")
def _gelu(ctx: NodeContext) -> Operand:
    return ctx.emit("gelu", ctx.input(0), approximate=ctx.attr("approximate", "none"))


@converter("PRelu")
def _prelu(ctx: NodeContext) -> Operand:
    x, slope = ctx.input(0), ctx.input(1)
    slope_shape, rank = ctx.shape(1), ctx.rank(0)
    if ctx.opset < 7 and len(slope_shape) == 1 and rank > 2 and slope_shape[0] != 1:
        # Opset 6 PRelu takes a [C] slope per channel (axis 1), not numpy-aligned at the end.
        slope = ctx.emit("reshape", slope, shape=(slope_shape[0],) + (1,) * (rank - 2))
    return ctx.emit("prelu", x, slope)


@converter("Softsign")
def _softsign(ctx: NodeContext) -> Operand:
    x = ctx.input(0)
    return ctx.emit("div", x, ctx.emit("add", ctx.emit("abs", x), ctx.scalar(1, x)))


@converter("Clip")
def _clip(ctx: NodeContext) -> Operand:
    if ctx.opset < 11:
        low, high = ctx.attr("min", float("-inf")), ctx.attr("max", float("inf"))
    else:
        low = _scalar_input(ctx, 1, "the min bound", float("-inf"))
        high = _scalar_input(ctx, 2, "the max bound", float("inf"))
    return ctx.emit("clip", ctx.input(0), min=low, max=high)


def _scalar_input(ctx: NodeContext, i: int, what: str, default: float) -> float:
    if not ctx.has_input(i):
        return default
    array = ctx.const(i, what)
    if array.size != 1:
        raise ctx.error(f"{what} must be a scalar, got shape {list(array.shape)}")
    return float(array.ravel()[0])


@converter("Cast")
def _cast(ctx: NodeContext) -> Operand:
    try:
        to = onnx_dtype(ctx.attr("to"), "the target type")
    except FrontendError as exc:
        raise ctx.error(str(exc)) from None
    return ctx.emit("cast", ctx.input(0), to=to)


@converter("CastLike")
def _cast_like(ctx: NodeContext) -> Operand:
    return ctx.emit("cast", ctx.input(0), to=ctx.dtype(1))

