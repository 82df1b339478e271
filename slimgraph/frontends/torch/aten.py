"""Converters for core ATen ops, as torch.export leaves them after ``run_decompositions()``.

Each converter's parameters follow the aten schema (``self`` is spelled ``x``);
positional binding is what FX uses. Ops that only move metadata (clone,
alias, asserts) convert to no node at all.

Example::

    >>> from slimgraph.frontends.torch.registry import ATEN, load_converters
    >>> load_converters()
    >>> "aten.convolution.default" in ATEN
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimgraph.errors import FrontendError
from slimgraph.frontends.torch import lowering as L
from slimgraph.frontends.torch.context import Context, ir_dtype
from slimgraph.frontends.torch.registry import aten
from slimgraph.ir import DType, Value

# ---------------------------------------------------------------------------
# Elementwise


_UNARY = ("relu", "sigmoid", "tanh", "silu", "mish", "hardswish", "exp", "log", "sqrt", "neg", "abs", "erf",
          "reciprocal", "floor", "ceil", "round", "sign", "sin", "cos", "logical_not")


def _unary(op: str):
    def convert(ctx: Context, x: Value, *_: Any, **__: Any) -> Value:
        return ctx.call(op, x)

    return convert


for _op in _UNARY:
    aten(f"{_op}.default")(_unary(_op))


@aten("bitwise_not.default")
def _bitwise_not(ctx: Context, x: Value) -> Value:
    return L.bitwise_not(ctx, x)


@aten("rsqrt.default")
def _rsqrt(ctx: Context, x: Value) -> Value:
    return ctx.call("reciprocal", ctx.call("sqrt", x))


@aten("log1p.default")
def _log1p(ctx: Context, x: Value) -> Value:
    return ctx.call("log", L.binary(ctx, "add", x, 1.0))


@aten("expm1.default")
def _expm1(ctx: Context, x: Value) -> Value:
    return L.binary(ctx, "sub", ctx.call("exp", x), 1.0)


@aten("gelu.default")
def _gelu(ctx: Context, x: Value, approximate: str = "none") -> Value:
    return ctx.call("gelu", x, approximate=approximate)


@aten("hardtanh.default")
def _hardtanh(ctx: Context, x: Value, min_val: float = -1.0, max_val: float = 1.0) -> Value:
    return L.clip(ctx, x, min_val, max_val)


@aten("clamp.default", "clamp.Tensor")
def _clamp(ctx: Context, x: Value, min: Any = None, max: Any = None) -> Value:  # noqa: A002
    return L.clip(ctx, x, min, max)


@aten("clamp_min.default")
def _clamp_min(ctx: Context, x: Value, min: Any) -> Value:  # noqa: A002
    return L.clip(ctx, x, min, None)


@aten("clamp_max.default")
def _clamp_max(ctx: Context, x: Value, max: Any) -> Value:  # noqa: A002
    return L.clip(ctx, x, None, max)


@aten("hardsigmoid.default")
def _hardsigmoid(ctx: Context, x: Value) -> Value:
    return ctx.call("hardsigmoid", x)


@aten("leaky_relu.default")
def _leaky_relu(ctx: Context, x: Value, negative_slope: float = 0.01) -> Value:
    return ctx.call("leaky_relu", x, alpha=float(negative_slope))


@aten("elu.default")
def _elu(ctx: Context, x: Value, alpha: float = 1.0, scale: float = 1.0, input_scale: float = 1.0) -> Value:
    return L.elu(ctx, x, alpha, scale, input_scale)


@aten("softplus.default")
def _softplus(ctx: Context, x: Value, beta: float = 1.0, threshold: float = 20.0) -> Value:
    return L.softplus(ctx, x, beta, threshold)


@aten("_prelu_kernel.default", "prelu.default")
def _prelu(ctx: Context, x: Value, weight: Value) -> Value:
    return L.prelu(ctx, x, weight)


@aten("add.Tensor", "add.Scalar")
def _add(ctx: Context, x: Any, other: Any, alpha: Any = 1) -> Value:
    return L.binary(ctx, "add", x, L.scaled(ctx, other, alpha))


@aten("sub.Tensor", "sub.Scalar")
def _sub(ctx: Context, x: Any, other: Any, alpha: Any = 1) -> Value:
    return L.binary(ctx, "sub", x, L.scaled(ctx, other, alpha))


@aten("rsub.Scalar", "rsub.Tensor")
def _rsub(ctx: Context, x: Any, other: Any, alpha: Any = 1) -> Value:
    return L.binary(ctx, "sub", other, L.scaled(ctx, x, alpha))


@aten("mul.Tensor", "mul.Scalar")
def _mul(ctx: Context, x: Any, other: Any) -> Value:
    return L.binary(ctx, "mul", x, other)


@aten("div.Tensor", "div.Scalar")
def _div(ctx: Context, x: Any, other: Any) -> Value:
    return L.true_divide(ctx, x, other)


@aten("div.Tensor_mode", "div.Scalar_mode")
def _div_mode(ctx: Context, x: Any, other: Any, rounding_mode: str | None = None) -> Value:
    return L.divide(ctx, x, other, rounding_mode)


@aten("pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar")
def _pow(ctx: Context, x: Any, exponent: Any) -> Value:
    return L.power(ctx, x, exponent)


@aten("maximum.default")
def _maximum(ctx: Context, x: Value, other: Value) -> Value:
    return L.binary(ctx, "max", x, other)


@aten("minimum.default")
def _minimum(ctx: Context, x: Value, other: Value) -> Value:
    return L.binary(ctx, "min", x, other)


def _comparison(op: str):
    def convert(ctx: Context, x: Any, other: Any) -> Value:
        return L.compare(ctx, op, x, other)

    return convert


for _cmp in ("eq", "ne", "lt", "le", "gt", "ge"):
    aten(f"{_cmp}.Tensor", f"{_cmp}.Scalar")(_comparison(_cmp))


def _logical(op: str):
    def convert(ctx: Context, x: Value, other: Any) -> Value:
        return L.logical(ctx, op, x, other)

    return convert


def _bitwise(op: str):
    def convert(ctx: Context, x: Value, other: Any) -> Value:
        return L.bitwise(ctx, op, x, other)

    return convert


for _op in ("and", "or", "xor"):
    aten(f"logical_{_op}.default")(_logical(_op))
    aten(f"bitwise_{_op}.Tensor", f"bitwise_{_op}.Scalar")(_bitwise(_op))


@aten("isnan.default")
def _isnan(ctx: Context, x: Value) -> Value:
    return L.isnan(ctx, x)


@aten("masked_fill.Scalar", "masked_fill.Tensor")
def _masked_fill(ctx: Context, x: Value, mask: Value, value: Any) -> Value:
    return L.where(ctx, mask, value, x)


@aten("where.self", "where.ScalarSelf", "where.ScalarOther", "where.Scalar")
def _where(ctx: Context, condition: Value, x: Any, other: Any) -> Value:
    return L.where(ctx, condition, x, other)


# ---------------------------------------------------------------------------
# Creation and dtype


def _dtype_or(ctx: Context, dtype: Any, default: DType) -> DType:
    return default if dtype is None else ir_dtype(dtype, ctx.where())


@aten("full_like.default")
def _full_like(ctx: Context, x: Value, fill_value: Any, **kwargs: Any) -> Value:
    return L.full_like(ctx, x, fill_value, _dtype_or(ctx, kwargs.get("dtype"), x.type.dtype))


@aten("zeros_like.default")
def _zeros_like(ctx: Context, x: Value, **kwargs: Any) -> Value:
    return L.full_like(ctx, x, 0, _dtype_or(ctx, kwargs.get("dtype"), x.type.dtype))


@aten("ones_like.default")
def _ones_like(ctx: Context, x: Value, **kwargs: Any) -> Value:
    return L.full_like(ctx, x, 1, _dtype_or(ctx, kwargs.get("dtype"), x.type.dtype))


@aten("full.default")
def _full(ctx: Context, size: Any, fill_value: Any, **kwargs: Any) -> Value:
    shape = L.sizes(ctx, size)
    if not all(isinstance(d, int) for d in shape):
        raise FrontendError(f"{ctx.where()}torch.full with a symbolic size {shape} is not supported")
    default = DType.float32 if isinstance(fill_value, float) else DType.int64
    return L.full_shape(ctx, fill_value, shape, _dtype_or(ctx, kwargs.get("dtype"), default))


@aten("scalar_tensor.default")
def _scalar_tensor(ctx: Context, s: Any, **kwargs: Any) -> Value:
    return ctx.const(s, _dtype_or(ctx, kwargs.get("dtype"), DType.float32))


@aten("arange.start_step", "arange.default", "arange.start")
def _arange(ctx: Context, *args: Any, **kwargs: Any) -> Value:
    if len(args) in (1, 2) and not isinstance(args[-1], (int, float)) and (len(args) == 1 or args[0] == 0):
        size = ctx.dim(args[-1])  # arange(seq) over a dynamic length
        if isinstance(size, str):
            return L.cast(ctx, L.positions(ctx, size), _dtype_or(ctx, kwargs.get("dtype"), DType.int64))
    if not all(isinstance(a, (int, float)) for a in args):
        raise FrontendError(f"{ctx.where()}torch.arange with symbolic bounds is not supported")
    default = DType.float32 if any(isinstance(a, float) for a in args) else DType.int64
    return ctx.const(np.arange(*args), _dtype_or(ctx, kwargs.get("dtype"), default))


@aten("_to_copy.default")
def _to_copy(ctx: Context, x: Value, **kwargs: Any) -> Value:
    dtype = kwargs.get("dtype")
    return x if dtype is None else L.cast(ctx, x, ir_dtype(dtype, ctx.where()))


def _alias(ctx: Context, x: Any, *_: Any, **__: Any) -> Any:
    return x


def _nothing(ctx: Context, *_: Any, **__: Any) -> None:
    return None


aten("clone.default", "alias.default", "detach.default", "lift_fresh_copy.default", "contiguous.default",
     "dropout.default")(_alias)
# _assert_async.msg: torch's data checks inside decompositions (F.one_hot's class range); the op that
# follows them keeps its own documented rule for such data (one_hot: every class off)
aten("_assert_tensor_metadata.default", "_assert_scalar.default", "sym_constrain_range_for_size.default",
     "sym_constrain_range.default", "_assert_async.msg")(_nothing)


# ---------------------------------------------------------------------------
# Compute


@aten("convolution.default")
def _convolution(ctx: Context, x: Value, weight: Value, bias: Value | None, stride: Any, padding: Any,
                 dilation: Any, transposed: bool, output_padding: Any, groups: int) -> Value:
    return L.conv(ctx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups)


@aten("addmm.default")
def _addmm(ctx: Context, bias: Value, x: Value, mat2: Value, beta: float = 1, alpha: float = 1) -> Value:
    return L.matmul_or_linear(ctx, x, mat2, bias, alpha, beta)


@aten("mm.default")
def _mm(ctx: Context, x: Value, mat2: Value) -> Value:
    return L.matmul_or_linear(ctx, x, mat2)


@aten("bmm.default", "matmul.default")
def _bmm(ctx: Context, x: Value, mat2: Value) -> Value:
    return ctx.call("matmul", x, mat2)


@aten("linear.default")
def _linear(ctx: Context, x: Value, weight: Value, bias: Value | None = None) -> Value:
    return L.linear(ctx, x, weight, bias)


@aten("scaled_dot_product_attention.default")
def _sdpa(ctx: Context, query: Value, key: Value, value: Value, attn_mask: Value | None = None,
          dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
          enable_gqa: bool = False) -> Value:
    return L.sdpa(ctx, query, key, value, attn_mask, is_causal, scale, enable_gqa)


@aten("einsum.default")
def _einsum(ctx: Context, equation: str, tensors: list, path: Any = None) -> Value:
    return ctx.call("einsum", *L.operands(ctx, *tensors), equation=equation)


@aten("_native_batch_norm_legit_no_training.default")
def _batch_norm(ctx: Context, x: Value, weight: Value | None, bias: Value | None, running_mean: Value,
                running_var: Value, momentum: float, eps: float) -> tuple:
    return (L.batch_norm(ctx, x, weight, bias, running_mean, running_var, eps), None, None)


@aten("native_group_norm.default")
def _group_norm(ctx: Context, x: Value, weight: Value | None, bias: Value | None, n: Any, c: Any, hw: Any,
                group: int, eps: float) -> tuple:
    return (L.group_norm(ctx, x, group, weight, bias, eps), None, None)


@aten("_native_batch_norm_legit.no_stats")
def _batch_stats_norm(ctx: Context, x: Value, weight: Value | None, bias: Value | None, training: bool,
                      momentum: float, eps: float) -> tuple:
    # torch's instance norm: the input viewed as [1, N*C, *spatial], normalized with its own statistics
    if x.type.shape[0] != 1:
        raise FrontendError(f"{ctx.where()}batch norm with batch statistics over {x.type} is training-mode "
                            "batch norm; only its instance-norm form (batch 1) is supported")
    return (L.instance_norm(ctx, x, weight, bias, eps), None, None)


@aten("native_layer_norm.default")
def _layer_norm(ctx: Context, x: Value, normalized_shape: Any, weight: Value | None, bias: Value | None,
                eps: float) -> tuple:
    return (L.layer_norm(ctx, x, normalized_shape, weight, bias, eps), None, None)


@aten("_softmax.default")
def _softmax(ctx: Context, x: Value, dim: int, half_to_float: bool = False) -> Value:
    return ctx.call("softmax", x, axis=int(dim))


@aten("_log_softmax.default")
def _log_softmax(ctx: Context, x: Value, dim: int, half_to_float: bool = False) -> Value:
    return ctx.call("log_softmax", x, axis=int(dim))


@aten("max_pool2d_with_indices.default", "max_pool1d_with_indices.default", "max_pool3d_with_indices.default")
def _max_pool_with_indices(ctx: Context, x: Value, kernel_size: Any, stride: Any = (), padding: Any = 0,
                           dilation: Any = 1, ceil_mode: bool = False) -> tuple:
    return (L.max_pool(ctx, x, kernel_size, stride, padding, dilation, ceil_mode), None)


@aten("max_pool2d.default", "max_pool1d.default", "max_pool3d.default")
def _max_pool(ctx: Context, x: Value, kernel_size: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1,
              ceil_mode: bool = False) -> Value:
    return L.max_pool(ctx, x, kernel_size, stride, padding, dilation, ceil_mode)


@aten("avg_pool2d.default", "avg_pool1d.default", "avg_pool3d.default")
def _avg_pool(ctx: Context, x: Value, kernel_size: Any, stride: Any = (), padding: Any = 0, ceil_mode: bool = False,
              count_include_pad: bool = True, divisor_override: Any = None) -> Value:
    return L.avg_pool(ctx, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


@aten("_adaptive_avg_pool2d.default", "adaptive_avg_pool2d.default", "_adaptive_avg_pool1d.default")
def _adaptive_avg_pool(ctx: Context, x: Value, output_size: Any) -> Value:
    return L.adaptive_avg_pool(ctx, x, output_size)


# ---------------------------------------------------------------------------
# Interpolation: the .vec overloads take (output_size, [align_corners,] scale_factors),
# the .default ones (output_size, [align_corners,] scales per axis)


def _upsample(mode: str, has_align_corners: bool, vec: bool):
    def convert(ctx: Context, x: Value, output_size: Any, *rest: Any) -> Value:
        align_corners = bool(rest[0]) if has_align_corners else None
        scales = rest[1:] if has_align_corners else rest
        scale_factor = scales[0] if vec else None if not scales or None in scales else list(scales)
        return L.interpolate(ctx, x, output_size, scale_factor, mode, align_corners)

    return convert


for _rank, _linear_name in ((1, "upsample_linear1d"), (2, "upsample_bilinear2d"), (3, "upsample_trilinear3d")):
    aten(f"upsample_nearest{_rank}d.vec")(_upsample("nearest", False, True))
    aten(f"upsample_nearest{_rank}d.default")(_upsample("nearest", False, False))
    aten(f"_upsample_nearest_exact{_rank}d.vec")(_upsample("nearest-exact", False, True))
    aten(f"_upsample_nearest_exact{_rank}d.default")(_upsample("nearest-exact", False, False))
    aten(f"{_linear_name}.vec")(_upsample("linear", True, True))
    aten(f"{_linear_name}.default")(_upsample("linear", True, False))
aten("upsample_bicubic2d.vec")(_upsample("bicubic", True, True))
aten("upsample_bicubic2d.default")(_upsample("bicubic", True, False))


@aten("embedding.default")
def _embedding(ctx: Context, weight: Value, indices: Value, *_: Any) -> Value:
    return ctx.call("gather", weight, indices, axis=0)


@aten("index_select.default")
def _index_select(ctx: Context, x: Value, dim: int, index: Value) -> Value:
    return ctx.call("gather", x, index, axis=L.axis_of(ctx, x, dim))


@aten("gather.default")
def _gather_elements(ctx: Context, x: Value, dim: int, index: Value, sparse_grad: bool = False) -> Value:
    return ctx.call("gather_elements", x, index, axis=L.axis_of(ctx, x, dim))


@aten("scatter.src", "scatter.value")
def _scatter(ctx: Context, x: Value, dim: int, index: Value, src: Any) -> Value:
    return L.scatter(ctx, x, dim, index, src)


@aten("scatter_add.default")
def _scatter_add(ctx: Context, x: Value, dim: int, index: Value, src: Value) -> Value:
    return L.scatter(ctx, x, dim, index, src, "sum")


@aten("scatter_reduce.two")
def _scatter_reduce(ctx: Context, x: Value, dim: int, index: Value, src: Value, reduce: str,
                    include_self: bool = True) -> Value:
    return L.scatter(ctx, x, dim, index, src, reduce, include_self)


@aten("index_put.default")
def _index_put(ctx: Context, x: Value, indices: list, values: Value, accumulate: bool = False) -> Value:
    return L.index_put(ctx, x, indices, values, accumulate)


@aten("one_hot.default")
def _one_hot(ctx: Context, x: Value, num_classes: int = -1) -> Value:
    return L.one_hot(ctx, x, num_classes)


@aten("index.Tensor")
def _index(ctx: Context, x: Value, indices: list) -> Value:
    return L.index(ctx, x, tuple(slice(None) if i is None else i for i in indices))


@aten("constant_pad_nd.default")
def _constant_pad(ctx: Context, x: Value, pad: Any, value: float = 0.0) -> Value:
    return L.pad(ctx, x, pad, "constant", value)


@aten("reflection_pad2d.default", "reflection_pad1d.default")
def _reflection_pad(ctx: Context, x: Value, padding: Any) -> Value:
    return L.pad(ctx, x, padding, "reflect")


@aten("replication_pad2d.default", "replication_pad1d.default")
def _replication_pad(ctx: Context, x: Value, padding: Any) -> Value:
    return L.pad(ctx, x, padding, "replicate")


# ---------------------------------------------------------------------------
# Reductions


def _reduction(op: str):
    def convert(ctx: Context, x: Value, dim: Any = None, keepdim: bool = False, **kwargs: Any) -> Value:
        return L.reduce(ctx, op, x, dim, keepdim)

    return convert


aten("mean.dim", "mean.default")(_reduction("reduce_mean"))
aten("sum.dim_IntList", "sum.default")(_reduction("reduce_sum"))
aten("amax.default", "max.default")(_reduction("reduce_max"))
aten("amin.default", "min.default")(_reduction("reduce_min"))
aten("prod.dim_int", "prod.default")(_reduction("reduce_prod"))


@aten("any.dim", "any.dims", "any.default")
def _any(ctx: Context, x: Value, dim: Any = None, keepdim: bool = False) -> Value:
    return L.any_(ctx, x, dim, keepdim)


@aten("fmod.Scalar", "fmod.Tensor")
def _fmod(ctx: Context, x: Value, other: Any) -> Value:
    return L.fmod(ctx, x, other)


@aten("linalg_vector_norm.default")
def _vector_norm(ctx: Context, x: Value, ord: float = 2, dim: Any = None, keepdim: bool = False,  # noqa: A002
                 dtype: Any = None) -> Value:
    return L.vector_norm(ctx, x, ord, dim, keepdim)


@aten("topk.default")
def _topk(ctx: Context, x: Value, k: int, dim: int = -1, largest: bool = True,
          sorted: bool = True) -> tuple:  # noqa: A002
    return L.top_k(ctx, x, k, dim, largest)


@aten("argmax.default")
def _argmax(ctx: Context, x: Value, dim: Any = None, keepdim: bool = False) -> Value:
    return L.argreduce(ctx, "argmax", x, dim, keepdim)


@aten("argmin.default")
def _argmin(ctx: Context, x: Value, dim: Any = None, keepdim: bool = False) -> Value:
    return L.argreduce(ctx, "argmin", x, dim, keepdim)


@aten("max.dim")
def _max_dim(ctx: Context, x: Value, dim: int, keepdim: bool = False) -> tuple:
    return (L.reduce(ctx, "reduce_max", x, [dim], keepdim), L.argreduce(ctx, "argmax", x, dim, keepdim))


@aten("min.dim")
def _min_dim(ctx: Context, x: Value, dim: int, keepdim: bool = False) -> tuple:
    return (L.reduce(ctx, "reduce_min", x, [dim], keepdim), L.argreduce(ctx, "argmin", x, dim, keepdim))


# ---------------------------------------------------------------------------
# Shapes and data movement


@aten("view.default", "_unsafe_view.default", "reshape.default")
def _view(ctx: Context, x: Value, size: Any) -> Value:
    return L.reshape(ctx, x, size)


@aten("expand.default")
def _expand(ctx: Context, x: Value, size: Any, implicit: bool = False) -> Value:
    return L.expand(ctx, x, size)


@aten("permute.default")
def _permute(ctx: Context, x: Value, dims: Any) -> Value:
    return L.permute(ctx, x, dims)


@aten("t.default", "numpy_T.default")
def _t(ctx: Context, x: Value) -> Value:
    return L.permute(ctx, x, list(reversed(range(x.type.rank))))


@aten("transpose.int")
def _transpose(ctx: Context, x: Value, dim0: int, dim1: int) -> Value:
    return L.swap_axes(ctx, x, dim0, dim1)


@aten("unsqueeze.default")
def _unsqueeze(ctx: Context, x: Value, dim: int) -> Value:
    return L.unsqueeze(ctx, x, dim)


@aten("squeeze.dim", "squeeze.dims", "squeeze.default")
def _squeeze(ctx: Context, x: Value, dim: Any = None) -> Value:
    return L.squeeze(ctx, x, dim)


@aten("cat.default")
def _cat(ctx: Context, tensors: list, dim: int = 0) -> Value:
    return L.concat(ctx, tensors, dim)


@aten("stack.default")
def _stack(ctx: Context, tensors: list, dim: int = 0) -> Value:
    return L.stack(ctx, tensors, dim)


@aten("split_with_sizes.default", "split.Tensor", "split.sizes")
def _split(ctx: Context, x: Value, split_size: Any, dim: int = 0) -> tuple:
    return L.split(ctx, x, split_size, dim)


@aten("unbind.int")
def _unbind(ctx: Context, x: Value, dim: int = 0) -> tuple:
    axis = L.axis_of(ctx, x, dim)
    return tuple(ctx.call("squeeze", part, axes=(axis,)) for part in L.split(ctx, x, 1, axis))


@aten("slice.Tensor")
def _slice(ctx: Context, x: Value, dim: int = 0, start: Any = None, end: Any = None, step: int = 1) -> Value:
    return L.slice_axis(ctx, x, dim, start, end, step)


@aten("select.int")
def _select(ctx: Context, x: Value, dim: int, index: int) -> Value:
    return L.select(ctx, x, dim, index)


@aten("repeat.default")
def _repeat(ctx: Context, x: Value, repeats: Any) -> Value:
    repeats = [int(r) for r in repeats]
    while x.type.rank < len(repeats):
        x = ctx.call("unsqueeze", x, axes=(0,))
    return ctx.call("tile", x, repeats=tuple(repeats))


@aten("cumsum.default")
def _cumsum(ctx: Context, x: Value, dim: int, dtype: Any = None) -> Value:
    return L.cumsum(ctx, x, dim, None if dtype is None else ir_dtype(dtype, ctx.where()))


@aten("triu.default")
def _triu(ctx: Context, x: Value, diagonal: int = 0) -> Value:
    return ctx.call("trilu", x, k=int(diagonal), upper=True)


@aten("tril.default")
def _tril(ctx: Context, x: Value, diagonal: int = 0) -> Value:
    return ctx.call("trilu", x, k=int(diagonal), upper=False)


@aten("sym_size.int")
def _sym_size(ctx: Context, x: Value, dim: int) -> Any:
    return x.type.shape[L.axis_of(ctx, x, dim)]
