"""The CPU transformer kernels (``schedules/cpu_matmul.py``) match the reference interpreter on
awkward shapes, and their rules really schedule them (not the generic fallback), for AVX-512
(16 lanes) and AVX2 (8 lanes, ``llvm:haswell``, which runs on any x86-64 machine with AVX2)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

from slimgraph.backends.tvm import build  # noqa: E402
from slimgraph.backends.tvm.targets import parse_target  # noqa: E402
from slimgraph.ir import Graph, TensorType  # noqa: E402

AVX512 = parse_target("llvm").has("avx512")
TARGETS = [pytest.param("llvm:haswell", id="avx2"),
           pytest.param("llvm", id="avx512", marks=pytest.mark.skipif(not AVX512, reason="no AVX-512 here"))]


def _run(graph: Graph, inputs: list, target: str, rule_block: str, rtol=2e-5, atol=2e-5):
    model = build(graph, target)
    got = model(*inputs)
    want = graph.run(*inputs)[0]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    # the rule scheduled the kernel: its blocks carry the names the rule gives them
    assert any(rule_block in k.tir for k in model.kernels), [k.name for k in model.kernels]
    # sized for the target's vector registers: 8 float lanes with AVX2, 16 with AVX-512
    lanes = 8 if target == "llvm:haswell" else 16
    assert all(f'"sg.lanes": {lanes}' in k.tir for k in model.kernels if rule_block in k.tir)
    return model


def _dense_graph(lead, k, n, epilogue):
    rng = np.random.default_rng(0)
    g = Graph("dense")
    x = g.add_input("x", TensorType("f32", (*lead, k)))
    r = g.add_input("r", TensorType("f32", (*lead, n)))
    y = g.call("matmul", x, g.const(rng.standard_normal((k, n)).astype(np.float32) / np.sqrt(k)))
    if "bias" in epilogue:
        y = g.call("add", y, g.const(rng.standard_normal(n).astype(np.float32)))
    if "gelu" in epilogue:
        y = g.call("gelu", y)
    if "residual" in epilogue:
        y = g.call("add", y, r)
    g.set_outputs([y])
    inputs = [rng.standard_normal((*lead, k)).astype(np.float32), rng.standard_normal((*lead, n)).astype(np.float32)]
    return g, inputs


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("lead, k, n, epilogue", [
    ((1, 1), 64, 48, ("bias",)),                         # M = 1
    ((1, 197), 33, 40, ("bias", "gelu", "residual")),    # ViT's rows (prime), K odd, N not a multiple of 16
    ((2, 7), 17, 1000, ("gelu",)),                       # batch 2, rows padded, N padded to the panel
    ((3, 5, 6), 8, 24, ()),                              # several lead dims, no epilogue
    ((5,), 16, 3, ("bias",)),                            # 2-d input, tiny N
    ((1, 64), 96, 96, ("bias", "residual")),             # Swin's narrow N: 3-vector panels, 8-row tiles
])
def test_dense_packed_matches_reference(target, lead, k, n, epilogue):
    g, inputs = _dense_graph(lead, k, n, epilogue)
    _run(g, inputs, target, "matmul_update")


@pytest.mark.parametrize("target", TARGETS)
def test_linear_with_transposed_weight_uses_the_dense_kernel(target):
    rng = np.random.default_rng(1)
    g = Graph("linear")
    x = g.add_input("x", TensorType("f32", (1, 13, 24)))
    w = g.const(rng.standard_normal((20, 24)).astype(np.float32))
    b = g.const(rng.standard_normal(20).astype(np.float32))
    g.set_outputs([g.call("linear", x, w, b, trans_b=True)])
    _run(g, [rng.standard_normal((1, 13, 24)).astype(np.float32)], target, "matmul_update")


def _attention_graph(b, heads, kv_heads, rows, keys, features, mask, causal):
    rng = np.random.default_rng(2)
    g = Graph("attention")
    shapes = [(b, heads, rows, features), (b, kv_heads, keys, features), (b, kv_heads, keys, features)]
    args = [g.add_input(name, TensorType("f32", s)) for name, s in zip("qkv", shapes)]
    inputs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    if mask == "additive":
        args.append(g.add_input("mask", TensorType("f32", (b, 1, 1, keys))))
        m = np.zeros((b, 1, 1, keys), np.float32)
        m[..., -2:] = -1e4  # padding tokens
        inputs.append(m)
    elif mask == "bias":  # Swin's relative position bias: per head, shared by the windows of the batch
        args.append(g.add_input("mask", TensorType("f32", (1, heads, rows, keys))))
        inputs.append(rng.standard_normal((1, heads, rows, keys)).astype(np.float32))
    elif mask == "bool":
        args.append(g.add_input("mask", TensorType("bool", (b, 1, rows, keys))))
        m = rng.random((b, 1, rows, keys)) > 0.3
        m[:, :, 0, :] = False  # a query that sees no key gives zeros
        inputs.append(m)
    g.set_outputs([g.call("attention", *args, causal=causal)])
    return g, inputs


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape, mask, causal", [
    ((1, 4, 4, 13, 13, 16), "additive", False),   # rows and keys padded
    ((1, 2, 2, 1, 9, 32), None, False),           # one query row
    ((2, 4, 2, 7, 7, 16), "bool", True),          # grouped-query heads, boolean mask, causal, a fully masked row
    ((1, 3, 3, 16, 20, 48), None, True),          # keys != rows, three vectors of features
    ((1, 2, 2, 6, 6, 4), None, False),            # fewer features than a vector holds
    ((4, 3, 3, 49, 49, 32), "bias", False),       # Swin's windows: a float bias per head, keys padded
    ((3, 2, 2, 5, 16, 8), "bias", False),         # a float bias read in place (keys a multiple of the vector)
])
def test_attention_matches_reference(target, shape, mask, causal):
    g, inputs = _attention_graph(*shape, mask, causal)
    _run(g, inputs, target, "attention_dot_update")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("op, shape", [("layer_norm", (1, 197, 48)), ("layer_norm", (2, 3, 32)),
                                       ("softmax", (1, 2, 5, 48)), ("log_softmax", (3, 64)),
                                       # enough rows to run in parallel (a rule that failed only then fell back)
                                       ("layer_norm", (1, 197, 256)), ("softmax", (1, 4, 64, 192))])
def test_row_reductions_match_reference(target, op, shape):
    rng = np.random.default_rng(3)
    g = Graph("rows")
    x = g.add_input("x", TensorType("f32", shape))
    if op == "layer_norm":
        affine = [g.const(rng.standard_normal(shape[-1:]).astype(np.float32)) for _ in range(2)]
        g.set_outputs([g.call(op, x, *affine, axis=-1)])
    else:
        g.set_outputs([g.call(op, x, axis=-1)])
    _run(g, [(rng.standard_normal(shape) * 4 + 2).astype(np.float32)], target, "_rf")


def test_fast_exp_erf_and_tanh_are_accurate_and_exact_at_the_ends():
    x = np.concatenate([np.linspace(-110, 100, 2101, dtype=np.float32),
                        np.float32([-np.inf, np.inf, 0.0, 88.7, -88.0, -103.0, np.nan])])
    g = Graph("fast")
    v = g.add_input("x", TensorType("f32", x.shape))
    g.set_outputs([g.call("exp", v), g.call("erf", v), g.call("gelu", v), g.call("tanh", v),
                   g.call("gelu", v, approximate="tanh")])
    exp, erf, gelu, tanh, gelu_tanh = build(g, "llvm")(x)
    want = g.run(x)
    assert np.isnan(exp[-1]) and np.isnan(erf[-1]) and np.isnan(tanh[-1])
    exp, erf, gelu, tanh, gelu_tanh, x = exp[:-1], erf[:-1], gelu[:-1], tanh[:-1], gelu_tanh[:-1], x[:-1]
    want = [w[:-1] for w in want]
    normal = want[0] >= np.finfo(np.float32).tiny
    np.testing.assert_allclose(exp[normal], want[0][normal], rtol=3e-7, atol=0)  # inf included
    np.testing.assert_allclose(exp[~normal], want[0][~normal], rtol=0, atol=1e-44)  # denormals; 0 at -inf
    assert exp[x == -np.inf][0] == 0.0
    np.testing.assert_allclose(erf, want[1], rtol=0, atol=3e-7)
    finite = np.isfinite(x)
    np.testing.assert_allclose(gelu[finite], want[2][finite], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tanh, want[3], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gelu_tanh[finite], want[4][finite], rtol=1e-6, atol=1e-6)
    tiny = np.float32([1e-30, -3e-8, 1e-4])  # tanh(x) ~ x: relative precision near 0
    g2 = Graph("tiny")
    g2.set_outputs([g2.call("tanh", g2.add_input("x", TensorType("f32", tiny.shape)))])
    np.testing.assert_allclose(build(g2, "llvm")(tiny), np.tanh(tiny), rtol=1e-6)


def test_gpt2_gelu_written_out_vectorizes_without_libm_calls():
    """GPT-2's gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) as separate ops."""
    g = Graph("gelu_new")
    x = g.add_input("x", TensorType("f32", (4, 48)))
    cube = g.call("pow", x, g.const(np.float32(3.0)))
    inner = g.call("mul", g.call("add", x, g.call("mul", cube, g.const(np.float32(0.044715)))),
                   g.const(np.float32(np.sqrt(2 / np.pi))))
    y = g.call("mul", g.call("mul", x, g.const(np.float32(0.5))), g.call("add", g.call("tanh", inner),
                                                                          g.const(np.float32(1.0))))
    g.set_outputs([y])
    data = np.random.default_rng(4).standard_normal((4, 48)).astype(np.float32) * 3
    model = build(g, "llvm")
    np.testing.assert_allclose(model(data), g.run(data)[0], rtol=2e-6, atol=2e-6)
    source = "".join(k.source for k in model.kernels)
    assert not any(call in source for call in ("@powf(", "@tanhf(", "@expf(", "@llvm.pow.", "@llvm.exp."))


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (1, 8, 8, 64)])
def test_dense_with_a_reshaped_epilogue_matches_reference(shape):
    """torch's linear on a view: [64, K] @ W.T + b, reshaped back, then GELU: fused when the
    reshape only adds unit dims, two kernels when it splits the rows into an image's [H, W]
    (ConvNeXt's channels-last linears; see fuse's ``_unit_dims_only``)."""
    rng = np.random.default_rng(5)
    g = Graph("view")
    x = g.add_input("x", TensorType("f32", shape[:-1] + (16,)))
    w, b = (g.const(rng.standard_normal(s).astype(np.float32)) for s in ((64, 16), (64,)))
    y = g.call("linear", g.call("reshape", x, shape=(64, 16)), w, b, trans_b=True)
    g.set_outputs([g.call("gelu", g.call("reshape", y, shape=shape))])
    _run(g, [rng.standard_normal(shape[:-1] + (16,)).astype(np.float32)], "llvm", "matmul_update")


