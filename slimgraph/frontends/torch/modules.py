"""Converters for nn.Module types that torch.fx keeps as leaves (``call_module`` nodes).

A converter gets the module, its qualified name (``layer1.0.conv1``) and the
call's arguments; weights are looked up by their state_dict names, so the
IR constant of ``layer1.0.conv1``'s weight is ``%layer1.0.conv1.weight``.
Inference semantics throughout: batch norm uses its running statistics and
dropout is the identity.

Example::

    >>> from torch import nn
    >>> from slimgraph.frontends.torch.registry import MODULES, load_converters
    >>> load_converters()
    >>> nn.Conv2d in MODULES and nn.MultiheadAttention in MODULES
    True
"""

from __future__ import annotations

from typing import Any

from torch import nn

from slimgraph.errors import FrontendError
from slimgraph.frontends.torch import lowering as L
from slimgraph.frontends.torch.context import Context
from slimgraph.frontends.torch.registry import module
from slimgraph.ir import Value


def _weight(ctx: Context, mod: nn.Module, path: str, name: str) -> Value | None:
    """The constant of ``mod.<name>`` (None when the module has none, e.g. bias=False)."""
    tensor = getattr(mod, name)
    if tensor is None:
        return None
    return ctx.param(f"{path}.{name}" if path else name, tensor)


# ---------------------------------------------------------------------------
# Activations


def _unary(op: str):
    def convert(ctx: Context, mod: nn.Module, path: str, input: Value) -> Value:  # noqa: A002
        return ctx.call(op, input)

    return convert


