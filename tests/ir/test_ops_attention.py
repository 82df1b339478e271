"""attention and einsum agree with PyTorch (scaled_dot_product_attention, einsum), infer
symbolic shapes, and reject mismatched operands with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slimgraph.errors import SlimgraphError
from slimgraph.ir import Graph, TensorType

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def run_op(op, *arrays, **attrs):
    g = Graph("t")
    inputs = [g.add_input(f"x{i}", TensorType.of_array(a)) for i, a in enumerate(arrays)]
    out = g.call(op, *inputs, **attrs)
    g.set_outputs([out])
    (result,) = g.run(*arrays)
    assert result.dtype == out.type.dtype.numpy and result.shape == out.type.shape
    return result


T = torch.from_numpy


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_torch_sdpa(heads, kv_heads, mask, causal):
    q, k, v = rand(2, heads, 5, 8), rand(2, kv_heads, 6, 8), rand(2, kv_heads, 6, 3)
    arrays = [q, k, v]
    if mask == "bool":
        arrays.append(RNG.random((2, 1, 5, 6)) > 0.3)
    elif mask == "float":
        arrays.append(rand(1, 5, 6))
    got = run_op("attention", *arrays, causal=causal, scale=0.4 if causal else None)
    torch_mask = None if mask is None else T(arrays[3])
    if causal and torch_mask is not None:  # torch takes a mask or is_causal, not both
        visible = torch.ones(5, 6, dtype=torch.bool).tril()
        torch_mask = torch_mask & visible if mask == "bool" else torch_mask.masked_fill(~visible, -float("inf"))
    want = F.scaled_dot_product_attention(T(q), T(k), T(v), attn_mask=torch_mask,
                                          is_causal=causal and torch_mask is None,
                                          scale=0.4 if causal else None, enable_gqa=heads != kv_heads)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_fully_masked_queries_give_zeros_as_torch():
    q, k, v = rand(1, 2, 3, 4), rand(1, 2, 3, 4), rand(1, 2, 3, 4)
    mask = np.ones((1, 1, 3, 3), bool)
    mask[..., 1, :] = False
    got = run_op("attention", q, k, v, mask)
    np.testing.assert_array_equal(got[:, :, 1], 0)
    want = F.scaled_dot_product_attention(T(q), T(k), T(v), attn_mask=T(mask))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_float64_attention_and_einsum_match_torch_in_float64():
    q, k, v = (RNG.standard_normal((2, 4, 5, 8)) for _ in range(3))
    got = run_op("attention", q, k, v, causal=True)
    want = F.scaled_dot_product_attention(T(q), T(k), T(v), is_causal=True)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-14)
    got = run_op("einsum", q, k, equation="bhqd,bhkd->bhqk")
    np.testing.assert_allclose(got, torch.einsum("bhqd,bhkd->bhqk", T(q), T(k)).numpy(), rtol=1e-12, atol=1e-14)


def test_attention_keeps_symbolic_batch_and_half_dtype():
    g = Graph("t")
    q = g.add_input("q", TensorType("f16", ("N", 4, 7, 16)))
    kv = g.add_input("kv", TensorType("f16", ("N", 2, 9, 16)))
    mask = g.add_input("m", TensorType("bool", ("N", 1, 1, 9)))
    assert str(g.call("attention", q, kv, kv, mask).type) == "f16[N,4,7,16]"


@pytest.mark.parametrize("shapes, attrs, match", [
    ([(2, 3, 5, 8), (2, 2, 5, 8), (2, 2, 5, 8)], {}, "multiple"),
    ([(2, 4, 5, 8), (2, 2, 5, 4), (2, 2, 5, 8)], {}, "feature dim"),
    ([(2, 4, 5, 8), (2, 2, 5, 8), (2, 2, 6, 8)], {}, "heads and sequence"),
    ([(4, 5, 8), (2, 4, 5, 8), (2, 4, 5, 8)], {}, "same rank"),
    ([(2, 4, 5, 8), (2, 4, 6, 8), (2, 4, 6, 8), (5, 5)], {}, "broadcast"),
    ([(2, 4, 5, 8), (2, 4, 6, 8), (2, 4, 6, 8), (3, 1, 1, 1, 6)], {}, "does not broadcast to the scores"),
])
def test_attention_rejects_mismatched_operands(shapes, attrs, match):
    with pytest.raises(SlimgraphError, match=match):
        run_op("attention", *(rand(*s) for s in shapes), **attrs)


@pytest.mark.parametrize("equation, shapes", [
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("ij,jk", [(3, 4), (4, 5)]),
    ("...ij->...ji", [(2, 3, 4, 5)]),
    ("b...d,d->b...", [(2, 3, 4), (4,)]),
    ("ii->i", [(4, 4)]),
    ("i,j->ij", [(3,), (1,)]),
    ("bij,bjk->bik", [(1, 3, 4), (2, 4, 5)]),
])
def test_einsum_matches_torch(equation, shapes):
    arrays = [rand(*s) for s in shapes]
    want = torch.einsum(equation, *map(T, arrays)).numpy()
    np.testing.assert_allclose(run_op("einsum", *arrays, equation=equation), want, rtol=1e-5, atol=1e-5)


def test_einsum_integers_and_symbolic_dims():
    a = RNG.integers(-3, 3, (2, 3)).astype(np.int64)
    np.testing.assert_array_equal(run_op("einsum", a, a, equation="ij,ij->i"), (a * a).sum(1))
    g = Graph("t")
    x = g.add_input("x", TensorType("f32", ("N", 4, 8)))
    assert str(g.call("einsum", x, x, equation="nld,nmd->nlm").type) == "f32[N,4,4]"


@pytest.mark.parametrize("equation, shapes, match", [
    ("ij,jk->ik", [(3, 4), (5, 6)], "subscript 'j'"),
    ("ij->ik", [(3, 4)], "not in any operand"),
    ("ijk->i", [(3, 4)], "does not fit"),
    ("ij,jk->ik", [(3, 4)], "names 2 operands"),
])
def test_einsum_errors_name_the_problem(equation, shapes, match):
    with pytest.raises(SlimgraphError, match=match):
        run_op("einsum", *(rand(*s) for s in shapes), equation=equation)
