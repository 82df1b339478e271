"""CPU conv rules against the reference interpreter: the depthwise row tile, the AVX512-BF16
conv (``vdpbf16ps``) and ``compile(precision="bf16")``; and the same graphs built for an
AVX2-only CPU (``llvm:haswell``), whose code runs here too; the packed convs' vector epilogue and the
global pools' vector partials."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

pytest.importorskip("tvm")

import slimgraph  # noqa: E402
from slimgraph.backends.tvm import build  # noqa: E402
from slimgraph.backends.tvm.targets import parse_target  # noqa: E402
from slimgraph.backends.tvm.tile_permission import AMX_KERNEL  # noqa: E402
from slimgraph.errors import ArgumentError  # noqa: E402
from slimgraph.ir import Graph, TensorType  # noqa: E402
from slimgraph.passes import FuseRegions, ToBf16  # noqa: E402

RNG = np.random.default_rng(11)
HAS_BF16 = parse_target("llvm").has("bf16")
HAS_AMX = parse_target("llvm").has("amx")


def _depthwise_graph(channels: int, size: int, kernel: int, stride: int, pads=None, dilation: int = 1,
                     act: str = "relu", rng=RNG) -> Graph:
    g = Graph("dw")
    x = g.add_input("x", TensorType("f32", (1, channels, size, size)))
    w = g.const(rng.standard_normal((channels, 1, kernel, kernel)).astype(np.float32))
    b = g.const(rng.standard_normal((channels, 1, 1)).astype(np.float32))
    half = kernel // 2 * dilation
    y = g.call("conv", x, w, groups=channels, strides=(stride, stride), dilations=(dilation, dilation),
               pads=pads or (half, half, half, half))
    g.set_outputs([g.call(act, g.call("add", y, b))])
    return FuseRegions()(g)


def _check_depthwise(g, channels: int, size: int, target: str, rng=RNG) -> str:
    """Build ``g``, compare it with the interpreter; the kernel's TIR."""
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    model = build(g, target, {})
    np.testing.assert_allclose(model(x), g.run(x)[0], rtol=1e-4, atol=1e-4)
    return model.kernels[0].tir


def _row_tiled(tir: str) -> bool:
    """The rule held: the window sums into a vectorized row tile (not the generic nest), and the padded
    copy is made inside the channel tasks (at most one parallel loop; a small kernel runs on one thread)."""
    return "conv_update" in tir and "T.vectorized" in tir and tir.count("T.parallel") <= 1


