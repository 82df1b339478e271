"""The elementwise ops against PyTorch: values, broadcasting, symbolic batches, attributes, type errors."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slimgraph.errors import OpError
from slimgraph.ir import Graph, TensorType, all_ops, get_op, parse

RNG = np.random.default_rng(20240611)
SPECIALS = np.array([-3.0, 3.0, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.0, -0.0], np.float32)
NONFINITE = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-30], np.float32)


def run_op(op: str, *arrays: np.ndarray, **attrs) -> np.ndarray:
    """Run one op through a verified graph and check the result has the inferred type."""
    g = Graph(op)
    xs = [g.add_input(f"x{i}", TensorType.of_array(a)) for i, a in enumerate(arrays)]
    y = g.call(op, *xs, **attrs)
    g.set_outputs([y])
    g.verify()
    (out,) = g.run(*arrays)
    assert out.dtype == y.type.dtype.numpy and out.shape == y.type.shape
    return out


def tt(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def sample(domain: str, shape: tuple = (4, 25)) -> np.ndarray:
    n = math.prod(shape)
    if domain == "positive":
        x = RNG.uniform(0.05, 6.0, n)
    else:
        x = np.concatenate([SPECIALS, RNG.standard_normal(n) * 3])[:n]
    return x.astype(np.float32).reshape(shape)


def close(ours: np.ndarray, ref: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(ours, ref.numpy(), rtol=rtol, atol=atol, equal_nan=True)


# (op, attrs, reference, input domain)
UNARY = [
    ("neg", {}, torch.neg, "real"),
    ("abs", {}, torch.abs, "real"),
    ("sign", {}, torch.sign, "real"),
    ("relu", {}, F.relu, "real"),
    ("sqrt", {}, torch.sqrt, "positive"),
    ("exp", {}, torch.exp, "real"),
    ("log", {}, torch.log, "positive"),
    ("erf", {}, torch.erf, "real"),
    ("reciprocal", {}, torch.reciprocal, "positive"),
    ("floor", {}, torch.floor, "real"),
    ("ceil", {}, torch.ceil, "real"),
    ("round", {}, torch.round, "real"),
    ("sin", {}, torch.sin, "real"),
    ("cos", {}, torch.cos, "real"),
    ("sigmoid", {}, torch.sigmoid, "real"),
    ("tanh", {}, torch.tanh, "real"),
    ("silu", {}, F.silu, "real"),
    ("softplus", {}, F.softplus, "real"),
    ("mish", {}, F.mish, "real"),
    ("hardswish", {}, F.hardswish, "real"),
    ("leaky_relu", {}, F.leaky_relu, "real"),
    ("leaky_relu", {"alpha": 0.0}, lambda x: F.leaky_relu(x, 0.0), "real"),
    ("leaky_relu", {"alpha": -0.5}, lambda x: F.leaky_relu(x, -0.5), "real"),
    ("elu", {}, F.elu, "real"),
    ("elu", {"alpha": 0.5}, lambda x: F.elu(x, alpha=0.5), "real"),
    ("selu", {}, F.selu, "real"),
    ("gelu", {}, F.gelu, "real"),
    ("gelu", {"approximate": "tanh"}, lambda x: F.gelu(x, approximate="tanh"), "real"),
    ("hardsigmoid", {}, F.hardsigmoid, "real"),
    # ONNX HardSigmoid's default alpha; torch has no such op, so the formula itself.
    ("hardsigmoid", {"alpha": 0.2}, lambda x: torch.clamp(0.2 * x + 0.5, 0, 1), "real"),
    ("clip", {"min": 0.0, "max": 6.0}, F.relu6, "real"),
    ("clip", {"min": -0.5}, lambda x: torch.clamp(x, min=-0.5), "real"),
    ("clip", {"max": 0.25}, lambda x: torch.clamp(x, max=0.25), "real"),
    ("clip", {"min": 1.0, "max": -1.0}, lambda x: torch.clamp(x, 1.0, -1.0), "real"),
    ("clip", {}, lambda x: x, "real"),
]
UNARY_IDS = [f"{op}{attrs or ''}" for op, attrs, _, _ in UNARY]


@pytest.mark.parametrize("op,attrs,ref,domain", UNARY, ids=UNARY_IDS)
def test_unary_matches_torch(op, attrs, ref, domain) -> None:
    x = sample(domain)
    close(run_op(op, x, **attrs), ref(tt(x)))


# Where the ops deliberately differ from PyTorch on non-finite input.
NONFINITE_EXPECTED = {
    "sign": [np.nan, 1, -1, 0, 0, 1, -1, 1],  # ONNX/numpy keep NaN; torch.sign(nan) is 0
    "gelu": [np.nan, np.inf, np.nan, 0, 0, 1e30, -0.0, 5e-31],  # torch gives NaN at +inf; x * Phi(x) -> inf
}


@pytest.mark.parametrize("op,attrs,ref,domain", UNARY, ids=UNARY_IDS)
def test_unary_nan_and_inf(op, attrs, ref, domain) -> None:
    ours = run_op(op, NONFINITE, **attrs)
    if not attrs and op in NONFINITE_EXPECTED:
        np.testing.assert_allclose(ours, np.float32(NONFINITE_EXPECTED[op]), rtol=1e-6, equal_nan=True)
    else:
        close(ours, ref(tt(NONFINITE)))
    assert np.isnan(ours[0]), "NaN must propagate"


@pytest.mark.parametrize("op,attrs,ref,domain", UNARY, ids=UNARY_IDS)
def test_unary_symbolic_batch(op, attrs, ref, domain) -> None:
    g = Graph(op)
    x = g.add_input("x", TensorType("f32", ("N", 3, 5)))
    y = g.call(op, x, **attrs)
    assert y.type == TensorType("f32", ("N", 3, 5))
    g.set_outputs([y])
    for batch in (1, 4):
        data = sample(domain, (batch, 3, 5))
        (out,) = g.run(data)
        assert out.shape == (batch, 3, 5)
        close(out, ref(tt(data)))


@pytest.mark.parametrize("op,attrs,ref,domain", UNARY, ids=UNARY_IDS)
def test_unary_float64_matches_torch_in_float64(op, attrs, ref, domain) -> None:
    x = sample(domain).astype(np.float64) + RNG.standard_normal((4, 25)) * 1e-9  # digits f32 cannot hold
    out = run_op(op, x, **attrs)
    assert out.dtype == np.float64
    close(out, ref(tt(x)), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("op,ref", [("exp", torch.exp), ("gelu", F.gelu), ("sigmoid", torch.sigmoid), ("mish", F.mish)])
def test_half_precision_keeps_dtype(op, ref, dtype) -> None:
    np_dtype = TensorType(dtype, ()).dtype.numpy
    x = sample("real", (3, 8)).astype(np_dtype)
    out = run_op(op, x)
    assert out.dtype == np_dtype
    # Computed in float32 and rounded once, so within one ulp of the half dtype (2^-8 for bf16).
    expected = ref(tt(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(out.astype(np.float32), expected, rtol=2**-8, atol=1e-6)


def test_integer_unary_ops_match_torch() -> None:
    x = RNG.integers(-100, 100, (3, 7)).astype(np.int32)
    for op, ref in [("neg", torch.neg), ("abs", torch.abs), ("sign", torch.sign), ("relu", torch.relu)]:
        np.testing.assert_array_equal(run_op(op, x), ref(tt(x)).numpy(), err_msg=op)
    np.testing.assert_array_equal(run_op("clip", x, min=-10.5, max=20.5), torch.clamp(tt(x), -10, 20).numpy())
    np.testing.assert_array_equal(run_op("clip", x, min=-1e20), x)
    edge = np.array([0, 100, 255], np.uint8)
    np.testing.assert_array_equal(run_op("clip", edge, max=1e9), edge)
    np.testing.assert_array_equal(run_op("clip", edge, min=1e9, max=2e9), [255, 255, 255])


# (op, reference, operand domain)
BINARY = [
    ("add", torch.add, "real"),
    ("sub", torch.sub, "real"),
    ("mul", torch.mul, "real"),
    ("div", torch.div, "real"),
    ("pow", torch.pow, "positive"),
    ("min", torch.minimum, "real"),
    ("max", torch.maximum, "real"),
    ("equal", torch.eq, "ties"),
    ("less", torch.lt, "ties"),
    ("less_equal", torch.le, "ties"),
    ("greater", torch.gt, "ties"),
    ("greater_equal", torch.ge, "ties"),
]


def operand(domain: str, shape: tuple) -> np.ndarray:
    if domain == "ties":  # few distinct values, so equal and the non-strict comparisons are exercised
        return RNG.integers(-2, 3, shape).astype(np.float32) / 2
    return sample(domain, shape)


@pytest.mark.parametrize("op,ref,domain", BINARY, ids=[b[0] for b in BINARY])
def test_binary_broadcasts_like_torch(op, ref, domain) -> None:
    a, b = operand(domain, (2, 1, 4)), operand(domain, (3, 1))
    out = run_op(op, a, b)
    assert out.shape == (2, 3, 4)
    close(out, ref(tt(a), tt(b)))
    close(run_op(op, b, a), ref(tt(b), tt(a)))


@pytest.mark.parametrize("op,ref,domain", BINARY, ids=[b[0] for b in BINARY])
def test_binary_symbolic_batch(op, ref, domain) -> None:
    g = Graph(op)
    a = g.add_input("a", TensorType("f32", ("N", 1, 4)))
    b = g.add_input("b", TensorType("f32", (3, 1)))
    y = g.call(op, a, b)
    assert y.type.shape == ("N", 3, 4)
    assert y.type.dtype.value == ("bool" if ref in (torch.eq, torch.lt, torch.le, torch.gt, torch.ge) else "f32")
    g.set_outputs([y])
    for batch in (1, 5):
        da, db = operand(domain, (batch, 1, 4)), operand(domain, (3, 1))
        (out,) = g.run(da, db)
        close(out, ref(tt(da), tt(db)))


@pytest.mark.parametrize("op,ref,domain", BINARY, ids=[b[0] for b in BINARY])
def test_binary_nan_and_inf(op, ref, domain) -> None:
    a = np.repeat(NONFINITE, len(NONFINITE))
    b = np.tile(NONFINITE, len(NONFINITE))
    close(run_op(op, a, b), ref(tt(a), tt(b)))


INT_REFS = [
    ("add", torch.add),
    ("sub", torch.sub),
    ("mul", torch.mul),
    ("div", lambda a, b: torch.div(a, b, rounding_mode="trunc")),
    ("min", torch.minimum),
    ("max", torch.maximum),
    ("equal", torch.eq),
    ("less", torch.lt),
    ("greater_equal", torch.ge),
]


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
@pytest.mark.parametrize("op,ref", INT_REFS, ids=[r[0] for r in INT_REFS])
def test_integer_binary_ops_match_torch(op, ref, dtype) -> None:
    a = RNG.integers(-100, 100, (4, 1, 6)).astype(dtype)
    b = RNG.integers(1, 12, (5, 6)).astype(dtype) * RNG.choice(np.array([-1, 1], dtype), (5, 6))
    out = run_op(op, a, b)
    assert out.dtype == (np.bool_ if op in ("equal", "less", "greater_equal") else dtype)
    np.testing.assert_array_equal(out, ref(tt(a), tt(b)).numpy())


def test_integer_div_truncates_toward_zero() -> None:
    a = np.array([7, -7, 7, -7, 6, -6, 0, 1], np.int32)
    b = np.array([2, 2, -2, -2, 3, -4, 5, -3], np.int32)
    np.testing.assert_array_equal(run_op("div", a, b), [3, -3, -3, 3, 2, 1, 0, 0])
    u = np.array([255, 7, 9], np.uint8)
    np.testing.assert_array_equal(run_op("div", u, np.array([2, 7, 10], np.uint8)), [127, 1, 0])


def test_integer_pow_and_wraparound_match_torch() -> None:
    base = np.array([2, -1, -1, 1, 3, 0, -2, 5], np.int64)
    exponent = np.array([-1, -1, -2, -5, 2, 3, 3, 0], np.int64)
    np.testing.assert_array_equal(run_op("pow", base, exponent), torch.pow(tt(base), tt(exponent)).numpy())
    big = np.array([100, -100, 127], np.int8)
    np.testing.assert_array_equal(run_op("add", big, big), torch.add(tt(big), tt(big)).numpy())


def test_min_max_take_any_number_of_inputs() -> None:
    xs = [sample("real", s) for s in [(2, 1, 4), (3, 1), (4,)]]
    xs[1][0, 0] = np.nan
    for op, ref in [("min", torch.minimum), ("max", torch.maximum)]:
        out = run_op(op, *xs)
        expected = ref(ref(tt(xs[0]), tt(xs[1])), tt(xs[2]))
        close(out, expected)
        assert np.isnan(out[:, 0, :]).all()
        np.testing.assert_array_equal(run_op(op, xs[2]), xs[2])
    ins = [TensorType("f32", (2, 3, 4))] * 3
    outs = get_op("max").infer_types(ins, {})
    assert get_op("max").flops(ins, outs, {}) == 2 * 24


def test_where_broadcasts_all_three_inputs() -> None:
    cond = RNG.integers(0, 2, (2, 1, 4)).astype(bool)
    a, b = sample("real", (3, 1)), sample("real", (4,))
    out = run_op("where", cond, a, b)
    np.testing.assert_array_equal(out, torch.where(tt(cond), tt(a), tt(b)).numpy())
    qa = np.array([-8, 7], ml_dtypes.int4)
    qb = np.array([1, 2], ml_dtypes.int4)
    np.testing.assert_array_equal(run_op("where", np.array([True, False]), qa, qb).astype(np.int8), [-8, 2])


def test_where_and_compare_keep_symbolic_batch() -> None:
    g = Graph("w")
    x = g.add_input("x", TensorType("f32", ("N", 3)))
    zero = g.const(np.zeros((1, 3), np.float32))
    positive = g.call("greater", x, zero)
    y = g.call("where", g.call("logical_not", positive), zero, x)
    assert positive.type == TensorType("bool", ("N", 3)) and y.type == TensorType("f32", ("N", 3))
    g.set_outputs([y])
    for batch in (2, 7):
        data = sample("real", (batch, 3))
        np.testing.assert_array_equal(g.run(data)[0], F.relu(tt(data)).numpy())


def test_logical_not_matches_torch() -> None:
    x = RNG.integers(0, 2, (3, 5)).astype(bool)
    np.testing.assert_array_equal(run_op("logical_not", x), torch.logical_not(tt(x)).numpy())


@pytest.mark.parametrize("op, ref", [("logical_and", torch.logical_and), ("logical_or", torch.logical_or),
                                     ("logical_xor", torch.logical_xor)])
def test_logical_binary_ops_broadcast_like_torch(op, ref) -> None:
    a, b = RNG.integers(0, 2, (2, 3, 4)).astype(bool), RNG.integers(0, 2, (3, 1)).astype(bool)
    np.testing.assert_array_equal(run_op(op, a, b), ref(tt(a), tt(b)).numpy())
    assert get_op(op).commutative
    with pytest.raises(OpError, match="must be a bool tensor"):
        run_op(op, a.astype(np.float32), b.astype(np.float32))


@pytest.mark.parametrize("slope_shape,weight_shape", [((3, 1, 1), (3,)), ((1,), (1,))])
def test_prelu_matches_torch(slope_shape, weight_shape) -> None:
    x = sample("real", (2, 3, 4, 5))
    slope = RNG.uniform(-0.5, 0.5, slope_shape).astype(np.float32)
    out = run_op("prelu", x, slope)
    close(out, F.prelu(tt(x), tt(slope.reshape(weight_shape))))
    g = Graph("p")
    xs = g.add_input("x", TensorType("f32", ("N", 3, 4, 5)))
    y = g.call("prelu", xs, g.const(slope))
    assert y.type.shape == ("N", 3, 4, 5)


def test_hardsigmoid_defaults_are_torch_not_onnx() -> None:
    x = np.array([-3.5, -2.5, 0.0, 1.0, 2.5, 3.5], np.float32)
    np.testing.assert_allclose(run_op("hardsigmoid", x), [0, 1 / 12, 0.5, 4 / 6, 11 / 12, 1], rtol=1e-6)
    np.testing.assert_allclose(run_op("hardsigmoid", x, alpha=0.2), [0, 0, 0.5, 0.7, 1, 1], rtol=1e-6)


def test_round_halves_to_even() -> None:
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 2.4999998], np.float32)
    np.testing.assert_array_equal(run_op("round", x), [-2, -2, -0, 0, 2, 2, 4, 2])


def test_registry_declares_every_elementwise_op() -> None:
    ops = all_ops()
    names = [row[0] for row in UNARY] + [row[0] for row in BINARY] + ["prelu", "where", "logical_not"]
    for name in names:
        assert ops[name].category == "elementwise", name
    commutative = {name for name in names if ops[name].commutative}
    assert commutative == {"add", "mul", "min", "max", "equal"}
    t = TensorType("f32", ("N", 8))
    assert get_op("exp").flops([t], [t], {}) == 8


def test_elementwise_graph_prints_and_parses_back() -> None:
    g = Graph("all")
    x = g.add_input("x", TensorType("f32", ("N", 4)))
    outs = [g.call(op, x, **attrs) for op, attrs, _, _ in UNARY]
    outs += [g.call(op, x, outs[0]) for op, _, _ in BINARY]
    g.set_outputs(outs)
    assert parse(str(g)) == g


BAD = [
    ("add", [TensorType("f32", (2, 3)), TensorType("i32", (2, 3))], {}, "different dtypes"),
    ("mul", [TensorType("f32", (2, 3)), TensorType("f32", (4,))], {}, "do not broadcast"),
    ("min", [TensorType("f32", ("N", 3)), TensorType("f32", ("M", 3))], {}, "do not broadcast"),
    ("less", [TensorType("f32", (3,)), TensorType("f16", (3,))], {}, "different dtypes"),
    ("less", [TensorType("bool", (3,)), TensorType("bool", (3,))], {}, "numeric"),
    ("add", [TensorType("bool", (3,)), TensorType("bool", (3,))], {}, "numeric"),
    ("add", [TensorType("i4", (3,)), TensorType("i4", (3,))], {}, "storage type"),
    ("sqrt", [TensorType("i32", (3,))], {}, "float"),
    ("gelu", [TensorType("i8", (3,))], {}, "float"),
    ("logical_not", [TensorType("f32", (3,))], {}, "bool"),
    ("where", [TensorType("f32", (3,)), TensorType("f32", (3,)), TensorType("f32", (3,))], {}, "bool"),
    ("where", [TensorType("bool", (3,)), TensorType("f32", (3,)), TensorType("i32", (3,))], {}, "share a dtype"),
    ("where", [TensorType("bool", (2,)), TensorType("f32", (3,)), TensorType("f32", (3,))], {}, "do not broadcast"),
    ("prelu", [TensorType("f32", (2, 3)), TensorType("f32", (4,))], {}, "broadcast"),
    ("prelu", [TensorType("f32", (3,)), TensorType("f32", (2, 3))], {}, "does not broadcast to x"),
    ("clip", [TensorType("f32", (3,))], {"min": math.nan}, "NaN"),
    ("sub", [TensorType("f32", (3,))], {}, "takes 2 inputs"),
]


@pytest.mark.parametrize("op,types,attrs,fragment", BAD, ids=[f"{b[0]}:{b[3]}" for b in BAD])
def test_type_errors_name_the_op(op, types, attrs, fragment) -> None:
    g = Graph("bad")
    xs = [g.add_input(f"x{i}", t) for i, t in enumerate(types)]
    with pytest.raises(OpError) as info:
        g.call(op, *xs, **attrs)
    assert fragment in str(info.value) and op in str(info.value), str(info.value)


def test_bad_attribute_choice_is_an_op_error() -> None:
    g = Graph("bad")
    x = g.add_input("x", TensorType("f32", (3,)))
    with pytest.raises(OpError, match="approximate"):
        g.call("gelu", x, approximate="fast")
