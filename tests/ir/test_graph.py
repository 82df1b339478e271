"""Types with symbolic dims, graph editing, the networkx view and interpreter input checks."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from slimgraph.errors import GraphError, InterpreterError, OpError, SlimgraphError
from slimgraph.ir import DType, Graph, TensorType, get_op
from slimgraph.ir.types import bind_dim, broadcast_shapes, dim_div, dim_mul, numel

from tests.ir.graphs import GRAPHS, random_inputs


def test_dims_are_monomials() -> None:
    assert dim_mul("N", 3) == "N*3"
    assert dim_mul(2, dim_mul("N", 3)) == "N*6"
    assert dim_mul("T", "B") == "B*T"
    assert dim_div("N*6", 3) == "N*2"
    assert dim_div("N*6", "N") == 6
    assert dim_div("N", 2) is None
    assert numel(("N", 16, 4, 4)) == "N*256"
    assert TensorType("f32", ("3*N",)).shape == ("N*3",)


def test_bind_dim_solves_one_symbol() -> None:
    bindings: dict[str, int] = {}
    assert bind_dim("N*3", 12, bindings) and bindings == {"N": 4}
    assert bind_dim("N", 4, bindings)
    assert not bind_dim("N", 5, bindings)
    assert not bind_dim(7, 8, bindings)


def test_broadcasting_with_symbols() -> None:
    assert broadcast_shapes(("N", 1, 4), (3, 1)) == ("N", 3, 4)
    assert broadcast_shapes(("N", 4), (1, 4)) == ("N", 4)
    assert broadcast_shapes(("N",), (5,)) == (5,)
    with pytest.raises(GraphError, match="do not broadcast"):
        broadcast_shapes((2, 3), (4, 3))
    with pytest.raises(GraphError, match="do not broadcast"):
        broadcast_shapes(("N",), ("M",))


def test_dtypes_cover_the_issue_list() -> None:
    names = {d.name for d in DType}
    assert names == {"float32", "float64", "float16", "bfloat16", "int4", "int8", "uint8", "int32", "int64", "bool"}
    assert TensorType("i4", (3, 5)).nbytes() == 8
    assert TensorType("bf16", ("N", 2)).nbytes({"N": 4}) == 16
    assert TensorType("f64", (3,)).nbytes() == 24 and DType.of(np.float64) is DType.float64 and DType.float64.is_float
    with pytest.raises(GraphError, match="unknown dtype"):
        TensorType("f128", (1,))
    with pytest.raises(GraphError, match="bad dim"):
        TensorType("f32", (-1,))


def test_replace_all_uses_keeps_users_lists_right() -> None:
    g = Graph()
    x = g.add_input("x", TensorType("f32", (4,)))
    a = g.call("relu", x)
    b = g.call("add", a, a)
    c = g.call("mul", b, a)
    g.set_outputs([c, a])
    new = g.call("sigmoid", x)
    g.replace_all_uses(a, new)
    assert a.users == []
    assert sorted(n.op for n in new.users) == ["add", "add", "mul"]
    assert g.outputs[1] is new
    g.remove_node(a.producer)
    g.topo_sort()
    g.verify()
    ref = 1 / (1 + np.exp(-np.arange(4, dtype=np.float32)))
    np.testing.assert_allclose(g.run(np.arange(4, dtype=np.float32))[0], (ref + ref) * ref, rtol=1e-6)


def test_inserting_before_and_set_input() -> None:
    g = Graph()
    x = g.add_input("x", TensorType("f32", (4,)))
    y = g.call("exp", x)
    g.set_outputs([y])
    with g.inserting_before(y.producer):
        r = g.call("relu", x)
    g.set_input(y.producer, 0, r)
    assert [n.op for n in g.nodes] == ["relu", "exp"]
    g.verify()
    assert x.users == [r.producer]


def test_clone_is_independent() -> None:
    g = GRAPHS["tiny_cnn"]()
    before = str(g)
    c = g.clone()
    assert c == g
    relu = c.find_nodes("relu")[0]
    c.replace_all_uses(relu.output, relu.inputs[0])
    c.remove_node(relu)
    c.verify()
    assert str(g) == before and c != g
    weights = g.consts()["conv1.weight"]
    assert not weights.flags.writeable
    with pytest.raises(ValueError):
        weights[0, 0, 0, 0] = 1.0


def test_networkx_view() -> None:
    g = GRAPHS["residual_multi_output"]()
    dg = g.to_networkx()
    assert nx.is_directed_acyclic_graph(dg)
    assert dg.number_of_nodes() == len(g.nodes) + len(g.inputs) + len(g.outputs)
    split = next(i for i, n in enumerate(g.nodes) if n.op == "split")
    assert nx.has_path(dg, split, ("output", g.outputs[1].name))


def test_interpreter_checks_its_inputs() -> None:
    g = GRAPHS["mlp"]()
    ok = random_inputs(g, dim=3)
    assert g.run(*ok)[0].shape == (3, 10)
    assert g.run(x=ok[0])[0].shape == (3, 10)
    with pytest.raises(InterpreterError, match="dtype float64"):
        g.run(ok[0].astype(np.float64))
    with pytest.raises(InterpreterError, match=r"expected \[N,64\]"):
        g.run(np.zeros((3, 63), np.float32))
    with pytest.raises(InterpreterError, match="missing inputs x"):
        g.run()
    with pytest.raises(InterpreterError, match="no input 'y'"):
        g.run(y=ok[0])
    two = Graph()
    a = two.add_input("a", TensorType("f32", ("N",)))
    b = two.add_input("b", TensorType("f32", ("N",)))
    two.set_outputs([two.call("add", a, b)])
    with pytest.raises(InterpreterError, match="N=3"):
        two.run(np.zeros(3, np.float32), np.zeros(4, np.float32))


def test_errors_are_one_family() -> None:
    for exc in (GraphError, OpError, InterpreterError):
        assert issubclass(exc, SlimgraphError)
    with pytest.raises(OpError, match="unknown op; did you mean relu"):
        get_op("reluu")
    g = Graph()
    x = g.add_input("x", TensorType("f32", (4,)))
    with pytest.raises(OpError, match="cast: missing required attribute 'to'"):
        g.call("cast", x)


def test_set_const_keeps_the_type_and_refuses_what_does_not_fit():
    g = Graph()
    x = g.add_input("x", TensorType("f16", (2,)))
    w = g.const(np.zeros(2, np.float16))
    g.set_outputs([g.call("add", x, w)])
    g.set_const(w, np.array([1.5, 2.5]))  # float64 in, f16 kept
    assert w.const_value.dtype == np.float16 and w.const_value.tolist() == [1.5, 2.5]
    assert g.run(np.ones(2, np.float16))[0].tolist() == [2.5, 3.5]
    with pytest.raises(GraphError, match=r"is f16\[2\], got an array of shape \[3\]"):
        g.set_const(w, np.zeros(3))
    with pytest.raises(GraphError, match="%x is not a constant"):
        g.set_const(x, np.zeros(2))
    other = Graph()
    with pytest.raises(GraphError, match="not a constant of graph"):
        other.set_const(w, np.zeros(2))
