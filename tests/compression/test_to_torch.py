"""The torch backend: Graph -> nn.Module with the graph's weights as parameters, and back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimgraph.backends.torch import load_weights, to_torch
from slimgraph.errors import BackendError
from slimgraph.frontends import from_torch
from slimgraph.ir import Graph, TensorType
from slimgraph.passes.prune import Prune
from slimgraph.passes.share_weights import ShareWeights
from tests.compression.common import digits_graph, fine_tune, light_resnet50, random_input
from tests.digits import digits_data, trained_digits_cnn
from tests.models import mobilenet_v2, resnet18, transformer_block


def _run(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("factory", [resnet18, mobilenet_v2])
def test_module_matches_the_interpreter(factory):
    module, (example,) = factory()
    g = from_torch(module, (example,))
    np.testing.assert_allclose(_run(to_torch(g), example.numpy()), g.run(example.numpy())[0], rtol=1e-4, atol=1e-4)


def test_onnx_resnet50_runs_in_torch():
    g = light_resnet50()
    x = random_input((1, 3, 224, 224))
    np.testing.assert_allclose(_run(to_torch(g), x), g.run(x)[0], rtol=1e-4, atol=1e-5)


def test_parameters_are_named_after_the_graph_constants():
    g = digits_graph()
    module = to_torch(g)
    params = dict(module.named_parameters())
    assert set(params) == {n for n in g.consts() if "running" not in n}
    original = {k for k in trained_digits_cnn().state_dict() if not k.endswith("num_batches_tracked")}
    assert set(module.state_dict()) == original
    for name, p in params.items():
        np.testing.assert_array_equal(p.detach().numpy(), g.value(name).const_value)


def test_fine_tuned_pruned_module_reimports_with_its_structure():
    pruned = Prune(method="channel", ratio=0.5)(digits_graph())
    module = fine_tune(pruned, epochs=1, lr=1e-3)
    changed = load_weights(pruned, module)
    assert not np.array_equal(changed.value("features.3.weight").const_value, pruned.value("features.3.weight").const_value)
    again = from_torch(module, (torch.from_numpy(digits_data().x_test[:4]),), dynamic_batch=True)
    assert {n: a.shape for n, a in again.consts().items()} == {n: a.shape for n, a in changed.consts().items()}
    x = digits_data().x_test[:32]
    np.testing.assert_allclose(again.run(x)[0], changed.run(x)[0], rtol=1e-4, atol=1e-4)


def test_keep_zeros_holds_sparsity_through_training():
    pruned = Prune(sparsity=0.6)(digits_graph())
    module = to_torch(pruned, keep_zeros=True)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    x, y = torch.from_numpy(digits_data().x_train[:64]), torch.from_numpy(digits_data().y_train[:64])
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        opt.step()
    tuned = load_weights(pruned, module)
    for name in ("features.3.weight", "classifier.weight"):
        np.testing.assert_array_equal(tuned.value(name).const_value == 0, pruned.value(name).const_value == 0)
        assert not np.array_equal(tuned.value(name).const_value, pruned.value(name).const_value)


def test_shared_weights_train_their_codebook():
    shared = ShareWeights(bits=4)(digits_graph())
    module = to_torch(shared)
    names = dict(module.named_parameters())
    assert "features.3.weight.codebook" in names and names["features.3.weight.codebook"].shape == (16,)
    x = digits_data().x_test[:16]
    np.testing.assert_allclose(_run(module, x), shared.run(x)[0], rtol=1e-4, atol=1e-4)


def test_unsupported_ops_are_listed():
    g = Graph("odd")
    x = g.add_input("x", TensorType("f32", (2, 3)))
    g.set_outputs([g.call("argmax", x, axis=1), g.call("argmax", x, axis=0)])
    with pytest.raises(BackendError, match=r"unsupported ops: argmax x2 \(first: %0 = argmax\)"):
        to_torch(g)


def test_load_weights_checks_shapes():
    g = digits_graph()
    module = to_torch(Prune(method="channel", ratio=0.5)(g))
    with pytest.raises(BackendError, match="features.0.weight"):
        load_weights(g, module)


def test_transformer_block_runs():
    module, (example,) = transformer_block()
    g = from_torch(module, (example,))
    np.testing.assert_allclose(_run(to_torch(g), example.numpy()), g.run(example.numpy())[0], rtol=1e-4, atol=1e-4)


def test_text_ops_match_the_interpreter_and_train():
    g = Graph("text_ops")
    x = g.add_input("x", TensorType("f32", (2, 4, 5, 8)))
    mask = g.add_input("mask", TensorType("bool", (2, 1, 5, 5)))
    rng = np.random.default_rng(0)
    kv = g.call("linear", x, g.const(rng.standard_normal((8, 8)).astype(np.float32)))
    kv = g.call("slice", kv, starts=(0,), ends=(2,), axes=(1,))  # 2 kv heads for 4 query heads
    visible = g.call("logical_or", g.call("logical_and", mask, g.call("trilu", mask, upper=False)),
                     g.call("logical_xor", mask, mask))
    y = g.call("attention", x, kv, kv, visible, scale=0.5)
    y = g.call("add", g.call("attention", x, kv, kv, causal=True), y)
    y = g.call("add", g.call("cumsum", y, axis=2, exclusive=True), g.call("trilu", y, k=1))
    g.set_outputs([g.call("einsum", y, y, equation="bhld,bhmd->bhlm")])
    module = to_torch(g)
    data, mask_data = random_input((2, 4, 5, 8)), rng.random((2, 1, 5, 5)) > 0.3
    with torch.no_grad():
        got = module(torch.from_numpy(data), torch.from_numpy(mask_data)).numpy()
    np.testing.assert_allclose(got, g.run(data, mask_data)[0], rtol=1e-4, atol=1e-4)
    module(torch.from_numpy(data), torch.from_numpy(mask_data)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("mode, coordinate_mode", [("nearest", "asymmetric"), ("linear", "align_corners"),
                                                   ("cubic", "half_pixel")])
def test_group_norm_and_resize_match_the_interpreter_and_train(mode, coordinate_mode):
    g = Graph("gn_resize")
    x = g.add_input("x", TensorType("f32", (2, 4, 5, 6)))
    rng = np.random.default_rng(0)
    scale, bias = (g.const(rng.standard_normal(4).astype(np.float32)) for _ in range(2))
    y = g.call("group_norm", x, scale, bias, groups=2)
    g.set_outputs([g.call("resize", y, sizes=(7, 12), mode=mode, coordinate_mode=coordinate_mode)])
    module = to_torch(g)
    data = random_input((2, 4, 5, 6))
    np.testing.assert_allclose(_run(module, data), g.run(data)[0], rtol=1e-5, atol=1e-5)
    module(torch.from_numpy(data)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_top_k_keeps_index_order_on_ties_as_the_interpreter():
    g = Graph("top_k")
    x = g.add_input("x", TensorType("i64", (2, 7)))
    g.set_outputs(list(g.call("top_k", x, k=4)))
    data = np.array([[1, 3, 3, 0, 3, 3, 2], [5, 5, 5, 5, 1, 1, 1]], np.int64)
    got = to_torch(g)(torch.from_numpy(data))
    for ours, want in zip(got, g.run(data)):
        np.testing.assert_array_equal(ours.numpy(), want)
