"""The built-in passes one by one: dce, cse, fold-constants, canonicalize, fuse."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from slimgraph.ir import DType, Graph, TensorType
from slimgraph.passes import (
    Canonicalize,
    CommonSubexpressionElimination,
    DeadCodeElimination,
    FoldConstants,
    FuseRegions,
    graph_stats,
    random_inputs,
)
from slimgraph.passes.fuse import _creates_cycle

RNG = np.random.default_rng(7)


def _w(*shape, scale=0.3):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def ops(graph, skip_const=True):
    return [n.op for n in graph.nodes if not (skip_const and n.op == "const")]


def assert_same_numerics(before, after, rtol=1e-5, atol=1e-6):
    after.verify()
    inputs = random_inputs(before, seed=3)
    for want, got in zip(before.run(*inputs), after.run(*inputs)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def image_graph(shape=(1, 4, 6, 6)):
    g = Graph("img")
    return g, g.add_input("x", TensorType("f32", shape))


def bn_params(g, c):
    return [
        g.const(RNG.uniform(0.5, 1.5, c).astype(np.float32)),  # gamma
        g.const(_w(c)),  # beta
        g.const(_w(c)),  # mean
        g.const(RNG.uniform(0.5, 2.0, c).astype(np.float32)),  # var
    ]


# -- dce ---------------------------------------------------------------------------


def test_dce_removes_what_no_output_needs():
    g, x = image_graph()
    dead = g.call("exp", g.call("relu", x))
    g.call("neg", dead)
    a, b = g.call("split", x, axis=1, sizes=(2, 2))
    g.set_outputs([g.call("sigmoid", a)])
    out = DeadCodeElimination()(g)
    assert ops(out) == ["split", "sigmoid"]  # a multi-output node stays when one output is used
    assert out.inputs[0].name == "x"
    assert_same_numerics(g, out)


# -- cse ---------------------------------------------------------------------------


def test_cse_merges_duplicates_commutative_operands_and_identical_constants():
    g, x = image_graph()
    c1 = g.const(np.full((4, 1, 1), 2.0, np.float32))
    c2 = g.const(np.full((4, 1, 1), 2.0, np.float32))  # bitwise equal to c1
    c3 = g.const(np.full((4, 1, 1), -0.0, np.float32))
    c4 = g.const(np.full((4, 1, 1), 0.0, np.float32))  # equal to c3 but not bitwise
    a = g.call("mul", x, c1)
    b = g.call("mul", c2, x)
    s = g.call("add", g.call("add", a, b), g.call("add", g.call("mul", x, c3), g.call("mul", x, c4)))
    g.set_outputs([g.call("sub", g.call("relu", s), g.call("relu", s))])
    out = CommonSubexpressionElimination()(g)
    assert ops(out, skip_const=False).count("const") == 3
    assert ops(out).count("mul") == 3 and ops(out).count("relu") == 1
    assert_same_numerics(g, out)


def test_cse_keeps_two_graph_outputs_apart():
    g, x = image_graph()
    g.set_outputs([g.call("relu", x, name="a"), g.call("relu", x, name="b")])
    out = CommonSubexpressionElimination()(g)
    assert [v.name for v in out.outputs] == ["a", "b"] and ops(out) == ["relu", "relu"]


# -- fold-constants ----------------------------------------------------------------


def test_fold_evaluates_constant_subgraphs_with_the_op_reference():
    g, x = image_graph()
    c = g.call("exp", g.const(_w(4, 1, 1)))
    c = g.call("add", c, g.call("transpose", g.const(_w(1, 1, 4)), perm=(2, 1, 0)))
    g.set_outputs([g.call("mul", x, c, name="y")])
    out = FoldConstants()(g)
    assert ops(out) == ["mul"]
    (const,) = [n for n in out.nodes if n.op == "const"]
    assert not const.attrs["value"].flags.writeable
    assert_same_numerics(g, out, rtol=0, atol=0)  # same numpy code: bitwise equal
    assert out.outputs[0].name == "y"


def test_fold_does_not_inflate_weights_or_dequantize_quantized_ones():
    g, x = image_graph((1, 4, 64, 64))
    big = g.call("expand", g.const(np.float32(2)), shape=(1, 4, 64, 64))
    wq = g.const(RNG.integers(-8, 8, (4, 4, 1, 1)).astype(np.int8))
    w = g.call("dequantize", wq, scale=(0.1,), zero_point=(0,))
    g.set_outputs([g.call("conv", g.call("add", x, big), w)])
    out = FoldConstants()(g)
    assert ops(out) == ["expand", "dequantize", "add", "conv"]
    out = FoldConstants(dequantize=True, max_elements=4 * 64 * 64)(g)
    assert ops(out) == ["add", "conv"]
    assert_same_numerics(g, out, rtol=0, atol=0)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_fold_batch_norm_into_conv_is_exact(bias, groups):
    g, x = image_graph()
    args = [g.const(_w(6, 4 // groups, 3, 3))] + ([g.const(_w(6))] if bias else [])
    y = g.call("conv", x, *args, pads=(1, 1, 1, 1), groups=groups)
    g.set_outputs([g.call("relu", g.call("batch_norm", y, *bn_params(g, 6), epsilon=1e-3))])
    out = FoldConstants()(g)
    assert ops(out) == ["conv", "relu"]
    assert len(out.nodes[-2].inputs) == 3  # the shift became the conv's bias
    assert_same_numerics(g, out)


@pytest.mark.parametrize("trans_b", [True, False])
@pytest.mark.parametrize("bias_shape", [None, (5,), (1, 5), ()])
def test_fold_batch_norm_into_linear_is_exact(trans_b, bias_shape):
    g = Graph("fc")
    x = g.add_input("x", TensorType("f32", ("N", 3)))
    w = g.const(_w(5, 3) if trans_b else _w(3, 5))
    args = [w] + ([g.const(_w(*bias_shape))] if bias_shape is not None else [])
    y = g.call("linear", x, *args, trans_b=trans_b, alpha=0.5, beta=2.0)
    g.set_outputs([g.call("batch_norm", y, *bn_params(g, 5))])
    out = FoldConstants()(g)
    assert ops(out) == ["linear"]
    assert_same_numerics(g, out)


def test_batch_norm_that_cannot_fold_into_its_producer_becomes_scale_and_shift():
    g, x = image_graph()
    y = g.call("conv", x, g.const(_w(4, 4, 1, 1)))
    bn1 = g.call("batch_norm", y, *bn_params(g, 4))  # conv has a second reader: cannot fold
    bn2 = g.call("batch_norm", x, *bn_params(g, 4))  # reads a graph input
    g.set_outputs([g.call("add", bn1, y), bn2])
    out = FoldConstants()(g)
    assert "batch_norm" not in ops(out)
    assert ops(out).count("conv") == 1 and ops(out).count("mul") == 2
    assert_same_numerics(g, out)
    assert ops(FoldConstants(batch_norm=False)(g)).count("batch_norm") == 2


def test_fold_shape_arithmetic_collapses_reshape_chains_with_symbolic_dims():
    g = Graph("shapes")
    x = g.add_input("x", TensorType("f32", ("N", 4, 3, 2)))
    y = g.call("flatten", x, axis=2)  # [N*4, 6]
    y = g.call("reshape", y, shape=(-1, 4, 6))
    y = g.call("unsqueeze", y, axes=(1,))
    y = g.call("squeeze", y, axes=(1,))
    y = g.call("reshape", y, shape=(0, 24))
    z = g.call("transpose", g.call("transpose", x, perm=(0, 2, 3, 1)), perm=(0, 3, 1, 2))
    g.set_outputs([y, g.call("reshape", z, shape=(0, 4, 3, 2))])
    out = FoldConstants()(g)
    assert ops(out) == ["reshape"]
    assert out.outputs[1] is out.inputs[0]
    assert_same_numerics(g, out, rtol=0, atol=0)
    assert len(ops(FoldConstants(shapes=False)(g))) == len(ops(g))


# -- canonicalize ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda g, x: g.call("mul", x, g.const(np.ones((4, 1, 1), np.float32))), []),
        (lambda g, x: g.call("mul", g.const(np.float32(1)), x), []),
        (lambda g, x: g.call("add", g.const(np.float32(0)), x), []),
        (lambda g, x: g.call("sub", x, g.const(np.float32(0))), []),
        (lambda g, x: g.call("div", x, g.const(np.float32(1))), []),
        (lambda g, x: g.call("pow", x, g.const(np.float32(1))), []),
        (lambda g, x: g.call("neg", g.call("neg", x)), []),
        (lambda g, x: g.call("relu", g.call("relu", x)), ["relu"]),
        (lambda g, x: g.call("cast", g.call("identity", x), to="f32"), []),
        (lambda g, x: g.call("sub", x, g.const(np.float32(3))), ["add"]),
        (lambda g, x: g.call("div", x, g.const(np.float32(0.25))), ["mul"]),
        (lambda g, x: g.call("div", x, g.const(np.float32(3))), ["div"]),  # 1/3 is inexact
        (lambda g, x: g.call("sub", g.const(np.float32(0)), x), ["sub"]),  # 0 - x is not x
        (lambda g, x: g.call("pow", g.const(np.float32(1)), x), ["pow"]),
        (lambda g, x: g.call("mul", x, g.const(np.ones((2, 1, 1, 1), np.float32))), ["mul"]),  # broadcasts wider
        (lambda g, x: g.call("transpose", g.call("transpose", x, perm=(0, 2, 3, 1)), perm=(0, 3, 1, 2)), []),
        (lambda g, x: g.call("transpose", g.call("transpose", x, perm=(0, 2, 3, 1)), perm=(0, 1, 3, 2)), ["transpose"]),
        (lambda g, x: g.call("slice", x, starts=(0,), ends=(99,), axes=(1,)), []),
        (lambda g, x: g.call("slice", x, starts=(-1,), ends=(-99,), axes=(1,), steps=(-1,)), ["slice"]),
        (lambda g, x: g.call("pad", x, pads=(0,) * 8), []),
        (lambda g, x: g.call("concat", x, axis=1), []),
        (lambda g, x: g.call("mul", g.call("sigmoid", x), x), ["silu"]),
        (lambda g, x: g.call("mul", x, g.call("sigmoid", x)), ["silu"]),
        (lambda g, x: g.call("mul", x, g.call("sigmoid", g.call("neg", x))), ["neg", "sigmoid", "mul"]),
        # a zero pad of the spatial axes becomes the conv's own padding, added to what it had
        (lambda g, x: g.call("conv", g.call("pad", x, pads=(0, 0, 0, 1, 0, 0, 1, 0)), g.const(_w(4, 4, 3, 3)),
                             pads=(1, 1, 1, 1), strides=(2, 2)), ["conv"]),
        (lambda g, x: g.call("conv", g.call("pad", x, pads=(0, 0, 1, 1, 0, 0, 1, 1)), g.const(_w(4, 1, 3, 3)),
                             g.const(_w(4)), groups=4), ["conv"]),
        (lambda g, x: g.call("conv", g.call("pad", x, pads=(0, 0, 1, 1, 0, 0, 1, 1), value=1.0),
                             g.const(_w(4, 4, 3, 3))), ["pad", "conv"]),  # not zeros
        (lambda g, x: g.call("conv", g.call("pad", x, pads=(0, 1, 1, 1, 0, 0, 1, 1)),
                             g.const(_w(4, 5, 3, 3))), ["pad", "conv"]),  # grows the channels
        (lambda g, x: g.call("conv", g.call("pad", x, pads=(0, 0, 1, 1, 0, 0, 1, 1), mode="edge"),
                             g.const(_w(4, 4, 3, 3))), ["pad", "conv"]),
        (lambda g, x: g.call("add", x, g.call("expand", g.const(_w(4, 1, 1)), shape=(1, 4, 6, 6))), ["add"]),
        (lambda g, x: g.call("matmul", x, g.call("expand", g.const(_w(6, 6)), shape=(4, 6, 6))), ["matmul"]),
        (lambda g, x: g.call("add", g.call("expand", x, shape=(2, 4, 6, 6)), x), ["expand", "add"]),  # widens
    ],
)
def test_canonicalize_rules(build, expected):
    g, x = image_graph()
    g.set_outputs([g.call("sigmoid", build(g, x))])
    out = Canonicalize()(g)
    assert ops(out) == expected + ["sigmoid"]
    assert_same_numerics(g, out, rtol=0, atol=0)  # canonicalize is exact


def test_a_pad_that_feeds_more_than_a_conv_stays_for_the_others():
    g, x = image_graph()
    padded = g.call("pad", x, pads=(0, 0, 1, 1, 0, 0, 1, 1))
    g.set_outputs([g.call("conv", padded, g.const(_w(4, 4, 3, 3))), g.call("relu", padded)])
    out = Canonicalize()(g)
    assert sorted(ops(out)) == ["conv", "pad", "relu"]
    assert [n.attrs["pads"] for n in out.nodes if n.op == "conv"] == [(1, 1, 1, 1)]
    assert_same_numerics(g, out, rtol=0, atol=0)


def test_canonicalize_keeps_output_names():
    g, x = image_graph()
    y = g.call("sub", g.call("mul", x, g.const(np.float32(1))), g.const(np.float32(2)), name="result")
    g.set_outputs([y])
    out = Canonicalize()(g)
    assert [v.name for v in out.outputs] == ["result"] and ops(out) == ["add"]


def _channels_last_mlp(scale_shape=(8,)) -> Graph:
    """ConvNeXt's block tail as torch exports it: each linear on a [rows, C] view of a
    [1, H, W, C] map, reshaped back before its GELU and its per-channel layer scale."""
    g = Graph("mlp")
    x = g.add_input("x", TensorType("f32", (1, 4, 4, 8)))
    h = g.call("linear", g.call("reshape", x, shape=(16, 8)), g.const(_w(16, 8)), g.const(_w(16)))
    act = g.call("gelu", g.call("reshape", h, shape=(1, 4, 4, 16)))
    y = g.call("linear", g.call("reshape", act, shape=(16, 16)), g.const(_w(8, 16)), g.const(_w(8)))
    g.set_outputs([g.call("mul", g.const(_w(*scale_shape)), g.call("reshape", y, shape=(1, 4, 4, 8)))])
    return g


def test_canonicalize_sinks_row_reshapes_so_the_linears_take_their_epilogues():
    g = _channels_last_mlp()
    out = Canonicalize()(g)
    assert ops(out) == ["reshape", "linear", "gelu", "linear", "mul", "reshape"]
    assert_same_numerics(g, out, rtol=0, atol=0)
    fused = FuseRegions()(out)
    bodies = [[b.op for b in n.body.nodes] for n in fused.nodes if n.op == "fused"]
    assert bodies == [["reshape", "linear", "gelu"], ["linear", "mul"]]


def test_canonicalize_keeps_reshapes_it_cannot_sink():
    g = _channels_last_mlp(scale_shape=(4, 1, 8))  # a scale along a regrouped dim reads differently
    out = Canonicalize()(g)
    assert ops(out) == ["reshape", "linear", "gelu", "linear", "reshape", "mul"]
    assert_same_numerics(g, out, rtol=0, atol=0)


def test_canonicalize_leaves_unit_dim_reshapes_and_other_producers_alone():
    g = Graph("t")
    x = g.add_input("x", TensorType("f32", (16, 8)))
    mm = g.call("linear", x, g.const(_w(8, 8)))
    unit = g.call("relu", g.call("reshape", mm, shape=(1, 16, 8)))  # fuse takes this epilogue itself
    pooled = g.call("relu", g.call("reshape", g.call("softmax", x), shape=(4, 4, 8)))  # not a matmul's rows
    wider = g.call("relu", g.call("reshape", g.call("linear", x, g.const(_w(8, 8))), shape=(4, 32)))  # new last dim
    g.set_outputs([unit, pooled, wider])
    out = Canonicalize()(g)
    assert ops(out) == ops(g)


# -- fuse --------------------------------------------------------------------------------


def regions(graph):
    return [(n.attrs["anchor"], [m.op for m in n.body.nodes]) for n in graph.nodes if n.op == "fused"]


def conv(g, x, cout=4, cin=4):
    return g.call("conv", x, g.const(_w(cout, cin, 3, 3)), pads=(1, 1, 1, 1))


def test_anchor_takes_bias_activation_and_residual_add():
    g, x = image_graph()
    y = g.call("add", conv(g, x), g.const(_w(4, 1, 1)))
    y = g.call("relu", g.call("add", g.call("relu", y), x))
    g.set_outputs([y])
    out = FuseRegions()(g)
    assert regions(out) == [("conv", ["conv", "add", "relu", "add", "relu"])]
    assert_same_numerics(g, out, rtol=0, atol=0)
    no_residual = FuseRegions(residual=False)(g)
    assert regions(no_residual) == [("conv", ["conv", "add", "relu"]), ("", ["add", "relu"])]


def test_prologue_takes_cheap_injective_producers_only():
    g, x = image_graph()
    p = g.call("pad", g.call("transpose", x, perm=(0, 1, 3, 2)), pads=(0, 0, 1, 1, 0, 0, 1, 1))
    y = g.call("conv", p, g.const(_w(4, 4, 3, 3)))
    g.set_outputs([g.call("relu", y)])
    assert regions(FuseRegions()(g)) == [("conv", ["transpose", "pad", "conv", "relu"])]
    assert regions(FuseRegions(prologue=False)(g)) == [("conv", ["conv", "relu"])]
    assert regions(FuseRegions(epilogue=False)(g)) == [("conv", ["transpose", "pad", "conv"])]
    # an elementwise producer is not a prologue: it would be recomputed per output pixel
    g2, x2 = image_graph()
    g2.set_outputs([conv(g2, g2.call("sigmoid", x2))])
    assert regions(FuseRegions()(g2)) == []


def test_a_value_read_outside_ends_the_region():
    g, x = image_graph()
    r = g.call("relu", conv(g, x))
    g.set_outputs([g.call("add", conv(g, r), r)])
    out = FuseRegions()(g)
    assert regions(out) == [("conv", ["conv", "relu"]), ("conv", ["conv", "add"])]
    assert_same_numerics(g, out, rtol=0, atol=0)
    g2, x2 = image_graph()
    y = conv(g2, x2)
    g2.set_outputs([g2.call("relu", y), y])  # a graph output cannot hide inside a region
    assert regions(FuseRegions()(g2)) == []


def test_readers_that_meet_again_join_together():
    g, x = image_graph()
    y = conv(g, x)
    g.set_outputs([g.call("mul", y, g.call("sigmoid", y))])  # silu, written out
    out = FuseRegions()(g)
    assert regions(out) == [("conv", ["conv", "sigmoid", "mul"])]
    assert_same_numerics(g, out, rtol=0, atol=0)


def test_an_epilogue_never_broadcasts_the_anchors_result():
    """Squeeze-excite: the expand conv's result is [1,C,1,1]; multiplying it into the full map
    inside the conv's tile made its build unroll once per pixel (minutes for EfficientNet-B0)."""
    g, x = image_graph((1, 8, 6, 6))
    pooled = g.call("global_avg_pool", x)
    squeezed = g.call("relu", g.call("conv", pooled, g.const(_w(2, 8, 1, 1))))
    scale = g.call("sigmoid", g.call("conv", squeezed, g.const(_w(8, 2, 1, 1))))
    g.set_outputs([g.call("mul", x, scale)])
    out = FuseRegions()(g)
    assert regions(out) == [("conv", ["conv", "relu"]), ("conv", ["conv", "sigmoid"])]
    assert ops(out) == ["global_avg_pool", "fused", "fused", "mul"]
    assert_same_numerics(g, out, rtol=0, atol=0)


