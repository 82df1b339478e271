"""Indices read from data never reach memory outside a tensor: an index outside
``[-size, size)`` is an IndexOutOfRangeError from the compiled call, the reference
interpreter and the torch backend alike; indices inside it wrap, as in ONNX and torch."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from slimgraph.api import compile  # noqa: E402
from slimgraph.backends.torch import to_torch  # noqa: E402
from slimgraph.backends.tvm import build, load_compiled  # noqa: E402
from slimgraph.errors import IndexOutOfRangeError, SlimgraphError  # noqa: E402
from slimgraph.ir import Graph, TensorType  # noqa: E402
from slimgraph.passes import run_pipeline  # noqa: E402

ROWS = 10
BAD = [ROWS, 10**9, -ROWS - 1, -(10**9)]
TABLE = np.arange(ROWS * 4, dtype=np.float32).reshape(ROWS, 4)
GOOD = np.array([[0, 1, 2, 3, -1], [9, -10, 4, 5, 6]], np.int64)


def _with(bad: int) -> np.ndarray:
    ids = GOOD.copy()
    ids[1, 2] = bad
    return ids


def _gather_graph() -> Graph:
    g = Graph("lookup")
    ids = g.add_input("ids", TensorType("i64", (2, 5)))
    g.set_outputs([g.call("gather", g.const(TABLE), ids, axis=0)])
    return g


@pytest.fixture(scope="module")
def gather():
    graph = _gather_graph()
    return graph, build(graph, "llvm")


@pytest.fixture(scope="module")
def embedding():
    torch.manual_seed(0)
    module = torch.nn.Embedding(ROWS, 8).eval()
    return module, compile(module, [torch.from_numpy(GOOD)])


def test_indices_in_range_wrap_like_torch(gather, embedding):
    graph, model = gather
    want = TABLE[GOOD % ROWS]
    np.testing.assert_array_equal(model(GOOD), want)
    np.testing.assert_array_equal(graph.run(GOOD)[0], want)
    np.testing.assert_array_equal(to_torch(graph)(torch.from_numpy(GOOD)).numpy(), want)
    module, compiled = embedding
    with torch.no_grad():
        torch_out = module(torch.from_numpy(GOOD % ROWS)).numpy()
    np.testing.assert_allclose(compiled(GOOD % ROWS), torch_out, rtol=0, atol=0)


@pytest.mark.parametrize("bad", BAD)
def test_compiled_gather_rejects_out_of_range_indices(gather, bad):
    graph, model = gather
    with pytest.raises(IndexOutOfRangeError, match=r"^k0_gather \(%\w+ = gather\): index out of range: gather axis 0 "
                                                   r"of size 10 takes indices in \[-10, 10\)$"):
        model(_with(bad))
    with pytest.raises(IndexOutOfRangeError, match=rf"= gather: gather axis 0: index {bad} is out of range"):
        graph.run(_with(bad))
    with pytest.raises(IndexOutOfRangeError, match=rf"index {bad} is out of range for an axis of size 10"):
        to_torch(graph)(torch.from_numpy(_with(bad)))
    # the process survives and the model still answers
    np.testing.assert_array_equal(model(GOOD), TABLE[GOOD % ROWS])


@pytest.mark.parametrize("bad", BAD)
def test_compiled_embedding_rejects_out_of_range_indices(embedding, bad):
    module, model = embedding
    with pytest.raises(IndexOutOfRangeError, match="index out of range") as info:
        model(_with(bad))
    assert isinstance(info.value, SlimgraphError) and isinstance(info.value, IndexError)
    with pytest.raises(IndexOutOfRangeError):  # torch tensors in, the same error
        model(torch.from_numpy(_with(bad)))
    with pytest.raises(IndexError):  # as torch itself does
        module(torch.from_numpy(_with(bad)))
    assert model(GOOD % ROWS).shape == (2, 5, 8)


def test_check_covers_indices_computed_inside_a_fused_kernel():
    g = Graph("fused_lookup")
    ids = g.add_input("ids", TensorType("i32", (2, 5)))
    shifted = g.call("add", ids, g.const(np.int32(3)))
    g.set_outputs([g.call("mul", g.call("gather", g.const(TABLE), shifted), g.const(np.float32(2)))])
    graph, _ = run_pipeline(g, "default")
    model = build(graph, "llvm")
    assert len(model.kernels) == 1, "the add, the gather and the mul are one kernel"
    ok = (GOOD % 7 - 3).astype(np.int32)
    np.testing.assert_array_equal(model(ok), g.run(ok)[0])
    with pytest.raises(IndexOutOfRangeError, match="gather axis 0 of size 10"):
        model(ok + 7)


def test_constant_indices_out_of_range_fail_the_build():
    g = Graph("const_lookup")
    x = g.add_input("x", TensorType("f32", (3, 4)))
    g.set_outputs([g.call("gather", x, g.const(np.array([0, 4], np.int64)), axis=1)])
    with pytest.raises(IndexOutOfRangeError, match="= gather: gather axis 1: index 4 is out of range"):
        build(g, "llvm")


def test_indices_into_an_empty_axis_fail_the_build():
    g = Graph("empty_lookup")
    x = g.add_input("x", TensorType("f32", (0, 4)))
    g.set_outputs([g.call("gather", x, g.add_input("i", TensorType("i64", (2,))))])
    with pytest.raises(IndexOutOfRangeError, match="indices into an empty axis can never be in range"):
        build(g, "llvm")


def test_a_saved_model_keeps_its_checks(gather, tmp_path):
    _, model = gather
    loaded = load_compiled(model.save(tmp_path / "lookup"))
    with pytest.raises(IndexOutOfRangeError, match="gather axis 0 of size 10"):
        loaded(_with(10**9))
    np.testing.assert_array_equal(loaded(GOOD), TABLE[GOOD % ROWS])


def test_cpu_kernels_assert_their_checks_and_gpu_main_asserts_them():
    from slimgraph.backends.tvm.lower import lower_graph
    from slimgraph.backends.tvm.targets import parse_target

    cpu = lower_graph(_gather_graph(), parse_target("llvm"), {})
    gpu = lower_graph(_gather_graph(), parse_target("cuda:sm_90"), {})
    assert "assert_op" not in cpu.mod["main"].script()
    assert "R.assert_op" in gpu.mod["main"].script() and "gather axis 0 of size 10" in gpu.mod["main"].script()


def test_the_kernel_tir_shows_the_assert(gather):
    _, model = gather
    (kernel,) = model.kernels
    assert "index out of range: gather axis 0 of size 10" in kernel.tir


class _PairIndex(torch.nn.Module):
    """``x[i, j]``: two index tensors on adjacent axes, read at one flat offset."""

    def forward(self, x, i, j):
        return x[i, j]


@pytest.mark.parametrize("bad", [4, -5, 10**9])
def test_several_index_tensors_check_each_axis_not_only_the_flat_offset(bad):
    """j = 4 on an axis of 4 lands on a valid flat offset (the next row's first element):
    each index is checked against its own axis, in the interpreter and compiled."""
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    i, j = torch.tensor([0, 1, -1]), torch.tensor([1, -1, 2])
    model = compile(_PairIndex(), [x, i, j])
    np.testing.assert_array_equal(model(x, i, j).numpy(), x[i, j].numpy())
    j_bad = torch.tensor([1, bad, 2])
    with pytest.raises(IndexOutOfRangeError):
        model(x, i, j_bad)
    with pytest.raises(IndexOutOfRangeError):
        model.ir.run(x.numpy(), i.numpy(), j_bad.numpy())


def test_onnx_gather_nd_checks_each_axis():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from slimgraph.frontends.onnx import from_onnx

    node = helper.make_node("GatherND", ["x", "idx"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
                                            helper.make_tensor_value_info("idx", TensorProto.INT64, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    ir = from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(ir.run(x, np.array([[0, 1], [-1, -1]]))[0], [1.0, 11.0])
    with pytest.raises(IndexOutOfRangeError):
        ir.run(x, np.array([[0, 4], [1, 1]]))  # (0, 4) is flat offset 4, a valid element


@pytest.mark.parametrize("length", [0, "n"])
def test_an_empty_index_tensor_is_in_range(length):
    # the check's count is a reduction whose init sits inside its loops: an index tensor with no
    # entries never ran it, and the garbage count used to fail most calls
    g = Graph("empty_lookup")
    ids = g.add_input("ids", TensorType("i64", (length,)))
    g.set_outputs([g.call("gather", g.const(TABLE), ids, axis=0)])
    model = build(g, "llvm", {"n": 5}, dynamic={"n": (0, 16)}) if length == "n" else build(g, "llvm")
    empty = np.zeros((0,), np.int64)
    for _ in range(20):
        assert model(empty).shape == (0, 4)
    if length == "n":
        np.testing.assert_array_equal(model(GOOD[0]), TABLE[GOOD[0] % ROWS])
        with pytest.raises(IndexOutOfRangeError):
            model(np.array([ROWS], np.int64))
