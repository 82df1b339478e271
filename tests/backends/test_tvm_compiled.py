"""CompiledModel: numpy and torch calls, kernels with source, benchmark, save/load, targets and errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tvm")

from slimgraph.api import compile  # noqa: E402
from slimgraph.backends.tvm import TargetError, load_compiled, parse_target  # noqa: E402
from slimgraph.demo import demo_inputs, demo_model  # noqa: E402
from slimgraph.errors import BackendError, LoadError, SaveError, SlimgraphError  # noqa: E402
from slimgraph.timing import TickClock  # noqa: E402


@pytest.fixture(scope="module")
def demo():
    graph = demo_model()
    return graph, compile(graph, demo_inputs(batch=2))


def test_numpy_in_numpy_out_and_torch_in_torch_out(demo):
    torch = pytest.importorskip("torch")
    graph, model = demo
    (x,) = demo_inputs(batch=2)
    out = model(x)
    assert isinstance(out, np.ndarray)
    t_out = model(torch.from_numpy(x))
    assert isinstance(t_out, torch.Tensor)
    np.testing.assert_array_equal(t_out.numpy(), out)
    # a non-contiguous tensor is made dense first, with the same result
    strided = torch.from_numpy(np.ascontiguousarray(np.concatenate([x, x], axis=3)))[..., ::2]
    np.testing.assert_allclose(model(strided).numpy(), model(np.ascontiguousarray(strided.numpy())), rtol=0, atol=0)


def test_wrong_input_shape_or_count_is_a_clear_error(demo):
    _, model = demo
    with pytest.raises(BackendError, match=r"compiled for f32\[2,3,32,32\]"):
        model(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(BackendError, match="takes 1 inputs"):
        model()


def test_kernels_carry_source_tir_and_flops(demo):
    graph, model = demo
    kernels = model.kernels
    assert kernels and all(k.source.startswith("define") for k in kernels)
    assert all("T.prim_func" in k.tir for k in kernels)
    conv = next(k for k in kernels if "conv" in k.ops)
    assert conv.flops > 0
    assert "__tvm_parallel_lambda" in conv.source and "<16 x float>" in conv.source  # parallel and vectorized


def test_benchmark_reports_latency_and_per_kernel_shares(demo, tmp_path):
    _, model = demo
    tick = 2.0**-10  # each read of the fake clock moves it ~1 ms: every timed call measures one tick
    result = model.benchmark(warmup=1, runs=5, kernel_repeat=2, clock=TickClock(tick), json_path=tmp_path / "b.json")
    t = result.timing
    assert t.times_ms == (tick * 1e3,) * 5 and t.first_ms == tick * 1e3 and t.warmup == 1
    assert t.batch == 2 and t.concurrency == 1 and t.throughput == pytest.approx(2 * 5 / t.wall_s)
    # kernels: one row per compiled kernel, its calls counted, every call in exactly one row
    assert sum(k.calls for k in result.kernels) == len(model.kernels)
    assert sorted(n for k in result.kernels for n in k.nodes) == sorted(k.name for k in model.kernels)
    assert sum(k.share for k in result.kernels) == pytest.approx(1.0)
    assert [k.ms for k in result.kernels] == sorted((k.ms for k in result.kernels), reverse=True)
    conv = next(k for k in result.kernels if "conv" in k.ops)
    assert conv.gflops is not None and conv.mean_ms == conv.ms / conv.calls
    table = result.table()
    assert "| kernel | ops | calls | total ms | mean ms | share | GFLOP/s |" in table
    assert "first call" in table and "p99" in table and "samples/s (batch 2, 1 caller, 5 runs" in table
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["runs"] == 5 and saved["batch"] == 2 and saved["times_ms"] == list(t.times_ms)
    assert saved["flops"] == model.flops and len(saved["kernels"]) == len(result.kernels)


def test_benchmark_by_duration_from_concurrent_callers(demo):
    _, model = demo
    clock = TickClock(2.0**-10)
    result = model.benchmark(duration_s=0.05, concurrency=2, warmup=1, kernel_repeat=1, clock=clock)
    assert result.timing.concurrency == 2 and result.runs >= 1 and result.timing.wall_s >= 0.05


def test_benchmark_batch_must_fit_the_model(demo):
    _, model = demo
    with pytest.raises(BackendError, match=r"benchmark: batch=3, but the model was compiled for batch 2"):
        model.benchmark(batch=3, runs=1)
    (x,) = demo_inputs(batch=2)
    with pytest.raises(BackendError, match=r"benchmark: batch=4, but the inputs have batch 2"):
        model.benchmark(x, batch=4, runs=1)


def test_saved_model_loaded_in_a_fresh_process_gives_bit_identical_outputs(demo, tmp_path):
    _, model = demo
    (x,) = demo_inputs(batch=2, seed=3)
    expected = model(x)
    model.save(tmp_path / "m")
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np
        from slimgraph.backends.tvm import load_compiled
        m = load_compiled({str(tmp_path / "m")!r})
        np.save({str(tmp_path / "y.npy")!r}, m(np.load({str(tmp_path / "x.npy")!r})))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    got = np.load(tmp_path / "y.npy")
    assert got.tobytes() == expected.tobytes()
    loaded = load_compiled(tmp_path / "m")
    assert loaded.ir is None and [k.name for k in loaded.kernels] == [k.name for k in model.kernels]
    assert json.loads((tmp_path / "m" / "metadata.json").read_text())["target"] == "llvm"


def test_save_refuses_to_overwrite_a_foreign_folder(demo, tmp_path):
    _, model = demo
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SaveError, match="did not write.*refusing to replace"):
        model.save(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_loading_a_folder_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(LoadError, match="no files.json"):
        load_compiled(tmp_path)


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(TargetError, match="unknown target 'vulkan'.*llvm.*cuda.*opencl"):
        parse_target("vulkan")
    with pytest.raises(SlimgraphError, match="sm_XY"):
        parse_target("cuda:ampere")


def test_cuda_build_cross_compiles_here_and_explains_it_cannot_run():
    model = compile(demo_model(), target="cuda:sm_90")
    kernels = model.kernels
    assert kernels and all("__global__" in k.source for k in kernels)
    if not parse_target("cuda:sm_90").can_run:
        with pytest.raises(TargetError, match="cannot run here.*llvm"):
            model(*demo_inputs())


def test_opencl_builds_kernel_source_with_or_without_an_opencl_runtime():
    # running it is tests/backends/test_opencl.py's; without PyOpenCL the call says what to install
    model = compile(demo_model(), target="opencl")
    assert all("__kernel" in k.source for k in model.kernels)


def test_calls_from_several_threads_agree() -> None:
    """Each thread gets its own VM over shared weights; a shared VM crashed here."""
    import threading

    from slimgraph.api import compile
    from slimgraph.demo import demo_inputs, demo_model

    model = compile(demo_model(), demo_inputs(batch=4))
    assert model.thread_safe
    x = demo_inputs(batch=4)[0]
    expected = model(x)
    mismatches: list[int] = []

    def work() -> None:
        for _ in range(50):
            if not np.array_equal(model(x), expected):
                mismatches.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not mismatches


def test_encoded_weights_are_decoded_in_the_kernels_or_once_at_build() -> None:
    """k-means-shared weights: by default the kernels read the packed codes and decode them
    (docs/compression.md); with weights="decoded" they are plain parameters decoded at build.
    Both match the interpreter."""
    from slimgraph.api import compile
    from slimgraph.demo import demo_inputs, demo_model
    from slimgraph.passes import run_pipeline

    shared, _ = run_pipeline(demo_model(), "fold-constants,share-weights{method=kmeans,bits=4},fuse")
    assert any(m.op == "codebook_decode" for n in shared.nodes for m in ([n] + (n.body.nodes if n.op == "fused" else [])))
    inputs = demo_inputs(batch=2)
    model = compile(shared, inputs, pipeline=None, weights="compressed")
    decoded = compile(shared, inputs, pipeline=None, weights="decoded")
    for m in (model, decoded):
        assert any("codebook_decode" in k.ops for k in m.kernels)  # the kernel's IR still says what it holds
        np.testing.assert_allclose(m(*inputs), shared.run(*inputs)[0], rtol=1e-5, atol=1e-6)
    assert any('"uint8"' in k.tir and "decode_codebook" in k.tir for k in model.kernels)
    assert not any('"uint8"' in k.tir for k in decoded.kernels)  # no kernel reads the packed codes


def test_cpu_thread_pool_uses_every_core():
    """TVM alone sizes its pool to half the hardware threads (one on a 2-core machine)."""
    import os
    import subprocess
    import sys

    from slimgraph.backends.tvm.targets import cpu_cores

    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    code = "import slimgraph.backends.tvm, tvm; print(tvm.get_global_func('runtime.NumThreads')())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) == cpu_cores()


def test_a_call_can_run_on_fewer_threads_and_leaves_the_pool_as_it_was(demo):
    """``threads=`` resizes only the calling thread's pool, for that call."""
    import threading

    import tvm

    _, model = demo
    inputs = demo_inputs(batch=2)
    count = tvm.get_global_func("runtime.NumThreads")
    before = count()
    np.testing.assert_array_equal(model(*inputs, threads=1), model(*inputs))
    assert count() == before
    inside, other = [], []
    with model._threads(1):  # what the call runs in
        inside.append(count())
        # another thread's pool is its own
        worker = threading.Thread(target=lambda: other.append(count()))
        worker.start()
        worker.join()
    assert inside == [1] and other == [before] and count() == before
    with pytest.raises(BackendError, match="positive number of threads"):
        model(*inputs, threads=0)
    assert count() == before