@pytest.mark.parametrize("target", TARGETS)
def test_bool_mask_is_padded_once_for_all_heads_as_a_bias(target):
    """A bool mask read in place through the clamped key index made TVM scalarize the
    exponentials' vector loop (ViT's and DeiT's all-true mask: 6x slower attention); it is
    padded to the scores' shape once, ahead of the heads, as a 0 / -inf bias."""
    g, inputs = _attention_graph(1, 4, 4, 7, 13, 16, "bool", False)
    model = _run(g, inputs, target, "attention_dot_update")
    tir = next(k.tir for k in model.kernels if "attention_dot_update" in k.tir)
    lanes = 8 if target == "llvm:haswell" else 16
    assert f'attention_bias = T.sblock_alloc_buffer((1, 1, 8, {-(-13 // lanes) * lanes}))' in tir, tir


def test_heads_read_from_one_linears_output_by_affine_indices():
    """ViT's q, k and v: one linear's [tokens, hidden] output viewed as [1, tokens, heads, dim]
    and transposed, fused into the attention kernel. The reshape reads through the runs of dims
    it maps onto each other, so each read is affine (no // or %, which made vector loads gathers)."""
    import re

    torch = pytest.importorskip("torch")
    import slimgraph

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = torch.nn.ModuleList(torch.nn.Linear(48, 48) for _ in range(3))

        def forward(self, x):
            q, k, v = (p(x).view(1, 10, 3, 16).transpose(1, 2) for p in self.qkv)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    torch.manual_seed(0)
    module, x = Heads().eval(), torch.randn(1, 10, 48)
    model = slimgraph.compile(module, (x,), target="llvm")
    with torch.no_grad():
        np.testing.assert_allclose(model(x.numpy()), module(x).numpy(), rtol=1e-4, atol=1e-5)
    attention = next(k for k in model.kernels if "attention" in k.ops)
    assert "reshape" in attention.ops, attention.ops  # the views are fused in, not copied
    params = re.search(r"def \w+\((.*?)\):", attention.tir).group(1)
    inputs = [name for name, shape in re.findall(r"(\w+): T\.Buffer\(\((\d+, \d+)\)", params)]
    reads = [r for name in inputs for r in re.findall(rf"\b{name}\[[^\]]*\]", attention.tir)]
    assert reads and not any("%" in r or "//" in r for r in reads), reads


