"""The torch frontend's contract beyond numerics: one error for unsupported ops with the
user's source line, the fx fallback when torch.export cannot trace, inference
semantics, and a user module left exactly as it was."""

from __future__ import annotations

import inspect
import logging
import os

import numpy as np
import pytest
import torch
from torch import nn

from slimgraph.errors import FrontendError, SlimgraphError
from slimgraph.frontends.torch import from_torch
from tests.models import MODELS


class Unsupported(nn.Module):
    """cumprod twice and flip once: ops slimgraph's IR lacks."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = torch.cumprod(self.fc(x), 1)  # first cumprod
        y = torch.flip(y, [1])  # the flip
        return torch.cumprod(y, 0)


class FlagBuffer(nn.Module):
    """Python control flow on a buffer's value (as torch.ao's FakeQuantize does with
    ``fake_quant_enabled``): torch.export fails on the data-dependent branch, torch.fx
    sees the buffer's real value and traces the branch taken."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("enabled", torch.tensor([1], dtype=torch.uint8))

    def forward(self, x):
        y = self.fc(x)
        if self.enabled[0] == 1:
            y = torch.relu(y)
        return y


class MakesConstants(nn.Module):
    """Creates tensors in forward, which torch.fx's tracer stores on the traced module."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) * torch.tensor([1.0, 2.0, 3.0, 4.0]) + torch.tensor(0.5)


def _line_of(cls: type, marker: str) -> int:
    lines, start = inspect.getsourcelines(cls.forward)
    return start + next(i for i, line in enumerate(lines) if marker in line)


@pytest.mark.parametrize("method, cumprod, flip", [
    ("export", "aten.cumprod.default", "aten.flip.default"),
    ("fx", "torch.cumprod", "torch.flip"),
])
def test_unsupported_ops_are_listed_once_with_source_lines(method, cumprod, flip):
    with pytest.raises(FrontendError) as err:
        from_torch(Unsupported(), (torch.randn(2, 4),), method=method)
    message = str(err.value)
    this_file = os.path.basename(__file__)
    assert "2 ops slimgraph cannot import" in message
    assert f"{cumprod} (x2), first at " in message
    assert f"{this_file}:{_line_of(Unsupported, 'first cumprod')}: y = torch.cumprod" in message
    assert f"{flip} (x1), first at " in message
    assert f"{this_file}:{_line_of(Unsupported, 'the flip')}" in message


def test_export_failure_falls_back_to_fx_and_says_so(caplog):
    module = FlagBuffer()
    x = torch.randn(3, 4)
    with caplog.at_level(logging.INFO, logger="slimgraph.frontends.torch"):
        graph, info = from_torch(module, (x,), return_info=True)
    assert info.path == "fx"
    assert "data-dependent" in info.reason
    assert any("through torch.fx" in r.message and "torch.export failed" in r.message for r in caplog.records)
    assert [n.op for n in graph.nodes if n.op != "const"] == ["linear", "relu"]
    np.testing.assert_allclose(graph.run(x.numpy())[0], module(x).detach().numpy(), rtol=1e-5)


def test_export_only_reports_why_it_failed():
    with pytest.raises(FrontendError, match="torch.export could not trace FlagBuffer: .*data-dependent"):
        from_torch(FlagBuffer(), (torch.randn(2, 4),), method="export")


def test_successful_export_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="slimgraph.frontends.torch"):
        _, info = from_torch(nn.Linear(4, 2), (torch.randn(2, 4),), return_info=True)
    assert info.path == "export" and info.reason is None
    assert any(r.message == "imported Linear through torch.export" for r in caplog.records)



class TracedSize(nn.Module):
    """Holds a 0-d integer tensor where its code means a Python int, as transformers' Swin does
    after ``torch.onnx.export(dynamo=False)`` ran it under the tracer (its clamped window size)."""

    def __init__(self, as_tensor: bool):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.size = torch.tensor(4) if as_tensor else 4

    def forward(self, x):
        y = self.fc(x)
        if x.shape[-1] >= self.size:  # Swin's test whether its window is larger than the map
            y = y.view(-1, self.size * 2)
        return y * self.size


class UsesTensorScalar(nn.Module):
    """A 0-d integer tensor attribute that its code needs as a tensor (it calls a Tensor method)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.offset = torch.tensor(3)

    def forward(self, x):
        return self.fc(x) + self.offset.to(x.dtype)


