"""The two frontends agree: each test model exported with torch.onnx.export and imported
with from_onnx computes what from_torch's graph computes.

Two ONNX exporters: the TorchScript one (``dynamo=False``, built into torch) and the
torch.export-based one (``dynamo=True``, which needs the ``onnxscript`` package).
"""

from __future__ import annotations

import importlib.util
import io
import warnings

import numpy as np
import onnx
import pytest
import torch

from slimgraph.frontends.torch import from_torch
from tests.models import MODELS

from slimgraph.frontends import from_onnx

EXPORTERS = {
    "torchscript": pytest.param(False, id="torchscript"),
    "dynamo": pytest.param(True, id="dynamo", marks=pytest.mark.skipif(
        importlib.util.find_spec("onnxscript") is None,
        reason="torch.onnx.export(dynamo=True) needs the onnxscript package (pip install onnxscript)")),
}


def _to_onnx(module: torch.nn.Module, inputs: tuple, dynamo: bool) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, inputs, buffer, dynamo=dynamo, input_names=["x"], output_names=["y"])
    return onnx.load_from_string(buffer.getvalue())


def _fresh_inputs(inputs: tuple) -> tuple[np.ndarray, ...]:
    """Inputs of the example's shapes but other values, so that nothing rides on the example."""
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal(tuple(x.shape)).astype(np.float32) for x in inputs)


@pytest.fixture(scope="module", params=list(MODELS))
def torch_graph(request):
    module, inputs = MODELS[request.param]()
    return request.param, module, inputs, from_torch(module, inputs)


@pytest.mark.parametrize("dynamo", EXPORTERS.values())
def test_onnx_import_agrees_with_torch_import(torch_graph, dynamo):
    model, module, inputs, graph = torch_graph
    onnx_graph = from_onnx(_to_onnx(module, inputs, dynamo))
    onnx_graph.verify()
    feeds = _fresh_inputs(inputs)
    (from_onnx_out,) = onnx_graph.run(*feeds)
    (from_torch_out,) = graph.run(*feeds)
    np.testing.assert_allclose(from_onnx_out, from_torch_out, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        eager = module(*[torch.from_numpy(f) for f in feeds]).numpy()
    np.testing.assert_allclose(from_torch_out, eager, rtol=1e-4, atol=1e-5)


def test_weights_have_the_same_names_in_both_frontends():
    module, inputs = MODELS["mlp"]()
    onnx_graph = from_onnx(_to_onnx(module, inputs, dynamo=False))
    assert set(onnx_graph.consts()) >= set(from_torch(module, inputs).consts())
