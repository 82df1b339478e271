"""Converters for torch functions and Tensor methods, as torch.fx.symbolic_trace records them.

Parameter names follow torch's (``input``, ``dim``, ``keepdim``) so that keyword
calls bind; a function and the Tensor method of the same signature share one
converter (``torch.flatten(x, 1)`` and ``x.flatten(1)``).

Example::

    >>> import torch
    >>> from slimgraph.frontends.torch.registry import converter_for_function, load_converters
    >>> load_converters()
    >>> converter_for_function(torch.flatten).__name__
    '_flatten'
"""

from __future__ import annotations

import builtins
import operator
from typing import Any

import torch
import torch.nn.functional as F

from slimgraph.errors import FrontendError
from slimgraph.frontends.torch import lowering as L
from slimgraph.frontends.torch.context import Context, ir_dtype, torch_dtype
from slimgraph.frontends.torch.registry import function, method
from slimgraph.ir import DType, Value
from slimgraph.ir.types import dim_div, dim_mul

# ---------------------------------------------------------------------------
# Elementwise

_UNARY = {
    "relu": (torch.relu, F.relu), "sigmoid": (torch.sigmoid, F.sigmoid), "tanh": (torch.tanh, F.tanh),
    "silu": (F.silu,), "mish": (F.mish,), "hardswish": (F.hardswish,), "exp": (torch.exp,),
    "log": (torch.log,), "sqrt": (torch.sqrt,), "neg": (torch.neg, torch.negative), "abs": (torch.abs,),
    "erf": (torch.erf, torch.special.erf), "reciprocal": (torch.reciprocal,), "floor": (torch.floor,),
    "ceil": (torch.ceil,), "round": (torch.round,), "sign": (torch.sign,), "sin": (torch.sin,),
    "cos": (torch.cos,), "logical_not": (torch.logical_not,),
}


def _unary(op: str):
    def convert(ctx: Context, input: Value, *_: Any, **__: Any) -> Value:  # noqa: A002
        return ctx.call(op, input)

    return convert


for _op, _fns in _UNARY.items():
    function(*_fns, methods=(_op,))(_unary(_op))
for _name in ("relu_", "sigmoid_", "tanh_", "exp_", "neg_", "abs_"):
    method(_name)(_unary(_name[:-1]))
method("negative")(_unary("neg"))


@function(torch.rsqrt, methods=("rsqrt",))
def _rsqrt(ctx: Context, input: Value) -> Value:  # noqa: A002
    return ctx.call("reciprocal", ctx.call("sqrt", input))


@function(F.gelu, methods=("gelu",))
def _gelu(ctx: Context, input: Value, approximate: str = "none") -> Value:  # noqa: A002
    return ctx.call("gelu", input, approximate=approximate)


@function(F.relu6)
def _relu6(ctx: Context, input: Value, inplace: bool = False) -> Value:  # noqa: A002
    return L.clip(ctx, input, 0.0, 6.0)


@function(F.hardtanh)
def _hardtanh(ctx: Context, input: Value, min_val: float = -1.0, max_val: float = 1.0,  # noqa: A002
              inplace: bool = False) -> Value:
    return L.clip(ctx, input, min_val, max_val)


@function(torch.clamp, torch.clip, methods=("clamp", "clip", "clamp_"))
def _clamp(ctx: Context, input: Value, min: Any = None, max: Any = None) -> Value:  # noqa: A002
    return L.clip(ctx, input, min, max)


@function(F.hardsigmoid)
def _hardsigmoid(ctx: Context, input: Value, inplace: bool = False) -> Value:  # noqa: A002
    return ctx.call("hardsigmoid", input)


@function(F.leaky_relu)
def _leaky_relu(ctx: Context, input: Value, negative_slope: float = 0.01, inplace: bool = False) -> Value:  # noqa: A002
    return ctx.call("leaky_relu", input, alpha=float(negative_slope))


@function(F.elu)
def _elu(ctx: Context, input: Value, alpha: float = 1.0, inplace: bool = False) -> Value:  # noqa: A002
    return L.elu(ctx, input, alpha)


@function(F.selu, torch.selu)
def _selu(ctx: Context, input: Value, inplace: bool = False) -> Value:  # noqa: A002
    return ctx.call("selu", input)