def test_traced_size_attribute_exports_as_its_number():
    module, x = TracedSize(as_tensor=True), torch.randn(2, 8)
    graph, info = from_torch(module, (x,), method="export", return_info=True)
    assert info.path == "export"
    np.testing.assert_allclose(graph.run(x.numpy())[0], module(x).detach().numpy(), rtol=1e-5)
    assert isinstance(module.size, torch.Tensor) and module.size.item() == 4  # given back as it was


def test_tensor_scalar_that_code_needs_as_a_tensor_still_exports():
    module, x = UsesTensorScalar(), torch.randn(2, 4)
    graph, info = from_torch(module, (x,), method="export", return_info=True)
    assert info.path == "export"
    np.testing.assert_allclose(graph.run(x.numpy())[0], module(x).detach().numpy(), rtol=1e-5)
    assert isinstance(module.offset, torch.Tensor)

def _snapshot(module: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "training": [m.training for m in module.modules()],
        "attrs": [sorted(vars(m)) for m in module.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in module.modules()],
        "requires_grad": [p.requires_grad for p in module.parameters()],
    }


def _assert_same(before: dict, after: dict) -> None:
    assert before["training"] == after["training"]
    assert before["attrs"] == after["attrs"]
    assert before["hooks"] == after["hooks"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert v.numpy().tobytes() == after["state"][k].numpy().tobytes(), k


@pytest.mark.parametrize("model", ["mobilenet_v2", "flag_buffer", "makes_constants"])
@pytest.mark.parametrize("method", ["auto", "fx"])
def test_user_module_is_left_unchanged(model, method):
    if model == "mobilenet_v2":
        module, inputs = MODELS[model]()
    else:
        module, inputs = {"flag_buffer": FlagBuffer, "makes_constants": MakesConstants}[model](), (torch.randn(2, 4),)
    module.train()  # a module in training mode, with a hook the user put there
    module.register_forward_hook(lambda mod, args, out: None)
    before = _snapshot(module)
    graph = from_torch(module, inputs, method=method)
    _assert_same(before, _snapshot(module))
    # ... and the graph has inference semantics (running statistics, no dropout) all the same
    module.eval()
    with torch.no_grad():
        expected = module(*inputs).numpy()
    np.testing.assert_allclose(graph.run(*[x.numpy() for x in inputs])[0], expected, rtol=1e-4, atol=1e-5)


def test_tensors_created_in_forward_become_constants():
    module = MakesConstants()
    graph = from_torch(module, (torch.randn(2, 4),), method="fx")
    consts = graph.consts()
    assert any(np.array_equal(v, [1.0, 2.0, 3.0, 4.0]) for v in consts.values())


@pytest.mark.parametrize("args, kwargs, match", [
    (("not a module", (torch.zeros(1),)), {}, "needs a torch.nn.Module"),
    ((nn.ReLU(), (torch.zeros(1),)), {"method": "jit"}, "method='jit' is not valid; valid: auto, export, fx"),
    ((nn.ReLU(), {"x": torch.zeros(1)}), {}, "example_inputs must be a tensor or a tuple"),
    ((nn.ReLU(), (torch.zeros(2, dtype=torch.complex64),)), {"method": "fx"}, "dtype torch.complex64"),
])
def test_bad_arguments_raise_frontend_errors(args, kwargs, match):
    with pytest.raises(FrontendError, match=match):
        from_torch(*args, **kwargs)


def test_module_fx_cannot_trace_either_names_both_failures():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(FrontendError, match=r"torch.export failed .*torch.fx.symbolic_trace failed"):
        from_torch(DataDependent(), (torch.randn(2, 2),))


def test_unsupported_module_options_are_clear_errors():
    attention = nn.MultiheadAttention(8, 2, batch_first=True).eval()

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attention

        def forward(self, x, mask):
            return self.attn(x, x, x, attn_mask=mask)[0]

    x, mask = torch.randn(1, 3, 8), torch.zeros(3, 3)
    with pytest.raises(SlimgraphError, match=r"attn: nn.MultiheadAttention with masks is not supported"):
        from_torch(Masked(), (x, mask), method="fx")
