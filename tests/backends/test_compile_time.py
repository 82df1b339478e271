"""What keeps real models' compile time down, checked on small configs of them: identical
layers compile once, and squeeze-excite's scaling of the full map is not a conv epilogue but the next 1x1 conv's prologue.
The full-size figures are in ``benchmarks/real_models.py``."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from slimgraph.api import bind_shapes, import_model, optimize  # noqa: E402
from slimgraph.backends.tvm import build  # noqa: E402


def _first_output(model, name: str):
    class FirstOutput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(**{name: x})[0]

    return FirstOutput().eval()


def _optimized(model, x):
    return optimize(import_model(_first_output(model, "pixel_values"), (x,)), "default")


def _compiled_and_eager(model, x, graph=None):
    """``model`` (or its optimized ``graph``) compiled, after checking it matches eager."""
    graph = graph or _optimized(model, x)
    compiled = build(graph, "llvm", bind_shapes(graph, [x.numpy()], None))
    with torch.no_grad():
        want = _first_output(model, "pixel_values")(x).numpy()
    got = compiled(x.numpy())
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    return compiled


def _vit(layers: int):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=layers, num_attention_heads=2,
                                 intermediate_size=128, image_size=32, patch_size=8)
    return transformers.ViTModel(cfg, add_pooling_layer=False).eval()


def test_a_deeper_vit_calls_more_kernels_but_compiles_no_more():
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    two, four = (_compiled_and_eager(_vit(n), x) for n in (2, 4))
    calls = len(four.kernels) - len(two.kernels)
    assert calls > 0 and calls % 2 == 0  # two more layers, each the same kernel calls
    assert len({k.func for k in four.kernels}) == len({k.func for k in two.kernels})


def test_efficientnet_squeeze_excite_scales_the_map_as_the_next_conv_reads_it():
    torch.manual_seed(0)
    cfg = transformers.EfficientNetConfig(width_coefficient=0.25, depth_coefficient=0.25, image_size=64,
                                          hidden_dim=320)  # the top conv's width at this coefficient
    model = transformers.EfficientNetModel(cfg).eval()
    with torch.no_grad():  # transformers' norm scales (about 0.02) would make the output all zeros
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.8, 1.2)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    graph = _optimized(model, x)
    squeeze_excites = [n for n in graph.nodes if n.op == "global_avg_pool"]
    assert squeeze_excites
    assert not [n for n in graph.nodes if n.op == "mul"]
    # each block's map * scale is the prologue of the 1x1 conv reading it, not the dw conv's epilogue
    scaled = [n for n in graph.nodes if n.op == "fused" and n.attrs["anchor"] == "conv"
              and [m.op for m in n.body.nodes if m.op != "const"][:2] == ["mul", "conv"]]
    assert len(scaled) == len(squeeze_excites)
    for region in (n for n in graph.nodes if n.op == "fused" and n.attrs["anchor"]):
        body = region.body.nodes
        anchor = next(i for i, n in enumerate(body) if n.op == region.attrs["anchor"])
        assert all(n.output.type.shape == region.output.type.shape for n in body[anchor:] if n.op != "const")
    _compiled_and_eager(model, x, graph)
