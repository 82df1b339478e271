"""Whole models in each float dtype, compiled: float64 torch modules and ONNX graphs run in
float64 (to ~1e-12 of their framework), and float16 / bfloat16 torch modules run in their own
dtype (within a few of its ulps of eager PyTorch, which rounds at different points)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")

import slimgraph  # noqa: E402
from slimgraph.backends.tvm import build  # noqa: E402
from slimgraph.backends.torch import to_torch  # noqa: E402
from slimgraph.errors import SlimgraphWarning  # noqa: E402
from slimgraph.frontends import from_onnx, from_torch  # noqa: E402
from slimgraph.ir import DType, Graph, TensorType  # noqa: E402

ort = pytest.importorskip("onnxruntime")


def conv_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    )  # fmt: skip


def transformer_layer() -> torch.nn.Module:
    return torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)


MODELS = {"conv": (conv_net, (2, 3, 8, 8)), "transformer": (transformer_layer, (2, 5, 16))}


def _model_and_input(name: str, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.Tensor]:
    make, shape = MODELS[name]
    torch.manual_seed(0)
    module = make().eval()
    if name == "conv":  # batch norm statistics other than 0 and 1, so folding them is tested
        module[1].running_mean.uniform_(-0.5, 0.5)
        module[1].running_var.uniform_(0.5, 2.0)
    return module.to(dtype), torch.randn(*shape).to(dtype)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_float64_torch_module_runs_in_float64(name: str) -> None:
    module, x = _model_and_input(name, torch.float64)
    with torch.no_grad():
        expected = module(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlimgraphWarning)
        graph = from_torch(module, (x,))
        model = slimgraph.compile(module, (x,))
    assert all(v.type.dtype is DType.float64 for v in graph.values() if v.type.dtype.is_float)
    got = model(x)
    assert got.dtype == torch.float64
    # float32 anywhere on the way would leave errors near 1e-7
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(to_torch(graph)(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_half_precision_torch_module_runs_in_its_dtype(name: str, dtype: torch.dtype) -> None:
    module, x = _model_and_input(name, dtype)
    with torch.no_grad():
        expected = module(x).double()
    got = slimgraph.compile(module, (x,))(x)
    assert got.dtype == dtype
    # Both round to the dtype at every op but at different points (torch keeps f16 sums in f16
    # in places), so they differ by a few ulps of the largest output.
    ulp = torch.finfo(dtype).eps * float(expected.abs().max())
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=4 * ulp)


def _onnx_float64_model() -> tuple[object, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((6, 5)), rng.standard_normal(5)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["z"]),
        helper.make_node("Tanh", ["z"], ["t"]),
        helper.make_node("ReduceMean", ["t"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["t", "m"], ["c"]),
        helper.make_node("Softmax", ["c"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "f64", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [3, 6])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [3, 5])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model, {"x": rng.standard_normal((3, 6))}


def test_float64_onnx_model_imports_and_runs_in_float64() -> None:
    model, feeds = _onnx_float64_model()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, feeds)
    graph = from_onnx(model)
    assert str(graph.inputs[0].type) == "f64[3,6]" and str(graph.outputs[0].type) == "f64[3,5]"
    (interpreted,) = graph.run(feeds["x"])
    got = slimgraph.compile(model, (feeds["x"],))(feeds["x"])
    for out in (interpreted, got):
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)


def test_float64_kernels_use_the_register_width_of_float32_kernels() -> None:
    # 16 float32 lanes are one AVX-512 register (two AVX2 ones); 8 float64 lanes fill the same
    # width, in the elementwise rule and in the packed conv and matmul micro-kernels alike.
    sources = {}
    for dtype in ("f32", "f64"):
        g = Graph("kernels")
        x = g.add_input("x", TensorType(dtype, (1, 8, 16, 16)))
        w = g.const(np.random.default_rng(0).standard_normal((16, 8, 3, 3)), dtype=dtype)
        fc = g.const(np.random.default_rng(1).standard_normal((16, 16)), dtype=dtype)
        g.set_outputs([g.call("add", x, x), g.call("conv", x, w, pads=(1, 1, 1, 1)), g.call("linear", x, fc)])
        sources[dtype] = {k.ops[0]: k.source for k in build(g, "llvm").kernels}
    for op in ("add", "conv", "linear"):
        assert "<16 x float>" in sources["f32"][op], op
        assert "<8 x double>" in sources["f64"][op] and "<16 x double>" not in sources["f64"][op], op
