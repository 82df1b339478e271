"""Converters of ONNX tensor ops: constants, shapes and layout (Reshape,
Transpose, Concat, Split, Slice, Gather, Squeeze, Expand, Pad, ...).

Shape-like operands (a Reshape's shape, Slice's starts, ...) must be known at
import; shape arithmetic on known or symbolic shapes folds (see ``symbolic``).
"""

from __future__ import annotations

import numpy as np

from slimgraph.errors import OpError
from slimgraph.frontends.onnx.context import NodeContext, Operand
from slimgraph.frontends.onnx.registry import converter
from slimgraph.frontends.onnx.symbolic import reshape_target, shape_value
from slimgraph.frontends.onnx.typemap import BATCH
from slimgraph.ir.graph import Value
from slimgraph.ir.types import numel

_CONSTANT_ATTRS = {
    "value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64,
}  # fmt: skip


@converter("Constant")
def _constant(ctx: NodeContext) -> np.ndarray:
    if ctx.has_attr("value"):
        return ctx.attr("value")
    for name, dtype in _CONSTANT_ATTRS.items():
        if ctx.has_attr(name):
            return np.array(ctx.attr(name), dtype=dtype)
    given = ", ".join(a.name for a in ctx.node.attribute) or "none"
    raise ctx.error(f"only tensor, float(s) and int(s) constants are supported (attributes: {given})")


@converter("ConstantOfShape")
def _constant_of_shape(ctx: NodeContext) -> np.ndarray:
    shape = ctx.ints(0, "the shape")
    fill = ctx.attr("value", np.zeros(1, np.float32))
    return np.full(shape, fill.ravel()[0], dtype=fill.dtype)


@converter("Shape")
def _shape(ctx: NodeContext) -> np.ndarray:
    dims = ctx.shape(0)
    start, end = ctx.attr("start", 0), ctx.attr("end", None)
    return shape_value(dims[start:end])


@converter("Size")
def _size(ctx: NodeContext) -> np.ndarray:
    return shape_value([numel(ctx.shape(0))]).reshape(())


@converter("Range")
def _range(ctx: NodeContext) -> np.ndarray:
    start, limit, delta = (ctx.const(i, what) for i, what in enumerate(("the start", "the limit", "the delta")))
    return np.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def _shape_operand(ctx: NodeContext, i: int, what: str) -> np.ndarray:
    operand = ctx.input(i)
    if isinstance(operand, Value):
        raise ctx.error(
            f"input {i} ('{ctx.node.input[i]}', {what}) is computed at run time; "
            "slimgraph needs shapes known at import"
        )
    return operand


@converter("Reshape")
def _reshape(ctx: NodeContext) -> Operand:
    target = _shape_operand(ctx, 1, "the target shape")
    allowzero = bool(ctx.attr("allowzero", 0))
    shape = reshape_target(target.ravel(), ctx.shape(0), allowzero)
    if allowzero and 0 in shape:
        raise ctx.error("allowzero=1 with a 0 in the target shape (an empty tensor) is not supported")
    try:
        return ctx.emit("reshape", ctx.input(0), shape=shape)
    except OpError:
        # Models exported at batch 1 often bake that 1 into reshapes; with a
        # symbolic batch it must be the batch dim, so copy it instead.
        if not (ctx.dynamic_batch and shape[:1] == (1,) and ctx.shape(0)[:1] == (BATCH,)):
            raise
        return ctx.emit("reshape", ctx.input(0), shape=(0,) + shape[1:])


@converter("Flatten")
def _flatten(ctx: NodeContext) -> Operand:
    return ctx.emit("flatten", ctx.input(0), axis=ctx.attr("axis", 1))


@converter("Transpose")
def _transpose(ctx: NodeContext) -> Operand:
    perm = ctx.attr("perm", None)
    return ctx.emit("transpose", ctx.input(0), **({"perm": perm} if perm is not None else {}))


@converter("Concat")
def _concat(ctx: NodeContext) -> Operand:
    inputs = [ctx.input(i) for i in range(ctx.num_inputs) if ctx.has_input(i)]
    return ctx.emit("concat", *inputs, axis=ctx.attr("axis"))