@function(F.softplus)
def _softplus(ctx: Context, input: Value, beta: float = 1.0, threshold: float = 20.0) -> Value:  # noqa: A002
    return L.softplus(ctx, input, beta, threshold)


@function(F.prelu)
def _prelu(ctx: Context, input: Value, weight: Value) -> Value:  # noqa: A002
    return L.prelu(ctx, input, weight)


def _arith(op: str):
    def convert(ctx: Context, input: Any, other: Any, *, alpha: Any = 1, out: Any = None) -> Value:  # noqa: A002
        return L.binary(ctx, op, input, L.scaled(ctx, other, alpha))

    return convert


function(torch.add, methods=("add", "add_"))(_arith("add"))
function(torch.sub, torch.subtract, methods=("sub", "sub_"))(_arith("sub"))
function(torch.mul, torch.multiply, methods=("mul", "mul_"))(_arith("mul"))


@function(torch.div, torch.divide, torch.true_divide, methods=("div", "div_", "divide"))
def _div(ctx: Context, input: Any, other: Any, *, rounding_mode: str | None = None) -> Value:  # noqa: A002
    return L.divide(ctx, input, other, rounding_mode)


@function(torch.pow, methods=("pow",))
def _pow(ctx: Context, input: Any, exponent: Any) -> Value:  # noqa: A002
    return L.power(ctx, input, exponent)


@function(torch.maximum, methods=("maximum",))
def _maximum(ctx: Context, input: Value, other: Value) -> Value:  # noqa: A002
    return L.binary(ctx, "max", input, other)


@function(torch.minimum, methods=("minimum",))
def _minimum(ctx: Context, input: Value, other: Value) -> Value:  # noqa: A002
    return L.binary(ctx, "min", input, other)


def _comparison(op: str):
    def convert(ctx: Context, input: Any, other: Any) -> Value:  # noqa: A002
        return L.compare(ctx, op, input, other)

    return convert


for _cmp in ("eq", "ne", "lt", "le", "gt", "ge"):
    function(getattr(torch, _cmp), methods=(_cmp,))(_comparison(_cmp))


@function(torch.fmod, methods=("fmod",))
def _fmod(ctx: Context, input: Value, other: Any) -> Value:  # noqa: A002
    return L.fmod(ctx, input, other)


@function(torch.linalg.vector_norm)
def _vector_norm(ctx: Context, x: Value, ord: float = 2, dim: Any = None, keepdim: bool = False,  # noqa: A002
                 dtype: Any = None) -> Value:
    return L.vector_norm(ctx, x, ord, dim, keepdim)


@function(torch.topk, methods=("topk",))
def _topk(ctx: Context, input: Value, k: int, dim: int = -1, largest: bool = True,  # noqa: A002
          sorted: bool = True) -> tuple:  # noqa: A002
    return L.top_k(ctx, input, k, dim, largest)


@function(torch.where)
def _where(ctx: Context, condition: Value, input: Any, other: Any) -> Value:  # noqa: A002
    return L.where(ctx, condition, input, other)


def _logical(op: str):
    def convert(ctx: Context, input: Any, other: Any) -> Value:  # noqa: A002
        return L.logical(ctx, op, input, other)

    return convert


def _bitwise(op: str):
    def convert(ctx: Context, input: Any, other: Any) -> Value:  # noqa: A002
        return L.bitwise(ctx, op, input, other)

    return convert


for _op, _operator in (("and", operator.and_), ("or", operator.or_), ("xor", operator.xor)):
    function(getattr(torch, f"logical_{_op}"), methods=(f"logical_{_op}",))(_logical(_op))
    function(getattr(torch, f"bitwise_{_op}"), _operator, methods=(f"bitwise_{_op}", f"__{_op}__"))(_bitwise(_op))


@function(torch.bitwise_not, operator.invert, methods=("bitwise_not", "__invert__"))
def _bitwise_not(ctx: Context, input: Value) -> Value:  # noqa: A002
    return L.bitwise_not(ctx, input)


@function(torch.isnan, methods=("isnan",))
def _isnan(ctx: Context, input: Value) -> Value:  # noqa: A002
    return L.isnan(ctx, input)


