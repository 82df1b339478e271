"""Whole models through ``slimgraph.compile`` for ``llvm``, checked against the reference interpreter.

The torch models of the frontends suite and the ONNX model-zoo architectures
shipped with onnx (``onnx/backend/test/data/light``). Models ending in softmax
are compared on their logits: random-weight zoo models saturate the softmax,
which would hide errors. ResNet-50 is the one slow test (marked ``slow``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tvm")

from slimgraph.api import compile, import_model, optimize  # noqa: E402
from slimgraph.demo import demo_inputs, demo_model  # noqa: E402
from tests import models  # noqa: E402

LIGHT = os.path.join(os.path.dirname(__import__("onnx").__file__), "backend", "test", "data", "light")


def _logits(graph):
    """``graph`` with a final softmax cut off (a clone; the input graph is left alone)."""
    g = graph.clone()
    last = g.outputs[0].producer
    if last is not None and last.op == "softmax":
        g.set_outputs([last.inputs[0]])
        g.remove_node(last)
    return g


def _rel_error(got, want) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / (np.abs(want).max() + 1e-12))


def _check_model(graph, inputs, tol: float):
    graph = _logits(graph)
    model = compile(graph, inputs)
    got = model(*inputs)
    got = got[0] if isinstance(got, tuple) else got
    want = graph.run(*inputs)[0]
    assert got.shape == want.shape
    assert _rel_error(got, want) < tol
    return model


def test_demo_model_with_fused_regions_matches_the_interpreter():
    graph = demo_model()
    optimized = optimize(graph, "default")
    assert any(n.op == "fused" for n in optimized.nodes)
    inputs = demo_inputs(batch=2)
    model = compile(graph, inputs)
    kernels = model.kernels
    # one kernel per fused region or unfused compute node: the IR's fusion decides the kernels
    assert len(kernels) == sum(1 for n in model.ir.nodes if n.op not in ("const", "reshape", "flatten", "squeeze",
                                                                           "unsqueeze", "identity"))
    np.testing.assert_allclose(model(*inputs), graph.run(*inputs)[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "mobilenet_v2", "transformer_block", "resnet18"])
def test_torch_suite_model_matches_the_interpreter(name):
    module, example = getattr(models, name)()
    graph = import_model(module, example)
    _check_model(graph, [t.numpy() for t in example], tol=1e-4)


@pytest.mark.parametrize("name", ["light_squeezenet", "light_shufflenet", "light_inception_v1"])
def test_onnx_zoo_model_matches_the_interpreter(name):
    graph = import_model(os.path.join(LIGHT, f"{name}.onnx"))
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(tuple(v.type.shape)).astype(np.float32) for v in graph.inputs]
    _check_model(graph, inputs, tol=1e-3 if name == "light_inception_v1" else 1e-4)


@pytest.mark.slow
def test_resnet50_compiles_each_distinct_kernel_once_and_matches_the_interpreter():
    graph = import_model(os.path.join(LIGHT, "light_resnet50.onnx"))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    model = _check_model(graph, [x], tol=1e-3)
    # what keeps its compile time down (timed in benchmarks/real_models.py, not here): the
    # repeated bottleneck blocks share compiled kernels
    calls, compiled = len(model.kernels), len({k.func for k in model.kernels})
    assert compiled < calls * 2 // 3, f"{compiled} kernels compiled for {calls} calls"
    result = model.benchmark(x, warmup=1, runs=3, kernel_repeat=1)
    assert result.runs == 3 and sum(k.calls for k in result.kernels) == calls