@converter("Split")
def _split(ctx: NodeContext) -> tuple:
    # The ONNX spec: 'split' is an attribute before opset 13 and an input from 13; opset 18 adds
    # 'num_outputs' and requires exactly one of the two. Without either, equal parts per output.
    axis = ctx.attr("axis", 0)
    given = ctx.has_input(1) if ctx.opset >= 13 else ctx.has_attr("split")
    if ctx.opset >= 18 and given == ctx.has_attr("num_outputs"):
        raise ctx.error("at opset 18 and later, give exactly one of the 'split' input and the 'num_outputs' attribute")
    if given:
        sizes = tuple(ctx.ints(1, "the split sizes") if ctx.opset >= 13 else ctx.attr("split"))
    else:
        parts = ctx.attr("num_outputs", ctx.num_outputs)
        if parts != ctx.num_outputs or parts < 1:
            raise ctx.error(f"num_outputs={parts}, but the node has {ctx.num_outputs} outputs")
        dim = ctx.shape(0)[axis]
        if not isinstance(dim, int):
            raise ctx.error(f"splitting the symbolic dim {dim} into equal parts is not supported")
        chunk = -(-dim // parts)  # ONNX: equal chunks, the last one smaller
        sizes = (chunk,) * (parts - 1) + (dim - chunk * (parts - 1),)
    if len(sizes) != ctx.num_outputs:
        raise ctx.error(f"split sizes {list(sizes)} give {len(sizes)} parts, but the node has {ctx.num_outputs} outputs")
    outs = ctx.emit("split", ctx.input(0), axis=axis, sizes=sizes)
    return outs if isinstance(outs, tuple) else (outs,)


@converter("Slice")
def _slice(ctx: NodeContext) -> Operand:
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes, steps = ctx.attr("axes", None), None
    else:
        starts, ends = ctx.ints(1, "the starts"), ctx.ints(2, "the ends")
        axes, steps = ctx.optional_ints(3, "the axes"), ctx.optional_ints(4, "the steps")
    attrs = {"starts": tuple(starts), "ends": tuple(ends)}
    if axes is not None:
        attrs["axes"] = tuple(axes)
    if steps is not None:
        attrs["steps"] = tuple(steps)
    return ctx.emit("slice", ctx.input(0), **attrs)


@converter("Gather")
def _gather(ctx: NodeContext) -> Operand:
    return ctx.emit("gather", ctx.input(0), ctx.input(1), axis=ctx.attr("axis", 0))


def _axes(ctx: NodeContext) -> tuple[int, ...] | None:
    """Squeeze/Unsqueeze axes: an attribute before opset 13, an input after."""
    if ctx.opset < 13:
        return ctx.attr("axes", None)
    return ctx.optional_ints(1, "the axes")


@converter("Squeeze")
def _squeeze(ctx: NodeContext) -> Operand:
    return ctx.emit("squeeze", ctx.input(0), axes=tuple(_axes(ctx) or ()))


@converter("Unsqueeze")
def _unsqueeze(ctx: NodeContext) -> Operand:
    axes = _axes(ctx)
    if axes is None:
        raise ctx.error("Unsqueeze needs axes")
    return ctx.emit("unsqueeze", ctx.input(0), axes=tuple(axes))


@converter("Expand")
def _expand(ctx: NodeContext) -> Operand:
    target = _shape_operand(ctx, 1, "the target shape").ravel().tolist()
    in_shape = ctx.shape(0)
    shape = []
    for i, dim in enumerate(target):
        # Expand broadcasts both ways: a target dim equal to the input's may as well be 1.
        j = i - (len(target) - len(in_shape))
        if isinstance(dim, str):
            if j < 0 or in_shape[j] != dim:
                raise ctx.error(f"cannot expand to the symbolic dim {dim} (input shape {list(in_shape)})")
            dim = 1
        shape.append(int(dim))
    return ctx.emit("expand", ctx.input(0), shape=tuple(shape))


@converter("Tile")
def _tile(ctx: NodeContext) -> Operand:
    return ctx.emit("tile", ctx.input(0), repeats=ctx.ints(1, "the repeats"))


@converter("Pad")
def _pad(ctx: NodeContext) -> Operand:
    mode = ctx.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise ctx.error(f"mode={mode!r} is not supported (valid: constant, reflect, edge)")
    if ctx.opset < 11:
        pads = ctx.attr("pads", None) or ctx.attr("paddings")
        value = ctx.attr("value", 0.0)
    else:
        pads = ctx.ints(1, "the pads")
        value = float(ctx.const(2, "the pad value").ravel()[0]) if ctx.has_input(2) else 0.0
        axes = ctx.optional_ints(3, "the axes")
        if axes is not None:
            rank = ctx.rank(0)
            full = [0] * (2 * rank)
            for j, axis in enumerate(axes):
                full[axis % rank], full[axis % rank + rank] = pads[j], pads[j + len(axes)]
            pads = full
    return ctx.emit("pad", ctx.input(0), pads=tuple(pads), mode=mode, value=float(value))