@function(torch.cumsum, methods=("cumsum",))
def _cumsum(ctx: Context, input: Value, dim: int, *, dtype: Any = None) -> Value:  # noqa: A002
    return L.cumsum(ctx, input, dim, None if dtype is None else ir_dtype(dtype, ctx.where()))


@function(torch.triu, methods=("triu",))
def _triu(ctx: Context, input: Value, diagonal: int = 0) -> Value:  # noqa: A002
    return ctx.call("trilu", input, k=int(diagonal), upper=True)


@function(torch.tril, methods=("tril",))
def _tril(ctx: Context, input: Value, diagonal: int = 0) -> Value:  # noqa: A002
    return ctx.call("trilu", input, k=int(diagonal), upper=False)


@method("masked_fill")
def _masked_fill(ctx: Context, input: Value, mask: Value, value: Any) -> Value:  # noqa: A002
    return L.where(ctx, mask, value, input)


@function(torch.zeros_like)
def _zeros_like(ctx: Context, input: Value, *, dtype: Any = None, **_: Any) -> Value:  # noqa: A002
    return L.full_like(ctx, input, 0, None if dtype is None else ir_dtype(dtype, ctx.where()))


@function(torch.ones_like)
def _ones_like(ctx: Context, input: Value, *, dtype: Any = None, **_: Any) -> Value:  # noqa: A002
    return L.full_like(ctx, input, 1, None if dtype is None else ir_dtype(dtype, ctx.where()))


@function(torch.full_like)
def _full_like(ctx: Context, input: Value, fill_value: Any, *, dtype: Any = None, **_: Any) -> Value:  # noqa: A002
    return L.full_like(ctx, input, fill_value, None if dtype is None else ir_dtype(dtype, ctx.where()))


# ---------------------------------------------------------------------------
# Dtypes and no-ops


@method("to", "type")
def _to(ctx: Context, input: Value, *args: Any, **kwargs: Any) -> Value:  # noqa: A002
    dtypes = [a for a in list(args) + [kwargs.get("dtype")] if isinstance(a, torch.dtype)]
    return L.cast(ctx, input, ir_dtype(dtypes[0], ctx.where())) if dtypes else input


def _cast_method(dtype: DType):
    def convert(ctx: Context, input: Value, *_: Any, **__: Any) -> Value:  # noqa: A002
        return L.cast(ctx, input, dtype)

    return convert


for _name, _dtype in (("float", DType.float32), ("double", DType.float64), ("half", DType.float16),
                      ("bfloat16", DType.bfloat16), ("int", DType.int32), ("long", DType.int64), ("bool", DType.bool)):
    method(_name)(_cast_method(_dtype))


@method("type_as")
def _type_as(ctx: Context, input: Value, other: Value) -> Value:  # noqa: A002
    return L.cast(ctx, input, other.type.dtype)


def _alias(ctx: Context, input: Any, *_: Any, **__: Any) -> Any:  # noqa: A002
    return input


function(F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.clone,
         methods=("contiguous", "clone", "detach", "cpu", "requires_grad_"))(_alias)


# ---------------------------------------------------------------------------
# Shape queries (they return IR dims: ints, or "N" for a symbolic batch)


@method("size")
def _size(ctx: Context, input: Value, dim: int | None = None) -> Any:  # noqa: A002
    shape = input.type.shape
    return tuple(shape) if dim is None else shape[L.axis_of(ctx, input, dim)]


@method("dim")
def _dim(ctx: Context, input: Value) -> int:  # noqa: A002
    return input.type.rank


@function(builtins.getattr)
def _getattr(ctx: Context, obj: Any, name: str) -> Any:
    if isinstance(obj, tuple) and name in ("values", "indices"):  # torch.max(x, dim).values
        return obj[0 if name == "values" else 1]
    if not L.is_value(obj):
        raise FrontendError(f"{ctx.where()}getattr({type(obj).__name__}, {name!r}) is not supported")
    attrs = {
        "shape": lambda v: tuple(v.type.shape),
        "ndim": lambda v: v.type.rank,
        "dtype": lambda v: torch_dtype(v.type.dtype),
        "T": lambda v: L.permute(ctx, v, list(reversed(range(v.type.rank)))),
        "mT": lambda v: L.swap_axes(ctx, v, -1, -2),
    }
    if name not in attrs:
        raise FrontendError(f"{ctx.where()}tensor attribute {name!r} is not supported; supported: {', '.join(attrs)}")
    return attrs[name](obj)


