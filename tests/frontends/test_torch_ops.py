"""Single torch ops and idioms through both import paths, against torch eager.

Each case is a small module; through torch.export it exercises the aten
converters, through torch.fx the torch-function, Tensor-method and nn-module
converters. Cases marked dynamic are also imported with ``dynamic_batch=True``
and run at another batch size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimgraph.frontends.torch import from_torch


class Fn(nn.Module):
    """A one-input module computing ``fn(self, x)``; ``children`` become its submodules."""

    def __init__(self, fn, **children: nn.Module):
        super().__init__()
        self.fn = fn
        for name, child in children.items():
            self.add_module(name, child)

    def forward(self, x):
        return self.fn(self, x)


class Fn2(Fn):
    """A two-input module computing ``fn(self, x, y)``."""

    def forward(self, x, y):
        return self.fn(self, x, y)


class VarArgs(nn.Module):
    def forward(self, *xs):
        return xs[0] * xs[1] + xs[2]


def _x(*shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


IMG = (2, 4, 6, 6)
SEQ = (2, 5, 8)

# name: (module, input shapes, dynamic-batch check)
CASES = {
    "views": (Fn(lambda s, x: x.view(x.size(0), -1).reshape(-1, 4, 36).permute(0, 2, 1).contiguous()), [IMG], True),
    "flatten_transpose": (Fn(lambda s, x: torch.flatten(x, 2).transpose(1, 2).flatten(1).reshape(x.shape[0], 4, -1)),
                          [IMG], True),
    "split_cat": (Fn(lambda s, x: torch.cat([x.split(2, dim=1)[1], x.split([1, 3], 1)[1] * 2], 1)), [IMG], True),
    # transformers' DynamicCache starts from torch.tensor([]): torch.cat skips a 1-D empty tensor
    "cat_skips_legacy_empty": (Fn(lambda s, x: torch.cat([torch.tensor([]), x, x], dim=-2)), [SEQ], True),
    "chunk_stack": (Fn(lambda s, x: torch.stack(x.chunk(2, dim=-1), dim=1).sum(dim=1)), [SEQ], True),
    "slicing": (Fn(lambda s, x: x[:, 1:4, ::2] + x[:, -1:, 1::2] - x[..., 0:4][:, None, 2]), [SEQ], True),
    "select_unsqueeze": (Fn(lambda s, x: x[:, 0].unsqueeze(1) * x.select(2, 3).unsqueeze(-1)), [SEQ], True),
    "reductions": (Fn(lambda s, x: x.mean(dim=(2, 3)) + x.amax(dim=-1).sum(-1) - torch.max(x, dim=3).values.min(-1)[0]
                                  + x.argmax(-1).float().mean(-1)),
                   [IMG], True),
    "softmaxes": (Fn(lambda s, x: F.softmax(x, dim=-1) + torch.log_softmax(x, dim=1)), [SEQ], True),
    "activations": (Fn(lambda s, x: F.hardswish(x) + F.silu(x) + F.leaky_relu(x, 0.2) + F.elu(x) + torch.tanh(x)
                       + torch.sigmoid(x) + F.gelu(x, approximate="tanh") + F.relu6(x) + F.mish(x)
                       + F.softplus(x) + F.hardsigmoid(x)), [SEQ], True),
    "arith": (Fn2(lambda s, x, y: (x - y) / (y.abs() + 1) + 2 ** x.clamp(-2, 2) + x.pow(2) - torch.sqrt(y * y + 1)
                 + torch.rsqrt(y * y + 1) + torch.exp(-x.abs()) + torch.maximum(x, y) + torch.minimum(x, 0.5 * y)),
              [SEQ, SEQ], True),
    "where_mask": (Fn(lambda s, x: torch.where(x > 0, x, 0.1 * x) + x.masked_fill(x < -0.5, 0.0)), [SEQ], True),
    "pooling": (Fn(lambda s, x: F.avg_pool2d(F.max_pool2d(x, 2, 1, padding=1), 3, 1, 1)
                   + F.adaptive_avg_pool2d(x, 3).repeat(1, 1, 3, 3)[:, :, :7, :7].mean()), [IMG], True),
    "pad": (Fn(lambda s, x: F.pad(x, (1, 2, 0, 1)) * 2 + F.pad(x, (1, 1, 1, 1), mode="reflect").mean()), [IMG], True),
    "linear_matmul": (Fn2(lambda s, x, y: s.fc(x) @ y.transpose(-1, -2) + torch.bmm(x, y.transpose(1, 2)),
                         fc=nn.Linear(8, 8)), [SEQ, SEQ], True),
    "mm_addmm": (Fn(lambda s, x: torch.addmm(s.fc.bias, x, s.fc.weight.t()) + x.mm(s.fc.weight.T), fc=nn.Linear(8, 8)),
                 [(3, 8)], False),
    "conv_variants": (Fn(lambda s, x: s.tconv(s.conv(x)) + s.dilated(x)[:, :, :6, :6],
                         conv=nn.Conv2d(4, 6, 3, stride=2, padding=1),
                         tconv=nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1),
                         dilated=nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2)), [IMG], True),
    "conv1d_bn1d": (Fn(lambda s, x: s.bn(s.conv(x)), conv=nn.Conv1d(5, 6, 3, padding="same"), bn=nn.BatchNorm1d(6)),
                    [SEQ], True),
    "norms": (Fn(lambda s, x: s.ln(x) + F.layer_norm(x, (8,)) + s.ln_no_affine(x), ln=nn.LayerNorm(8),
                 ln_no_affine=nn.LayerNorm(8, elementwise_affine=False)), [SEQ], True),
    "embedding": (Fn(lambda s, i: s.emb(i).sum(1), emb=nn.Embedding(10, 4)), [("int", 2, 3)], True),
    "group_instance_norms": (Fn(lambda s, x: s.gn(x) + F.group_norm(x, 4) + s.inorm(x) + F.instance_norm(x),
                                gn=nn.GroupNorm(2, 4), inorm=nn.InstanceNorm2d(4, affine=True)), [IMG], False),
    "interpolate": (Fn(lambda s, x: F.interpolate(x, scale_factor=2) + s.up(x)
                       + F.interpolate(x, size=(12, 12), mode="bilinear", align_corners=True)
                       + F.interpolate(x, scale_factor=2, mode="bicubic")
                       + F.interpolate(x, size=(12, 12), mode="nearest-exact")
                       + F.interpolate(x, scale_factor=1.5, mode="bilinear", recompute_scale_factor=True)[..., :1, :1],
                    up=nn.Upsample(scale_factor=2, mode="bilinear")), [IMG], True),
    "interpolate_1d": (Fn(lambda s, x: F.interpolate(x, size=11, mode="linear") + F.interpolate(x, size=11)),
                       [SEQ], True),
    "topk": (Fn(lambda s, x: torch.topk(x, 3).values + torch.topk(x, 3)[1].float()
                + x.topk(2, dim=1, largest=False)[0].sum(1, keepdim=True)[..., :3]), [SEQ], True),
    "fmod_vector_norm": (Fn(lambda s, x: torch.fmod(x * 3, 2.0) + torch.linalg.vector_norm(x, dim=-1, keepdim=True)
                            + torch.linalg.vector_norm(x, ord=3) + torch.linalg.vector_norm(x, ord=float("inf"))),
                         [SEQ], True),
    "prelu_modules": (Fn(lambda s, x: s.seq(x), seq=nn.Sequential(nn.PReLU(4), nn.Hardswish(), nn.SiLU(), nn.ELU(),
                                                                   nn.LeakyReLU(0.1), nn.Softplus(), nn.Tanh(),
                                                                   nn.Flatten(), nn.Softmax(dim=-1))),
                      [IMG], True),
    "attention_not_batch_first": (Fn2(lambda s, q, k: s.attn(q, k, k)[0] + s.attn(q, k, k)[1].sum(),
                                     attn=nn.MultiheadAttention(8, 2)), [(5, 2, 8), (4, 2, 8)], False),
    "scaled_dot_product": (Fn(lambda s, x: F.scaled_dot_product_attention(x, x, x)
                              + F.scaled_dot_product_attention(x, x, x, is_causal=True, scale=0.3)
                              + F.scaled_dot_product_attention(x, x, x, attn_mask=x[0, 0, :, :5] > 0)),
                           [(2, 2, 5, 8)], True),
    "sdpa_grouped_query": (Fn2(lambda s, q, kv: F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
                               + F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
                               + F.scaled_dot_product_attention(q, kv, kv, attn_mask=q[0, 0, :, :5] * 0.5,
                                                                enable_gqa=True)),
                           [(2, 4, 5, 8), (2, 2, 5, 8)], True),
    "bool_masks": (Fn(lambda s, x: (((x > 0) & (x < 0.5)) | ((x > 1) ^ (x < -1))).float()
                      + torch.logical_and(x > 0, x).float() + torch.logical_or(x < 0, x > 0.7).float()
                      + torch.logical_xor(x > 0, x > 0.3).float() + (~(x > 0)).float()
                      + torch.isnan(x.log()).float()), [SEQ], True),
    "cumsum_triangles": (Fn(lambda s, x: x.cumsum(1) + torch.cumsum(x > 0, -1).float() + x.triu(1)
                            + torch.tril(x, -1)), [SEQ], True),
    "einsum": (Fn2(lambda s, x, y: torch.einsum("bld,bmd->blm", x, y) + torch.einsum("b...d->b...", x)[..., None]),
               [SEQ, SEQ], True),
    "several_index_tensors": (Fn(lambda s, x: x[torch.arange(2)[:, None] * 0 + 1, torch.arange(-3, 2)[None, :]]),
                              [SEQ], False),
    "varargs": (VarArgs(), [SEQ, SEQ, SEQ], True),
    # 1e-9 survives only in float64: a narrowed .double() leaves 0 where torch gives ~1e-9 * x
    "double_precision": (Fn(lambda s, x: ((x.double() * 1e-9 + 1.0) - 1.0).float() * 1e9 + x.to(torch.float64).float()),
                         [SEQ], True),
    "casts": (Fn(lambda s, x: (x > 0).float() * x + x.to(torch.int64).to(torch.float32) + x.long().float()),
              [SEQ], True),
    "full_like": (Fn(lambda s, x: x + torch.ones_like(x) * 2 + torch.zeros_like(x) + torch.full_like(x, 0.5)),
                  [SEQ], True),
}


def _inputs(shapes, batch=None, seed=0):
    out = []
    for i, shape in enumerate(shapes):
        if shape[0] == "int":
            shape = shape[1:] if batch is None else (batch,) + shape[2:]
            out.append(torch.randint(0, 10, shape, generator=torch.Generator().manual_seed(seed + i)))
        else:
            shape = shape if batch is None else (batch,) + tuple(shape[1:])
            out.append(_x(*shape, seed=seed + i))
    return tuple(out)


def _check(graph, module, inputs):
    graph.verify()
    outs = graph.run(*[x.numpy() for x in inputs])
    with torch.no_grad():
        expected = module(*inputs)
    np.testing.assert_allclose(outs[0], expected.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["export", "fx"])
@pytest.mark.parametrize("case", list(CASES))
def test_op_matches_torch(case, method):
    module, shapes, dynamic = CASES[case]
    module.eval()
    inputs = _inputs(shapes)
    graph, info = from_torch(module, inputs, method=method, return_info=True)
    assert info.path == method
    _check(graph, module, inputs)
    if dynamic and method == "fx":  # the export path's dynamic batch is covered on whole models
        graph = from_torch(module, inputs, method=method, dynamic_batch=True)
        _check(graph, module, _inputs(shapes, batch=3, seed=7))


def test_weight_transpose_becomes_torch_layout_linear():
    module, shapes, _ = CASES["mm_addmm"]
    graph = from_torch(module.eval(), _inputs(shapes), method="export")
    linears = graph.find_nodes("linear")
    assert len(linears) == 2
    assert all(n.inputs[1].name == "fc.weight" and n.attrs["trans_b"] for n in linears)
    assert not graph.find_nodes("transpose")


class TiedWeights(nn.Module):
    """An embedding and an output projection sharing one weight, as language models do."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids):
        return self.out(self.emb(ids))


@pytest.mark.parametrize("method", ["export", "fx"])
def test_tied_weights_are_one_constant(method):
    module = TiedWeights().eval()
    ids = torch.tensor([[1, 2, 3]])
    graph = from_torch(module, (ids,), method=method)
    assert list(graph.consts()) == ["emb.weight"]
    _check(graph, module, (ids,))


@pytest.mark.parametrize("method", ["export", "fx"])
def test_scaled_dot_product_attention_is_one_op(method):
    module = Fn2(lambda s, q, kv: F.scaled_dot_product_attention(q, kv, kv, attn_mask=kv[:, :1, :1, :5] > 0,
                                                                 enable_gqa=True))
    graph = from_torch(module, _inputs([(2, 4, 5, 8), (2, 2, 5, 8)]), method=method)
    ops = [n.op for n in graph.nodes if n.op == "attention"]
    assert ops == ["attention"]
    assert not any(n.op in ("softmax", "matmul") for n in graph.nodes)