def test_numpy_inputs_of_any_layout_give_the_same_outputs(demo):
    """Aligned dense inputs are shared with TVM; misaligned, strided or read-only ones are copied."""
    _, model = demo
    (x,) = demo_inputs(batch=2)
    want = model(x.copy())

    def placed(shift: int) -> np.ndarray:
        """``x`` at ``shift`` floats past a 64-byte boundary."""
        storage = np.zeros(x.size + 32, np.float32)
        start = next(k for k in range(16) if (storage.ctypes.data + 4 * k) % 64 == 0) + shift
        view = storage[start : start + x.size].reshape(x.shape)
        view[...] = x
        return view

    aligned, misaligned = placed(0), placed(1)
    assert aligned.ctypes.data % 64 == 0 and misaligned.ctypes.data % 64
    strided = np.repeat(x, 2, axis=-1)[..., ::2]
    readonly = x.copy()
    readonly.flags.writeable = False
    for layout in (aligned, misaligned, strided, readonly):
        before = layout.copy()
        np.testing.assert_array_equal(model(layout), want)
        np.testing.assert_array_equal(layout, before)


def test_a_thread_count_keeps_the_callers_cpu_affinity(demo):
    """TVM re-pins the calling thread when it resizes its pool; the caller's mask must survive."""
    import os

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    _, model = demo
    inputs = demo_inputs(batch=2)
    original = os.sched_getaffinity(0)
    pinned = {max(original)}
    try:
        os.sched_setaffinity(0, pinned)
        model(*inputs, threads=1)
        assert os.sched_getaffinity(0) == pinned
    finally:
        os.sched_setaffinity(0, original)


