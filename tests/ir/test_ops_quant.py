"""quantize / dequantize against torch's quantized tensors, plus int4, log2 and the parameter checks."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch

from slimgraph.errors import OpError
from slimgraph.ir import Graph, TensorType, get_op, parse
from slimgraph.ir.ops.quant import quant_range
from tests.ir.test_ops_elementwise import run_op

pytestmark = pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")

RNG = np.random.default_rng(7)
TORCH_DTYPES = {"i8": torch.qint8, "u8": torch.quint8, "i32": torch.qint32}


def f32(v: float) -> float:
    """A float32-representable Python float, as scales from calibration are."""
    return float(np.float32(v))


def tt(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize(
    "dtype,scale,zero_point",
    [("i8", 0.0173, 0), ("i8", 0.05, -7), ("u8", 0.021, 128), ("u8", 0.3, 0), ("i32", 1e-4, 12)],
)
def test_per_tensor_matches_torch(dtype, scale, zero_point) -> None:
    scale = f32(scale)
    x = (RNG.standard_normal((4, 3, 5)) * 3).astype(np.float32)  # wide enough to saturate i8 and u8
    q = run_op("quantize", x, scale=(scale,), zero_point=(zero_point,), dtype=dtype)
    ref = torch.quantize_per_tensor(tt(x), scale, zero_point, TORCH_DTYPES[dtype])
    np.testing.assert_array_equal(q, ref.int_repr().numpy())
    y = run_op("dequantize", q, scale=(scale,), zero_point=(zero_point,))
    np.testing.assert_array_equal(y, ref.dequantize().numpy())


@pytest.mark.parametrize("dtype", ["i8", "u8", "i32"])
@pytest.mark.parametrize("axis,torch_axis", [(0, 0), (1, 1), (-3, 1), (-1, 3)])
def test_per_axis_matches_torch(dtype, axis, torch_axis) -> None:
    x = (RNG.standard_normal((3, 4, 2, 5)) * 2).astype(np.float32)
    n = x.shape[torch_axis]
    scales = RNG.uniform(0.005, 0.05, n).astype(np.float32)
    lo, hi = {"i8": (-20, 20), "u8": (100, 150), "i32": (-1000, 1000)}[dtype]
    zps = RNG.integers(lo, hi, n)
    attrs = dict(scale=tuple(scales.tolist()), zero_point=tuple(zps.tolist()), axis=axis)
    q = run_op("quantize", x, dtype=dtype, **attrs)
    ref = torch.quantize_per_channel(tt(x), tt(scales.astype(np.float64)), tt(zps), torch_axis, TORCH_DTYPES[dtype])
    np.testing.assert_array_equal(q, ref.int_repr().numpy())
    np.testing.assert_array_equal(run_op("dequantize", q, **attrs), ref.dequantize().numpy())


def test_rounds_half_to_even_like_torch() -> None:
    halves = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, -3.5], np.float32)
    x = halves * 0.25
    q = run_op("quantize", x, scale=(0.25,), dtype="i8")
    np.testing.assert_array_equal(q, [0, 2, 2, 4, 0, -2, -2, -4])
    np.testing.assert_array_equal(q, torch.quantize_per_tensor(tt(x), 0.25, 0, torch.qint8).int_repr().numpy())
    # The zero point is added after rounding, so it does not move the tie.
    shifted = run_op("quantize", x, scale=(0.25,), zero_point=(3,), dtype="u8")
    np.testing.assert_array_equal(shifted, [3, 5, 5, 7, 3, 1, 1, 0])


@pytest.mark.parametrize(
    "dtype,zero_point,expected",
    [
        ("i8", 0, [127, -128, 0, 127, -128, 127, -128]),
        ("i8", -3, [127, -128, -3, 127, -128, 127, -128]),
        ("u8", 128, [255, 0, 128, 255, 0, 255, 0]),
        ("i4", 0, [7, -8, 0, 7, -8, 7, -8]),
        ("i4", 2, [7, -8, 2, 7, -8, 7, -8]),
        ("i32", 0, [2**31 - 1, -(2**31), 0, 2**31 - 1, -(2**31), 1000, -1000]),
    ],
)
def test_saturates_and_maps_nan_to_the_zero_point(dtype, zero_point, expected) -> None:
    x = np.array([np.inf, -np.inf, np.nan, 1e30, -1e30, 1000.0, -1000.0], np.float32)
    q = run_op("quantize", x, scale=(1.0,), zero_point=(zero_point,), dtype=dtype)
    assert q.dtype == TensorType(dtype, ()).dtype.numpy
    np.testing.assert_array_equal(q.astype(np.int64), expected)


def test_int4_range_and_round_trip() -> None:
    assert quant_range("i4") == (-8, 7) and quant_range("u8") == (0, 255)
    x = np.linspace(-1.2, 1.2, 49, dtype=np.float32).reshape(7, 7)
    scale, zp = f32(0.1), -1
    q = run_op("quantize", x, scale=(scale,), zero_point=(zp,), dtype="i4")
    assert q.dtype == ml_dtypes.int4
    expected = np.clip(np.rint(x / np.float32(scale)) + zp, -8, 7)
    np.testing.assert_array_equal(q.astype(np.int64), expected)
    assert q.astype(np.int64).min() == -8 and q.astype(np.int64).max() == 7
    y = run_op("dequantize", q, scale=(scale,), zero_point=(zp,))
    inside = (x >= (-8 - zp) * scale) & (x <= (7 - zp) * scale)
    assert np.abs(y - x)[inside].max() <= scale / 2 + 1e-7
    np.testing.assert_array_equal(y, ((expected - zp) * np.float32(scale)).astype(np.float32))


@pytest.mark.parametrize("dtype", ["i8", "u8", "i4"])
def test_linear_round_trip_error_is_at_most_half_a_step(dtype) -> None:
    lo, hi = quant_range(dtype)
    scales = (0.02, 0.07, 0.5)
    zps = (0, (lo + hi) // 2, hi - 1)
    # Values inside each channel's representable range.
    x = np.stack([RNG.uniform((lo - z) * s, (hi - z) * s, (3, 10)) for s, z in zip(scales, zps)], 1).astype(np.float32)
    attrs = dict(scale=scales, zero_point=zps, axis=1)
    y = run_op("dequantize", run_op("quantize", x, dtype=dtype, **attrs), **attrs)
    assert (np.abs(y - x) <= np.array(scales).reshape(1, 3, 1) / 2 * (1 + 1e-6)).all()


def test_symbolic_batch_per_tensor_and_per_axis() -> None:
    g = Graph("q")
    x = g.add_input("x", TensorType("f32", ("N", 4)))
    scales, zps = (0.01, 0.02, 0.03, 0.04), (0, 1, -1, 2)
    per_tensor = g.call("quantize", x, scale=(0.05,), zero_point=(3,), dtype="u8")
    per_axis = g.call("quantize", x, scale=scales, zero_point=zps, axis=-1)
    back = g.call("dequantize", per_axis, scale=scales, zero_point=zps, axis=1, to="f16")
    assert per_tensor.type == TensorType("u8", ("N", 4)) and per_axis.type == TensorType("i8", ("N", 4))
    assert back.type == TensorType("f16", ("N", 4))
    g.set_outputs([per_tensor, per_axis, back])
    for batch in (1, 6):
        data = RNG.standard_normal((batch, 4)).astype(np.float32)
        pt, pa, bk = g.run(data)
        ref = torch.quantize_per_tensor(tt(data), 0.05, 3, torch.quint8)
        np.testing.assert_array_equal(pt, ref.int_repr().numpy())
        ref = torch.quantize_per_channel(tt(data), tt(np.array(scales)), tt(np.array(zps)), 1, torch.qint8)
        np.testing.assert_array_equal(pa, ref.int_repr().numpy())
        np.testing.assert_array_equal(bk, ref.dequantize().numpy().astype(np.float16))


# ---------------------------------------------------------------------------
# log2


def log2_codes(x: np.ndarray, scale: float, min_exp: int, max_exp: int) -> np.ndarray:
    """docs/ops.md's log2 formula, one element at a time with Python's math."""
    out = []
    for v in x.ravel().tolist():
        if v == 0 or math.isnan(v):
            out.append(0)
            continue
        e = min(max(round(math.log2(abs(v) / scale)), min_exp), max_exp) if math.isfinite(v) else max_exp
        out.append(int(math.copysign(e - min_exp + 1, v)))
    return np.array(out).reshape(x.shape)


@pytest.mark.parametrize("dtype,min_exp,max_exp", [("i8", -8, 0), ("i4", -6, 0), ("i8", -3, 4), ("i32", -20, 10)])
def test_log2_powers_of_two_round_trip_exactly(dtype, min_exp, max_exp) -> None:
    scale = f32(0.1)
    exps = np.arange(min_exp, max_exp + 1)
    powers = (np.float32(scale) * np.exp2(exps)).astype(np.float32)
    x = np.concatenate([powers, -powers, [0.0]]).astype(np.float32)
    attrs = dict(scale=(scale,), scheme="log2", min_exp=min_exp, max_exp=max_exp)
    q = run_op("quantize", x, dtype=dtype, **attrs)
    codes = np.concatenate([exps - min_exp + 1, -(exps - min_exp + 1), [0]])
    np.testing.assert_array_equal(q.astype(np.int64), codes)
    np.testing.assert_array_equal(run_op("dequantize", q, **attrs), x)


def test_log2_clamps_exponents_and_rounds_in_the_log_domain() -> None:
    s = 0.5
    attrs = dict(scale=(s,), scheme="log2", min_exp=-4, max_exp=1)
    x = np.array([s * 2**5, -s * 2**9, s * 2**-7, -s * 2**-30, s * 2**0.4, s * 2**0.6, -s * 2**-1.45, 1e-45,
                  np.inf, -np.inf, np.nan], np.float32)
    q = run_op("quantize", x, dtype="i8", **attrs)
    #        2^1 clamp, -2^1 clamp, 2^-4 clamp, -2^-4 clamp, 2^0, 2^1, -2^-1, 2^-4, inf->2^1, -inf, nan->0
    np.testing.assert_array_equal(q, [6, -6, 1, -1, 5, 6, -4, 1, 6, -6, 0])
    y = run_op("dequantize", q, **attrs)
    np.testing.assert_array_equal(y, np.float32([1, -1, s / 16, -s / 16, s, 1, -s / 2, s / 16, 1, -1, 0]))


def test_log2_matches_the_formula_on_random_data_per_axis() -> None:
    x = (RNG.standard_normal((2, 3, 16)) * RNG.choice([1e-3, 1.0, 50.0], (2, 3, 16))).astype(np.float32)
    x[0, 0, :3] = 0
    scales = (0.05, 1.0, 3.0)
    q = run_op("quantize", x, scale=scales, zero_point=(0, 0, 0), axis=1, scheme="log2", min_exp=-7, max_exp=3)
    for c, s in enumerate(scales):
        np.testing.assert_array_equal(q[:, c], log2_codes(x[:, c], s, -7, 3))
    y = run_op("dequantize", q, scale=scales, zero_point=(0, 0, 0), axis=1, scheme="log2", min_exp=-7, max_exp=3)
    mags = np.abs(q.astype(np.int64))
    expected = np.sign(q) * np.array(scales).reshape(1, 3, 1) * np.exp2(mags - 1 - 7)
    np.testing.assert_array_equal(y, expected.astype(np.float32))
    assert (y[0, 0, :3] == 0).all()


# ---------------------------------------------------------------------------
# Type inference and parameter checks


def test_quant_ops_are_declared_as_documented() -> None:
    q, dq = get_op("quantize"), get_op("dequantize")
    assert [a.name for a in q.attrs] == ["scale", "zero_point", "axis", "dtype", "scheme", "min_exp", "max_exp"]
    assert [a.name for a in dq.attrs] == ["scale", "zero_point", "axis", "scheme", "min_exp", "max_exp", "to"]
    assert q.category == dq.category == "elementwise"
    t = TensorType("f32", ("N", 3, 8))
    outs = q.infer_types([t], q.normalize_attrs({"scale": (0.1,)}))
    assert outs == [TensorType("i8", ("N", 3, 8))] and q.flops([t], outs, {}) == 24


def test_quant_graphs_print_and_parse_back() -> None:
    g = Graph("qq")
    x = g.add_input("x", TensorType("f32", ("N", 3)))
    a = g.call("quantize", x, scale=(0.1, 0.2, 0.3), zero_point=(-1, 0, 1), dtype="i4")
    b = g.call("quantize", x, scale=(0.25,), scheme="log2", min_exp=-5, max_exp=1)
    g.set_outputs([
        g.call("dequantize", a, scale=(0.1, 0.2, 0.3), zero_point=(-1, 0, 1), to="bf16"),
        g.call("dequantize", b, scale=(0.25,), scheme="log2", min_exp=-5, max_exp=1),
    ])
    assert parse(str(g)) == g


F32 = TensorType("f32", (2, 4, 3))
BAD = [
    ("quantize", F32, {"scale": (0.1, 0.2, 0.3), "zero_point": (0, 0, 0)}, "3 scales do not match"),
    ("quantize", F32, {"scale": (0.1,) * 4, "zero_point": (0, 0)}, "4 scales need 4 zero points"),
    ("quantize", F32, {"scale": (0.1,) * 4}, "got zero_point=[0]"),
    ("quantize", F32, {"scale": ()}, "scale is empty"),
    ("quantize", F32, {"scale": (0.0,)}, "positive"),
    ("quantize", F32, {"scale": (-0.5,)}, "positive"),
    ("quantize", F32, {"scale": (math.inf,)}, "positive finite"),
    ("quantize", F32, {"scale": (1e-50,)}, "float32"),
    ("quantize", F32, {"scale": (0.1,), "zero_point": (8,), "dtype": "i4"}, "outside the i4 range -8..7"),
    ("quantize", F32, {"scale": (0.1,), "zero_point": (-1,), "dtype": "u8"}, "outside the u8 range 0..255"),
    ("quantize", F32, {"scale": (0.1,), "dtype": "f16"}, "not a quantized dtype"),
    ("quantize", F32, {"scale": (0.1,), "dtype": "i64"}, "not a quantized dtype"),
    ("quantize", TensorType("i32", (3,)), {"scale": (0.1,)}, "float"),
    ("quantize", TensorType("f32", ("N", 3)), {"scale": (0.1, 0.2), "zero_point": (0, 0), "axis": 0}, "static dim"),
    ("quantize", F32, {"scale": (0.1, 0.2), "zero_point": (0, 0), "axis": 3}, "out of range"),
    ("quantize", F32, {"scale": (0.1,), "scheme": "log2", "dtype": "u8"}, "signed"),
    ("quantize", F32, {"scale": (0.1,), "scheme": "log2", "dtype": "i4"}, "need codes up to +-9"),
    ("quantize", F32, {"scale": (0.1,), "scheme": "log2", "min_exp": 2, "max_exp": 1}, "min_exp 2 is above max_exp 1"),
    ("quantize", F32, {"scale": (0.1,), "scheme": "log2", "zero_point": (1,)}, "no zero point"),
    ("quantize", F32, {"scale": (0.1,), "scheme": "log10"}, "scheme"),
    ("dequantize", F32, {"scale": (0.1,)}, "must be quantized"),
    ("dequantize", TensorType("i8", (3,)), {"scale": (0.1,), "to": "i32"}, "not a float dtype"),
    ("dequantize", TensorType("i4", (3,)), {"scale": (0.1,), "zero_point": (-9,)}, "outside the i4 range"),
    ("dequantize", TensorType("i8", ("N", 4)), {"scale": (0.1,) * 4, "zero_point": (0,) * 4, "axis": 0}, "static dim"),
    ("dequantize", TensorType("u8", (3,)), {"scale": (0.1,), "scheme": "log2"}, "signed"),
]


@pytest.mark.parametrize("op,t,attrs,fragment", BAD, ids=[f"{b[0]}:{b[3]}" for b in BAD])
def test_bad_parameters_raise_op_errors(op, t, attrs, fragment) -> None:
    g = Graph("bad")
    x = g.add_input("x", t)
    with pytest.raises(OpError) as info:
        g.call(op, x, **attrs)
    assert fragment in str(info.value) and op in str(info.value), str(info.value)