def test_reshape_groups():
    from slimgraph.backends.tvm.ops.shape import reshape_groups

    assert reshape_groups((198, 384), (1, 198, 6, 64)) == [(slice(0, 1), slice(0, 2)), (slice(1, 2), slice(2, 4))]
    assert reshape_groups((2, 3, 4), (4, 6)) == [(slice(0, 3), slice(0, 2))]          # no common boundary
    assert reshape_groups((6, 4, 1), (24,)) == [(slice(0, 3), slice(0, 1))]            # trailing unit dim
    assert reshape_groups((2, 3, 4), (2, 12)) == [(slice(0, 1), slice(0, 1)), (slice(1, 3), slice(1, 2))]
    assert reshape_groups((0, 4), (4, 0)) == [(slice(0, 2), slice(0, 2))]              # empty: one group


@pytest.mark.parametrize("target", TARGETS)
def test_attention_reduces_rows_as_vectors_and_tiles_odd_keys_by_eight_rows(target):
    """The row max and sum as a vector of partials folded once per row (a scalar loop waited
    4 cycles on each max and add: 60% of ViT's attention); the scores product over keys that
    make an odd number of vectors (ViT's 197, padded to 13 x 16 or 25 x 8) as 8 rows x 1 vector,
    where 4 rows left the FMA units waiting; no normalized copy of the exponentials."""
    import re

    g, inputs = _attention_graph(1, 2, 2, 11, 40, 16, None, False)  # 3 vectors of keys, or 5
    model = _run(g, inputs, target, "attention_dot_update")
    tir = next(k.tir for k in model.kernels if "attention_dot_update" in k.tir)
    lanes = 8 if target == "llvm:haswell" else 16
    for stage in ("attention_max_rf", "attention_sum_rf"):
        assert re.search(rf'T\.vectorized\({lanes}\):\s*with T\.sblock\("{stage}_update"\)', tir), stage
    assert re.search(r'T\.unroll\(8\):\s*for \w+ in T\.unroll\(1\):\s*for \w+ in T\.vectorized\(\d+\):'
                     r'\s*with T\.sblock\("attention_dot_update"\)', tir)
    assert "attention_prob" not in tir


def test_a_failing_rule_falls_back_visibly(monkeypatch, caplog):
    """A rule that throws leaves the kernel on the generic schedule (a build never fails on a
    schedule), but the kernel's TIR carries the reason and the log warns: a silent fallback hid a
    row_reduce rule that ran layer norm 6x slower."""
    import logging

    from slimgraph.backends.tvm.schedules import cpu

    def broken(*_):
        raise ValueError("no schedule for this shape")

    monkeypatch.setitem(cpu.CPU_RULES, "row_reduce", broken)
    g = Graph("ln")
    x = g.add_input("x", TensorType("f32", (4, 64)))
    g.set_outputs([g.call("softmax", x, axis=-1)])
    data = np.random.default_rng(6).standard_normal((4, 64)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="slimgraph.backends.tvm"):
        model = build(g, "llvm")
    np.testing.assert_allclose(model(data), g.run(data)[0], rtol=1e-5, atol=1e-6)
    assert all(f'"{cpu.FALLBACK_ATTR}": "no schedule for this shape"' in k.tir for k in model.kernels)
    assert "no schedule for this shape" in caplog.text and "generic schedule" in caplog.text