# ---------------------------------------------------------------------------
# Shapes and data movement


@method("view", "reshape")
def _view(ctx: Context, input: Value, *shape: Any) -> Value:  # noqa: A002
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if len(shape) == 1 and isinstance(shape[0], torch.dtype):
        raise FrontendError(f"{ctx.where()}Tensor.view(dtype) reinterprets bits; not supported")
    return L.reshape(ctx, input, shape)


@function(torch.reshape)
def _reshape(ctx: Context, input: Value, shape: Any) -> Value:  # noqa: A002
    return L.reshape(ctx, input, shape)


@method("view_as", "reshape_as")
def _view_as(ctx: Context, input: Value, other: Value) -> Value:  # noqa: A002
    return L.reshape(ctx, input, other.type.shape)


@function(torch.flatten, methods=("flatten",))
def _flatten(ctx: Context, input: Value, start_dim: int = 0, end_dim: int = -1) -> Value:  # noqa: A002
    return L.flatten(ctx, input, start_dim, end_dim)


@method("expand")
def _expand(ctx: Context, input: Value, *sizes: Any) -> Value:  # noqa: A002
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    return L.expand(ctx, input, sizes)


@method("expand_as")
def _expand_as(ctx: Context, input: Value, other: Value) -> Value:  # noqa: A002
    return L.expand(ctx, input, other.type.shape)


@method("repeat")
def _repeat(ctx: Context, input: Value, *repeats: Any) -> Value:  # noqa: A002
    if len(repeats) == 1 and isinstance(repeats[0], (tuple, list)):
        repeats = tuple(repeats[0])
    while input.type.rank < len(repeats):
        input = ctx.call("unsqueeze", input, axes=(0,))
    return ctx.call("tile", input, repeats=tuple(int(r) for r in repeats))


@method("permute")
def _permute_method(ctx: Context, input: Value, *dims: Any) -> Value:  # noqa: A002
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return L.permute(ctx, input, dims)


@function(torch.permute)
def _permute(ctx: Context, input: Value, dims: Any) -> Value:  # noqa: A002
    return L.permute(ctx, input, dims)


@function(torch.transpose, torch.swapaxes, methods=("transpose", "swapaxes"))
def _transpose(ctx: Context, input: Value, dim0: int, dim1: int) -> Value:  # noqa: A002
    return L.swap_axes(ctx, input, dim0, dim1)


@function(torch.t, methods=("t",))
def _t(ctx: Context, input: Value) -> Value:  # noqa: A002
    return L.permute(ctx, input, list(reversed(range(input.type.rank))))


@function(torch.unsqueeze, methods=("unsqueeze",))
def _unsqueeze(ctx: Context, input: Value, dim: int) -> Value:  # noqa: A002
    return L.unsqueeze(ctx, input, dim)


@function(torch.squeeze, methods=("squeeze",))
def _squeeze(ctx: Context, input: Value, dim: Any = None) -> Value:  # noqa: A002
    return L.squeeze(ctx, input, dim)


@function(torch.cat, torch.concat, torch.concatenate)
def _cat(ctx: Context, tensors: Any, dim: int = 0) -> Value:
    return L.concat(ctx, list(tensors), dim)


@function(torch.stack)
def _stack(ctx: Context, tensors: Any, dim: int = 0) -> Value:
    return L.stack(ctx, list(tensors), dim)


@function(torch.split, methods=("split",))
def _split(ctx: Context, tensor: Value, split_size_or_sections: Any, dim: int = 0) -> tuple:
    return L.split(ctx, tensor, split_size_or_sections, dim)


@function(torch.chunk, methods=("chunk",))
def _chunk(ctx: Context, input: Value, chunks: int, dim: int = 0) -> tuple:  # noqa: A002
    return L.chunk(ctx, input, chunks, dim)


@function(torch.unbind, methods=("unbind",))
def _unbind(ctx: Context, input: Value, dim: int = 0) -> tuple:  # noqa: A002
    axis = L.axis_of(ctx, input, dim)
    return tuple(ctx.call("squeeze", part, axes=(axis,)) for part in L.split(ctx, input, 1, axis))