for _cls, _op in ((nn.ReLU, "relu"), (nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh"), (nn.SiLU, "silu"),
                  (nn.Mish, "mish"), (nn.Hardswish, "hardswish"), (nn.Hardsigmoid, "hardsigmoid"),
                  (nn.SELU, "selu")):
    module(_cls)(_unary(_op))


@module(nn.ReLU6, nn.Hardtanh)
def _hardtanh(ctx: Context, mod: nn.Hardtanh, path: str, input: Value) -> Value:  # noqa: A002
    return L.clip(ctx, input, mod.min_val, mod.max_val)


@module(nn.GELU)
def _gelu(ctx: Context, mod: nn.GELU, path: str, input: Value) -> Value:  # noqa: A002
    return ctx.call("gelu", input, approximate=mod.approximate)


@module(nn.LeakyReLU)
def _leaky_relu(ctx: Context, mod: nn.LeakyReLU, path: str, input: Value) -> Value:  # noqa: A002
    return ctx.call("leaky_relu", input, alpha=float(mod.negative_slope))


@module(nn.ELU)
def _elu(ctx: Context, mod: nn.ELU, path: str, input: Value) -> Value:  # noqa: A002
    return L.elu(ctx, input, mod.alpha)


@module(nn.Softplus)
def _softplus(ctx: Context, mod: nn.Softplus, path: str, input: Value) -> Value:  # noqa: A002
    return L.softplus(ctx, input, mod.beta, mod.threshold)


@module(nn.PReLU)
def _prelu(ctx: Context, mod: nn.PReLU, path: str, input: Value) -> Value:  # noqa: A002
    return L.prelu(ctx, input, _weight(ctx, mod, path, "weight"))


@module(nn.Softmax)
def _softmax(ctx: Context, mod: nn.Softmax, path: str, input: Value) -> Value:  # noqa: A002
    if mod.dim is None:
        raise FrontendError(f"{ctx.where()}nn.Softmax needs an explicit dim")
    return ctx.call("softmax", input, axis=mod.dim)


@module(nn.LogSoftmax)
def _log_softmax(ctx: Context, mod: nn.LogSoftmax, path: str, input: Value) -> Value:  # noqa: A002
    if mod.dim is None:
        raise FrontendError(f"{ctx.where()}nn.LogSoftmax needs an explicit dim")
    return ctx.call("log_softmax", input, axis=mod.dim)


@module(nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
def _identity(ctx: Context, mod: nn.Module, path: str, input: Value, *_: Any, **__: Any) -> Value:  # noqa: A002
    return input


# ---------------------------------------------------------------------------
# Compute


@module(nn.Linear)
def _linear(ctx: Context, mod: nn.Linear, path: str, input: Value) -> Value:  # noqa: A002
    return L.linear(ctx, input, _weight(ctx, mod, path, "weight"), _weight(ctx, mod, path, "bias"))


@module(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
def _conv(ctx: Context, mod: nn.modules.conv._ConvNd, path: str, input: Value) -> Value:  # noqa: A002
    if mod.padding_mode != "zeros":
        mode = {"reflect": "reflect", "replicate": "replicate"}.get(mod.padding_mode)
        if mode is None:
            raise FrontendError(f"{ctx.where()}{path}: padding_mode={mod.padding_mode!r} is not supported")
        pads = [p for p in reversed(mod.padding) for _ in range(2)]
        input = L.pad(ctx, input, pads, mode)  # noqa: A001
        padding: Any = 0
    else:
        padding = mod.padding
    return L.conv(ctx, input, _weight(ctx, mod, path, "weight"), _weight(ctx, mod, path, "bias"), mod.stride,
                  padding, mod.dilation, mod.transposed, mod.output_padding, mod.groups)


@module(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _batch_norm(ctx: Context, mod: nn.modules.batchnorm._BatchNorm, path: str, input: Value) -> Value:  # noqa: A002
    if mod.running_mean is None:
        raise FrontendError(
            f"{ctx.where()}{path}: batch norm without running statistics (track_running_stats=False) "
            "normalizes with batch statistics; not supported"
        )
    return L.batch_norm(ctx, input, _weight(ctx, mod, path, "weight"), _weight(ctx, mod, path, "bias"),
                        _weight(ctx, mod, path, "running_mean"), _weight(ctx, mod, path, "running_var"), mod.eps)


@module(nn.LayerNorm)
def _layer_norm(ctx: Context, mod: nn.LayerNorm, path: str, input: Value) -> Value:  # noqa: A002
    return L.layer_norm(ctx, input, mod.normalized_shape, _weight(ctx, mod, path, "weight"),
                        _weight(ctx, mod, path, "bias"), mod.eps)


@module(nn.GroupNorm)
def _group_norm(ctx: Context, mod: nn.GroupNorm, path: str, input: Value) -> Value:  # noqa: A002
    return L.group_norm(ctx, input, mod.num_groups, _weight(ctx, mod, path, "weight"),
                        _weight(ctx, mod, path, "bias"), mod.eps)


@module(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
def _instance_norm(ctx: Context, mod: nn.modules.instancenorm._InstanceNorm, path: str,
                   input: Value) -> Value:  # noqa: A002
    if mod.track_running_stats:
        return L.batch_norm(ctx, input, _weight(ctx, mod, path, "weight"), _weight(ctx, mod, path, "bias"),
                            _weight(ctx, mod, path, "running_mean"), _weight(ctx, mod, path, "running_var"), mod.eps)
    return L.instance_norm(ctx, input, _weight(ctx, mod, path, "weight"), _weight(ctx, mod, path, "bias"), mod.eps)


@module(nn.Upsample)
def _upsample(ctx: Context, mod: nn.Upsample, path: str, input: Value) -> Value:  # noqa: A002
    return L.interpolate(ctx, input, mod.size, mod.scale_factor, mod.mode, mod.align_corners,
                         mod.recompute_scale_factor)


@module(nn.Embedding)
def _embedding(ctx: Context, mod: nn.Embedding, path: str, input: Value) -> Value:  # noqa: A002
    return ctx.call("gather", _weight(ctx, mod, path, "weight"), input, axis=0)


# ---------------------------------------------------------------------------
# Pooling and shapes


@module(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
def _max_pool(ctx: Context, mod: nn.modules.pooling._MaxPoolNd, path: str, input: Value) -> Value:  # noqa: A002
    if mod.return_indices:
        raise FrontendError(f"{ctx.where()}{path}: max pooling with return_indices=True is not supported")
    return L.max_pool(ctx, input, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode)


@module(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
def _avg_pool(ctx: Context, mod: nn.modules.pooling._AvgPoolNd, path: str, input: Value) -> Value:  # noqa: A002
    return L.avg_pool(ctx, input, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode, mod.count_include_pad,
                      getattr(mod, "divisor_override", None))


@module(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
def _adaptive_avg_pool(ctx: Context, mod: nn.Module, path: str, input: Value) -> Value:  # noqa: A002
    return L.adaptive_avg_pool(ctx, input, mod.output_size)


@module(nn.Flatten)
def _flatten(ctx: Context, mod: nn.Flatten, path: str, input: Value) -> Value:  # noqa: A002
    return L.flatten(ctx, input, mod.start_dim, mod.end_dim)


# ---------------------------------------------------------------------------
# Attention


@module(nn.MultiheadAttention)
def _multihead_attention(ctx: Context, mod: nn.MultiheadAttention, path: str, query: Value, key: Value,
                         value: Value, key_padding_mask: Any = None, need_weights: bool = True,
                         attn_mask: Any = None, average_attn_weights: bool = True, is_causal: bool = False) -> tuple:
    """Multi-head attention, as torch computes it in eval mode (no masks, no extra k/v biases).

    Weights stay the module's: ``in_proj_weight`` (sliced per projection unless
    query, key and value are one tensor) and ``out_proj.weight``.
    """
    if key_padding_mask is not None or attn_mask is not None or is_causal:
        raise FrontendError(f"{ctx.where()}{path}: nn.MultiheadAttention with masks is not supported")
    if mod.bias_k is not None or mod.add_zero_attn:
        raise FrontendError(f"{ctx.where()}{path}: nn.MultiheadAttention with add_bias_kv/add_zero_attn is not supported")
    if not mod.batch_first:  # [L, B, E] -> [B, L, E]
        query, key, value = (L.swap_axes(ctx, t, 0, 1) for t in (query, key, value))
    q, k, v = _in_projections(ctx, mod, path, query, key, value)
    heads, head_dim = mod.num_heads, mod.head_dim

    def split_heads(t: Value) -> Value:  # [B, L, E] -> [B, H, L, D]
        return L.permute(ctx, L.reshape(ctx, t, list(t.type.shape[:2]) + [heads, head_dim]), [0, 2, 1, 3])

    out, probs = L.attention(ctx, split_heads(q), split_heads(k), split_heads(v))
    out = L.permute(ctx, out, [0, 2, 1, 3])  # [B, L, H, D]
    out = L.reshape(ctx, out, list(out.type.shape[:2]) + [mod.embed_dim])
    out = L.linear(ctx, out, _weight(ctx, mod.out_proj, f"{path}.out_proj", "weight"),
                   _weight(ctx, mod.out_proj, f"{path}.out_proj", "bias"))
    if not mod.batch_first:
        out = L.swap_axes(ctx, out, 0, 1)
    if not need_weights:
        return (out, None)
    weights = L.reduce(ctx, "reduce_mean", probs, [1], False) if average_attn_weights else probs
    return (out, weights)


def _in_projections(ctx: Context, mod: nn.MultiheadAttention, path: str, query: Value, key: Value,
                    value: Value) -> tuple[Value, Value, Value]:
    embed = mod.embed_dim
    bias = _weight(ctx, mod, path, "in_proj_bias")
    if not mod._qkv_same_embed_dim:
        weights = [_weight(ctx, mod, path, f"{p}_proj_weight") for p in "qkv"]
        biases = [None] * 3 if bias is None else [L.slice_axis(ctx, bias, 0, i * embed, (i + 1) * embed)
                                                  for i in range(3)]
        return tuple(L.linear(ctx, t, w, b) for t, w, b in zip((query, key, value), weights, biases))
    weight = _weight(ctx, mod, path, "in_proj_weight")
    if query is key is value:  # self-attention: one projection, split in three
        return L.split(ctx, L.linear(ctx, query, weight, bias), embed, -1)
    outs = []
    for i, t in enumerate((query, key, value)):
        w = L.slice_axis(ctx, weight, 0, i * embed, (i + 1) * embed)
        b = None if bias is None else L.slice_axis(ctx, bias, 0, i * embed, (i + 1) * embed)
        outs.append(L.linear(ctx, t, w, b))
    return tuple(outs)
