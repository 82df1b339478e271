"""The default pipeline on every model of the frontend suites, and ResNet-50 pass by pass.

Suites: the nine ONNX model-zoo architectures shipped in onnx's test data
(random weights, as the frontend tests use them, except VGG-19 whose 140M
weights take too long to randomize), the onnx pytorch-converted/-operator
backend graphs, and the PyTorch models of ``tests/models.py``. For each: the
optimized graph verifies, and its outputs match the unoptimized graph's
within 1e-4 relative to the output's largest magnitude.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from slimgraph.frontends import from_onnx, from_torch
from slimgraph.ir import Graph
from slimgraph.passes import PassManager, StatsInstrument, VerifyInstrument, parse_pipeline, run_pipeline
from slimgraph.passes.manager import compare
from tests import models
from tests.frontends.test_onnx_models import BACKEND, DATA, LIGHT, randomized_weights

RTOL = 1e-4


def assert_pipeline_keeps_results(graph: Graph, inputs: list[np.ndarray], pipeline: str = "default") -> Graph:
    want = graph.run(*inputs)
    out, _ = run_pipeline(graph, pipeline, verify=True)
    out.verify()
    got = out.run(*inputs)
    assert len(got) == len(want)
    for name, w, g in zip((v.name for v in graph.outputs), want, got):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        if w.dtype.kind == "f":
            scale = float(np.abs(w[np.isfinite(w)]).max(initial=0.0))
            error, excess = compare(w, g, rtol=0.0, atol=RTOL * scale)
            assert excess <= 0, f"%{name}: max |error| {error:.3g} vs max |value| {scale:.3g}"
        else:
            np.testing.assert_array_equal(g, w, err_msg=name)
    return out


@pytest.mark.parametrize("path", LIGHT, ids=lambda p: p.stem)
def test_default_pipeline_on_light_models(path):
    model = onnx.load(path)
    graph = from_onnx(model if "vgg19" in path.name else randomized_weights(model, seed=0))
    x = np.random.default_rng(1).random(graph.inputs[0].type.shape, dtype=np.float32)
    out = assert_pipeline_keeps_results(graph, [x])
    assert not out.find_nodes("batch_norm")


def test_default_pipeline_on_backend_graphs():
    checked = 0
    for case in BACKEND:
        graph = from_onnx(case / "model.onnx")
        data = sorted(case.glob("test_data_set_*"))[0]
        inputs = [numpy_helper.to_array(onnx.load_tensor(str(f))) for f in sorted(data.glob("input_*.pb"))]
        try:
            assert_pipeline_keeps_results(graph, inputs)
        except AssertionError as exc:
            raise AssertionError(f"{case.name}: {exc}") from exc
        checked += 1
    assert checked == len(BACKEND)


TORCH_CASES = [(name, False) for name in sorted(models.MODELS)] + [("mlp", True), ("transformer_block", True)]


@pytest.mark.parametrize("name, dynamic_batch", TORCH_CASES, ids=[f"{n}-{'dynamic' if d else 'static'}" for n, d in TORCH_CASES])
def test_default_pipeline_on_torch_models(name, dynamic_batch):
    module, example = models.MODELS[name]()
    graph = from_torch(module, example, dynamic_batch=dynamic_batch)
    out = assert_pipeline_keeps_results(graph, [t.numpy() for t in example])
    assert not out.find_nodes("batch_norm")
    if dynamic_batch:
        assert out.inputs[0].type.shape[0] == "N"


def test_resnet50_pass_by_pass(capsys):
    """ONNX ResNet-50: batch norms and ConstantOfShape fills fold away, then every
    elementwise op rides in a region with an anchor."""
    path = DATA / "light" / "light_resnet50.onnx"
    model = onnx.load(path)
    filled = {n.output[0] for n in model.graph.node if n.op_type == "ConstantOfShape"}
    graph = from_onnx(randomized_weights(model, seed=0))
    manager = PassManager(parse_pipeline("default"), [VerifyInstrument(), StatsInstrument()])
    graphs = {}

    class Keep:  # an ad-hoc instrument: keep the graph after each pass
        def before_pipeline(self, g): pass

        def before_pass(self, record, g): pass

        def after_pass(self, record, g):
            graphs[record.name] = g

        def after_pipeline(self, g): pass

    manager.instruments.append(Keep())
    out = manager.run(graph)

    folded = graphs["fold-constants"]
    assert not folded.find_nodes("batch_norm")
    assert all(folded.value(name).is_const for name in filled if folded.has_value(name))
    assert not [n for n in folded.nodes if n.op != "const" and n.inputs and all(v.is_const for v in n.inputs)]

    counts = collections.Counter(n.op for n in graph.nodes)
    anchors = counts["conv"] + counts["linear"] + counts["max_pool"] + counts["avg_pool"]
    fused = out.find_nodes("fused")
    assert 0 < len(fused) <= anchors + 3
    assert all(n.attrs["anchor"] for n in fused)
    assert not [n for n in out.nodes if n.opdef.category == "elementwise"]
    inside = collections.Counter(m.op for n in fused for m in n.body.nodes)
    assert inside["relu"] == counts["relu"] and inside["add"] == counts["add"]

    x = np.random.default_rng(1).random(graph.inputs[0].type.shape, dtype=np.float32)
    want, got = graph.run(x)[0], out.run(x)[0]
    assert np.abs(got - want).max() <= RTOL * np.abs(want).max()
    with capsys.disabled():
        rows = [f"{r.name} {r.before.nodes}->{r.after.nodes}" for r in manager.records]
        print(f"\nResNet-50 nodes per pass: {', '.join(rows)}; {len(fused)} regions for {anchors} anchors")
