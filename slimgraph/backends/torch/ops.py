"""Torch implementations of IR ops, one function per op: ``fn(*tensors, **attrs)``.

They follow the op contract of docs/ops.md (ONNX-style pads, NCHW layout) so
that a graph run op by op in torch matches the reference interpreter, and
they are differentiable so the graph's weights can be fine-tuned.

Example::

    >>> import torch
    >>> TORCH_OPS["relu"](torch.tensor([-1.0, 2.0])).tolist()
    [0.0, 2.0]
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from slimgraph.errors import BackendError, IndexOutOfRangeError
from slimgraph.ir.ops.nn import resize_tables
from slimgraph.registry import Registry

TorchOp = Callable[..., "torch.Tensor | tuple[torch.Tensor, ...]"]
TORCH_OPS: Registry[str, TorchOp] = Registry("torch kernel")


def torch_op(*names: str) -> Callable[[TorchOp], TorchOp]:
    """Register ``fn`` as the torch implementation of the named ops."""

    return TORCH_OPS.decorator(*names)


def _simple(name: str, fn: Callable[..., torch.Tensor]) -> None:
    TORCH_OPS.register(name, lambda *xs, **attrs: fn(*xs))


for _name, _fn in {
    "identity": lambda x: x,
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "pow": torch.pow,
    "neg": torch.neg,
    "abs": torch.abs,
    "sqrt": torch.sqrt,
    "exp": torch.exp,
    "log": torch.log,
    "erf": torch.erf,
    "reciprocal": torch.reciprocal,
    "floor": torch.floor,
    "ceil": torch.ceil,
    "round": torch.round,
    "sign": torch.sign,
    "sin": torch.sin,
    "cos": torch.cos,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "silu": F.silu,
    "softplus": F.softplus,
    "mish": F.mish,
    "hardswish": F.hardswish,
    "prelu": lambda x, slope: torch.where(x >= 0, x, x * slope),
    "where": torch.where,
    "equal": torch.eq,
    "less": torch.lt,
    "less_equal": torch.le,
    "greater": torch.gt,
    "greater_equal": torch.ge,
    "logical_not": torch.logical_not,
    "logical_and": torch.logical_and,
    "logical_or": torch.logical_or,
    "logical_xor": torch.logical_xor,
    "matmul": torch.matmul,
    "global_avg_pool": lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "global_max_pool": lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
}.items():
    _simple(_name, _fn)


@torch_op("div")
def _div(a, b):
    return torch.div(a, b, rounding_mode=None if a.is_floating_point() else "trunc")


def _variadic(reduce: Callable) -> TorchOp:
    def fn(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = reduce(out, x)
        return out

    return fn


TORCH_OPS.register("min", _variadic(torch.minimum))
TORCH_OPS.register("max", _variadic(torch.maximum))


@torch_op("cast")
def _cast(x, *, to):
    return x.to(torch.from_numpy(np.zeros(0, to.numpy)).dtype)


@torch_op("leaky_relu")
def _leaky_relu(x, *, alpha):
    return F.leaky_relu(x, alpha)


@torch_op("elu")
def _elu(x, *, alpha):
    return F.elu(x, alpha)


@torch_op("selu")
def _selu(x, *, alpha, gamma):
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@torch_op("gelu")
def _gelu(x, *, approximate):
    return F.gelu(x, approximate=approximate)


@torch_op("hardsigmoid")
def _hardsigmoid(x, *, alpha, beta):
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


@torch_op("clip")
def _clip(x, *, min, max):  # noqa: A002 - the IR's attribute names
    return torch.clamp(x, None if math.isinf(min) else min, None if math.isinf(max) else max)


@torch_op("linear")
def _linear(x, w, b=None, *, trans_a, trans_b, alpha, beta):
    a = x.transpose(-1, -2) if trans_a else x
    y = a @ (w.t() if trans_b else w)
    if alpha != 1.0:
        y = alpha * y
    if b is not None:
        y = y + (beta * b if beta != 1.0 else b)
    return y


def _split_pads(pads, rank: int) -> tuple[list[int], list[int]]:
    pads = list(pads) or [0] * (2 * rank)
    return pads[:rank], pads[rank:]


def _torch_pad(begins, ends) -> list[int]:
    """ONNX begins/ends per axis -> F.pad's (last axis first) pairs."""
    out: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        out += [b, e]
    return out


