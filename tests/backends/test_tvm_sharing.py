"""Identical kernels compile once: calls of structurally equal regions share one PrimFunc."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

from slimgraph.api import compile, optimize  # noqa: E402
from slimgraph.backends.tvm import load_compiled, parse_target  # noqa: E402
from slimgraph.backends.tvm.lower import lower_graph  # noqa: E402
from slimgraph.ir import Graph, TensorType  # noqa: E402

WIDTH = 32


def _blocks(scales: list[float], final_width: int) -> Graph:
    """Residual blocks ``h + relu(linear(h)) * scale``, one per scale, each with its own
    weights, then a linear to ``final_width``. Equal scales make identical regions:
    the weights are parameters, a one-element scale is baked into the kernel."""
    rng = np.random.default_rng(0)
    g = Graph("blocks")
    h = g.add_input("x", TensorType("f32", ("N", WIDTH)))
    for scale in scales:
        w = g.const(rng.standard_normal((WIDTH, WIDTH)).astype(np.float32) / WIDTH**0.5)
        b = g.const(rng.standard_normal(WIDTH).astype(np.float32))
        y = g.call("mul", g.call("relu", g.call("linear", h, w, b)), g.const(np.float32(scale)))
        h = g.call("add", h, y)
    w = g.const(rng.standard_normal((final_width, WIDTH)).astype(np.float32))
    g.set_outputs([g.call("linear", h, w)])
    return g


@pytest.fixture(scope="module")
def blocks():
    graph = _blocks([0.5, 0.5, 0.5, 0.5, 0.25], final_width=16)
    x = np.random.default_rng(1).standard_normal((4, WIDTH)).astype(np.float32)
    return graph, x, compile(graph, [x])


def test_identical_regions_lower_to_one_prim_func_each():
    optimized = optimize(_blocks([0.5, 0.5, 0.5, 0.5, 0.25], final_width=16), "default")
    regions = [n for n in optimized.nodes if n.op == "fused"]
    assert len(regions) == 5  # the fusion gives every block one region: the sharing is the backend's
    lowered = lower_graph(optimized, parse_target("llvm"), {"N": 4})
    prim_funcs = [gv.name_hint for gv, f in lowered.mod.functions.items() if gv.name_hint != "main"]
    # four blocks with scale 0.5 share one kernel; the 0.25 block and the final linear differ
    assert len(lowered.kernels) == 6 and len(prim_funcs) == 3
    funcs = [k.func for k in lowered.kernels]
    assert funcs[:4] == [lowered.kernels[0].name] * 4
    assert len(set(funcs)) == 3 and set(funcs) == set(prim_funcs)
    assert len({k.name for k in lowered.kernels}) == 6  # every call keeps its own name


def test_shared_kernels_give_the_interpreters_outputs(blocks):
    graph, x, model = blocks
    assert len({k.func for k in model.kernels}) == 3
    np.testing.assert_allclose(model(x), graph.run(x)[0], rtol=1e-5, atol=1e-5)


def test_the_same_block_at_another_shape_is_another_kernel():
    rng = np.random.default_rng(2)
    g = Graph("two_shapes")
    outs = []
    for name, rows in (("x", 4), ("z", 2)):
        h = g.add_input(name, TensorType("f32", (rows, WIDTH)))
        w = g.const(rng.standard_normal((WIDTH, WIDTH)).astype(np.float32))
        outs.append(g.call("add", h, g.call("relu", g.call("linear", h, w))))
    g.set_outputs(outs)
    inputs = [rng.standard_normal((4, WIDTH)).astype(np.float32), rng.standard_normal((2, WIDTH)).astype(np.float32)]
    model = compile(g, inputs)
    assert len(model.kernels) == 2 and len({k.func for k in model.kernels}) == 2
    for got, want in zip(model(*inputs), g.run(*inputs)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_benchmark_times_every_call_and_saved_models_keep_the_sharing(blocks, tmp_path):
    _, x, model = blocks
    result = model.benchmark(x, warmup=1, runs=2, kernel_repeat=1)
    # the four identical blocks are one compiled kernel: one row, four calls
    assert sorted(n for k in result.kernels for n in k.nodes) == sorted(k.name for k in model.kernels)
    assert sorted(k.calls for k in result.kernels) == sorted(
        sum(1 for c in model.kernels if c.func == f) for f in {c.func for c in model.kernels})
    assert max(k.calls for k in result.kernels) == 4 and all(k.ms > 0 for k in result.kernels)
    shared = [k for k in model.kernels if k.func == model.kernels[0].func]
    assert len(shared) == 4 and len({(k.tir, k.source) for k in shared}) == 1 and shared[0].source
    model.save(tmp_path / "m")
    loaded = load_compiled(tmp_path / "m")
    assert [(k.name, k.func) for k in loaded.kernels] == [(k.name, k.func) for k in model.kernels]
    assert loaded(x).tobytes() == model(x).tobytes()