@pytest.mark.parametrize("channels, size, kernel, stride", [
    (7, 14, 3, 1),  # odd channel count, a row of 14 (not a multiple of 16)
    (16, 9, 7, 1),  # ConvNeXt's 7x7 on a 9-wide map
    (13, 15, 5, 2),  # strided: every other column of the padded rows
    (32, 33, 3, 1),  # a row of 33: the padded input's rows round up to 48
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_depthwise_conv_matches_interpreter(channels, size, kernel, stride, target):
    assert _row_tiled(_check_depthwise(_depthwise_graph(channels, size, kernel, stride), channels, size, target))


@pytest.mark.parametrize("size, stride, per_tile", [
    (96, 2, True),  # a padded plane of 98x112 floats (44 KB) is copied a row tile at a time
    (96, 1, True),
    (28, 1, False),  # a small one once per channel, for all its row tiles
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_depthwise_copies_a_large_plane_per_row_tile(size, stride, per_tile, target):
    rng = np.random.default_rng(9)
    g = _depthwise_graph(8, size, 3, stride, rng=rng)
    x = rng.standard_normal((1, 8, size, size)).astype(np.float32)
    model = build(g, target, {})
    np.testing.assert_allclose(model(x), g.run(x)[0], rtol=1e-4, atol=1e-4)
    tir = model.kernels[0].tir
    # the padded copy's row loop: a tile's rows (and the window's overlap), or the whole padded plane
    rows = re.search(r"in T\.grid\(1, 1, (\d+), \d+\):\s*\n\s*with T\.sblock\(\"pad\"\)", tir)
    assert (rows is not None and int(rows.group(1)) < size) == per_tile


@pytest.mark.parametrize("channels, size", [
    (8, 28),  # ConvNeXt's second stage: rows of 28 computed as 32, four rows per tile
    (6, 7),  # its last stage: rows of 7 computed as 8, all seven rows in one tile
    (5, 9),  # a 9-wide map: rows of 16
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_depthwise_rows_are_whole_vectors(channels, size, target):
    rng = np.random.default_rng(5)  # its own: the file's generator keeps its sequence for the tests after
    g = _depthwise_graph(channels, size, 7, 1, rng=rng)
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    model = build(g, target, {})
    np.testing.assert_allclose(model(x), g.run(x)[0], rtol=1e-4, atol=1e-4)
    # rows computed in whole vectors (16, 8 or 4 lanes), read back without the extra columns
    tir = model.kernels[0].tir
    rows = int(re.search(r"conv = T.sblock_alloc_buffer\(\(1, \d+, \d+, (\d+)\)", tir).group(1))
    assert rows >= size and rows % (16 if size > 8 else 8 if size > 4 else 4) == 0


def _check_pointwise_add_relu(c_in: int, c_out: int, size: int, stride: int, target: str, rng, scale: float) -> str:
    """Build relu(conv1x1(x) + bias + r) for ``target``, compare it with the interpreter; the kernel's TIR."""
    g = Graph("pw")
    out = size // stride
    x = g.add_input("x", TensorType("f32", (1, c_in, size, size)))
    r = g.add_input("r", TensorType("f32", (1, c_out, out, out)))
    w = g.const(rng.standard_normal((c_out, c_in, 1, 1)).astype(np.float32) * scale)
    y = g.call("conv", x, w, g.const(rng.standard_normal(c_out).astype(np.float32)), strides=(stride, stride))
    g.set_outputs([g.call("relu", g.call("add", y, r))])
    g = FuseRegions()(g)
    xs = rng.standard_normal((1, c_in, size, size)).astype(np.float32)
    rs = rng.standard_normal((1, c_out, out, out)).astype(np.float32)
    model = build(g, target, {})
    np.testing.assert_allclose(model(xs, rs), g.run(xs, rs)[0], rtol=1e-4, atol=1e-4)
    return model.kernels[0].tir


@pytest.mark.parametrize("c_in, c_out, size, stride, rows_outside", [
    (64, 16, 14, 1, True),  # a map larger than the weights: rows outside, each row's pixels copied ahead of it
    (48, 32, 14, 2, True),  # strided: the copy keeps only the pixels the conv reads
    (512, 512, 9, 1, False),  # weights larger than the map: channel blocks outside, the copy its own loop
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_1x1_conv_reads_its_pixels_in_row_runs(c_in, c_out, size, stride, rows_outside, target):
    tir = _check_pointwise_add_relu(c_in, c_out, size, stride, target, np.random.default_rng(6), 0.1)
    out = size // stride
    # each output row's pixels as one run per input channel, copied a vector of a run at a time
    assert f"pixels = T.sblock_alloc_buffer((1, {out}, {c_in}, {out}))" in tir
    assert re.search(r"T\.vectorized\(\d+\):\s*\n\s*with T\.sblock\(\"pixels\"\)", tir)
    # inside the conv's parallel row loop, or a parallel loop of its own
    assert tir.count("T.parallel") == (1 if rows_outside else 2)


@pytest.mark.parametrize("c_in, c_out, size, stride, epilogue", [
    (64, 16, 28, 1, "add_relu"),  # ResNet's 1x1 convs, smaller: two vectors of pixels x 8 channels
    (5, 12, 16, 1, "relu"),  # 12 output channels: runs of 6 (AVX-512) or 12 (AVX2)
    (3, 4, 4, 1, "none"),  # one vector of 16 pixels, no epilogue: the tile is copied out
    (24, 32, 8, 1, "silu"),  # SiLU's exp on the tile's vectors
    (16, 16, 32, 2, "relu"),  # strided (ResNet's downsampling branch): over a copy of every other pixel
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_1x1_conv_over_pixel_rows_matches_interpreter(c_in, c_out, size, stride, epilogue, target):
    rng = np.random.default_rng(c_in)
    g = Graph("pw")
    out = size // stride
    x = g.add_input("x", TensorType("f32", (1, c_in, size, size)))
    r = g.add_input("r", TensorType("f32", (1, c_out, out, out)))
    w = g.const(rng.standard_normal((c_out, c_in, 1, 1)).astype(np.float32) * 0.3)
    y = g.call("conv", x, w, g.const(rng.standard_normal(c_out).astype(np.float32)), strides=(stride, stride))
    y = {"add_relu": lambda: g.call("relu", g.call("add", y, r)), "relu": lambda: g.call("relu", g.call("add", y, r)),
         "silu": lambda: g.call("silu", g.call("add", y, r)), "none": lambda: g.call("add", y, r)}[epilogue]()
    g.set_outputs([y] if epilogue != "none" else [y, g.call("conv", x, w)])
    g = FuseRegions()(g)
    xs = rng.standard_normal((1, c_in, size, size)).astype(np.float32)
    rs = rng.standard_normal((1, c_out, out, out)).astype(np.float32)
    model = build(g, target, {})
    for got, want in zip(model(xs, rs) if epilogue == "none" else [model(xs, rs)], g.run(xs, rs)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    for kernel in model.kernels:
        if kernel.ops[0] == "conv":
            # the pixel-row tile, a copy of the pixels only when strided, and the epilogue (or
            # copy) written as vectors
            assert '"sg.rule": "conv1x1_rows"' in kernel.tir
            assert ('T.sblock("pixels")' in kernel.tir) == (stride > 1)
            last = kernel.tir.rsplit("with T.sblock(", 1)[0].rsplit("for ", 1)[1]
            assert " in T.vectorized" in last


@pytest.mark.parametrize("c_in, c_out, size, runs", [
    (16, 64, 32, True),  # widening: runs of pixel tiles outermost, each over every channel run
    (64, 256, 24, True),  # ResNet-50's widening shape, smaller
    (64, 16, 32, False),  # narrowing: one tile outermost, so the large input is read once
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_widening_1x1_conv_writes_its_planes_in_runs(c_in, c_out, size, runs, target):
    tir = _check_pointwise_add_relu(c_in, c_out, size, 1, target, np.random.default_rng(c_out), 0.3)
    assert '"sg.rule": "conv1x1_rows"' in tir
    # the loop under the parallel one: a run's pixel tiles (the runs and the channel runs make
    # the parallel loop), or one tile's channel runs
    inner = re.search(r"T\.parallel\(\d+\):\s*\n\s*for (\w+) in range\(\d+\)", tir)
    assert inner.group(1).startswith("p_" if runs else "o_")


@pytest.mark.parametrize("c_in, c_out, size, stride, copied", [
    (256, 64, 16, 1, True),  # ResNet-50's 256->64, smaller: 8 channel runs read each tile
    (128, 64, 32, 2, True),  # strided: the copy keeps only the pixels the conv reads
    (144, 24, 16, 1, False),  # MobileNetV2's 144->24: 3 runs (AVX-512), the tile read in place
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_narrowing_1x1_conv_copies_each_tiles_pixels(c_in, c_out, size, stride, copied, target):
    tir = _check_pointwise_add_relu(c_in, c_out, size, stride, target, np.random.default_rng(c_in), 0.1)
    assert '"sg.rule": "conv1x1_rows"' in tir
    # the copy of a tile's pixels [tiles, C_in, pixels] sits in the parallel tile loop, ahead of
    # the channel runs, and moves vectors
    tiled = re.search(r"T\.parallel\(\d+\):\s*\n\s*for ax0, ax1, ax2 in T\.grid\(1, 1, (\d+)\):\s*\n\s*"
                      r"for ax3 in T\.vectorized\(\d+\):\s*\n\s*with T\.sblock\(\"pixels\"\)", tir)
    assert (tiled is not None) == copied
    if copied:
        assert int(tiled.group(1)) == c_in
    if target == "llvm" and not copied:  # AVX2's narrower tile has 6 runs of 4 channels: still below 8
        assert 'T.sblock("pixels")' not in tir


@pytest.mark.parametrize("c_in, c_out, size, stride, runs", [
    (64, 16, 6, 1, 4),  # weights (37 KB) outweigh the map: runs of 16 input channels, each over every tile
    (96, 16, 8, 2, 4),  # strided: runs of 24 of 96
    (8, 16, 6, 1, 1),  # a block's whole weights fit a run: one pass
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_packed_conv_runs_of_input_channels_match_interpreter(c_in, c_out, size, stride, runs, target):
    rng = np.random.default_rng(c_in)
    g = Graph("conv")
    x = g.add_input("x", TensorType("f32", (1, c_in, size, size)))
    r = g.add_input("r", TensorType("f32", (1, c_out, size // stride, size // stride)))
    w = g.const(rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32) * 0.2)
    y = g.call("conv", x, w, g.const(rng.standard_normal(c_out).astype(np.float32)), strides=(stride, stride),
               pads=(1, 1, 1, 1) if stride == 1 else (0, 0, 1, 1))
    g.set_outputs([g.call("relu", g.call("add", y, r))])
    g = FuseRegions()(g)
    xs = rng.standard_normal((1, c_in, size, size)).astype(np.float32)
    rs = rng.standard_normal((1, c_out, size // stride, size // stride)).astype(np.float32)
    model = build(g, target, {})
    np.testing.assert_allclose(model(xs, rs), g.run(xs, rs)[0], rtol=1e-4, atol=1e-4)
    tir = model.kernels[0].tir
    # the runs: a loop over them outside the output rows, the epilogue after the last
    found = re.search(r"for rc_0, h, .* in T.grid\((\d+),", tir)
    assert (int(found.group(1)) if found else 1) == runs
    assert runs == 1 or tir.index("for rc_0") < tir.index('T.sblock("relu")')


@pytest.mark.parametrize("c_in, c_out, size, kernel, stride, two", [
    (48, 64, 7, 3, 1, True),  # a 7x7 map: 7-pixel tiles of two channel vectors
    (32, 64, 14, 1, 2, True),  # strided to 7x7
    (3, 32, 20, 7, 2, True),  # a 7x7 stem over 3 channels
    (3, 32, 20, 3, 2, False),  # a 3x3 stem keeps one vector
    (16, 48, 7, 3, 1, False),  # 48 channels: no whole blocks of 32
    (96, 32, 14, 1, 1, True),  # a 1x1 conv narrowing the channels of a 14x14 map
    (32, 96, 14, 1, 1, False),  # one widening them keeps blocks of 16
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_packed_conv_two_vector_blocks_match_interpreter(c_in, c_out, size, kernel, stride, two, target):
    rng = np.random.default_rng(c_out + kernel)
    g = Graph("conv")
    x = g.add_input("x", TensorType("f32", (1, c_in, size, size)))
    w = g.const(rng.standard_normal((c_out, c_in, kernel, kernel)).astype(np.float32) * 0.2)
    half = kernel // 2
    g.set_outputs([g.call("relu", g.call("conv", x, w, g.const(rng.standard_normal(c_out).astype(np.float32)),
                                         strides=(stride, stride), pads=(half,) * 4))])
    g = FuseRegions()(g)
    xs = rng.standard_normal((1, c_in, size, size)).astype(np.float32)
    model = build(g, target, {})
    np.testing.assert_allclose(model(xs), g.run(xs)[0], rtol=1e-4, atol=1e-4)
    block = int(re.search(r"w_packed: T.Buffer\(\(\d+, \d+, \d+, \d+, (\d+)\)", model.kernels[0].tir).group(1))
    # two AVX-512 registers of output channels per pixel; AVX2's 16 registers keep one block of 16
    assert block == (32 if two and parse_target(target).lanes == 16 else 16)


def _bf16_conv_graph(c_in: int, c_out: int, stride: int) -> Graph:
    g = Graph("conv")
    x = g.add_input("x", TensorType("f32", (1, c_in, 11, 11)))
    w = g.const(RNG.standard_normal((c_out, c_in, 3, 3)).astype(np.float32) * 0.3)
    b = g.const(RNG.standard_normal(c_out).astype(np.float32))
    g.set_outputs([g.call("relu", g.call("conv", x, w, b, strides=(stride, stride), pads=(1, 0, 1, 2)))])
    return FuseRegions()(ToBf16()(g))


@pytest.mark.parametrize("c_in, c_out, stride", [(5, 16, 1), (8, 32, 2), (3, 24, 1)])
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_bf16_conv_matches_interpreter(c_in, c_out, stride, target):
    """Odd input channels get a zero partner; 24 outputs (not a multiple of 16) take the widening
    packed form; on an AMX CPU, 8 channels of a 3-wide kernel take AMX tiles. All sum in float32
    and round once to bf16, as the interpreter does."""
    if target == "llvm" and not HAS_BF16:
        pytest.skip("this CPU has no AVX512-BF16")
    g = _bf16_conv_graph(c_in, c_out, stride)
    x = RNG.standard_normal((1, c_in, 11, 11)).astype(np.float32)
    model = build(g, target, {})
    uses_dpbf16 = any("slimgraph_dpbf16ps" in k.tir for k in model.kernels)
    uses_amx = any(AMX_KERNEL in k.tir for k in model.kernels)
    # AMX takes a conv whose channels times kernel columns fill half a tile's K (ops/amx.py)
    assert uses_amx == (target == "llvm" and HAS_AMX and c_in * 3 >= 16)
    assert uses_dpbf16 == (target == "llvm" and not uses_amx and c_out % 16 == 0)
    # The widening form does not round exactly where the interpreter does (an output it gave here
    # was no bf16 value: TVM seems to fold cast(f32, cast(bf16, v)) to v), so a sum that cancels
    # can differ by an ulp of its terms, not of itself (one output in ~3000 failed the tight check
    # on main too). The bf16 kernels round every operand as the interpreter does: tight check.
    want = g.run(x)[0]
    widening = not (uses_amx or uses_dpbf16)
    np.testing.assert_allclose(model(x), want, rtol=2**-7, atol=2**-7 * (np.abs(want).max() if widening else 1))


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, stride=2, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1, groups=32), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 48, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(48, 10),
    )  # fmt: skip
    return net.eval()


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no AVX512-BF16")
def test_compile_bf16_stays_close_to_fp32():
    net, x = _cnn(), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = net(x).numpy()
    fp32 = slimgraph.compile(net, [x])(x.numpy())
    bf16_model = slimgraph.compile(net, [x], precision="bf16")
    bf16 = bf16_model(x.numpy())
    scale = np.abs(want).max()
    fp32_error, bf16_error = np.abs(fp32 - want).max() / scale, np.abs(bf16 - want).max() / scale
    # bf16 keeps 8 bits of mantissa: a few roundings of 2^-9 each, and visibly more than fp32's
    assert bf16_error < 3e-2 and bf16_error > 10 * fp32_error
    assert any("slimgraph_dpbf16ps" in k.tir for k in bf16_model.kernels)


def test_compile_bf16_is_refused_without_bf16_and_checks_its_value():
    net, x = _cnn(), torch.randn(1, 3, 32, 32)
    with pytest.raises(ArgumentError, match="needs a CPU with AMX or AVX512-BF16.*llvm:haswell"):
        slimgraph.compile(net, [x], target="llvm:haswell", precision="bf16")
    with pytest.raises(ArgumentError, match="precision='fp16': choose from 'fp32', 'bf16'"):
        slimgraph.compile(net, [x], precision="fp16")


@pytest.mark.parametrize("channels, size, kernel, stride, pads, dilation, act", [
    (24, 16, 3, 2, (0, 0, 1, 1), 1, "relu"),  # TF "same" padding: only at the end
    (9, 17, 3, 3, (1, 2, 0, 1), 1, "relu"),  # stride 3, uneven pads
    (10, 14, 5, 2, None, 1, "silu"),  # EfficientNet's 5x5 stride 2, SiLU in the tile
    (8, 12, 3, 1, (1, 1, 1, 1), 2, "relu"),  # dilated, row stride 1
    (5, 13, 3, 2, None, 2, "relu"),  # dilated and strided: the generic loop nest
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_depthwise_strided_padded_dilated_match_interpreter(channels, size, kernel, stride, pads, dilation, act,
                                                            target):
    rng = np.random.default_rng(channels)
    g = _depthwise_graph(channels, size, kernel, stride, pads, dilation, act, rng)
    tir = _check_depthwise(g, channels, size, target, rng)
    assert _row_tiled(tir) or (stride > 1 and dilation > 1)


def test_depthwise_pads_each_channel_inside_its_parallel_task():
    rng = np.random.default_rng(64)
    g = _depthwise_graph(64, 28, 3, 2, (0, 0, 1, 1), 1, "silu", rng)  # MobileNetV2's stride-2 layers, smaller
    tir = _check_depthwise(g, 64, 28, "llvm", rng)
    assert tir.count("T.parallel") == 1 and tir.index("T.parallel") < tir.index('T.sblock("pad")')


@pytest.mark.parametrize("channels, size, kernel, stride", [
    (6, 32, 3, 1),  # EfficientNet's first depthwise conv, smaller: two 16-lane row tiles
    (10, 14, 5, 2),  # 5x5 stride 2: 7-wide rows, one short vector
    (4, 56, 3, 1),  # 56 computed as 64: the epilogue reads a 32-lane tile
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_depthwise_epilogue_runs_on_row_vectors(channels, size, kernel, stride, target):
    rng = np.random.default_rng(size)
    tir = _check_depthwise(_depthwise_graph(channels, size, kernel, stride, act="silu", rng=rng), channels, size,
                           target, rng)
    # the loop right above the SiLU block: vectorized, not unrolled into scalar exps (5 GFLOP/s)
    assert tir.split('T.sblock("silu")')[0].rsplit("for ", 1)[1].split(" in ")[1].startswith("T.vectorized")


@pytest.mark.parametrize("c_in, c_out, kernel, stride, act", [
    (20, 48, 1, 1, "silu"),  # EfficientNet's expand conv: SiLU on channel vectors
    (48, 24, 1, 1, "relu"),  # a block of 8 channels
    (7, 12, 3, 2, "silu"),  # a block of 4, strided and padded
    (6, 10, 1, 1, "silu"),  # a block of 2: the epilogue stays scalar
])  # fmt: skip
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_packed_conv_epilogue_on_channel_vectors_matches_interpreter(c_in, c_out, kernel, stride, act, target):
    rng = np.random.default_rng(c_in)
    g = Graph("conv")
    x = g.add_input("x", TensorType("f32", (1, c_in, 15, 15)))
    w = g.const(rng.standard_normal((c_out, c_in, kernel, kernel)).astype(np.float32) * 0.3)
    b = g.const(rng.standard_normal(c_out).astype(np.float32))
    half = kernel // 2
    g.set_outputs([g.call(act, g.call("conv", x, w, b, strides=(stride, stride), pads=(half,) * 4))])
    g = FuseRegions()(g)
    data = rng.standard_normal((1, c_in, 15, 15)).astype(np.float32)
    model = build(g, target, {})
    np.testing.assert_allclose(model(data), g.run(data)[0], rtol=1e-4, atol=1e-4)
    epilogue = model.kernels[0].tir.split(f'T.sblock("{act}")')[0].rsplit("for ", 1)[1]
    assert epilogue.startswith("ax1 in T.vectorized") == (c_out % 4 == 0)


@pytest.mark.parametrize("op", ["global_avg_pool", "global_max_pool"])
@pytest.mark.parametrize("shape", [(1, 6, 12, 16), (2, 5, 14, 14), (1, 3, 7, 7), (1, 4, 48), (1, 2, 4, 6, 8)])
@pytest.mark.parametrize("target", ["llvm", "llvm:haswell"])
def test_global_pools_match_interpreter(op, shape, target):
    g = Graph("pool")
    x = g.add_input("x", TensorType("f32", shape))
    g.set_outputs([g.call(op, x)])
    data = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    model = build(g, target, {})
    np.testing.assert_allclose(model(data), g.run(data)[0], rtol=1e-5, atol=1e-5)
    # a plane whose size 4 divides is summed as a vector of partials (squeeze-excite's pools)
    assert ("T.vectorized" in model.kernels[0].tir) == (math.prod(shape[2:]) % 4 == 0)