@torch_op("conv")
def _conv(x, w, b=None, *, strides, pads, dilations, groups):
    rank = x.dim() - 2
    begins, ends = _split_pads(pads, rank)
    padding: list[int] | int = begins
    if begins != ends:
        x, padding = F.pad(x, _torch_pad(begins, ends)), 0
    fn = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
    return fn(x, w, b, tuple(strides) or 1, padding, tuple(dilations) or 1, groups)


@torch_op("batch_norm")
def _batch_norm(x, scale, bias, mean, var, *, epsilon):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=epsilon)


@torch_op("instance_norm")
def _instance_norm(x, scale, bias, *, epsilon):
    return F.instance_norm(x, weight=scale, bias=bias, eps=epsilon)


@torch_op("top_k")
def _top_k(x, *, k, axis, largest):
    # a stable sort keeps equal values in index order, as the reference does; torch.topk does not promise it
    values, indices = torch.sort(x, dim=axis, descending=largest, stable=True)
    return values.narrow(axis, 0, k), indices.narrow(axis, 0, k)


@torch_op("group_norm")
def _group_norm(x, scale, bias, *, groups, epsilon):
    return F.group_norm(x, groups, scale, bias, epsilon)


@torch_op("resize")
def _resize(x, **attrs):
    # torch's interpolate covers only some of the ONNX coordinate modes; the
    # IR's own tap tables cover all of them, and index_select stays differentiable
    y = x
    for axis, (index, weight) in enumerate(resize_tables(tuple(x.shape), attrs), start=2):
        taps = torch.as_tensor(index.reshape(-1), device=x.device)
        picked = y.index_select(axis, taps).unflatten(axis, index.shape)
        if attrs["mode"] == "nearest":
            y = picked.squeeze(axis + 1)
        else:
            w = torch.as_tensor(weight, dtype=x.dtype, device=x.device)
            y = (picked * w.reshape(w.shape + (1,) * (x.dim() - axis - 1))).sum(axis + 1)
    return y


@torch_op("layer_norm")
def _layer_norm(x, scale=None, bias=None, *, axis, epsilon):
    axis = axis % x.dim()
    shape = x.shape[axis:]
    return F.layer_norm(
        x, shape, None if scale is None else scale.expand(shape), None if bias is None else bias.expand(shape), epsilon
    )


@torch_op("max_pool")
def _max_pool(x, *, kernel, strides, pads, dilations, ceil_mode):
    rank = x.dim() - 2
    begins, ends = _split_pads(pads, rank)
    if any(begins) or any(ends):
        x = F.pad(x, _torch_pad(begins, ends), value=float("-inf"))
    fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[rank - 1]
    return fn(x, tuple(kernel), tuple(strides) or tuple(kernel), 0, tuple(dilations) or 1, ceil_mode)


@torch_op("avg_pool")
def _avg_pool(x, *, kernel, strides, pads, ceil_mode, count_include_pad):
    rank = x.dim() - 2
    begins, ends = _split_pads(pads, rank)
    if begins != ends or any(2 * p > k for p, k in zip(begins, kernel)):
        raise BackendError(f"avg_pool: the torch backend needs symmetric pads of at most half the kernel, got {pads}")
    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
    return fn(x, tuple(kernel), tuple(strides) or tuple(kernel), tuple(begins), ceil_mode, count_include_pad)


@torch_op("softmax")
def _softmax(x, *, axis):
    return torch.softmax(x, axis)


@torch_op("log_softmax")
def _log_softmax(x, *, axis):
    return torch.log_softmax(x, axis)


def _reduce(fn: Callable) -> TorchOp:
    def reduce(x, *, axes, keepdims):
        dims = tuple(axes) or tuple(range(x.dim()))
        return fn(x, dims, keepdims)

    return reduce


TORCH_OPS.register("reduce_sum", _reduce(lambda x, d, k: torch.sum(x, d, keepdim=k)))
TORCH_OPS.register("reduce_mean", _reduce(lambda x, d, k: torch.mean(x, d, keepdim=k)))
TORCH_OPS.register("reduce_max", _reduce(lambda x, d, k: torch.amax(x, d, keepdim=k)))
TORCH_OPS.register("reduce_min", _reduce(lambda x, d, k: torch.amin(x, d, keepdim=k)))


@torch_op("reshape")
def _reshape(x, *, shape):
    # ONNX reshape: 0 copies the input's dim; torch has no such code.
    return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(shape)])