def test_bfloat16_inputs_and_torch_outputs_that_view_a_numpy_input():
    """numpy cannot export bfloat16 through DLPack: such inputs are copied. And a torch output
    that is a view of a numpy input must not share the caller's buffer."""
    import ml_dtypes
    import torch

    from slimgraph.backends.tvm import build
    from slimgraph.ir import Graph, TensorType

    g = Graph("bf16")
    x = g.add_input("x", TensorType("bf16", (4, 8)))
    g.set_outputs([g.call("relu", x)])
    xb = np.linspace(-1, 1, 32, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(4, 8)
    np.testing.assert_array_equal(build(g, "llvm", {})(xb), g.run(xb)[0])

    g = Graph("views")
    a = g.add_input("a", TensorType("f32", (2, 8)))
    b = g.add_input("b", TensorType("f32", (16,)))
    g.set_outputs([g.call("relu", a), g.call("reshape", b, shape=(2, 8))])
    model = build(g, "llvm", {})
    storage = np.zeros(16 + 16, np.float32)
    start = next(k for k in range(16) if (storage.ctypes.data + 4 * k) % 64 == 0)
    b_in = storage[start : start + 16]
    b_in[...] = np.arange(16)
    _, view = model(torch.zeros(2, 8), b_in)
    b_in[...] = -1.0
    assert torch.equal(view, torch.arange(16, dtype=torch.float32).reshape(2, 8))
