"""Dynamic dims in the TVM backend: one build, symbolic kernels, sizes checked per call.

A small graph (linear, a reshape merging batch and sequence, relu, softmax) is built with
B and S dynamic and checked against the interpreter at several sizes; the kernels' TIR keeps
the symbols; calls outside the bounds, or whose inputs disagree on a symbol, are refused;
save/load keeps the bounds; per-kernel benchmark timing runs at the inputs' sizes.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

from slimgraph.backends.tvm import build, load_compiled  # noqa: E402
from slimgraph.errors import BackendError  # noqa: E402
from slimgraph.ir import Graph, TensorType  # noqa: E402
from slimgraph.ir.interpreter import run  # noqa: E402
from slimgraph.passes import PassManager, parse_pipeline  # noqa: E402

BOUNDS = {"B": (1, 8), "S": (1, 64)}


def _graph() -> Graph:
    g = Graph("dyn")
    x = g.add_input("x", TensorType("f32", ("B", "S", 16)))
    mask = g.add_input("mask", TensorType("f32", ("B", "S", 1)))
    w = g.const(np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32))
    h = g.call("add", g.call("linear", x, w), mask)
    flat = g.call("reshape", h, shape=(-1, 32))
    g.set_outputs([g.call("softmax", g.call("relu", flat), axis=-1)])
    return PassManager(parse_pipeline("default")).run(g)


@pytest.fixture(scope="module")
def compiled():
    return build(_graph(), "llvm", {"B": 2, "S": 3}, dynamic=BOUNDS)


def _inputs(b: int, s: int) -> list[np.ndarray]:
    rng = np.random.default_rng(b * 100 + s)
    return [rng.standard_normal((b, s, 16)).astype(np.float32), rng.standard_normal((b, s, 1)).astype(np.float32)]


@pytest.mark.parametrize("b,s", [(1, 1), (3, 7), (8, 64), (2, 3)])
def test_one_build_matches_the_interpreter_at_every_size(compiled, b, s):
    inputs = _inputs(b, s)
    (expected,) = run(_graph(), *inputs)
    np.testing.assert_allclose(compiled(*inputs), expected, rtol=1e-5, atol=1e-6)


def test_kernels_keep_the_symbols_and_the_model_its_bounds(compiled):
    assert compiled.dynamic == BOUNDS
    assert [str(t) for t in compiled.input_types] == ["f32[B,S,16]", "f32[B,S,1]"]
    linear = next(k for k in compiled.kernels if "linear" in k.ops)
    assert "T.Buffer((B, S, 32)" in linear.tir
    # the matmul rule still applies: rows of dynamic count run in parallel, the columns vectorized
    assert "T.parallel(B * S)" in linear.tir and "T.vectorized(16)" in linear.tir


def test_calls_outside_the_bounds_or_disagreeing_are_refused(compiled):
    with pytest.raises(BackendError, match=r"input 0 \(%x\): axis 0 has size 9 \(so B=9\), .*1 <= B <= 8"):
        compiled(*_inputs(9, 2))
    with pytest.raises(BackendError, match=r"input 0 \(%x\): axis 1 has size 65 .*1 <= S <= 64"):
        compiled(*_inputs(1, 65))
    x, _ = _inputs(2, 3)
    with pytest.raises(BackendError, match=r"input 1 \(%mask\): axis 1 has size 4, which does not fit dim S .*S=3"):
        compiled(x, _inputs(2, 4)[1])
    with pytest.raises(BackendError, match=r"input 0 \(%x\): got shape \[3, 16\], compiled for f32\[B,S,16\]"):
        compiled(x[0], _inputs(2, 3)[1])


def test_save_load_keeps_the_bounds_and_benchmark_times_kernels_at_the_given_sizes(compiled, tmp_path):
    compiled.save(tmp_path / "m")
    loaded = load_compiled(tmp_path / "m")
    assert loaded.dynamic == BOUNDS
    inputs = _inputs(4, 9)
    np.testing.assert_allclose(loaded(*inputs), compiled(*inputs), rtol=1e-6)
    result = loaded.benchmark(*inputs, warmup=0, runs=1, kernel_repeat=1)
    assert {n for k in result.kernels for n in k.nodes} == {k.name for k in compiled.kernels}
    assert result.timing.batch == 4
    # without inputs, the batch sizes the random ones anywhere within the bounds
    assert loaded.benchmark(batch=7, warmup=0, runs=1, kernel_repeat=1).timing.batch == 7
