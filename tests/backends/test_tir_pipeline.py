"""The TIR pipeline's rewrite of strided vector loads (``tir_pipeline.py``): the shuffle picks the
same elements as the strided ramp, its loads stay inside the ramp's span, loads it does not apply
to are left alone, a strided depthwise conv compiles to it and matches the interpreter, and a
tuning candidate is built with it."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import tirx  # noqa: E402

from slimgraph.backends.tvm import build  # noqa: E402
from slimgraph.backends.tvm.tir_pipeline import MAX_STRIDE, contiguous_loads  # noqa: E402
from tests.backends.test_cpu_conv_kernels import _depthwise_graph  # noqa: E402

BUFFER = tirx.decl_buffer((1024,), "float32", name="x")


def _ramp_load(base, stride: int, lanes: int):
    return tirx.BufferLoad(BUFFER, [tirx.Ramp(base, stride, lanes)])


@pytest.mark.parametrize("stride", range(2, MAX_STRIDE + 1))
@pytest.mark.parametrize("lanes", [4, 8, 16])
def test_shuffle_picks_the_ramps_elements_from_inside_its_span(stride, lanes):
    base = 5
    shuffle = contiguous_loads(_ramp_load(tirx.IntImm("int32", base), stride, lanes))
    assert isinstance(shuffle, tirx.Shuffle) and len(shuffle.vectors) == stride
    starts = []
    for vector in shuffle.vectors:
        ramp = vector.indices[0]
        assert int(ramp.stride) == 1 and int(ramp.lanes) == lanes
        starts.append(int(ramp.base.value))  # a constant base folds
    # every load inside [base, base + stride * (lanes - 1)]: no read the strided one would not make
    assert min(starts) == base and max(starts) + lanes - 1 <= base + stride * (lanes - 1)
    picked = [starts[int(i) // lanes] + int(i) % lanes for i in shuffle.indices]
    assert picked == [base + stride * lane for lane in range(lanes)]


@pytest.mark.parametrize("stride, lanes", [(1, 16), (MAX_STRIDE + 1, 16), (2, 2)])
def test_other_loads_stay(stride, lanes):
    load = _ramp_load(tirx.IntImm("int32", 0), stride, lanes)
    assert contiguous_loads(load).same_as(load)
    scalar = tirx.BufferLoad(BUFFER, [tirx.IntImm("int32", 3)])
    assert contiguous_loads(scalar).same_as(scalar)


@pytest.mark.parametrize("channels, size, kernel, stride, dilation", [
    (24, 56, 3, 2, 1),  # MobileNetV2's stride-2 depthwise: output rows of 28, as two 16-lane vectors
    (16, 30, 5, 2, 1),  # EfficientNet's 5x5: rows of 15 as one 16-lane vector
    (9, 20, 3, 3, 1),
    (7, 21, 3, 2, 2),  # dilated and strided
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_strided_depthwise_reads_rows_through_shuffles(channels, size, kernel, stride, dilation, target):
    rng = np.random.default_rng(3)
    g = _depthwise_graph(channels, size, kernel, stride, dilation=dilation, rng=rng)
    model = build(g, target, {})
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    np.testing.assert_allclose(model(x), g.run(x)[0], rtol=1e-4, atol=1e-4)
    source = model.kernels[0].source
    # the taps' lanes 0, s, 2s, ... picked from contiguous loads (the LLVM IR's shuffle mask)
    mask = ", ".join(f"i32 {stride * lane}" for lane in range(4))
    assert "shufflevector" in source and f"<{mask}," in source


def test_a_tuning_candidate_is_built_with_the_same_pipeline():
    """MetaSchedule times a candidate as built by ``tune.build_candidate``: it must be the code the
    final build makes, shuffles included."""
    from tvm.script import tirx as T

    from slimgraph.backends.tvm.targets import parse_target
    from slimgraph.backends.tvm.tir_pipeline import for_target
    from slimgraph.backends.tvm.tune import build_candidate

    @T.prim_func(s_tir=True)
    def every_other(x: T.Buffer((64,), "float32"), y: T.Buffer((32,), "float32")):
        T.func_attr({"global_symbol": "every_other", "tirx.noalias": True})
        for i in T.vectorized(32):
            with T.sblock("copy"):
                v = T.axis.spatial(32, i)
                y[v] = x[v * 2]

    mod = tvm.IRModule({"every_other": every_other})
    # the pipeline apply_tuning hands the builder for a CPU target
    lib = build_candidate(mod, tvm.target.Target("llvm"), None, pipeline=for_target(parse_target("llvm")))
    source = lib.inspect_source("ll")
    assert "shufflevector" in source and "<i32 0, i32 2, i32 4," in source
    x = np.arange(64, dtype=np.float32)
    y = tvm.runtime.tensor(np.zeros(32, np.float32))
    lib["every_other"](tvm.runtime.tensor(x), y)
    np.testing.assert_array_equal(y.numpy(), x[::2])