@torch_op("flatten")
def _flatten(x, *, axis):
    axis = axis % x.dim() if x.dim() else 0
    return x.reshape(math.prod(x.shape[:axis]), -1)


@torch_op("transpose")
def _transpose(x, *, perm):
    return x.permute(tuple(perm) or tuple(reversed(range(x.dim()))))


@torch_op("squeeze")
def _squeeze(x, *, axes):
    dims = tuple(a % x.dim() for a in axes) or tuple(i for i, n in enumerate(x.shape) if n == 1)
    return x.squeeze(dims) if dims else x


@torch_op("unsqueeze")
def _unsqueeze(x, *, axes):
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


@torch_op("concat")
def _concat(*xs, axis):
    return torch.cat(xs, axis)


@torch_op("split")
def _split(x, *, axis, sizes):
    return tuple(torch.split(x, list(sizes), axis))


@torch_op("codebook_decode")
def _codebook_decode(indices, codebook, *, bits, shape):
    from slimgraph.ir.ops.compress import unpack_codes

    count = math.prod(shape)
    codes = torch.from_numpy(unpack_codes(indices.detach().cpu().numpy(), bits, count).astype(np.int64))
    return codebook[codes.to(codebook.device)].reshape(shape)


@torch_op("expand")
def _expand(x, *, shape):
    return torch.broadcast_to(x, np.broadcast_shapes(tuple(x.shape), tuple(shape)))


@torch_op("tile")
def _tile(x, *, repeats):
    return x.repeat(tuple(repeats))


@torch_op("slice")
def _slice(x, *, starts, ends, axes, steps):
    axes = tuple(axes) or tuple(range(len(starts)))
    steps = tuple(steps) or (1,) * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        # Python's slice clamping is ONNX's, and index_select also covers negative steps (torch slicing cannot).
        picked = range(x.shape[axis])[slice(start, end, step)]
        index = torch.tensor(list(picked), dtype=torch.long, device=x.device)
        x = x.index_select(axis, index)
    return x


def wrap_indices(indices: torch.Tensor, size: int, what: str) -> torch.Tensor:
    """``indices`` (long) with negatives counted from the end; raises IndexOutOfRangeError for
    any outside ``[-size, size)``, the rule of ``slimgraph.ir.ops.shape.wrap_indices``."""
    idx = indices.long()
    bad = (idx < -size) | (idx >= size)
    if bool(bad.any()):
        raise IndexOutOfRangeError(
            f"{what}: index {int(idx[bad][0])} is out of range for an axis of size {size} "
            f"({int(bad.sum())} of {idx.numel()} indices outside [{-size}, {size}))"
        )
    return torch.where(idx < 0, idx + size, idx)


@torch_op("gather")
def _gather(data, indices, *, axis):
    axis %= data.dim()
    flat = wrap_indices(indices.reshape(-1), data.shape[axis], f"gather axis {axis}")
    out = data.index_select(axis, flat)
    return out.reshape(tuple(data.shape[:axis]) + tuple(indices.shape) + tuple(data.shape[axis + 1 :]))


@torch_op("cumsum")
def _cumsum(x, *, axis, exclusive, reverse):
    data = x.flip(axis) if reverse else x
    total = torch.cumsum(data, axis, dtype=x.dtype)
    if exclusive:
        total = total - data
    return total.flip(axis) if reverse else total


@torch_op("trilu")
def _trilu(x, *, k, upper):
    return torch.triu(x, k) if upper else torch.tril(x, k)


@torch_op("attention")
def _attention(q, k, v, mask=None, *, causal, scale):
    if mask is not None and causal:  # torch takes one or the other; the IR op allows both
        visible = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        mask = mask & visible if mask.dtype == torch.bool else mask.masked_fill(~visible, -math.inf)
        causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale,
                                          enable_gqa=q.shape[-3] != k.shape[-3])


@torch_op("einsum")
def _einsum(*xs, equation):
    return torch.einsum(equation, *xs)


@torch_op("gather_elements")
def _gather_elements(data, indices, *, axis):
    axis %= data.dim()
    index = wrap_indices(indices, data.shape[axis], f"gather_elements axis {axis}")
    return torch.gather(data, axis, index)


