"""Model specs as ``slimgraph dump MODEL`` takes them: a .onnx path or package.module:factory."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from slimgraph.errors import FrontendError
from slimgraph.frontends.model_spec import load_model
from tests.models import mlp


def not_a_pair():
    return torch.nn.ReLU()


def broken():
    raise RuntimeError("weights file missing")


def test_factory_spec_imports_through_from_torch():
    graph = load_model("tests.models:mlp")
    module, (x,) = mlp()
    np.testing.assert_allclose(graph.run(x.numpy())[0], module(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert "layers.0.weight" in graph.consts()


def test_factory_spec_with_dynamic_batch():
    graph = load_model("tests.models:mlp", dynamic_batch=True)
    assert graph.inputs[0].type.shape == ("N", 20)


def test_onnx_path_spec_imports_through_from_onnx(tmp_path):
    module, inputs = mlp()
    path = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(path), dynamo=False, input_names=["x"], output_names=["y"])
    graph = load_model(str(path))
    np.testing.assert_allclose(graph.run(inputs[0].numpy())[0], module(*inputs).detach().numpy(), rtol=1e-5)


@pytest.mark.parametrize("spec, match", [
    ("no-colon", "is not 'demo', a .sg or .onnx file, or package.module:factory"),
    ("tests.models:", "is not 'demo', a .sg or .onnx file, or package.module:factory"),
    ("tests.models:no_such_factory", "module tests.models has no function 'no_such_factory'"),
    ("no_such_package_xyz.models:mlp", "cannot import no_such_package_xyz.models"),
    (f"{__name__}:not_a_pair", r"must return \(module, example_inputs\), got ReLU"),
    (f"{__name__}:broken", r"broken\(\) failed: RuntimeError: weights file missing"),
    ("missing/model.onnx", "model.onnx"),
])
def test_bad_specs_raise_frontend_errors(spec, match):
    with pytest.raises(FrontendError, match=match):
        load_model(spec)
