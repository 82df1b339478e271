"""ONNX GatherElements, ScatterElements, ScatterND and OneHot against onnxruntime and
onnx's reference, imported, interpreted and compiled (llvm); out-of-range indices are
an error, as in onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from slimgraph.errors import IndexOutOfRangeError
from slimgraph.frontends.onnx import from_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("tvm")
from slimgraph.backends.tvm import build  # noqa: E402
from tests.frontends.test_onnx_models import ort_run  # noqa: E402
from tests.frontends.test_onnx_ops import Case, i64, rand  # noqa: E402

DATA = ("x", rand(2, 5))  # onnx's reference wants the indices' other dims equal to the data's
DATA_ND = ("x", rand(4, 5))
ROW = ("i", np.array([[1, -1, 0, 1, -2]], np.int32))
IDX = ("i", np.array([[3, -1, 0, 2, 4], [-5, 2, 1, 0, -2]], np.int64))  # negatives count from the end
UPD = ("u", rand(2, 5, seed=1))
ND = ("i", np.array([[0, 1], [-1, 4], [2, 0]], np.int64))
ND_ROWS = ("i", np.array([[1], [-2]], np.int64))

CASES = {
    "GatherElements-axis1": Case("GatherElements", 13, [DATA, IDX], {"axis": 1}),
    "GatherElements-axis0": Case("GatherElements", 13, [DATA, ROW]),
    "ScatterElements": Case("ScatterElements", 13, [DATA, IDX, UPD], {"axis": 1}),
    "ScatterElements-add-dup": Case("ScatterElements", 18, [DATA, ("i", np.array([[1, 1, -4, 0, 1]] * 2, np.int64)),
                                                            UPD], {"axis": 1, "reduction": "add"}),
    "ScatterElements-mul": Case("ScatterElements", 16, [DATA, ROW, ("u", rand(1, 5, seed=2))],
                                {"axis": 0, "reduction": "mul"}),
    "ScatterElements-max": Case("ScatterElements", 18, [DATA, IDX, UPD], {"axis": 1, "reduction": "max"}),
    "ScatterElements-min": Case("ScatterElements", 18, [DATA, IDX, UPD], {"axis": 1, "reduction": "min"}),
    "ScatterND-elements": Case("ScatterND", 13, [DATA_ND, ND, ("u", rand(3, seed=3))]),
    "ScatterND-rows-add": Case("ScatterND", 16, [DATA_ND, ND_ROWS, ("u", rand(2, 5, seed=4))], {"reduction": "add"}),
    "ScatterND-max": Case("ScatterND", 18, [DATA_ND, ND, ("u", rand(3, seed=3))], {"reduction": "max"}),
    "OneHot": Case("OneHot", 11, [("i", np.array([[0, 3], [-1, 7]], np.int64)), ("d", np.array(5, np.int64), True),
                                  ("v", np.array([0.5, 3.0], np.float32), True)]),
    "OneHot-axis0-int64": Case("OneHot", 11, [("i", np.array([2, -5, 4, -6], np.int64)),
                                              ("d", np.array(5, np.int64), True),
                                              ("v", i64(0, 1), True)], {"axis": 0}),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_op_matches_onnxruntime_and_reference(name: str) -> None:
    case = CASES[name]
    model = case.model()
    graph = from_onnx(model)
    feeds = case.feeds()
    expected = ort_run(model, feeds)
    reference = ReferenceEvaluator(model).run(None, feeds)
    compiled = build(graph, "llvm")(*feeds.values())
    for ours in (graph.run(**feeds)[0], compiled):
        assert ours.dtype == expected[0].dtype and ours.shape == expected[0].shape
        np.testing.assert_allclose(ours, expected[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ours, reference[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name, bad", [("GatherElements-axis1", 5), ("ScatterElements", -6),
                                       ("ScatterND-elements", 10**9)])
def test_out_of_range_indices_are_an_error_as_in_onnxruntime(name: str, bad: int) -> None:
    case = CASES[name]
    model = case.model()
    feeds = case.feeds()
    feeds["i"] = feeds["i"].copy()
    feeds["i"].flat[1] = bad
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error type
        ort_run(model, feeds)
    graph = from_onnx(model)
    with pytest.raises(IndexOutOfRangeError, match=f"index {bad} is out of range"):
        graph.run(**feeds)
    with pytest.raises(IndexOutOfRangeError, match="index out of range"):
        build(graph, "llvm")(*feeds.values())