def test_a_matmul_takes_its_epilogue_through_a_reshape():
    """torch's linear: [1,S,K] viewed as [S,K], the matmul, viewed back as [1,S,N], then bias
    and GELU: one kernel, as without the views; a conv's reshaped result keeps its own kernel."""
    g = Graph("linear")
    x = g.add_input("x", TensorType("f32", (1, 5, 8)))
    flat = g.call("reshape", x, shape=(5, 8))
    y = g.call("reshape", g.call("matmul", flat, g.const(_w(8, 4))), shape=(1, 5, 4))
    g.set_outputs([g.call("gelu", g.call("add", y, g.const(_w(4))))])
    out = FuseRegions()(g)
    assert regions(out) == [("matmul", ["reshape", "matmul", "reshape", "add", "gelu"])]
    assert_same_numerics(g, out, rtol=0, atol=0)
    g2, x2 = image_graph()
    g2.set_outputs([g2.call("relu", g2.call("reshape", conv(g2, x2), shape=(1, -1)))])
    assert [anchor for anchor, _ in regions(FuseRegions()(g2))] == [""]
    # rows split into an image's [H, W] (ConvNeXt's linear on channels-last maps): a tile of rows
    # would be a ragged set of the epilogue's, so the epilogue keeps its own kernel
    g3 = Graph("split_rows")
    x3 = g3.add_input("x", TensorType("f32", (6, 8)))
    y3 = g3.call("reshape", g3.call("matmul", x3, g3.const(_w(8, 4))), shape=(1, 2, 3, 4))
    g3.set_outputs([g3.call("gelu", y3)])
    assert [anchor for anchor, _ in regions(FuseRegions()(g3))] == [""]


