"""Converters of ONNX network ops: Gemm/MatMul, convolutions, pooling,
normalizations, softmax, LRN, reductions and Dropout."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from slimgraph.frontends.onnx.context import NodeContext, Operand
from slimgraph.frontends.onnx.registry import converter
from slimgraph.frontends.onnx.symbolic import reshape_target, shape_value


@converter("MatMul")
def _matmul(ctx: NodeContext) -> Operand:
    return ctx.emit("matmul", ctx.input(0), ctx.input(1))


@converter("Gemm")
def _gemm(ctx: NodeContext) -> Operand:
    beta = ctx.attr("beta", 1.0)
    inputs = [ctx.input(0), ctx.input(1)]
    if ctx.has_input(2) and beta != 0.0:
        inputs.append(ctx.input(2))
    return ctx.emit(
        "linear", *inputs,
        trans_a=bool(ctx.attr("transA", 0)), trans_b=bool(ctx.attr("transB", 0)),
        alpha=ctx.attr("alpha", 1.0), beta=beta,
    )  # fmt: skip


def explicit_pads(
    ctx: NodeContext, spatial: Sequence, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> tuple[int, ...]:
    """The node's pads with ``auto_pad`` resolved to explicit begins and ends."""
    mode = ctx.attr("auto_pad", "NOTSET")
    n = len(kernel)
    if mode == "NOTSET":
        return tuple(ctx.attr("pads", (0,) * 2 * n))
    if mode == "VALID":
        return (0,) * 2 * n
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.error(f"auto_pad={mode!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    if not all(isinstance(d, int) for d in spatial):
        raise ctx.error(f"auto_pad={mode} needs static spatial dims, got {list(spatial)}")
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        # SAME_UPPER puts the odd pixel at the end, SAME_LOWER at the beginning.
        begin = total // 2 if mode == "SAME_UPPER" else total - total // 2
        begins.append(begin)
        ends.append(total - begin)
    return tuple(begins + ends)


def _window(ctx: NodeContext, kernel: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    n = len(kernel)
    return tuple(ctx.attr("strides", (1,) * n)), tuple(ctx.attr("dilations", (1,) * n))


@converter("Conv")
def _conv(ctx: NodeContext) -> Operand:
    kernel = tuple(ctx.attr("kernel_shape", ctx.shape(1)[2:]))
    strides, dilations = _window(ctx, kernel)
    pads = explicit_pads(ctx, ctx.shape(0)[2:], kernel, strides, dilations)
    inputs = [ctx.input(i) for i in range(3) if ctx.has_input(i)]
    return ctx.emit("conv", *inputs, strides=strides, pads=pads, dilations=dilations, groups=ctx.attr("group", 1))


@converter("ConvTranspose")
def _conv_transpose(ctx: NodeContext) -> Operand:
    kernel = tuple(ctx.attr("kernel_shape", ctx.shape(1)[2:]))
    strides, dilations = _window(ctx, kernel)
    n = len(kernel)
    output_padding = list(ctx.attr("output_padding", (0,) * n))
    mode = ctx.attr("auto_pad", "NOTSET")
    if ctx.has_attr("output_shape") or mode in ("SAME_UPPER", "SAME_LOWER"):
        spatial = ctx.shape(0)[2:]
        if not all(isinstance(d, int) for d in spatial):
            raise ctx.error(f"output_shape/auto_pad need static spatial dims, got {list(spatial)}")
        target = ctx.attr("output_shape", None)
        target = tuple(target[-n:]) if target else tuple(size * s for size, s in zip(spatial, strides))
        begins, ends = [], []
        for i in range(n):
            full = strides[i] * (spatial[i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1
            total = full - target[i]
            if total < 0:  # the requested output is larger: grow it at the end
                output_padding[i] -= total
                total = 0
            begin = total // 2 if mode == "SAME_UPPER" else total - total // 2
            begins.append(begin)
            ends.append(total - begin)
        pads = tuple(begins + ends)
    elif mode == "VALID":
        pads = (0,) * 2 * n
    else:
        pads = tuple(ctx.attr("pads", (0,) * 2 * n))
    inputs = [ctx.input(i) for i in range(3) if ctx.has_input(i)]
    return ctx.emit(
        "conv_transpose", *inputs, strides=strides, pads=pads, dilations=dilations,
        output_padding=tuple(output_padding), groups=ctx.attr("group", 1),
    )  # fmt: skip


@converter("MaxPool", "AveragePool")
def _pool(ctx: NodeContext) -> tuple:
    kernel = tuple(ctx.attr("kernel_shape"))
    strides, dilations = _window(ctx, kernel)
    pads = explicit_pads(ctx, ctx.shape(0)[2:], kernel, strides, dilations)
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    if ctx.op_type == "MaxPool":
        if ctx.attr("storage_order", 0):
            raise ctx.error("storage_order=1 (column-major indices) is not supported")
        y = ctx.emit("max_pool", ctx.input(0), kernel=kernel, strides=strides, pads=pads,
                     dilations=dilations, ceil_mode=ceil_mode)  # fmt: skip
        return (y, None)  # the Indices output has no IR counterpart
    if any(d != 1 for d in dilations):
        raise ctx.error(f"AveragePool with dilations {list(dilations)} is not supported")
    return (
        ctx.emit("avg_pool", ctx.input(0), kernel=kernel, strides=strides, pads=pads, ceil_mode=ceil_mode,
                 count_include_pad=bool(ctx.attr("count_include_pad", 0))),
    )  # fmt: skip


@converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: NodeContext) -> Operand:
    return ctx.emit("global_avg_pool" if ctx.op_type == "GlobalAveragePool" else "global_max_pool", ctx.input(0))


@converter("BatchNormalization")
def _batch_norm(ctx: NodeContext) -> tuple:
    if ctx.opset < 9 and not ctx.attr("spatial", 1):
        raise ctx.error("spatial=0 (per-activation statistics) is not supported")
    if ctx.attr("training_mode", 0):
        raise ctx.error("training_mode=1 is not supported: slimgraph imports models for inference")
    y = ctx.emit("batch_norm", *(ctx.input(i) for i in range(5)), epsilon=ctx.attr("epsilon", 1e-5))
    return (y,)  # running statistics outputs exist only in training mode


@converter("InstanceNormalization")
def _instance_norm(ctx: NodeContext) -> Operand:
    return ctx.emit(
        "instance_norm", ctx.input(0), ctx.input(1), ctx.input(2), epsilon=ctx.attr("epsilon", 1e-5)
    )


@converter("GroupNormalization")
def _group_norm(ctx: NodeContext) -> Operand:
    groups, channels = ctx.attr("num_groups"), ctx.shape(0)[1]
    scale, bias = ctx.input(1), ctx.input(2)
    if ctx.opset < 21 and channels != groups:
        # opset 18 gave scale and bias per group; the IR (and opset 21) has them per channel
        if not isinstance(channels, int):
            raise ctx.error(f"per-group scale and bias need a static channel count, got {channels!r}")
        scale, bias = (np.repeat(ctx.const(i, f"per-group {what}"), channels // groups)
                       for i, what in ((1, "scale"), (2, "bias")))
    return ctx.emit("group_norm", ctx.input(0), scale, bias, groups=groups, epsilon=ctx.attr("epsilon", 1e-5))


@converter("Resize", "Upsample")
def _resize(ctx: NodeContext) -> Operand:
    shape = ctx.shape(0)
    rank = len(shape)
    legacy = ctx.op_type == "Upsample" or ctx.opset < 11  # scales only, sampled at output / scale
    scales_at, sizes_at = (1, None) if legacy else (2, 3)
    if ctx.op_type == "Upsample" and ctx.opset < 9:
        scales = tuple(ctx.attr("scales"))
    elif sizes_at is not None and ctx.has_input(sizes_at) and ctx.shape(sizes_at) != (0,):
        scales = None
    else:
        scales = tuple(float(v) for v in ctx.const(scales_at, "scales").ravel())
    axes = tuple(a % rank for a in ctx.attr("axes", range(rank)))
    if ctx.attr("antialias", 0):
        raise ctx.error("antialias=1 is not supported")
    if ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ctx.error(f"keep_aspect_ratio_policy={ctx.attr('keep_aspect_ratio_policy')!r} is not supported")
    full_scales = [1.0] * rank
    full_sizes = list(shape)
    if scales is None:
        for axis, size in zip(axes, ctx.ints(sizes_at, "sizes")):
            full_sizes[axis] = size
    else:
        for axis, scale in zip(axes, scales):
            full_scales[axis] = scale
            full_sizes[axis] = int(np.floor(shape[axis] * scale)) if isinstance(shape[axis], int) else shape[axis]
    if full_sizes[:2] != list(shape[:2]):
        raise ctx.error(f"resizing the batch or channel axis ({list(shape)} to {full_sizes}) is not supported")
    mode = ctx.attr("mode", "nearest")
    coordinate = "asymmetric" if legacy else ctx.attr("coordinate_transformation_mode", "half_pixel")
    if coordinate == "tf_crop_and_resize":
        raise ctx.error("coordinate_transformation_mode='tf_crop_and_resize' is not supported")
    return ctx.emit(
        "resize", ctx.input(0), sizes=tuple(full_sizes[2:]), scales=() if scales is None else tuple(full_scales[2:]),
        mode=mode, coordinate_mode=coordinate,
        nearest_mode="floor" if legacy else ctx.attr("nearest_mode", "round_prefer_floor"),
        cubic_coeff_a=ctx.attr("cubic_coeff_a", -0.75), exclude_outside=bool(ctx.attr("exclude_outside", 0)),
    )


@converter("TopK")
def _top_k(ctx: NodeContext) -> tuple:
    # sorted=0 allows any order, so the IR's sorted output serves it too
    k = ctx.attr("k") if ctx.opset < 10 else ctx.ints(1, "K")[0]
    return tuple(ctx.emit("top_k", ctx.input(0), k=k, axis=ctx.attr("axis", -1),
                          largest=bool(ctx.attr("largest", 1))))


@converter("LayerNormalization")
def _layer_norm(ctx: NodeContext) -> tuple:
    inputs = [ctx.input(i) for i in range(3) if ctx.has_input(i)]
    y = ctx.emit("layer_norm", *inputs, axis=ctx.attr("axis", -1), epsilon=ctx.attr("epsilon", 1e-5))
    return (y,)  # Mean and InvStdDev outputs are training-only


@converter("Softmax", "LogSoftmax")
def _softmax(ctx: NodeContext) -> Operand:
    op = "softmax" if ctx.op_type == "Softmax" else "log_softmax"
    x, shape = ctx.input(0), ctx.shape(0)
    rank = len(shape)
    axis = ctx.attr("axis", -1 if ctx.opset >= 13 else 1) % max(rank, 1)
    if ctx.opset >= 13 or all(d == 1 for d in shape[axis + 1 :]):
        return ctx.emit(op, x, axis=axis)
    # Before opset 13 the op normalizes x flattened to 2-d at `axis` (over all trailing axes).
    flat = ctx.emit("flatten", x, axis=axis)
    y = ctx.emit(op, flat, axis=1)
    return ctx.emit("reshape", y, shape=reshape_target(shape_value(shape), ctx.shape_of(flat), allowzero=False))


@converter("LRN")
def _lrn(ctx: NodeContext) -> Operand:
    x, shape = ctx.input(0), ctx.shape(0)
    size = ctx.attr("size")
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    channels = shape[1]
    if not isinstance(channels, int):
        raise ctx.error(f"LRN needs a static channel dim, got {channels}")
    # y = x / (bias + alpha/size * sum of x^2 over a window of `size` channels)^beta,
    # the window being [c - (size-1)//2, c + size-1 - (size-1)//2], cut at the edges:
    # zero-pad the channel axis and add `size` shifted slices.
    rank, low = len(shape), (size - 1) // 2
    pads = [0] * (2 * rank)
    pads[1], pads[rank + 1] = low, size - 1 - low
    padded = ctx.emit("pad", ctx.emit("mul", x, x), pads=tuple(pads))
    total = None
    for k in range(size):
        window = ctx.emit("slice", padded, starts=(k,), ends=(k + channels,), axes=(1,))
        total = window if total is None else ctx.emit("add", total, window)
    scale = ctx.emit("add", ctx.emit("mul", total, ctx.scalar(alpha / size, x)), ctx.scalar(bias, x))
    return ctx.emit("div", x, ctx.emit("pow", scale, ctx.scalar(beta, x)))


_REDUCE = {
    "ReduceSum": "reduce_sum", "ReduceMean": "reduce_mean", "ReduceMax": "reduce_max",
    "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod", "ReduceSumSquare": "reduce_sum",
    "ReduceL1": "reduce_sum", "ReduceL2": "reduce_sum", "ReduceLogSum": "reduce_sum",
}  # fmt: skip


@converter(*_REDUCE)
def _reduce(ctx: NodeContext) -> Operand:
    # The axes moved from an attribute to an input in opset 13 (ReduceSum) and 18 (the rest).
    axes_are_input = ctx.opset >= (13 if ctx.op_type == "ReduceSum" else 18)
    axes = ctx.optional_ints(1, "the axes") if axes_are_input else ctx.attr("axes", None)
    x = ctx.input(0)
    if not axes and ctx.attr("noop_with_empty_axes", 0):
        return ctx.emit("identity", x)
    if ctx.op_type in ("ReduceSumSquare", "ReduceL2"):
        x = ctx.emit("mul", x, x)
    elif ctx.op_type == "ReduceL1":
        x = ctx.emit("abs", x)
    y = ctx.emit(_REDUCE[ctx.op_type], x, axes=tuple(axes or ()), keepdims=bool(ctx.attr("keepdims", 1)))
    if ctx.op_type == "ReduceL2":
        return ctx.emit("sqrt", y)
    if ctx.op_type == "ReduceLogSum":
        return ctx.emit("log", y)
    return y


@converter("ArgMax", "ArgMin")
def _arg_reduce(ctx: NodeContext) -> Operand:
    if ctx.attr("select_last_index", 0):
        raise ctx.error("select_last_index=1 is not supported")
    return ctx.emit(
        ctx.op_type.lower(), ctx.input(0), axis=ctx.attr("axis", 0), keepdims=bool(ctx.attr("keepdims", 1))
    )


@converter("Dropout")
def _dropout(ctx: NodeContext) -> tuple:
    # Inference: Dropout passes x through; its mask (all true) is rarely read.
    y = ctx.emit("identity", ctx.input(0))
    if not ctx.output_used(1):
        return (y, None)
    shape = ctx.shape(0)
    if not all(isinstance(d, int) for d in shape):
        raise ctx.error("the mask output of Dropout on a symbolic shape is not supported")
    return (y, np.ones(shape, dtype=bool))
