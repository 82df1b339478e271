"""``merge-linears``: one linear over concatenated weights, each former result a slice of it."""

from __future__ import annotations

import numpy as np
import pytest

from slimgraph.ir import Graph, TensorType
from slimgraph.passes import FuseRegions, MergeLinears, random_inputs

RNG = np.random.default_rng(11)


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _same(before: Graph, after: Graph) -> None:
    after.verify()
    inputs = random_inputs(before, seed=5)
    for want, got in zip(before.run(*inputs), after.run(*inputs)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trans_b", [True, False])
def test_projections_of_one_input_become_one_linear(trans_b):
    g = Graph("qkv")
    x = g.add_input("x", TensorType("f32", (1, 5, 8)))
    shapes = [(6, 8), (4, 8), (6, 8)] if trans_b else [(8, 6), (8, 4), (8, 6)]
    biases = [g.const(_w(6)), None, g.const(_w(6))]  # the middle one has none: zeros in the merged bias
    outs = [g.call("linear", x, g.const(_w(*s), name=f"p{i}.weight"), *([b] if b is not None else []), trans_b=trans_b)
            for i, (s, b) in enumerate(zip(shapes, biases))]
    g.set_outputs([g.call("relu", outs[0]), outs[1], g.call("add", outs[2], outs[0])])
    merged = MergeLinears()(g)
    _same(g, merged)
    (linear,) = merged.find_nodes("linear")
    assert linear.inputs[1].name == "p0.weight+p1.weight+p2.weight"
    assert not any(merged.has_value(f"p{i}.weight") for i in range(3))  # no second copy of the weights
    assert linear.outputs[0].type.shape == (1, 5, 16)
    assert [(n.attrs["starts"], n.attrs["ends"]) for n in merged.find_nodes("slice")] == [((0,), (6,)), ((6,), (10,)),
                                                                                         ((10,), (16,))]


def test_linears_that_differ_stay_apart():
    g = Graph("apart")
    x = g.add_input("x", TensorType("f32", (3, 8)))
    y = g.add_input("y", TensorType("f32", (3, 8)))
    w = g.add_input("w", TensorType("f32", (4, 8)))
    outs = [
        g.call("linear", x, g.const(_w(4, 8))),
        g.call("linear", y, g.const(_w(4, 8))),               # another input
        g.call("linear", x, w),                                # a weight computed at run time
        g.call("linear", x, g.const(_w(8, 4)), trans_b=False),  # another layout
        g.call("linear", x, g.const(_w(4, 8)), alpha=2.0),     # another scale
    ]
    g.set_outputs(outs)
    merged = MergeLinears()(g)
    assert len(merged.find_nodes("linear")) == 5 and not merged.find_nodes("slice")


def test_attention_takes_the_slices_as_index_arithmetic():
    """After fuse, each head's slice, reshape and transpose are the attention kernel's prologue: the
    merged linear is one kernel and nothing is copied between it and the attention."""
    g = Graph("attn")
    x = g.add_input("x", TensorType("f32", (1, 6, 16)))
    q, k, v = (g.call("transpose", g.call("reshape", g.call("linear", x, g.const(_w(16, 16))), shape=(1, 6, 2, 8)),
                      perm=(0, 2, 1, 3)) for _ in range(3))
    g.set_outputs([g.call("attention", q, k, v)])
    fused = FuseRegions()(MergeLinears()(g))
    _same(g, fused)
    assert [n.op for n in fused.nodes if n.op != "const"] == ["linear", "fused"]
    body_ops = [n.op for n in fused.nodes[-1].body.nodes]
    assert body_ops.count("slice") == 3 and "attention" in body_ops
