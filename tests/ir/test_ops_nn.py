"""The compute ops (slimgraph/ir/ops/nn.py) against torch.nn.functional.

Every op runs through a real Graph (type inference, then the reference
interpreter, which checks the result's dtype and shape against the inferred
type) on seeded random inputs, and is compared with PyTorch.
"""

from __future__ import annotations

import re
import time

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slimgraph.errors import OpError
from slimgraph.ir import Graph, TensorType, get_op

RTOL, ATOL = 1e-4, 1e-5


def run_op(op: str, *arrays: np.ndarray, **attrs) -> np.ndarray:
    """One-node graph whose inputs are ``arrays``; returns the interpreter's output."""
    g = Graph(op)
    ins = [g.add_input(f"in{i}", TensorType.of_array(a)) for i, a in enumerate(arrays)]
    y = g.call(op, *ins, **attrs)
    g.set_outputs([y])
    out = g.run(*arrays)[0]
    assert out.dtype == arrays[0].dtype
    return out


def infer(op: str, *types: TensorType, **attrs) -> TensorType:
    """The inferred output type of ``op`` on inputs of the given types."""
    g = Graph(op)
    ins = [g.add_input(f"in{i}", t) for i, t in enumerate(types)]
    return g.call(op, *ins, **attrs).type


def randn(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def t(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


def torch_pads(begins, ends) -> list[int]:
    """ONNX-order pads as F.pad's (last axis first) list."""
    out: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        out += [b, e]
    return out


def close(ours: np.ndarray, ref: torch.Tensor, rtol: float = RTOL, atol: float = ATOL) -> None:
    ref = ref.detach().numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# ---------------------------------------------------------------------------
# conv

CONV_CASES = {
    "1d-stride-asym-pad": dict(x=(2, 4, 17), w=(6, 4, 3), strides=(2,), pads=(1, 2), bias=True),
    "1d-dilated-groups": dict(x=(1, 4, 20), w=(6, 2, 3), pads=(2, 2), dilations=(2,), groups=2, bias=True),
    "2d-same": dict(x=(2, 3, 12, 10), w=(5, 3, 3, 3), pads=(1, 1, 1, 1), bias=True),
    "2d-stride-asym-pad-nobias": dict(x=(1, 3, 11, 9), w=(4, 3, 3, 3), strides=(2, 1), pads=(0, 1, 2, 1)),
    "2d-dilated": dict(x=(1, 2, 15, 16), w=(3, 2, 3, 3), strides=(1, 2), dilations=(2, 3), pads=(2, 3, 2, 3)),
    "2d-groups": dict(x=(2, 4, 9, 9), w=(6, 2, 3, 3), groups=2, pads=(1, 1, 1, 1), bias=True),
    "2d-depthwise": dict(x=(2, 8, 10, 10), w=(8, 1, 3, 3), groups=8, strides=(2, 2), pads=(1, 1, 1, 1), bias=True),
    "2d-depthwise-x2": dict(x=(1, 8, 7, 7), w=(16, 1, 5, 5), groups=8, pads=(2, 2, 2, 2)),
    "2d-1x1-stride": dict(x=(1, 16, 8, 8), w=(12, 16, 1, 1), strides=(2, 2), bias=True),
    "2d-rect-kernel": dict(x=(1, 3, 9, 13), w=(4, 3, 1, 5), pads=(0, 2, 0, 2)),
    "3d": dict(x=(1, 3, 6, 7, 8), w=(4, 3, 3, 2, 3), strides=(1, 2, 1), pads=(1, 0, 1, 1, 1, 0), dilations=(1, 1, 2)),
    "3d-groups-bias": dict(x=(2, 6, 5, 5, 5), w=(3, 2, 2, 2, 2), groups=3, strides=(2, 2, 2), bias=True),
}


@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_matches_torch(case, rng):
    k = len(case["x"]) - 2
    x, w = randn(rng, *case["x"]), randn(rng, *case["w"], scale=0.3)
    b = randn(rng, case["w"][0]) if case.get("bias") else None
    pads = case.get("pads", (0,) * 2 * k)
    attrs = {key: case[key] for key in ("strides", "pads", "dilations", "groups") if key in case}
    ours = run_op("conv", *[a for a in (x, w, b) if a is not None], **attrs)
    conv = (F.conv1d, F.conv2d, F.conv3d)[k - 1]
    ref = conv(
        F.pad(t(x), torch_pads(pads[:k], pads[k:])),
        t(w),
        t(b),
        stride=case.get("strides", 1),
        dilation=case.get("dilations", 1),
        groups=case.get("groups", 1),
    )
    close(ours, ref)


def test_conv_half_precision_computes_in_float32(rng):
    x, w = randn(rng, 1, 8, 10, 10), randn(rng, 8, 8, 3, 3, scale=0.2)
    ref = run_op("conv", x, w, pads=(1, 1, 1, 1))
    for dtype, tol in ((np.float16, 2e-3), (ml_dtypes.bfloat16, 2e-2)):
        ours = run_op("conv", x.astype(dtype), w.astype(dtype), pads=(1, 1, 1, 1))
        np.testing.assert_allclose(ours.astype(np.float32), ref, rtol=tol, atol=tol * 4)


def test_float64_computes_in_float64(rng):
    # An f32 accumulator or f32 resize table would miss torch's float64 results by ~1e-7.
    x, w, b = rng.standard_normal((2, 4, 9, 9)), rng.standard_normal((6, 4, 3, 3)), rng.standard_normal(6)
    scale, shift, mean, var = rng.standard_normal((4, 4)) ** 2 + 0.1
    tight = dict(rtol=1e-12, atol=1e-12)
    close(run_op("conv", x, w, b, pads=(1, 1, 1, 1)), F.conv2d(t(x), t(w), t(b), padding=1), **tight)
    weight = rng.standard_normal((5, 9))
    close(run_op("linear", x[0, 0], weight), F.linear(t(x[0, 0]), t(weight)), **tight)
    close(run_op("batch_norm", x, scale, shift, mean, var),
          F.batch_norm(t(x), t(mean), t(var), t(scale), t(shift), eps=1e-5), **tight)
    close(run_op("layer_norm", x, axis=2), F.layer_norm(t(x), (9, 9)), **tight)
    close(run_op("group_norm", x, scale, shift, groups=2), F.group_norm(t(x), 2, t(scale), t(shift)), **tight)
    close(run_op("softmax", x, axis=1), torch.softmax(t(x), 1), **tight)
    close(run_op("avg_pool", x, kernel=(3, 3), strides=(2, 2)), F.avg_pool2d(t(x), 3, 2), **tight)
    close(run_op("resize", x, sizes=(13, 17), mode="linear"),
          F.interpolate(t(x), size=(13, 17), mode="bilinear", align_corners=False), **tight)


# ---------------------------------------------------------------------------
# conv_transpose

TRANSPOSE_CASES = {
    "1d-stride-outpad": dict(x=(2, 4, 7), w=(4, 3, 3), strides=(2,), pads=(1, 1), output_padding=(1,), bias=True),
    "1d-groups-dilated": dict(x=(1, 4, 6), w=(4, 3, 3), groups=2, dilations=(2,)),
    "1d-pad-beyond-kernel": dict(x=(1, 2, 5), w=(2, 3, 2), strides=(3,), pads=(2, 2)),
    "2d-stride-outpad": dict(
        x=(1, 3, 5, 6), w=(3, 4, 3, 3), strides=(2, 2), pads=(1, 1, 1, 1), output_padding=(1, 0), bias=True
    ),
    "2d-stride-gt-kernel": dict(x=(2, 2, 4, 3), w=(2, 5, 2, 2), strides=(3, 3)),
    "2d-groups-dilation": dict(
        x=(2, 6, 4, 5), w=(6, 2, 3, 3), groups=3, strides=(1, 2), dilations=(2, 1), output_padding=(1, 1), bias=True
    ),
    "2d-k4-s2-p1": dict(x=(1, 8, 7, 7), w=(8, 4, 4, 4), strides=(2, 2), pads=(1, 1, 1, 1)),
}


@pytest.mark.parametrize("case", TRANSPOSE_CASES.values(), ids=TRANSPOSE_CASES.keys())
def test_conv_transpose_matches_torch(case, rng):
    k = len(case["x"]) - 2
    x, w = randn(rng, *case["x"]), randn(rng, *case["w"], scale=0.3)
    groups = case.get("groups", 1)
    b = randn(rng, case["w"][1] * groups) if case.get("bias") else None
    attrs = {key: case[key] for key in ("strides", "pads", "dilations", "groups", "output_padding") if key in case}
    ours = run_op("conv_transpose", *[a for a in (x, w, b) if a is not None], **attrs)
    pads = case.get("pads", (0,) * 2 * k)
    assert pads[:k] == pads[k:], "torch only takes symmetric pads"
    ref = (F.conv_transpose1d, F.conv_transpose2d)[k - 1](
        t(x),
        t(w),
        t(b),
        stride=case.get("strides", 1),
        padding=pads[:k],
        output_padding=case.get("output_padding", 0),
        groups=groups,
        dilation=case.get("dilations", 1),
    )
    close(ours, ref)


def test_conv_transpose_asymmetric_pads_crop_the_full_output(rng):
    x, w = randn(rng, 1, 3, 5, 6), randn(rng, 3, 2, 3, 3)
    ours = run_op("conv_transpose", x, w, strides=(2, 2), pads=(0, 1, 2, 0))
    full = F.conv_transpose2d(t(x), t(w), stride=2)
    close(ours, full[:, :, 0 : full.shape[2] - 2, 1:])


# ---------------------------------------------------------------------------
# pools

MAX_POOL_CASES = {
    "1d-ceil": dict(x=(2, 3, 10), kernel=(3,), strides=(2,), pads=(0, 0), ceil_mode=True),
    "1d-ceil-drops-window-in-pad": dict(x=(1, 2, 4), kernel=(2,), strides=(3,), pads=(1, 1), ceil_mode=True),
    "1d-floor-pad": dict(x=(1, 2, 11), kernel=(4,), strides=(3,), pads=(2, 2)),
    "2d-resnet": dict(x=(1, 4, 16, 16), kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
    "2d-ceil-pad": dict(x=(2, 3, 9, 10), kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True),
    "2d-dilated": dict(x=(1, 2, 12, 11), kernel=(3, 2), strides=(1, 2), dilations=(2, 3), pads=(1, 1, 1, 1)),
    "2d-rect-ceil": dict(x=(1, 3, 7, 8), kernel=(2, 3), strides=(2, 1), pads=(1, 0, 1, 0), ceil_mode=True),
    "3d-ceil": dict(x=(1, 2, 5, 6, 7), kernel=(2, 2, 2), strides=(2, 2, 2), ceil_mode=True),
    "3d-pad-dilated": dict(
        x=(2, 2, 6, 6, 6), kernel=(3, 3, 3), strides=(2, 1, 2), pads=(1, 1, 1, 1, 1, 1), dilations=(1, 2, 1)
    ),
}


@pytest.mark.parametrize("case", MAX_POOL_CASES.values(), ids=MAX_POOL_CASES.keys())
def test_max_pool_matches_torch(case, rng):
    k = len(case["kernel"])
    x = randn(rng, *case["x"])
    attrs = {key: case[key] for key in ("kernel", "strides", "pads", "dilations", "ceil_mode") if key in case}
    ours = run_op("max_pool", x, **attrs)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[k - 1]
    pads = case.get("pads", (0,) * 2 * k)
    ref = pool(
        t(x),
        case["kernel"],
        stride=case.get("strides", 1),
        padding=pads[:k],
        dilation=case.get("dilations", 1),
        ceil_mode=case.get("ceil_mode", False),
    )
    close(ours, ref, rtol=0, atol=0)


def test_max_pool_asymmetric_pads_never_pick_padding(rng):
    x = randn(rng, 1, 3, 8, 9) - 10.0  # all negative: a zero pad would win every edge window
    ours = run_op("max_pool", x, kernel=(3, 3), strides=(2, 2), pads=(0, 2, 1, 0))
    ref = F.max_pool2d(F.pad(t(x), [2, 0, 0, 1], value=-np.inf), 3, stride=2)
    close(ours, ref, rtol=0, atol=0)
    assert ours.max() < -5


def test_max_pool_on_int8(rng):
    x = rng.integers(-128, 127, size=(1, 2, 6, 6), dtype=np.int8)
    ours = run_op("max_pool", x, kernel=(2, 2), strides=(2, 2), pads=(1, 1, 1, 1))
    ref = F.max_pool2d(t(x.astype(np.float32)), 2, stride=2, padding=1)
    np.testing.assert_array_equal(ours, ref.numpy().astype(np.int8))


AVG_POOL_CASES = {
    "1d-ceil-pad": dict(x=(2, 3, 10), kernel=(3,), strides=(2,), pads=(1, 1), ceil_mode=True),
    "1d-floor": dict(x=(1, 2, 11), kernel=(4,), strides=(3,), pads=(2, 2)),
    "2d-ceil-pad": dict(x=(2, 3, 9, 10), kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True),
    "2d-rect": dict(x=(1, 4, 8, 7), kernel=(2, 3), strides=(2, 1), pads=(1, 1, 1, 1)),
    "2d-no-pad": dict(x=(1, 4, 7, 7), kernel=(7, 7)),
    "3d-ceil-pad": dict(
        x=(1, 2, 5, 6, 7), kernel=(2, 3, 2), strides=(2, 2, 2), pads=(1, 1, 0, 1, 1, 0), ceil_mode=True
    ),
}


@pytest.mark.parametrize("include_pad", [False, True], ids=["exclude-pad", "include-pad"])
@pytest.mark.parametrize("case", AVG_POOL_CASES.values(), ids=AVG_POOL_CASES.keys())
def test_avg_pool_matches_torch(case, include_pad, rng):
    k = len(case["kernel"])
    x = randn(rng, *case["x"])
    attrs = {key: case[key] for key in ("kernel", "strides", "pads", "ceil_mode") if key in case}
    ours = run_op("avg_pool", x, count_include_pad=include_pad, **attrs)
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[k - 1]
    pads = case.get("pads", (0,) * 2 * k)
    ref = pool(
        t(x),
        case["kernel"],
        stride=case.get("strides", 1),
        padding=pads[:k],
        ceil_mode=case.get("ceil_mode", False),
        count_include_pad=include_pad,
    )
    close(ours, ref)


@pytest.mark.parametrize("include_pad", [False, True], ids=["exclude-pad", "include-pad"])
def test_avg_pool_asymmetric_pads(include_pad, rng):
    x = randn(rng, 2, 3, 7, 8)
    ours = run_op("avg_pool", x, kernel=(3, 3), strides=(2, 2), pads=(1, 0, 0, 2), count_include_pad=include_pad)
    pads = [0, 2, 1, 0]
    sums = F.avg_pool2d(F.pad(t(x), pads), 3, stride=2, divisor_override=1)
    counts = F.avg_pool2d(F.pad(torch.ones_like(t(x)), pads, value=0.0), 3, stride=2, divisor_override=1)
    close(ours, sums / (9.0 if include_pad else counts))


def test_global_pools(rng):
    x = randn(rng, 2, 5, 6, 7)
    close(run_op("global_avg_pool", x), t(x).mean(dim=(2, 3), keepdim=True))
    close(run_op("global_max_pool", x), t(x).amax(dim=(2, 3), keepdim=True), rtol=0, atol=0)
    x3 = randn(rng, 1, 3, 4, 5, 6)
    close(run_op("global_avg_pool", x3), F.adaptive_avg_pool3d(t(x3), 1))
    assert infer("global_max_pool", TensorType("f32", ("N", 8, "H", "W"))).shape == ("N", 8, 1, 1)


# ---------------------------------------------------------------------------
# normalizations


@pytest.mark.parametrize("shape", [(3, 5), (2, 5, 4, 4), (2, 5, 3, 2, 3)], ids=["2d", "4d", "5d"])
def test_batch_norm_matches_torch(shape, rng):
    c = shape[1]
    x, scale, bias, mean = randn(rng, *shape), randn(rng, c), randn(rng, c), randn(rng, c)
    var = rng.uniform(0.5, 2.0, c).astype(np.float32)
    ours = run_op("batch_norm", x, scale, bias, mean, var, epsilon=1e-3)
    ref = F.batch_norm(t(x), t(mean), t(var), t(scale), t(bias), training=False, eps=1e-3)
    close(ours, ref)


@pytest.mark.parametrize("shape", [(2, 3, 9), (2, 4, 5, 6), (1, 3, 3, 4, 5)], ids=["1d", "2d", "3d"])
def test_instance_norm_matches_torch(shape, rng):
    c = shape[1]
    x, scale, bias = randn(rng, *shape, scale=3.0) + 1.0, randn(rng, c), randn(rng, c)
    ours = run_op("instance_norm", x, scale, bias, epsilon=1e-5)
    close(ours, F.instance_norm(t(x), weight=t(scale), bias=t(bias), eps=1e-5))


@pytest.mark.parametrize("shape, groups", [((2, 6, 9), 3), ((2, 4, 5, 6), 1), ((1, 6, 3, 4, 5), 6)],
                         ids=["1d", "2d-one-group", "3d-per-channel"])
def test_group_norm_matches_torch(shape, groups, rng):
    x, s, b = randn(rng, *shape), randn(rng, shape[1]), randn(rng, shape[1])
    close(run_op("group_norm", x, s, b, groups=groups, epsilon=1e-3), F.group_norm(t(x), groups, t(s), t(b), 1e-3))


def test_group_norm_rejects_groups_that_do_not_divide_the_channels():
    with pytest.raises(OpError, match="groups=4 must be >= 1 and divide the 6 channels"):
        infer("group_norm", TensorType("f32", (1, 6, 4)), TensorType("f32", (6,)), TensorType("f32", (6,)), groups=4)


# torch interpolate -> (resize mode, coordinate mode, nearest mode); torch's own sampling rules
INTERPOLATIONS = {
    "nearest": ("nearest", "asymmetric", "floor", None),
    "nearest-exact": ("nearest", "half_pixel", "round_prefer_ceil", None),
    "linear": ("linear", "half_pixel", "floor", False),
    "linear-align-corners": ("linear", "align_corners", "floor", True),
    "bicubic": ("cubic", "half_pixel", "floor", False),
    "bicubic-align-corners": ("cubic", "align_corners", "floor", True),
}


RESIZE_SHAPES = {"1d": ((2, 3, 7), (12,)), "2d": ((2, 3, 5, 6), (9, 4)), "3d": ((1, 2, 3, 4, 5), (5, 2, 8))}


@pytest.mark.parametrize("name, dims", [(name, dims) for name in INTERPOLATIONS for dims in RESIZE_SHAPES
                                        if dims == "2d" or "bicubic" not in name])  # torch's bicubic is 2-d only
def test_resize_matches_torch_interpolate(name, dims, rng):
    mode, coordinate, rounding, align_corners = INTERPOLATIONS[name]
    shape, sizes = RESIZE_SHAPES[dims]
    rank = len(sizes)
    torch_mode = {"nearest": name, "linear": ("linear", "bilinear", "trilinear")[rank - 1], "cubic": "bicubic"}[mode]
    x = randn(rng, *shape)
    ours = run_op("resize", x, sizes=sizes, mode=mode, coordinate_mode=coordinate, nearest_mode=rounding)
    close(ours, F.interpolate(t(x), size=sizes, mode=torch_mode, align_corners=align_corners))


def test_resize_samples_at_the_given_scale():
    # torch samples at output / scale_factor when a scale is given: 7 * 1.6 -> 11 outputs, not 7 * 11/7
    x = np.random.default_rng(0).standard_normal((1, 2, 7)).astype(np.float32)
    ours = run_op("resize", x, sizes=(11,), scales=(1.6,), mode="linear")
    close(ours, F.interpolate(t(x), scale_factor=1.6, mode="linear"))
    with pytest.raises(AssertionError):
        close(run_op("resize", x, sizes=(11,), mode="linear"), F.interpolate(t(x), scale_factor=1.6, mode="linear"))


def test_resize_rejects_a_symbolic_spatial_dim():
    with pytest.raises(OpError, match="spatial dim 2 of f32\\[1,3,H,4\\] is symbolic"):
        infer("resize", TensorType("f32", (1, 3, "H", 4)), sizes=(2, 2))


@pytest.mark.parametrize("axis", [-1, -2, 2])
@pytest.mark.parametrize("affine", ["none", "scale", "scale+bias"])
def test_layer_norm_matches_torch(axis, affine, rng):
    x = randn(rng, 2, 3, 4, 5, scale=2.0) + 0.5
    tail = x.shape[axis:]
    scale = randn(rng, *tail) if affine != "none" else None
    bias = randn(rng, *tail) if affine == "scale+bias" else None
    ours = run_op("layer_norm", *[a for a in (x, scale, bias) if a is not None], axis=axis, epsilon=1e-5)
    close(ours, F.layer_norm(t(x), tail, t(scale), t(bias), eps=1e-5))


# ---------------------------------------------------------------------------
# softmax


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("op, ref_fn", [("softmax", F.softmax), ("log_softmax", F.log_softmax)])
def test_softmax_matches_torch(op, ref_fn, axis, rng):
    x = randn(rng, 3, 4, 5, scale=30.0)  # large logits: exp would overflow without the max shift
    close(run_op(op, x, axis=axis), ref_fn(t(x), dim=axis))


# ---------------------------------------------------------------------------
# matmul and linear

MATMUL_SHAPES = [
    ((4,), (4,)),
    ((4,), (4, 3)),
    ((2, 4), (4,)),
    ((3, 4), (4, 5)),
    ((2, 3, 4), (4, 5)),
    ((2, 1, 3, 4), (5, 4, 6)),
    ((4,), (2, 4, 3)),
    ((2, 3, 4), (4,)),
]


@pytest.mark.parametrize("a_shape, b_shape", MATMUL_SHAPES, ids=[f"{a}@{b}" for a, b in MATMUL_SHAPES])
def test_matmul_matches_torch(a_shape, b_shape, rng):
    a, b = randn(rng, *a_shape), randn(rng, *b_shape)
    close(run_op("matmul", a, b), torch.matmul(t(a), t(b)))


def test_matmul_keeps_symbolic_batch_dims():
    f32 = lambda *s: TensorType("f32", s)  # noqa: E731
    assert infer("matmul", f32("N", 5, 4), f32(4, 3)).shape == ("N", 5, 3)
    assert infer("matmul", f32("B", 1, 5, 4), f32(7, 4, 3)).shape == ("B", 7, 5, 3)
    assert infer("matmul", f32("N", "T", 8), f32(8,)).shape == ("N", "T")


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("bias_shape", [(6,), (3, 6), (1, 6), None], ids=["b[out]", "b[M,out]", "b[1,out]", "nobias"])
def test_linear_gemm_formula(trans_a, trans_b, bias_shape, rng):
    m, k, n = 3, 4, 6
    x = randn(rng, *((k, m) if trans_a else (m, k)))
    w = randn(rng, *((n, k) if trans_b else (k, n)))
    b = randn(rng, *bias_shape) if bias_shape else None
    operands = [a for a in (x, w, b) if a is not None]
    ours = run_op("linear", *operands, trans_a=trans_a, trans_b=trans_b, alpha=0.5, beta=2.0)
    ref = 0.5 * (x.T if trans_a else x).astype(np.float64) @ (w.T if trans_b else w)
    if b is not None:
        ref = ref + 2.0 * b
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape", [(2, 5, 4), (4,), ("N", 7, 4)], ids=["3d", "1d", "symbolic"])
def test_linear_batched_input_matches_torch(shape, rng):
    w, b = randn(rng, 6, 4), randn(rng, 6)
    concrete = tuple(3 if d == "N" else d for d in shape)
    x = randn(rng, *concrete)
    g = Graph("fc")
    xv = g.add_input("x", TensorType("f32", shape))
    y = g.call("linear", xv, g.const(w), g.const(b))
    assert y.type.shape == shape[:-1] + (6,)
    g.set_outputs([y])
    close(g.run(x)[0], F.linear(t(x), t(w), t(b)))


# ---------------------------------------------------------------------------
# A whole graph with a symbolic batch


def test_symbolic_batch_network(rng):
    w1, b1 = randn(rng, 8, 3, 3, 3, scale=0.3), randn(rng, 8)
    gamma, beta, mean = randn(rng, 8), randn(rng, 8), randn(rng, 8)
    var = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    w2 = randn(rng, 8, 4, 2, 2, scale=0.3)  # conv_transpose [C_in, C_out, k, k]
    g = Graph("net")
    x = g.add_input("x", TensorType("f32", ("N", 3, 16, 16)))
    h = g.call("conv", x, g.const(w1), g.const(b1), strides=(2, 2), pads=(1, 1, 1, 1))
    h = g.call("batch_norm", h, *(g.const(a) for a in (gamma, beta, mean, var)))
    h = g.call("max_pool", h, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True)
    h = g.call("conv_transpose", h, g.const(w2), strides=(2, 2))
    h = g.call("avg_pool", h, kernel=(2, 2), strides=(2, 2))
    pooled = g.call("global_avg_pool", h)
    y = g.call("softmax", pooled, axis=1)
    g.set_outputs([h, y])
    assert [str(v.type) for v in g.outputs] == ["f32[N,4,5,5]", "f32[N,4,1,1]"]
    for batch in (1, 3):
        xs = randn(rng, batch, 3, 16, 16)
        ref = F.conv2d(t(xs), t(w1), t(b1), stride=2, padding=1)
        ref = F.batch_norm(ref, t(mean), t(var), t(gamma), t(beta), training=False)
        ref = F.max_pool2d(ref, 3, stride=2, padding=1, ceil_mode=True)
        ref = F.avg_pool2d(F.conv_transpose2d(ref, t(w2), stride=2), 2)
        h_out, y_out = g.run(xs)
        close(h_out, ref)
        close(y_out, F.softmax(ref.mean(dim=(2, 3), keepdim=True), dim=1))


# ---------------------------------------------------------------------------
# Errors: every user mistake is an OpError naming the op and the problem


def f32(*shape) -> TensorType:
    return TensorType("f32", shape)


ERROR_CASES = {
    "conv-channel-mismatch": ("conv", [f32(1, 3, 8, 8), f32(4, 2, 3, 3)], {}, "channel mismatch"),
    "conv-groups-divide": ("conv", [f32(1, 4, 8, 8), f32(6, 2, 3, 3)], {"groups": 3}, "must divide"),
    "conv-kernel-too-large": (
        "conv", [f32(1, 3, 4, 4), f32(2, 3, 7, 7)], {"pads": (1, 1, 1, 1)}, "larger than the padded input"
    ),
    "conv-rank-mismatch": ("conv", [f32(1, 3, 8, 8), f32(4, 3, 3)], {}, "same rank"),
    "conv-rank-too-high": ("conv", [f32(1, 1, 2, 2, 2, 2), f32(1, 1, 1, 1, 1, 1)], {}, "rank 3 to 5"),
    "conv-symbolic-spatial": ("conv", [f32("N", 3, "H", 8), f32(4, 3, 3, 3)], {}, "symbolic"),
    "conv-symbolic-channels": ("conv", [f32("N", "C", 8, 8), f32(4, 3, 3, 3)], {}, "channel dim 1"),
    "conv-empty-kernel": ("conv", [f32(1, 3, 8, 8), f32(4, 3, 0, 3)], {}, "non-empty"),
    "conv-pads-length": ("conv", [f32(1, 3, 8, 8), f32(4, 3, 3, 3)], {"pads": (1, 1)}, "expected 4"),
    "conv-zero-stride": ("conv", [f32(1, 3, 8, 8), f32(4, 3, 3, 3)], {"strides": (0, 1)}, "strides"),
    "conv-bias-length": ("conv", [f32(1, 3, 8, 8), f32(4, 3, 3, 3), f32(5)], {}, "bias must be [4]"),
    "conv-dtype-mismatch": ("conv", [f32(1, 3, 8, 8), TensorType("f16", (4, 3, 3, 3))], {}, "dtypes must match"),
    "conv_transpose-channel-mismatch": ("conv_transpose", [f32(1, 3, 4, 4), f32(2, 3, 3, 3)], {}, "channel mismatch"),
    "conv_transpose-output-padding": (
        "conv_transpose",
        [f32(1, 3, 4, 4), f32(3, 2, 3, 3)],
        {"strides": (2, 2), "output_padding": (2, 0)},
        "output_padding",
    ),
    "conv_transpose-3d": ("conv_transpose", [f32(1, 3, 4, 4, 4), f32(3, 2, 3, 3, 3)], {}, "rank 3 to 4"),
    "max_pool-rank-mismatch": ("max_pool", [f32(1, 3, 8)], {"kernel": (3, 3)}, "rank 4"),
    "max_pool-kernel-too-large": ("max_pool", [f32(1, 3, 4, 4)], {"kernel": (5, 5)}, "larger than the padded input"),
    "avg_pool-int": ("avg_pool", [TensorType("i8", (1, 3, 4, 4))], {"kernel": (2, 2)}, "float"),
    "matmul-contraction": ("matmul", [f32(2, 3), f32(4, 5)], {}, "contraction dims differ"),
    "matmul-batch": ("matmul", [f32(2, 3, 4), f32(3, 4, 5)], {}, "do not broadcast"),
    "linear-features": ("linear", [f32("N", 5), f32(6, 4)], {}, "input features"),
    "linear-trans_a-rank": ("linear", [f32(2, 3, 4), f32(6, 4)], {"trans_a": True}, "2-d"),
    "linear-bias": ("linear", [f32(3, 4), f32(6, 4), f32(5)], {}, "does not broadcast"),
    "batch_norm-param": ("batch_norm", [f32(1, 3, 4, 4), f32(3), f32(3), f32(4), f32(3)], {}, "mean must be [3]"),
    "instance_norm-rank": ("instance_norm", [f32(2, 3), f32(3), f32(3)], {}, "[N, C, *spatial]"),
    "layer_norm-scale": ("layer_norm", [f32(2, 3, 4), f32(3, 4)], {"axis": -1}, "normalized shape"),
    "softmax-axis": ("softmax", [f32(2, 3)], {"axis": 2}, "out of range"),
}


@pytest.mark.parametrize("op, types, attrs, message", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_bad_inputs_raise_op_error(op, types, attrs, message):
    with pytest.raises(OpError, match=rf"{op}: .*{re.escape(message)}"):
        infer(op, *types, **attrs)


def test_missing_kernel_is_op_error():
    with pytest.raises(OpError, match="kernel"):
        infer("max_pool", f32(1, 3, 8, 8))


# ---------------------------------------------------------------------------
# FLOP counts


def flops(op: str, *types: TensorType, **attrs) -> int:
    g = Graph(op)
    node = g.add_node(op, [g.add_input(f"in{i}", ty) for i, ty in enumerate(types)], attrs)
    return node.opdef.flops(types, [v.type for v in node.outputs], node.attrs)


def test_flop_counts():
    # out [1,4,8,8]: 256 outputs x 27 MACs each, plus one bias add per output
    assert flops("conv", f32(1, 3, 8, 8), f32(4, 3, 3, 3), f32(4), pads=(1, 1, 1, 1)) == 2 * 256 * 27 + 256
    # depthwise: each output reads one channel
    assert flops("conv", f32(1, 8, 8, 8), f32(8, 1, 3, 3), groups=8, pads=(1, 1, 1, 1)) == 2 * 512 * 9
    # each input element scatters into C_out/groups * k*k outputs
    assert flops("conv_transpose", f32(1, 4, 5, 5), f32(4, 3, 2, 2), strides=(2, 2)) == 2 * 100 * 12
    assert flops("matmul", f32("N", 3, 4), f32(4, 5)) == 2 * 3 * 5 * 4  # N counts as 1
    assert flops("linear", f32(2, 4), f32(6, 4), f32(6)) == 2 * 2 * 6 * 4 + 12
    assert flops("max_pool", f32(1, 2, 8, 8), kernel=(2, 2), strides=(2, 2)) == 32 * 4
    assert flops("softmax", f32(2, 10)) == 5 * 20


def test_categories_follow_docs():
    compute = ["matmul", "linear", "conv", "conv_transpose", "batch_norm", "instance_norm", "layer_norm",
               "max_pool", "avg_pool", "softmax", "log_softmax"]  # fmt: skip
    assert {get_op(name).category for name in compute} == {"compute"}
    assert {get_op(name).category for name in ("global_avg_pool", "global_max_pool")} == {"reduction"}


# ---------------------------------------------------------------------------
# Timing sanity (printed, not asserted): the reference must run real models


def test_conv_timing_sanity(rng):
    conv = get_op("conv").impl
    stem = (randn(rng, 1, 3, 224, 224), randn(rng, 64, 3, 7, 7), dict(strides=(2, 2), pads=(3,) * 4))
    block = (randn(rng, 1, 64, 56, 56), randn(rng, 64, 64, 3, 3), dict(strides=(), pads=(1,) * 4))
    for label, (x, w, attrs) in (("224x224 3->64 7x7/2", stem), ("56x56 64->64 3x3", block)):
        conv(x, w, dilations=(), groups=1, **attrs)  # warm up the BLAS threads
        start = time.perf_counter()
        y = conv(x, w, dilations=(), groups=1, **attrs)
        print(f"conv {label}: {(time.perf_counter() - start) * 1e3:.1f} ms -> {y.shape}")
        assert y.dtype == np.float32
