"""gather_elements, scatter_elements, scatter_nd and one_hot agree with PyTorch, infer
(symbolic) shapes, reject bad inputs statically and out-of-range indices at run time,
and print and parse back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slimgraph.errors import IndexOutOfRangeError, OpError
from slimgraph.ir import Graph, TensorType, parse
from slimgraph.ir.registry import get_op
from tests.ir.test_ops_shape import rand, run_op

T = torch.from_numpy
DATA = rand(4, 5, 3)
IDX = np.random.default_rng(1).integers(-4, 4, (3, 5, 2))  # smaller than the data on axes 0 and 2
UPD = rand(3, 5, 2)
TORCH_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def test_gather_elements_matches_torch_gather():
    got = run_op("gather_elements", DATA, IDX, axis=0)
    np.testing.assert_array_equal(got, torch.gather(T(DATA), 0, T(IDX % 4)).numpy())
    got = run_op("gather_elements", DATA, IDX.astype(np.int32) % 3, axis=-1)
    np.testing.assert_array_equal(got, torch.gather(T(DATA), 2, T((IDX % 3).astype(np.int64))).numpy())


@pytest.mark.parametrize("reduction", ["add", "mul", "max", "min"])
def test_scatter_elements_matches_torch_scatter_reduce(reduction):
    got = run_op("scatter_elements", DATA, IDX, UPD, axis=0, reduction=reduction)
    want = T(DATA).scatter_reduce(0, T(IDX % 4), T(UPD), TORCH_REDUCE[reduction], include_self=True)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)


def test_scatter_elements_replaces_like_torch_scatter():
    idx = np.array([[2, 0, -1], [1, 3, 0]], np.int64)  # distinct targets per row
    data, upd = rand(2, 4), rand(2, 3)
    got = run_op("scatter_elements", data, idx, upd, axis=1)
    np.testing.assert_array_equal(got, T(data).scatter(1, T(idx % 4), T(upd)).numpy())


@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_scatter_nd_matches_torch_index_put(reduction):
    data = rand(4, 5, 3)
    idx = np.array([[0, 1], [-1, 4], [2, -5]], np.int64)  # rows of coordinates into axes 0 and 1
    upd = rand(3, 3)
    got = run_op("scatter_nd", data, idx, upd, reduction=reduction)
    want = T(data).clone()
    rows, cols = T(idx[:, 0] % 4), T(idx[:, 1] % 5)
    if reduction == "max":
        want[rows, cols] = torch.maximum(want[rows, cols], T(upd))
    else:
        want.index_put_((rows, cols), T(upd), accumulate=reduction == "add")
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)


def test_one_hot_matches_torch_and_follows_onnx_out_of_range():
    idx = np.array([[0, 3], [-1, 2]], np.int64)
    got = run_op("one_hot", idx, np.array([0, 1], np.int64), depth=4)
    np.testing.assert_array_equal(got, F.one_hot(T(idx % 4), 4).numpy())
    got = run_op("one_hot", np.array([4, -5, 1], np.int32), np.array([-1.0, 2.0], np.float32), depth=4, axis=0)
    np.testing.assert_array_equal(got, [[-1, -1, -1], [-1, -1, 2], [-1, -1, -1], [-1, -1, -1]])


@pytest.mark.parametrize("op, arrays, attrs, match", [
    ("gather_elements", [DATA, IDX + 4], {"axis": 0}, "gather_elements axis 0: index 4 is out of range for an axis "
                                                      "of size 4"),
    ("scatter_elements", [DATA, IDX - 4, UPD], {"axis": 0}, "scatter_elements axis 0: index -5 is out of range"),
    ("scatter_nd", [DATA, np.array([[0, 5]]), rand(1, 3)], {}, "scatter_nd axis 1: index 5 is out of range for an "
                                                               "axis of size 5"),
])  # fmt: skip
def test_out_of_range_indices_raise_naming_the_node(op, arrays, attrs, match):
    with pytest.raises(IndexOutOfRangeError, match=f"= {op}: {match}"):
        run_op(op, *arrays, **attrs)


def test_symbolic_shapes():
    g = Graph("sym")
    x = g.add_input("x", TensorType("f32", ("N", 5)))
    i = g.add_input("i", TensorType("i64", ("N", 2)))
    assert str(g.call("gather_elements", x, i, axis=1).type) == "f32[N,2]"
    assert str(g.call("scatter_elements", x, i, g.call("gather_elements", x, i, axis=1), axis=1).type) == "f32[N,5]"
    assert str(g.call("one_hot", i, g.const(np.array([0, 1], np.int64)), depth=3, axis=1).type) == "i64[N,3,2]"
    rows = g.add_input("r", TensorType("i32", ("B", 1)))
    assert str(g.call("scatter_nd", x, rows, g.add_input("u", TensorType("f32", ("B", 5)))).type) == "f32[N,5]"


@pytest.mark.parametrize("op, types, attrs, match", [
    ("gather_elements", [("f32", 4, 5), ("f32", 4, 5)], {}, "indices must be i32 or i64"),
    ("gather_elements", [("f32", 4, 5), ("i64", 4)], {}, "must have the rank of the data"),
    ("gather_elements", [("f32", 4, 5), ("i64", 2, 6)], {}, "larger than the data \\[4,5\\] on axis 1"),
    ("scatter_elements", [("f32", 4, 5), ("i64", 2, 5), ("f32", 2, 4)], {}, "must be f32\\[2,5\\]: the indices' shape"),
    ("scatter_elements", [("f32", 4, 5), ("i64", 2, 5), ("f32", 2, 5)], {"reduction": "mean"}, "is not one of"),
    ("scatter_nd", [("f32", 4, 5), ("i64", 2, 3), ("f32", 2)], {}, "must end in a known axis of 1 to 2 coordinates"),
    ("scatter_nd", [("f32", 4, 5), ("i64", 2, 1), ("f32", 2, 4)], {}, "must be f32\\[2,5\\]"),
    ("one_hot", [("i64", 3), ("f32", 3)], {"depth": 2}, "values must be \\[off, on\\]"),
    ("one_hot", [("i64", 3), ("f32", 2)], {"depth": 0}, "depth=0 must be positive"),
])  # fmt: skip
def test_bad_inputs_raise_op_error(op, types, attrs, match):
    g = Graph("bad")
    inputs = [g.add_input(f"x{n}", TensorType(t[0], t[1:])) for n, t in enumerate(types)]
    with pytest.raises(OpError, match=f"{op}: .*{match}"):
        g.call(op, *inputs, **attrs)


def test_ops_print_parse_and_count_flops():
    g = Graph("text")
    x = g.add_input("x", TensorType("f32", (4, 5)))
    i = g.add_input("i", TensorType("i32", (2, 5)))
    u = g.call("gather_elements", x, i)
    s = g.call("scatter_elements", x, i, u, axis=0, reduction="max")
    g.set_outputs([s, g.call("one_hot", i, g.const(np.array([0.0, 1.0], np.float32)), depth=3, axis=0)])
    assert parse(str(g)) == g
    assert get_op("scatter_elements").flops([x.type, i.type, u.type], [s.type], {"reduction": "max"}) == 10
    assert get_op("scatter_elements").flops([x.type, i.type, u.type], [s.type], {"reduction": "none"}) == 0