def test_an_epilogue_that_reads_the_result_several_times_joins_as_a_whole():
    """GPT-2's gelu_new written out, 0.5 y (1 + tanh(c (y + 0.044715 y^3))), after its linear:
    y is read three times, so no single op of it can join the linear (each would leave y a
    reader outside the region); the chain they form joins as a whole. A chain that also reads
    the anchor's result elsewhere, or broadcasts it, does not."""
    def gelu_new(g, y):
        inner = g.call("add", y, g.call("mul", g.call("pow", y, g.const(np.float32(3.0))), g.const(np.float32(0.044715))))
        t = g.call("tanh", g.call("mul", inner, g.const(np.float32(0.79788456))))
        return g.call("mul", g.call("mul", y, g.const(np.float32(0.5))), g.call("add", t, g.const(np.float32(1.0))))

    g = Graph("gpt2_mlp")
    x = g.add_input("x", TensorType("f32", (1, 5, 8)))
    y = g.call("reshape", g.call("matmul", g.call("reshape", x, shape=(5, 8)), g.const(_w(8, 4))), shape=(1, 5, 4))
    g.set_outputs([gelu_new(g, y)])
    out = FuseRegions()(g)
    assert [anchor for anchor, _ in regions(out)] == ["matmul"] and ops(out) == ["fused"]
    assert_same_numerics(g, out, rtol=0, atol=0)
    assert [anchor for anchor, _ in regions(FuseRegions(epilogue=False)(g))] == ["matmul", ""]
    # the result also read outside the chain: the chain keeps its own kernel
    g2 = Graph("read_twice")
    x2 = g2.add_input("x", TensorType("f32", (5, 8)))
    y2 = g2.call("matmul", x2, g2.const(_w(8, 4)))
    g2.set_outputs([gelu_new(g2, y2), g2.call("softmax", y2)])
    assert ops(FuseRegions()(g2)) == ["matmul", "fused", "softmax"]
    # the result broadcast (a [5, 1] matmul added to a [5, 4] input): the chain keeps its own kernel
    g3 = Graph("broadcast")
    y3 = g3.call("matmul", g3.add_input("x", TensorType("f32", (5, 8))), g3.const(_w(8, 1)))
    g3.set_outputs([gelu_new(g3, g3.call("add", y3, g3.add_input("z", TensorType("f32", (5, 4)))))])
    assert ops(FuseRegions()(g3)) == ["matmul", "fused"]


