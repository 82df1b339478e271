"""The AMX bf16 micro-kernel (``ops/amx.py``): convs and constant-weight matmuls against the
reference interpreter, which rounds the same float32 sums of bf16 products once to bf16; the
tile-data permission; which kernel a CPU gets."""

from __future__ import annotations

import errno

import numpy as np
import pytest

pytest.importorskip("tvm")

from slimgraph.backends.tvm import build, tile_permission  # noqa: E402
from slimgraph.backends.tvm.targets import parse_target  # noqa: E402
from slimgraph.backends.tvm.tile_permission import AMX_KERNEL  # noqa: E402
from slimgraph.errors import BackendError  # noqa: E402
from slimgraph.ir import Graph, TensorType  # noqa: E402
from slimgraph.passes import FuseRegions, ToBf16  # noqa: E402

RNG = np.random.default_rng(5)
HAS_AMX = parse_target("llvm").has("amx")
needs_amx = pytest.mark.skipif(not HAS_AMX, reason="this CPU has no AMX-BF16 (amx_bf16 not in /proc/cpuinfo)")
#: Two bf16 roundings of the result (the op's and the interpreter's) differ by at most one bf16 ulp.
BF16_TOL = 2**-7


def _uses_amx(model) -> bool:
    return any(AMX_KERNEL in k.tir for k in model.kernels)


def _conv_graph(c_in: int, c_out: int, size: int, kernel: int, stride: int, pads, batch: int = 1) -> Graph:
    g = Graph("conv")
    x = g.add_input("x", TensorType("f32", (batch, c_in, size, size + 3)))
    w = g.const(RNG.standard_normal((c_out, c_in, kernel, kernel)).astype(np.float32) * 0.2)
    b = g.const(RNG.standard_normal(c_out).astype(np.float32))
    y = g.call("conv", x, w, b, strides=(stride, stride), pads=pads)
    g.set_outputs([g.call("relu", y)])
    return FuseRegions()(ToBf16()(g))


@needs_amx
@pytest.mark.parametrize("c_in, c_out, size, kernel, stride, pads", [
    (32, 64, 9, 3, 1, (1, 1, 1, 1)),    # a 3x3 conv: taps read along the padded row
    (40, 24, 7, 3, 1, (1, 0, 2, 1)),    # K and C_out padded to whole tiles; uneven padding
    (64, 48, 10, 1, 2, (0, 0, 0, 0)),   # a strided 1x1: one phase, the stride taken by the operand copy
    (32, 32, 11, 3, 2, (1, 1, 1, 1)),   # a strided 3x3: four phases
    (48, 32, 12, 7, 2, (3, 3, 3, 3)),   # 7x7 stride 2, an odd window over two-by-two phases
    (16, 32, 5, 5, 1, (2, 2, 2, 2)),    # 5x5, more pixels padded than computed
    (48, 40, 7, 1, 1, (0, 0, 0, 0)),    # a 1x1: the image read as one row (70 pixels, 96 computed)
    (3, 64, 23, 7, 2, (3, 3, 3, 3)),    # an image's first conv: kernel columns folded into K
    (3, 32, 16, 8, 8, (0, 0, 0, 0)),    # a patch embedding (ViT's, smaller): folded, stride = kernel
])  # fmt: skip
def test_amx_conv_matches_interpreter(c_in, c_out, size, kernel, stride, pads):
    batch = 2 if kernel == 3 else 1  # the images of a batch are blocks of their own
    g = _conv_graph(c_in, c_out, size, kernel, stride, pads, batch)
    x = RNG.standard_normal((batch, c_in, size, size + 3)).astype(np.float32)
    model = build(g, "llvm", {})
    assert _uses_amx(model)
    np.testing.assert_allclose(model(x), g.run(x)[0], rtol=BF16_TOL, atol=BF16_TOL)


def _linear_graph(lead: tuple[int, ...], k: int, n: int, op: str) -> Graph:
    g = Graph(op)
    x = g.add_input("x", TensorType("f32", (*lead, k)))
    if op.startswith("linear"):
        w = g.const(RNG.standard_normal((n, k)).astype(np.float32) * 0.2)
        bias_shape = {"linear": (n,), "linear_scalar_bias": (1,), "linear_full_bias": (*lead, n)}[op]
        b = g.const(RNG.standard_normal(bias_shape).astype(np.float32))
        y = g.call("linear", x, w, b, trans_b=True)
    else:
        y = g.call("matmul", x, g.const(RNG.standard_normal((k, n)).astype(np.float32) * 0.2))
    g.set_outputs([g.call("gelu", y)])
    return FuseRegions()(ToBf16()(g))


