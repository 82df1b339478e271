"""The torch frontend on whole models (tests/models.py), through torch.export and torch.fx.

Every model is imported both ways and must match torch eager to 1e-4 relative,
keep its weights under their torch names, and, with ``dynamic_batch=True``,
run at batch 1, 3 and 16 from one imported graph with ``N`` on every value
computed from the input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimgraph.frontends.torch import from_torch
from slimgraph.ir import load
from tests.models import MODELS

METHODS = ("export", "fx")
CASES = [(model, method) for model in MODELS for method in METHODS]


def _ids(case: tuple) -> str:
    return "-".join(case)


@pytest.fixture(scope="module", params=CASES, ids=_ids)
def imported(request):
    """(model name, method, module, example inputs, graph, info), imported once per case."""
    model, method = request.param
    module, inputs = MODELS[model]()
    graph, info = from_torch(module, inputs, method=method, return_info=True)
    return model, method, module, inputs, graph, info


@pytest.fixture(scope="module", params=CASES, ids=_ids)
def imported_dynamic(request):
    model, method = request.param
    module, inputs = MODELS[model]()
    return model, module, from_torch(module, inputs, dynamic_batch=True, method=method)


def _eager(module: torch.nn.Module, inputs: tuple) -> np.ndarray:
    with torch.no_grad():
        return module(*inputs).numpy()


def test_matches_torch(imported):
    model, method, module, inputs, graph, info = imported
    assert info.path == method
    graph.verify()
    (out,) = graph.run(*[x.numpy() for x in inputs])
    np.testing.assert_allclose(out, _eager(module, inputs), rtol=1e-4, atol=1e-5)


def test_weights_keep_torch_names(imported):
    model, method, module, inputs, graph, info = imported
    consts = graph.consts()
    for name, tensor in module.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue  # read only in training
        assert name in consts, f"{name} is not a constant of the imported {model}"
        np.testing.assert_array_equal(consts[name], tensor.numpy())


def test_nodes_carry_source_and_module(imported):
    model, method, module, inputs, graph, info = imported
    convs = graph.find_nodes("conv") or graph.find_nodes("linear")
    assert convs
    for node in convs:
        assert node.loc is not None and node.loc.startswith("models.py:"), node.loc
        assert node.loc.endswith(")"), f"{node.describe()} has no module path"


def test_structure_of_resnet18():
    module, inputs = MODELS["resnet18"]()
    graph = from_torch(module, inputs, method="fx")
    assert len(graph.find_nodes("conv")) == 20
    assert len(graph.find_nodes("batch_norm")) == 20
    assert len(graph.find_nodes("global_avg_pool")) == 1
    conv = graph.value("layer1.0.conv1.weight").users[0]
    assert conv.op == "conv" and conv.attrs["pads"] == (1, 1, 1, 1)
    assert conv.loc.endswith("(layer1.0.conv1)")


def test_depthwise_and_relu6_in_mobilenet():
    module, inputs = MODELS["mobilenet_v2"]()
    graph = from_torch(module, inputs, method="fx")
    depthwise = [n for n in graph.find_nodes("conv") if n.attrs["groups"] > 1]
    assert depthwise and all(n.attrs["groups"] == n.inputs[1].type.shape[0] for n in depthwise)
    clips = graph.find_nodes("clip")
    assert clips and all((n.attrs["min"], n.attrs["max"]) == (0.0, 6.0) for n in clips)


def test_dynamic_batch_runs_at_several_sizes(imported_dynamic):
    model, module, graph = imported_dynamic
    graph.verify()
    assert all(v.type.shape[0] == "N" for v in graph.inputs)
    assert all(v.type.shape[0] == "N" for v in graph.outputs)
    for batch in (1, 3, 16):
        _, inputs = MODELS[model](batch=batch)
        (out,) = graph.run(*[x.numpy() for x in inputs])
        np.testing.assert_allclose(out, _eager(module, inputs), rtol=1e-4, atol=1e-5, err_msg=f"batch {batch}")


def test_dynamic_batch_symbol_reaches_every_computed_value(imported_dynamic):
    model, module, graph = imported_dynamic
    from_input = {id(v) for v in graph.inputs}
    for node in graph.nodes:
        if any(id(v) in from_input for v in node.inputs):
            for out in node.outputs:
                from_input.add(id(out))
                assert "N" in out.type.symbols, f"{node.describe()} lost the batch symbol: {out.type}"


def test_text_form_round_trips(imported, tmp_path):
    graph = imported[4]
    path = tmp_path / "model.sg"
    graph.save(path)
    assert load(path) == graph
