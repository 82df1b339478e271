"""target="opencl": TVM's OpenCL kernels run through PyOpenCL (PoCL's CPU device here) and match the interpreter.

The full sweep over every suite model is ``benchmarks/opencl_models.py``; these
are a representative few: convolutions (dense, depthwise, strided), pooling,
linear, softmax, attention and layer norm, int8 kernels, index checks, a
dynamic batch, save/load and the per-kernel benchmark.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
pytest.importorskip("pyopencl")

from slimgraph.api import compile  # noqa: E402
from slimgraph.backends.opencl import OpenCLModel, device_name, opencl_available  # noqa: E402
from slimgraph.backends.tvm import load_compiled, parse_target  # noqa: E402
from slimgraph.demo import demo_inputs, demo_model  # noqa: E402
from slimgraph.errors import BackendError, IndexOutOfRangeError  # noqa: E402

if not opencl_available():
    pytest.skip("PyOpenCL sees no OpenCL device", allow_module_level=True)

TOL = 1e-4  # of the output's largest magnitude


def _error(got, want) -> float:
    return float(np.abs(np.asarray(got, np.float64) - want).max() / (np.abs(want).max() or 1.0))


@pytest.fixture(scope="module")
def demo():
    return compile(demo_model(), demo_inputs(batch=2), target="opencl")


def test_demo_matches_the_interpreter_and_names_its_device(demo):
    (x,) = demo_inputs(batch=2)
    assert isinstance(demo, OpenCLModel)
    (want,) = demo.ir.run(x)
    assert _error(demo(x), want) < TOL
    assert device_name() in repr(demo) and "opencl" in repr(demo)
    assert parse_target("opencl").can_run


def test_torch_in_torch_out(demo):
    torch = pytest.importorskip("torch")
    (x,) = demo_inputs(batch=2)
    got = demo(torch.from_numpy(x))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), demo(x))


def test_save_load_round_trip_without_a_native_library(demo, tmp_path):
    (x,) = demo_inputs(batch=2)
    demo.save(tmp_path / "m")
    assert not (tmp_path / "m" / "model.so").exists()  # the kernels travel as OpenCL C in the metadata
    loaded = load_compiled(tmp_path / "m")
    assert isinstance(loaded, OpenCLModel)
    np.testing.assert_array_equal(loaded(x), demo(x))


def test_benchmark_times_each_kernel_on_the_device(demo):
    result = demo.benchmark(warmup=1, runs=2, kernel_repeat=2)
    assert sum(k.calls for k in result.kernels) == len(demo.kernels)
    assert {n for k in result.kernels for n in k.nodes} == {k.name for k in demo.kernels}
    assert all(k.ms > 0 for k in result.kernels) and result.median_ms > 0
    assert abs(sum(k.share for k in result.kernels) - 1) < 1e-6


def test_benchmark_checks_its_batch_as_on_the_cpu(demo):
    with pytest.raises(BackendError, match="compiled for batch 2"):
        demo.benchmark(batch=3, runs=1, kernel_repeat=1)


def test_a_warm_call_allocates_nothing_and_holds_only_live_buffers(demo, monkeypatch):
    from slimgraph.backends.opencl import model as opencl_model

    (x,) = demo_inputs(batch=2)
    want = demo(x)
    made = []
    real = opencl_model._empty
    monkeypatch.setattr(opencl_model, "_empty", lambda ctx, nbytes: made.append(nbytes) or real(ctx, nbytes))
    np.testing.assert_array_equal(demo(x), want)
    assert made == [], "a warm call allocated device buffers instead of reusing its pool"
    # buffers go back after their last reader, so a later step reuses them within the call: the pool
    # holds fewer buffers than the steps make
    made_by_steps = sum(len(s["outs"]) for s in demo._meta["steps"] if s["kind"] != "view")
    pooled = sum(len(v) for v in demo._local.pool._free.values())
    assert pooled < made_by_steps


def test_calls_from_several_threads_agree(demo):
    import threading

    (x,) = demo_inputs(batch=2)
    expected = demo(x)
    results: list[bool] = []

    def work() -> None:
        results.extend(np.array_equal(demo(x), expected) for _ in range(5))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 15


def test_wrong_inputs_are_refused_as_on_the_cpu(demo):
    with pytest.raises(BackendError, match="got shape"):
        demo(np.zeros((3, 3, 32, 32), np.float32))
    with pytest.raises(BackendError, match="thread count"):
        demo(*demo_inputs(batch=2), threads=1)


def test_dynamic_batch_serves_every_size():
    model = compile(demo_model(), demo_inputs(batch=2), target="opencl", dynamic={"x": {0: ("N", 1, 8)}})
    for batch in (1, 5):
        (x,) = demo_inputs(batch=batch)
        (want,) = model.ir.run(x)
        assert model(x).shape == (batch, 10) and _error(model(x), want) < TOL


def test_index_checks_raise_as_on_the_cpu():
    from tests.frontends.test_torch_indexing import I, J, X, Indexing, _expected

    model = compile(Indexing(), (X, I, J), target="opencl")
    for got, want in zip(model(X.numpy(), I.numpy(), J.numpy()), _expected()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(IndexOutOfRangeError, match="gather_elements axis 1 of size 5"):
        model(X.numpy(), (I + 5).numpy(), J.numpy())


@pytest.mark.slow
@pytest.mark.parametrize("name, pipeline", [
    ("mobilenet_v2", "default"),  # depthwise and pointwise convs, relu6, global pool
    ("transformer_block", "default"),  # attention, layer norm, gelu, matmuls
    ("mlp", "canonicalize,fold-constants,cse,dce,quantize,lower-quantized,fuse"),  # int8 kernels
])
def test_suite_models_match_the_interpreter(name, pipeline):
    from tests.models import MODELS

    module, inputs = MODELS[name]()
    feeds = [x.numpy() for x in inputs]
    options = {"calibration_data": [tuple(feeds)]} if "quantize" in pipeline else {}
    model = compile(module, inputs, target="opencl", pipeline=pipeline, **options)
    if "quantize" in pipeline:
        assert any("int8" in k.source or "char" in k.source for k in model.kernels)
    for got, want in zip([model(*feeds)], model.ir.run(*feeds)):
        assert _error(got, want) < TOL


def test_without_pyopencl_calls_say_what_to_install(monkeypatch):
    import sys

    from slimgraph.backends.opencl import model as opencl_model
    from slimgraph.backends.tvm import TargetError

    monkeypatch.setitem(sys.modules, "pyopencl", None)  # import pyopencl now fails
    with pytest.raises(TargetError, match=r'pip install "slimgraph\[opencl\]"'):
        opencl_model._open_context.__wrapped__()


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_dtypes_round_trip_or_name_the_missing_extension(dtype):
    import pyopencl as cl

    from slimgraph.backends.opencl.model import _context
    from slimgraph.ir import Graph, TensorType
    from slimgraph.ir.interpreter import random_inputs

    g = Graph("twice")
    x = g.add_input("x", TensorType(dtype, (4, 8)))
    g.set_outputs([g.call("add", x, x)])
    model = compile(g, target="opencl")
    (a,) = random_inputs(g)
    extension = {"f16": "cl_khr_fp16", "f64": "cl_khr_fp64"}.get(dtype)
    device: cl.Device = _context()[1]
    if extension and extension not in device.extensions:
        with pytest.raises(BackendError, match=f"lacks {extension}"):
            model(a)
        return
    got = model(a)
    assert got.dtype == a.dtype
    np.testing.assert_array_equal(got.astype(np.float64), (a + a).astype(np.float64))
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16 if dtype == "bf16" else torch.float16)
    out = model(t)
    assert out.dtype == t.dtype
    assert torch.equal(out, t + t)


def test_tuning_for_opencl_is_refused_before_any_search(tmp_path):
    with pytest.raises(BackendError, match="no OpenCL here"):
        compile(demo_model(), target="opencl", tune=2, database=str(tmp_path))