#: scatter reductions as torch.scatter_reduce names them
_TORCH_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def _scatter_into(data, axis: int, index, updates, reduction: str):
    if reduction == "none":
        return data.scatter(axis, index, updates)
    return data.scatter_reduce(axis, index, updates, _TORCH_REDUCE[reduction], include_self=True)


@torch_op("scatter_elements")
def _scatter_elements(data, indices, updates, *, axis, reduction):
    axis %= data.dim()
    index = wrap_indices(indices, data.shape[axis], f"scatter_elements axis {axis}")
    return _scatter_into(data, axis, index, updates, reduction)


@torch_op("scatter_nd")
def _scatter_nd(data, indices, updates, *, reduction):
    depth = indices.shape[-1]
    rows = torch.zeros(indices.shape[:-1], dtype=torch.long, device=data.device)
    for j in range(depth):  # each row's flat offset into the first `depth` axes
        rows = rows * data.shape[j] + wrap_indices(indices[..., j], data.shape[j], f"scatter_nd axis {j}")
    flat = data.reshape((-1,) + tuple(data.shape[depth:]))
    rows = rows.reshape((-1,) + (1,) * (data.dim() - depth)).expand((rows.numel(),) + tuple(data.shape[depth:]))
    out = _scatter_into(flat, 0, rows, updates.reshape(rows.shape), reduction)
    return out.reshape(data.shape)


@torch_op("one_hot")
def _one_hot(indices, values, *, depth, axis):
    axis %= indices.dim() + 1
    idx = indices.long()
    idx = torch.where(idx < 0, idx + depth, idx).unsqueeze(axis)
    classes = torch.arange(depth, device=idx.device).reshape((depth,) + (1,) * (indices.dim() - axis))
    return torch.where(idx == classes, values[1], values[0])


@torch_op("pad")
def _pad(x, *, pads, mode, value):
    rank = x.dim()
    begins, ends = list(pads[:rank]), list(pads[rank:])
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[mode]
    # F.pad's reflect/replicate modes leave the batch and channel axes alone.
    return F.pad(x, _torch_pad(begins, ends), mode=torch_mode, value=value if mode == "constant" else None)


def _quant_param(values, x: torch.Tensor, axis: int, dtype: torch.dtype) -> torch.Tensor:
    """A quantization parameter shaped to broadcast along ``axis`` (0-d for one value)."""
    t = torch.tensor(values, dtype=dtype, device=x.device)
    if t.numel() == 1:
        return t.reshape(())
    shape = [1] * x.dim()
    shape[axis % x.dim()] = t.numel()
    return t.reshape(shape)


def quantize_codes(x, *, scale, zero_point, axis, dtype, scheme, min_exp, max_exp, ste: bool = False):
    """The codes of ``x`` as floats (docs/ops.md, ``quantize``); ``ste=True`` passes the gradient
    straight through the rounding, and zero outside the clamped range (quantization-aware training)."""
    from slimgraph.ir.ops.quant import quant_range

    lo, hi = quant_range(dtype)
    x32 = x.to(torch.float32)
    s = _quant_param(scale, x32, axis, torch.float32)
    if scheme == "linear":
        scaled = x32 / s
        rounded = torch.round(scaled)
        if ste:
            rounded = scaled + (rounded - scaled).detach()
        q = torch.nan_to_num(rounded, nan=0.0) + _quant_param(zero_point, x32, axis, torch.float32)
    else:
        exponent = torch.clamp(torch.round(torch.log2(x32.abs() / s)), min_exp, max_exp)
        q = torch.nan_to_num(torch.sign(x32) * (exponent - min_exp + 1), nan=0.0)
    return torch.clamp(q, lo, hi)


@torch_op("quantize")
def _quantize(x, *, dtype, **attrs):
    return quantize_codes(x, dtype=dtype, **attrs).to(torch.from_numpy(np.zeros(0, dtype.numpy)).dtype)


@torch_op("dequantize")
def _dequantize(q, *, scale, zero_point, axis, scheme, min_exp, max_exp, to):
    # the codes may be floats: a quantization-aware module keeps them differentiable
    codes = q.to(torch.float32)
    s = _quant_param(scale, codes, axis, torch.float32)
    if scheme == "linear":
        y = (codes - _quant_param(zero_point, codes, axis, torch.float32)) * s
    else:
        y = torch.sign(codes) * s * torch.exp2(codes.abs() - 1 + min_exp)
    return _cast(y, to=to)
