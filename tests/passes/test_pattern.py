"""The pattern-rewrite API: wildcards, predicates, captures, callbacks and the fixed-point driver."""

from __future__ import annotations

import numpy as np
import pytest

from slimgraph.errors import OpError
from slimgraph.ir import Graph, TensorType
from slimgraph.passes import Any, Const, Pat, RewriteError, apply_rewrites, rewrite


def _graph(shape=(2, 3)):
    g = Graph("p")
    return g, g.add_input("x", TensorType("f32", shape))


def _root_match(pattern, graph, op):
    (node,) = [n for n in graph.nodes if n.op == op]
    return pattern.match_node(node, graph)


def test_wildcards_consts_and_captures():
    g, x = _graph()
    w = g.const(np.full((2, 3), 2.0, np.float32), name="two")
    y = g.call("mul", g.call("relu", x), w)
    g.set_outputs([y])
    pat = Pat("mul", Pat("relu", Any("a"), name="r"), Const("c", value=2.0))
    caps = _root_match(pat, g, "mul")
    assert caps["a"] is x and caps["c"] is w and caps["r"] is y.producer.inputs[0]
    assert caps[("node", "r")].op == "relu"
    assert _root_match(Pat("mul", Any(), Const(value=3.0)), g, "mul") is None
    assert _root_match(Pat("mul", Any(), Const(where=lambda a: a.sum() == 12)), g, "mul") is not None


def test_commutative_ops_match_either_order_others_do_not():
    g, x = _graph()
    c = g.const(np.float32(1))
    g.set_outputs([g.call("mul", c, x), g.call("sub", c, x)])
    assert _root_match(Pat("mul", Any("x"), Const("c")), g, "mul") == {"x": x, "c": c}
    assert _root_match(Pat("sub", Any("x"), Const("c")), g, "sub") is None


def test_repeated_name_must_capture_the_same_value():
    g, x = _graph()
    other = g.add_input("y", TensorType("f32", (2, 3)))
    g.set_outputs([g.call("add", x, x), g.call("sub", x, other)])
    assert _root_match(Pat("add", Any("v"), Any("v")), g, "add") is not None
    assert _root_match(Pat("sub", Any("v"), Any("v")), g, "sub") is None


def test_predicates_on_attrs_types_nodes_and_uses():
    g, x = _graph((1, 2, 4, 4))
    w = g.const(np.ones((2, 1, 1, 1), np.float32))
    conv = g.call("conv", x, w, groups=2)
    y = g.call("relu", conv)
    g.set_outputs([y, conv])
    assert _root_match(Pat("conv", attrs={"groups": 2}), g, "conv") is not None
    assert _root_match(Pat("conv", attrs={"groups": 1}), g, "conv") is None
    assert _root_match(Pat("conv", attrs={"groups": lambda v: v > 1}), g, "conv") is not None
    assert _root_match(Pat("conv", Any(dtype="f32", rank=4), Const()), g, "conv") is not None
    assert _root_match(Pat("conv", Any(dtype=("i8", "u8")), Const()), g, "conv") is None
    assert _root_match(Pat("conv", Any(), Const(rank=3)), g, "conv") is None
    assert _root_match(Pat("conv", where=lambda n: len(n.inputs) == 2), g, "conv") is not None
    assert _root_match(Pat("conv", Any(), Const(), Any()), g, "conv") is None  # input count must agree
    # conv's value is a graph output, so it is not "used once" by relu
    assert _root_match(Pat("relu", Pat("conv", one_use=True)), g, "relu") is None
    assert _root_match(Pat("relu", Pat("conv")), g, "relu") is not None
    assert _root_match(Pat(("exp", "relu"), Any()), g, "relu") is not None
    assert _root_match(Pat("*", Any()), g, "relu") is not None


def test_unknown_op_in_a_pattern_is_an_error_at_once():
    with pytest.raises(OpError, match="convv"):
        Pat("convv")


def test_rewrite_applies_to_a_fixed_point_and_removes_dead_nodes():
    @rewrite(Pat("neg", Pat("neg", Any("x"))))
    def double_neg(m):
        return m["x"]

    g, x = _graph()
    y = x
    for _ in range(6):
        y = g.call("neg", y)
    g.set_outputs([g.call("exp", y)])
    assert apply_rewrites(g, [double_neg]) == 3
    assert [n.op for n in g.nodes] == ["exp"]
    assert g.nodes[0].inputs == (x,)


def test_callback_builds_replacements_and_graph_outputs_keep_their_names():
    @rewrite(Pat("mul", Any("x"), Const(value=2.0)), name="double-as-add")
    def double(m):
        return m.graph.call("add", m["x"], m["x"])

    g, x = _graph()
    g.set_outputs([g.call("mul", x, g.const(np.float32(2)), name="out")])
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    want = g.run(data)[0]
    assert apply_rewrites(g, [double]) == 1
    assert [n.op for n in g.nodes] == ["add"]
    assert g.outputs[0].name == "out"
    np.testing.assert_array_equal(g.run(data)[0], want)


def test_callback_returning_none_declines():
    calls = []

    @rewrite(Pat("relu", Any()))
    def never(m):
        calls.append(m.root)
        return None

    g, x = _graph()
    g.set_outputs([g.call("relu", x)])
    assert apply_rewrites(g, [never]) == 0
    assert len(calls) == 1 and [n.op for n in g.nodes] == ["relu"]


def test_rules_that_undo_each_other_hit_the_iteration_limit():
    @rewrite(Pat("relu", Any("x")))
    def relu_to_clip(m):
        return m.graph.call("clip", m["x"], min=0.0)

    @rewrite(Pat("clip", Any("x")))
    def clip_to_relu(m):
        return m.graph.call("relu", m["x"])

    g, x = _graph()
    g.set_outputs([g.call("relu", x)])
    with pytest.raises(RewriteError, match="did not reach a fixed point in 5 sweeps; rules still firing: (relu_to_clip|clip_to_relu)"):
        apply_rewrites(g, [relu_to_clip, clip_to_relu], max_iterations=5)


def test_wrong_replacement_type_is_reported():
    @rewrite(Pat("reduce_sum", Any("x")))
    def bad(m):
        return m["x"]

    g, x = _graph()
    g.set_outputs([g.call("reduce_sum", x, axes=(1,))])
    with pytest.raises(RewriteError, match="rule 'bad' replaced .* f32\\[2,1\\] with %x: f32\\[2,3\\]"):
        apply_rewrites(g, [bad])


def test_root_must_be_an_op_pattern():
    with pytest.raises(TypeError):
        rewrite(Any("x"))