@function(torch.select, methods=("select",))
def _select(ctx: Context, input: Value, dim: int, index: int) -> Value:  # noqa: A002
    return L.select(ctx, input, dim, index)


@function(torch.narrow, methods=("narrow",))
def _narrow(ctx: Context, input: Value, dim: int, start: int, length: int) -> Value:  # noqa: A002
    return L.slice_axis(ctx, input, dim, start, start + length)


@function(F.pad)
def _pad(ctx: Context, input: Value, pad: Any, mode: str = "constant", value: float | None = None) -> Value:  # noqa: A002
    return L.pad(ctx, input, pad, mode, value)


@function(F.embedding)
def _embedding(ctx: Context, input: Value, weight: Value, *_: Any, **__: Any) -> Value:  # noqa: A002
    return ctx.call("gather", weight, input, axis=0)


@function(torch.gather, methods=("gather",))
def _gather_elements(ctx: Context, input: Value, dim: int, index: Value,  # noqa: A002
                     *, sparse_grad: bool = False) -> Value:
    return ctx.call("gather_elements", input, index, axis=L.axis_of(ctx, input, dim))


@function(torch.scatter, methods=("scatter",))
def _scatter(ctx: Context, input: Value, dim: int, index: Value, src: Any = None, *, value: Any = None,  # noqa: A002
             reduce: str | None = None) -> Value:
    if reduce is not None:
        raise FrontendError(f"{ctx.where()}scatter(reduce={reduce!r}) is deprecated in torch and not supported; "
                            "use scatter_reduce")
    return L.scatter(ctx, input, dim, index, value if src is None else src)


@function(torch.scatter_add, methods=("scatter_add",))
def _scatter_add(ctx: Context, input: Value, dim: int, index: Value, src: Value) -> Value:  # noqa: A002
    return L.scatter(ctx, input, dim, index, src, "sum")


@function(torch.scatter_reduce, methods=("scatter_reduce",))
def _scatter_reduce(ctx: Context, input: Value, dim: int, index: Value, src: Value, reduce: str,  # noqa: A002
                    *, include_self: bool = True) -> Value:
    return L.scatter(ctx, input, dim, index, src, reduce, include_self)


@function(F.one_hot)
def _one_hot(ctx: Context, tensor: Value, num_classes: int = -1) -> Value:
    return L.one_hot(ctx, tensor, num_classes)


@function(torch.index_select, methods=("index_select",))
def _index_select(ctx: Context, input: Value, dim: int, index: Value) -> Value:  # noqa: A002
    return ctx.call("gather", input, index, axis=L.axis_of(ctx, input, dim))


# ---------------------------------------------------------------------------
# Compute


@function(torch.matmul, torch.bmm, torch.mm, methods=("matmul", "bmm", "mm"))
def _matmul(ctx: Context, input: Value, other: Value) -> Value:  # noqa: A002
    return L.matmul_or_linear(ctx, input, other)


@function(F.linear)
def _linear(ctx: Context, input: Value, weight: Value, bias: Value | None = None) -> Value:  # noqa: A002
    return L.linear(ctx, input, weight, bias)


@function(torch.addmm)
def _addmm(ctx: Context, input: Value, mat1: Value, mat2: Value, *, beta: float = 1, alpha: float = 1) -> Value:  # noqa: A002
    return L.matmul_or_linear(ctx, mat1, mat2, input, alpha, beta)