@needs_amx
@pytest.mark.parametrize("lead, k, n, op", [
    ((2, 7), 72, 40, "linear"),   # 14 rows, K and N padded; a bias in the epilogue
    ((64,), 96, 64, "matmul"),    # whole tiles, two row blocks
    ((5,), 32, 48, "linear_scalar_bias"),  # one bias value for every output
    ((6,), 32, 48, "linear_full_bias"),    # a bias per element (ONNX Gemm's C): added after the kernel
])  # fmt: skip
def test_amx_matmul_matches_interpreter(lead, k, n, op):
    g = _linear_graph(lead, k, n, op)
    x = RNG.standard_normal((*lead, k)).astype(np.float32)
    model = build(g, "llvm", {})
    assert _uses_amx(model) == (op != "linear_full_bias")
    np.testing.assert_allclose(model(x), g.run(x)[0], rtol=BF16_TOL, atol=BF16_TOL)


def test_cpu_without_amx_keeps_the_dpbf16_kernel():
    """Cooper Lake has AVX512-BF16 and no AMX: its bf16 convs take ``vdpbf16ps`` (built here,
    not run, so that a host without AVX512-BF16 checks it too)."""
    target = parse_target("llvm:cooperlake")
    assert target.has("bf16") and not target.has("amx")
    model = build(_conv_graph(32, 64, 9, 3, 1, (1, 1, 1, 1)), "llvm:cooperlake", {})
    assert not _uses_amx(model) and any("slimgraph_dpbf16ps" in k.tir for k in model.kernels)


def test_amx_stays_out_of_the_module_features():
    """Only the micro-kernel enables AMX: the module's LLVM target never carries amx-*."""
    assert parse_target("llvm:sapphirerapids").has("amx")
    assert "amx" not in str(parse_target("llvm").tvm())


@needs_amx
def test_tile_permission_is_granted_here():
    tile_permission.request_tile_data()
    assert tile_permission._granted


def test_tile_permission_refused_is_a_clear_error(monkeypatch):
    calls = []

    def refuse(code, feature):
        calls.append((code, feature))
        return -1, errno.EPERM

    monkeypatch.setattr(tile_permission, "_granted", False)
    monkeypatch.setattr(tile_permission, "_arch_prctl", refuse)
    monkeypatch.setattr(tile_permission.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(tile_permission.sys, "platform", "linux")
    with pytest.raises(BackendError, match="Linux refused tile data.*Operation not permitted.*precision='fp32'"):
        tile_permission.request_tile_data()
    assert calls == [(0x1023, 18)] and not tile_permission._granted


@needs_amx
def test_a_loaded_amx_model_asks_for_tiles_in_a_fresh_process(tmp_path):
    """Without the permission request the first tile instruction kills the process (SIGILL):
    a model saved here and loaded by a new interpreter must ask before its first call."""
    import os
    import subprocess
    import sys

    g = _linear_graph((4,), 64, 32, "linear")
    model = build(g, "llvm", {})
    assert _uses_amx(model)
    model.save(tmp_path / "m")
    x = RNG.standard_normal((4, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = (f"import numpy as np, slimgraph; m = slimgraph.load({str(tmp_path / 'm')!r}); "
            f"np.save({str(tmp_path / 'y.npy')!r}, m(np.load({str(tmp_path / 'x.npy')!r})))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), model(x))


@needs_amx
def test_an_amx_model_is_refused_by_remote_before_it_connects():
    """TVM's RPC server never requests tile data: the upload is refused with the reason (no
    server is listening at the address; the refusal comes first)."""
    from slimgraph.backends.tvm.remote import RemoteError, RemoteModel, parse_remote

    model = build(_linear_graph((4,), 64, 32, "linear"), "llvm", {})
    with pytest.raises(RemoteError, match="use AMX tiles.*precision='fp32'"):
        RemoteModel(model, parse_remote("127.0.0.1:9"))
