"""The GPU conv rule: which kernels it takes, its tile choice, and that CUDA still builds with it.

Its numerics run in tests/backends/test_opencl.py (the demo's dense and depthwise convs on PoCL)."""

from __future__ import annotations

import pytest

pytest.importorskip("tvm")

from slimgraph.backends.tvm.lower import lower_graph  # noqa: E402
from slimgraph.backends.tvm.schedules.gpu import conv_tiles, schedule_conv  # noqa: E402
from slimgraph.backends.tvm.targets import parse_target  # noqa: E402
from slimgraph.demo import demo_model  # noqa: E402
from slimgraph.passes import run_pipeline  # noqa: E402


def test_the_rule_takes_the_convs_and_leaves_the_rest_to_dlight():
    import tvm

    graph, _ = run_pipeline(demo_model(), "default")
    lowered = lower_graph(graph, parse_target("cuda:sm_90"), {"N": 2})
    taken = {gv.name_hint: schedule_conv(f, 1024) is not None
             for gv, f in lowered.mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert {name for name, ok in taken.items() if ok} == {n for n in taken if "_conv" in n}
    assert len([n for n in taken if "_conv" in n]) == 4  # stem, depthwise, pointwise + residual, head


@pytest.mark.parametrize("channels, positions, threads, expected", [
    (64, 3136, 256, (4, 2, 16, 16)),
    (3, 49, 256, (1, 1, 2, 32)),  # odd sizes: one output per thread, predicated tails
    (2048, 1, 1024, (4, 1, 16, 1)),
])
def test_tiles_fit_the_thread_budget(channels, positions, threads, expected):
    per_c, per_s, t_c, t_s = conv_tiles(channels, positions, threads)
    assert (per_c, per_s, t_c, t_s) == expected and t_c * t_s <= threads


def test_cuda_still_builds_with_the_rule():
    from slimgraph.api import compile

    model = compile(demo_model(), target="cuda:sm_90")
    conv = [k for k in model.kernels if k.ops[0] == "conv"]
    assert conv and all("__global__" in k.source and "threadIdx.x" in k.source for k in conv)


def test_no_kernel_is_left_to_run_on_the_host():
    """dlight's transpose rule bound ViT's patch transpose and left the fused concat and add unbound
    (host code writing device memory); such kernels now take the fallback rule whole."""
    import torch

    import tvm
    from slimgraph.backends.tvm.schedules import schedule_module
    from slimgraph.backends.tvm.schedules.gpu import _runs_on_host
    from slimgraph.driver import import_model, optimize

    class Patches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cls = torch.nn.Parameter(torch.randn(1, 1, 64))
            self.pos = torch.nn.Parameter(torch.randn(1, 17, 64))

        def forward(self, x):
            return torch.cat([self.cls, x.flatten(2).transpose(1, 2)], dim=1) + self.pos

    graph = optimize(import_model(Patches().eval(), (torch.randn(1, 64, 4, 4),)), "default")
    spec = parse_target("opencl")
    mod = schedule_module(lower_graph(graph, spec, {}).mod, spec)
    kernels = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert kernels and not any(_runs_on_host(f) for f in kernels)
