"""The verifier names the node and the rule for every broken graph."""

from __future__ import annotations

import numpy as np
import pytest

from slimgraph.errors import GraphError, VerifyError
from slimgraph.ir import Graph, TensorType, Value
from slimgraph.ir.graph import Node

from tests.ir.graphs import GRAPHS


def _base() -> tuple[Graph, Value, Value]:
    g = Graph("g")
    x = g.add_input("x", TensorType("f32", ("N", 4)))
    y = g.call("relu", x, name="y")
    z = g.call("exp", y, name="z")
    g.set_outputs([z])
    return g, y, z


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_suite_graphs_verify(name: str) -> None:
    GRAPHS[name]().verify()


def _broken_order(g: Graph, y: Value, z: Value) -> None:
    g.nodes.reverse()


def _broken_type(g: Graph, y: Value, z: Value) -> None:
    y.type = TensorType("f32", ("N", 5))


def _broken_dtype(g: Graph, y: Value, z: Value) -> None:
    z.type = TensorType("f16", ("N", 4))


def _broken_ssa(g: Graph, y: Value, z: Value) -> None:
    z.name = "y"


def _broken_users(g: Graph, y: Value, z: Value) -> None:
    y.users.clear()


def _extra_user(g: Graph, y: Value, z: Value) -> None:
    y.users.append(z.producer)


def _foreign_value(g: Graph, y: Value, z: Value) -> None:
    other = Graph("other")
    stranger = other.add_input("s", TensorType("f32", ("N", 4)))
    z.producer.inputs = (stranger,)


def _no_outputs(g: Graph, y: Value, z: Value) -> None:
    g.outputs = []


def _undefined_output(g: Graph, y: Value, z: Value) -> None:
    g.outputs = [Value("ghost", z.type)]


def _unknown_op(g: Graph, y: Value, z: Value) -> None:
    z.producer.op = "frobnicate"


def _wrong_arity(g: Graph, y: Value, z: Value) -> None:
    z.producer.inputs = (y, y)
    y.users.append(z.producer)


def _bad_attr(g: Graph, y: Value, z: Value) -> None:
    y.producer.attrs["alpha"] = 0.3


def _bad_attr_value(g: Graph, y: Value, z: Value) -> None:
    node = y.producer
    node.op = "leaky_relu"
    node.attrs = {"alpha": "high"}


def _missing_attr(g: Graph, y: Value, z: Value) -> None:
    node = z.producer
    node.op = "cast"
    node.attrs = {}


def _outputs_count(g: Graph, y: Value, z: Value) -> None:
    extra = Value("extra", y.type, y.producer, 1)
    y.producer.outputs = (y, extra)
    g._values["extra"] = extra


def _dangling_producer(g: Graph, y: Value, z: Value) -> None:
    y.index = 3


BROKEN = [
    (_broken_order, "order", "%z = exp"),
    (_broken_type, "type", "%y = relu"),
    (_broken_dtype, "type", "%z = exp"),
    (_broken_ssa, "ssa", "%y = exp"),
    (_broken_users, "users", "%z = exp"),
    (_extra_user, "users", "%y"),
    (_foreign_value, "membership", "%z = exp"),
    (_no_outputs, "outputs", None),
    (_undefined_output, "outputs", None),
    (_unknown_op, "op", "%z = frobnicate"),
    (_wrong_arity, "op", "%z = exp"),
    (_bad_attr, "op", "%y = relu"),
    (_bad_attr_value, "op", "%y = leaky_relu"),
    (_missing_attr, "op", "%z = cast"),
    (_outputs_count, "type", "%y, %extra = relu"),
    (_dangling_producer, "ssa", "%y = relu"),
]


@pytest.mark.parametrize("breaker,rule,where", BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_broken_graphs_name_rule_and_node(breaker, rule: str, where: str | None) -> None:
    g, y, z = _base()
    g.verify()
    breaker(g, y, z)
    with pytest.raises(VerifyError) as info:
        g.verify()
    assert info.value.rule == rule, str(info.value)
    if where is not None:
        assert info.value.where is not None and info.value.where.startswith(where), str(info.value)


def test_broken_region_body() -> None:
    g = GRAPHS["fused_region"]()
    body = g.nodes[1].body
    body.nodes[0].outputs[0].type = TensorType("f32", ("N", 7))
    with pytest.raises(VerifyError) as info:
        g.verify()
    assert info.value.rule == "region"
    assert "linear" in str(info.value)


def test_builder_rejects_bad_graphs_early() -> None:
    g, y, z = _base()
    other = Graph("other")
    with pytest.raises(GraphError, match="does not belong"):
        other.call("relu", y)
    with pytest.raises(GraphError, match="still used"):
        g.remove_node(y.producer)
    with pytest.raises(GraphError, match="cannot replace"):
        g.replace_all_uses(y, g.call("cast", y, to="f16"))
    with pytest.raises(GraphError, match="defined twice"):
        g.add_input("x", TensorType("f32", (1,)))
    assert isinstance(g.nodes[0], Node)
    np.testing.assert_array_equal(g.run(np.zeros((2, 4), np.float32))[0], np.ones((2, 4), np.float32))