@function(F.conv1d, F.conv2d, F.conv3d)
def _conv(ctx: Context, input: Value, weight: Value, bias: Value | None = None, stride: Any = 1,  # noqa: A002
          padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Value:
    return L.conv(ctx, input, weight, bias, stride, padding, dilation, False, 0, groups)


@function(F.conv_transpose1d, F.conv_transpose2d)
def _conv_transpose(ctx: Context, input: Value, weight: Value, bias: Value | None = None, stride: Any = 1,  # noqa: A002
                    padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Value:
    return L.conv(ctx, input, weight, bias, stride, padding, dilation, True, output_padding, groups)


@function(F.max_pool1d, F.max_pool2d, F.max_pool3d)
def _max_pool(ctx: Context, input: Value, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
              dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False) -> Value:
    if return_indices:
        raise FrontendError(f"{ctx.where()}max pooling with return_indices=True is not supported")
    return L.max_pool(ctx, input, kernel_size, stride, padding, dilation, ceil_mode)


@function(F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)
def _avg_pool(ctx: Context, input: Value, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
              ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: Any = None) -> Value:
    return L.avg_pool(ctx, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


@function(F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)
def _adaptive_avg_pool(ctx: Context, input: Value, output_size: Any) -> Value:  # noqa: A002
    return L.adaptive_avg_pool(ctx, input, output_size)


@function(F.batch_norm)
def _batch_norm(ctx: Context, input: Value, running_mean: Value | None, running_var: Value | None,  # noqa: A002
                weight: Value | None = None, bias: Value | None = None, training: bool = False,
                momentum: float = 0.1, eps: float = 1e-5) -> Value:
    if running_mean is None or running_var is None:
        raise FrontendError(f"{ctx.where()}batch norm without running statistics uses batch statistics; not supported")
    return L.batch_norm(ctx, input, weight, bias, running_mean, running_var, eps)


@function(F.layer_norm)
def _layer_norm(ctx: Context, input: Value, normalized_shape: Any, weight: Value | None = None,  # noqa: A002
                bias: Value | None = None, eps: float = 1e-5) -> Value:
    return L.layer_norm(ctx, input, normalized_shape, weight, bias, eps)


@function(F.group_norm)
def _group_norm(ctx: Context, input: Value, num_groups: int, weight: Value | None = None,  # noqa: A002
                bias: Value | None = None, eps: float = 1e-5) -> Value:
    return L.group_norm(ctx, input, num_groups, weight, bias, eps)


@function(F.instance_norm)
def _instance_norm(ctx: Context, input: Value, running_mean: Value | None = None,  # noqa: A002
                   running_var: Value | None = None, weight: Value | None = None, bias: Value | None = None,
                   use_input_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> Value:
    if not use_input_stats:
        return L.batch_norm(ctx, input, weight, bias, running_mean, running_var, eps)
    return L.instance_norm(ctx, input, weight, bias, eps)


@function(F.interpolate)
def _interpolate(ctx: Context, input: Value, size: Any = None, scale_factor: Any = None,  # noqa: A002
                 mode: str = "nearest", align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                 antialias: bool = False) -> Value:
    if antialias:
        raise FrontendError(f"{ctx.where()}interpolate with antialias=True is not supported")
    return L.interpolate(ctx, input, size, scale_factor, mode, align_corners, recompute_scale_factor)


@function(F.scaled_dot_product_attention)
def _sdpa(ctx: Context, query: Value, key: Value, value: Value, attn_mask: Value | None = None,
          dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
          enable_gqa: bool = False) -> Value:
    return L.sdpa(ctx, query, key, value, attn_mask, is_causal, scale, enable_gqa)


@function(torch.einsum)
def _einsum(ctx: Context, equation: str, *operands: Any) -> Value:
    tensors = operands[0] if len(operands) == 1 and isinstance(operands[0], (list, tuple)) else operands
    return ctx.call("einsum", *L.operands(ctx, *tensors), equation=equation)


@function(F.softmax, torch.softmax, methods=("softmax",))
def _softmax(ctx: Context, input: Value, dim: int | None = None, _stacklevel: int = 3,  # noqa: A002
             dtype: Any = None) -> Value:
    if dim is None:
        raise FrontendError(f"{ctx.where()}softmax needs an explicit dim")
    return ctx.call("softmax", input, axis=int(dim))


@function(F.log_softmax, torch.log_softmax, methods=("log_softmax",))
def _log_softmax(ctx: Context, input: Value, dim: int | None = None, _stacklevel: int = 3,  # noqa: A002
                 dtype: Any = None) -> Value:
    if dim is None:
        raise FrontendError(f"{ctx.where()}log_softmax needs an explicit dim")
    return ctx.call("log_softmax", input, axis=int(dim))


# ---------------------------------------------------------------------------
# Reductions


def _reduction(op: str):
    def convert(ctx: Context, input: Value, dim: Any = None, keepdim: bool = False, *,  # noqa: A002
                dtype: Any = None) -> Value:
        return L.reduce(ctx, op, input, dim, keepdim)

    return convert


function(torch.mean, methods=("mean",))(_reduction("reduce_mean"))
function(torch.sum, methods=("sum",))(_reduction("reduce_sum"))
function(torch.amax, methods=("amax",))(_reduction("reduce_max"))
function(torch.amin, methods=("amin",))(_reduction("reduce_min"))
function(torch.prod, methods=("prod",))(_reduction("reduce_prod"))


@function(torch.any, methods=("any",))
def _any(ctx: Context, input: Value, dim: Any = None, keepdim: bool = False) -> Value:  # noqa: A002
    return L.any_(ctx, input, dim, keepdim)


@function(torch.argmax, methods=("argmax",))
def _argmax(ctx: Context, input: Value, dim: Any = None, keepdim: bool = False) -> Value:  # noqa: A002
    return L.argreduce(ctx, "argmax", input, dim, keepdim)


@function(torch.argmin, methods=("argmin",))
def _argmin(ctx: Context, input: Value, dim: Any = None, keepdim: bool = False) -> Value:  # noqa: A002
    return L.argreduce(ctx, "argmin", input, dim, keepdim)


def _max_or_min(reduce_op: str, arg_op: str, pair_op: str):
    def convert(ctx: Context, input: Value, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A002
        if L.is_value(dim):  # torch.max(a, b) is elementwise
            return L.binary(ctx, pair_op, input, dim)
        if dim is None:
            return L.reduce(ctx, reduce_op, input, None, False)
        return (L.reduce(ctx, reduce_op, input, [dim], keepdim), L.argreduce(ctx, arg_op, input, dim, keepdim))

    return convert


function(torch.max, methods=("max",))(_max_or_min("reduce_max", "argmax", "max"))
function(torch.min, methods=("min",))(_max_or_min("reduce_min", "argmin", "min"))


# ---------------------------------------------------------------------------
# Python operators: on sizes (shape arithmetic, both paths) and on tensors (torch.fx)


def _python_binary(tensor_fn: Any, size_fn: Any):
    def convert(ctx: Context, a: Any, b: Any) -> Any:
        if L.is_value(a) or L.is_value(b):
            return tensor_fn(ctx, a, b)
        return _size_arith(ctx, size_fn, a, b)

    return convert


def _size_arith(ctx: Context, fn: Any, a: Any, b: Any) -> Any:
    a, b = _size_or_number(ctx, a), _size_or_number(ctx, b)
    if not isinstance(a, str) and not isinstance(b, str):
        return fn(a, b)
    if fn is operator.mul:
        return dim_mul(a, b)
    if fn is operator.floordiv and dim_div(a, b) is not None:
        return dim_div(a, b)
    raise FrontendError(f"{ctx.where()}size arithmetic {a} {fn.__name__} {b} is not a product of the batch size")


def _size_or_number(ctx: Context, x: Any) -> Any:
    return x if isinstance(x, (int, float, str)) else ctx.dim(x)


function(operator.add)(_python_binary(lambda ctx, a, b: L.binary(ctx, "add", a, b), operator.add))
function(operator.sub)(_python_binary(lambda ctx, a, b: L.binary(ctx, "sub", a, b), operator.sub))
function(operator.mul)(_python_binary(lambda ctx, a, b: L.binary(ctx, "mul", a, b), operator.mul))
function(operator.truediv)(_python_binary(L.true_divide, operator.truediv))
function(operator.floordiv)(_python_binary(lambda ctx, a, b: L.divide(ctx, a, b, "floor"), operator.floordiv))
function(operator.pow)(_python_binary(_pow, operator.pow))
function(operator.matmul)(_matmul)
function(operator.neg)(_unary("neg"))
for _cmp in ("eq", "ne", "lt", "le", "gt", "ge"):
    function(getattr(operator, _cmp))(_comparison(_cmp))


@function(operator.getitem)
def _getitem(ctx: Context, obj: Any, key: Any) -> Any:
    if L.is_value(obj):
        return L.index(ctx, obj, key)
    if isinstance(obj, (tuple, list)):
        return obj[key]  # None for outputs slimgraph does not compute; the walker reports a use
    raise FrontendError(f"{ctx.where()}cannot index a {type(obj).__name__}")