def test_squeeze_excite_scaling_is_the_next_1x1_convs_prologue():
    """map * gate (one number per channel) is read through the 1x1 conv after it, not a kernel of
    its own; a 3x3 conv keeps the mul apart."""
    def se_block(kernel, gate_shape=(1, 4, 1, 1)):
        g, x = image_graph()
        y = g.call("relu", conv(g, x))
        pooled = g.call("reshape", g.call("global_avg_pool", y), shape=gate_shape)
        gate = g.call("sigmoid", g.call("conv", pooled, g.const(_w(4, 4, 1, 1))))  # the excite conv
        w = g.const(_w(4, 4, kernel, kernel))
        g.set_outputs([g.call("conv", g.call("mul", y, gate), w, pads=(kernel // 2,) * 4)])
        return g

    g = se_block(1)
    out = FuseRegions()(g)
    assert ("conv", ["mul", "conv"]) in regions(out) and "mul" not in ops(out)
    assert_same_numerics(g, out)
    assert "mul" in ops(FuseRegions()(se_block(3)))  # a 3x3 conv would scale each pixel 9 times
    assert "mul" in ops(FuseRegions(prologue=False)(g))


def test_elementwise_chains_fuse_without_an_anchor():
    g, x = image_graph()
    a, b = g.call("split", x, axis=1, sizes=(2, 2))
    s = g.call("add", g.call("sigmoid", a), g.call("tanh", b))
    g.set_outputs([g.call("concat", g.call("exp", s), a, axis=1)])
    out = FuseRegions()(g)
    assert regions(out) == [("", ["sigmoid", "tanh", "add", "exp"])]
    assert_same_numerics(g, out, rtol=0, atol=0)
    assert regions(FuseRegions(chains=False)(g)) == []


def test_chains_take_injective_producers_as_attention_heads_need():
    """q = transpose(slice(qkv)) * scale: one kernel, not a slice, a transpose and a mul."""
    g, x = image_graph()
    q = g.call("slice", x, axes=(1,), starts=(0,), ends=(2,))
    q = g.call("mul", g.call("transpose", q, perm=(0, 1, 3, 2)), g.const(np.float32(0.5)))
    g.set_outputs([g.call("softmax", q)])
    out = FuseRegions()(g)
    assert regions(out) == [("", ["slice", "transpose", "mul"])]  # softmax alone is unwrapped
    assert_same_numerics(g, out, rtol=0, atol=0)
    # an injective op alone is no chain: only an elementwise op starts one
    g2, x2 = image_graph()
    g2.set_outputs([g2.call("softmax", g2.call("transpose", x2, perm=(0, 1, 3, 2)))])
    assert regions(FuseRegions()(g2)) == [("softmax", ["transpose", "softmax"])]
    assert regions(FuseRegions(chains=False)(g)) == []


def test_max_ops_and_anchor_choice():
    g, x = image_graph()
    y = conv(g, x)
    for op in ("relu", "sigmoid", "tanh", "exp", "neg"):
        y = g.call(op, y)
    g.set_outputs([y])
    assert [len(body) for _, body in regions(FuseRegions(max_ops=3)(g))] == [3, 3]
    assert regions(FuseRegions(max_ops=1)(g)) == []
    assert regions(FuseRegions(anchors=("linear",))(g)) == [("", ["relu", "sigmoid", "tanh", "exp", "neg"])]


def test_regions_keep_constants_outside_and_nest_cleanly():
    g, x = image_graph()
    g.set_outputs([g.call("relu", conv(g, x), name="out")])
    out = FuseRegions()(g)
    (fused,) = out.find_nodes("fused")
    assert [v.is_const for v in fused.inputs] == [False, True]
    assert out.outputs[0].name == "out"
    assert graph_stats(out).flops == graph_stats(g).flops
    again = FuseRegions()(out)  # fused regions are opaque: fusing twice changes nothing
    assert str(again) == str(out)


def test_cycle_check_sees_paths_that_leave_and_come_back():
    g, x = image_graph()
    a = g.call("relu", x)
    b = conv(g, a)
    c = g.call("add", a, b)
    g.set_outputs([c])
    relu, conv_node, add = (n for n in g.nodes if n.op in ("relu", "conv", "add"))
    assert _creates_cycle(g, [relu, add], [conv_node])  # relu -> conv -> add leaves and re-enters
    assert not _creates_cycle(g, [conv_node, add], [relu])
    out = FuseRegions()(g)
    assert nx.is_directed_acyclic_graph(out.to_networkx())


def test_fold_leaves_ops_that_reject_their_constants_for_run_time():
    g, x = image_graph()
    bad = g.call("gather", g.const(_w(4)), g.const(np.array([7], np.int64)))  # index out of range
    g.set_outputs([g.call("add", x, g.call("reshape", bad, shape=(1, 1, 1, 1)))])
    out = FoldConstants()(g)
    assert ops(out) == ["gather", "reshape", "add"]


def test_canonicalize_handles_every_float_dtype():
    g = Graph("bf16")
    x = g.add_input("x", TensorType("bf16", (3,)))
    bf16 = DType.bfloat16.numpy
    y = g.call("sub", g.call("div", x, g.const(np.array(2, bf16))), g.const(np.array(1, bf16)))
    g.set_outputs([y])
    out = Canonicalize()(g)
    assert ops(out) == ["mul", "add"]
    assert_same_numerics(g, out, rtol=0, atol=0)


def test_quantize_ends_a_region_and_dequantize_starts_the_next():
    g, x = image_graph()
    y = g.call("relu", g.call("add", conv(g, x), g.const(_w(4, 1, 1))))
    q = g.call("quantize", y, scale=(0.05,), zero_point=(0,), dtype="i8")
    y = conv(g, g.call("dequantize", q, scale=(0.05,), zero_point=(0,)))
    g.set_outputs([g.call("relu", y)])
    out = FuseRegions()(g)
    assert regions(out) == [
        ("conv", ["conv", "add", "relu", "quantize"]),
        ("conv", ["dequantize", "conv", "relu"]),
    ]
    assert out.find_nodes("fused")[0].output.type.dtype.name == "int8"
    assert_same_numerics(g, out, rtol=0, atol=0)
