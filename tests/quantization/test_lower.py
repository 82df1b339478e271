"""lower-quantized and the integer ops: agreement with the QDQ form, exact integer arithmetic, TVM builds."""

from __future__ import annotations

import numpy as np
import pytest

from slimgraph.errors import OpError
from slimgraph.ir import Graph, TensorType
from slimgraph.ir.ops.qlinear import fixed_point_multiply, quantize_multiplier
from slimgraph.passes.lower_quantized import LowerQuantized
from slimgraph.passes.quantize import quantize_graph
from tests.digits import accuracy, digits_data
from tests.quantization.conftest import predictor


def _probe(graph, names, x):
    probe = graph.clone()
    probe.set_outputs([probe.value(n) for n in names])
    return probe.run(x)


@pytest.mark.parametrize(
    "options", [{}, {"weights": "int4"}, {"weights": "log2"}, {"activations": "uint8", "symmetric": True}]
)
def test_lowered_and_qdq_agree_within_one_step(digits_graph, calibration_batches, options):
    qdq = quantize_graph(digits_graph, calibration_batches, outputs=True, progress=False, **options)
    low = LowerQuantized()(qdq)
    low.verify()
    ops = [n.op for n in low.nodes]
    assert ops.count("qconv") == 3 and ops.count("qlinear") == 1 and "conv" not in ops and "linear" not in ops
    x = digits_data().x_test
    # every requantized tensor, by name, within one integer step of the QDQ form's quantize
    names = [n.output.name for n in low.nodes if n.op == "requantize"]
    assert len(names) == 2  # conv1 -> relu -> quantize, and the quantized output
    for name, a, b in zip(names, _probe(qdq, names, x), _probe(low, names, x)):
        assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max() <= 1, name
    step = qdq.outputs[0].producer.attrs["scale"][0]
    worst = np.abs(qdq.run(x)[0] - low.run(x)[0]).max() / step
    print(f"{options}: lowered vs QDQ max difference {worst:.4f} output steps")
    assert worst <= 1 + 1e-4
    assert abs(accuracy(predictor(qdq)) - accuracy(predictor(low))) <= 0.3


def test_log2_weights_become_exact_powers_of_two(digits_graph, calibration_batches):
    qdq = quantize_graph(digits_graph, calibration_batches, weights="log2", progress=False)
    low = LowerQuantized()(qdq)
    weights = [n.inputs[1].const_value for n in low.nodes if n.op in ("qconv", "qlinear")]
    assert len(weights) == 4
    for w in weights:
        magnitude = np.abs(w.astype(np.int32))
        assert w.dtype == np.int8 and magnitude.max() <= 64
        assert np.all((magnitude == 0) | (magnitude & (magnitude - 1) == 0))


def test_log2_weights_wider_than_int8_stay_in_qdq_form(digits_graph, calibration_batches):
    qdq = quantize_graph(digits_graph, calibration_batches, weights="log2", log2_min_exp=-7, progress=False)
    low = LowerQuantized()(qdq)
    assert [n.op for n in low.nodes] == [n.op for n in qdq.nodes]


def test_qconv_matches_float_convolution_exactly():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 4, 7, 7)).astype(np.uint8)
    w = rng.integers(-128, 128, (6, 2, 3, 3)).astype(np.int8)
    b = rng.integers(-5000, 5000, 6).astype(np.int32)
    g = Graph()
    xv = g.add_input("x", TensorType("u8", ("N", 4, 7, 7)))
    attrs = dict(strides=(2, 1), pads=(1, 0, 1, 2), groups=2)
    g.set_outputs([g.call("qconv", xv, g.const(w), g.const(b), x_zero_point=100, **attrs)])
    f = Graph()
    fx = f.add_input("x", TensorType("f32", ("N", 4, 7, 7)))
    f.set_outputs([f.call("conv", fx, f.const(w.astype(np.float32)), f.const(b.astype(np.float32)), **attrs)])
    got = g.run(x)[0]
    want = f.run(x.astype(np.float32) - 100)[0]  # padding holds the zero point: 0 after centering
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want.astype(np.int64))


def test_qlinear_with_int4_weights():
    import ml_dtypes

    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (3, 5, 16)).astype(np.int8)
    w = rng.integers(-8, 8, (4, 16)).astype(ml_dtypes.int4)
    g = Graph()
    xv = g.add_input("x", TensorType("i8", (3, 5, 16)))
    g.set_outputs([g.call("qlinear", xv, g.const(w), x_zero_point=-7)])
    want = (x.astype(np.int64) + 7) @ w.astype(np.int64).T
    np.testing.assert_array_equal(g.run(x)[0], want)


def test_requantize_is_gemmlowp_rounding():
    rng = np.random.default_rng(2)
    x = rng.integers(-(2**24), 2**24, 20000)
    for real in (0.000123, 0.37, 0.5, 1.0, 3.7):
        m, s = quantize_multiplier(real)
        y = fixed_point_multiply(x, m, s)
        assert np.abs(y - x * real).max() <= 0.5 + 1e-6 * np.abs(x * real).max()
    # gemmlowp's ties: the doubling high mul rounds halves up, RoundingDivideByPOT away from zero
    m, s = quantize_multiplier(0.5)
    assert s == 0
    np.testing.assert_array_equal(fixed_point_multiply(np.array([1, 3, -1, -3]), m, s), [1, 2, 0, -1])
    m, s = quantize_multiplier(0.25)  # 0.5 * 2^-1: the final shift decides the tie
    np.testing.assert_array_equal(fixed_point_multiply(np.array([2, 6, -2, -6]), m, s), [1, 2, -1, -2])


def test_requantize_clip_and_errors():
    g = Graph()
    x = g.add_input("x", TensorType("i32", (1, 2, 2)))
    m, s = quantize_multiplier(0.25)
    g.set_outputs([g.call("requantize", x, multiplier=(m, m), shift=(s, s), zero_point=-10, clip=(-10, 20))])
    out = g.run(np.array([[[400, -400], [8, 100]]], np.int32))[0]
    np.testing.assert_array_equal(out, [[[20, -10], [-8, 15]]])
    with pytest.raises(OpError, match="one shift per multiplier"):
        g.call("requantize", x, multiplier=(m,), shift=(1, 2))
    with pytest.raises(OpError, match="must be i32"):
        g.call("requantize", g.call("cast", x, to="f32"), multiplier=(m,), shift=(s,))


def test_tvm_builds_qdq_and_lowered_forms(digits_graph, calibration_batches):
    pytest.importorskip("tvm")
    import slimgraph.backends.tvm.ops.quantized  # noqa: F401  (registers the integer lowerings)
    from slimgraph.backends.tvm import build

    qdq = quantize_graph(digits_graph, calibration_batches, outputs=True, progress=False)
    low = LowerQuantized()(qdq)
    x = digits_data().x_test[:64]
    for graph in (qdq, low):
        compiled = build(graph, "llvm", {"N": 64})
        np.testing.assert_array_equal(compiled(x), graph.run(x)[0])


def _qconv_graph(rng, x_dtype: str, c_in: int, c_out: int, size: int, kernel: int, stride: int, zero: int):
    w = rng.integers(-128, 128, (c_out, c_in, kernel, kernel)).astype(np.int8)
    b = rng.integers(-5000, 5000, c_out).astype(np.int32)
    g = Graph()
    xv = g.add_input("x", TensorType(x_dtype, (1, c_in, size, size)))
    pad = kernel // 2
    acc = g.call("qconv", xv, g.const(w), g.const(b), x_zero_point=zero, strides=(stride, stride), pads=(pad,) * 4)
    g.set_outputs([acc])
    return g


@pytest.mark.parametrize(
    "x_dtype, c_in, c_out, size, kernel, stride, zero",
    [("i8", 64, 32, 14, 3, 1, -128), ("u8", 3, 16, 23, 7, 2, 7), ("i8", 20, 48, 9, 1, 2, 5), ("u8", 16, 64, 8, 3, 1, 255)],
)
def test_vnni_qconv_is_exact_and_uses_vpdpbusd(x_dtype, c_in, c_out, size, kernel, stride, zero):
    """The AVX-512 VNNI kernel (uint8 shift for int8 inputs, channels padded to 4) against
    the interpreter, and the packed kernel of a CPU without VNNI against both."""
    pytest.importorskip("tvm")
    import slimgraph.backends.tvm.ops.quantized  # noqa: F401
    from slimgraph.backends.tvm import build
    from slimgraph.backends.tvm.targets import parse_target

    if not parse_target("llvm").has_cpu_features("avx512vnni"):
        pytest.skip("this CPU has no AVX-512 VNNI")
    rng = np.random.default_rng(c_in * c_out)
    g = _qconv_graph(rng, x_dtype, c_in, c_out, size, kernel, stride, zero)
    lo, hi = (-128, 128) if x_dtype == "i8" else (0, 256)
    x = rng.integers(lo, hi, (1, c_in, size, size)).astype(np.int8 if x_dtype == "i8" else np.uint8)
    expected = g.run(x)[0]
    vnni = build(g, "llvm", {})
    assert any("vpdpbusd" in k.tir for k in vnni.kernels)
    np.testing.assert_array_equal(vnni(x), expected)
    packed = build(g, "llvm:skylake", {})  # AVX2, no VNNI: the int32 micro-kernel
    assert not any("vpdpbusd" in k.tir for k in packed.kernels)
    np.testing.assert_array_equal(packed(x), expected)


def test_tvm_requantize_matches_gemmlowp_at_the_edges():
    pytest.importorskip("tvm")
    import slimgraph.backends.tvm.ops.quantized  # noqa: F401
    from slimgraph.backends.tvm import build

    rng = np.random.default_rng(3)
    reals = (0.000123, 0.37, 0.5, 3.7)  # right shifts, none, and a left shift
    # per row, inputs whose results land inside int8 (ties included) and the int32 extremes
    x = np.stack([
        np.concatenate([rng.integers(-int(130 / r), int(130 / r), 6000), [-(2**31), 2**31 - 1, 0, 1, -1]]) for r in reals
    ]).astype(np.int32)
    m, s = zip(*(quantize_multiplier(r) for r in reals))
    g = Graph()
    xv = g.add_input("x", TensorType("i32", x.shape))
    g.set_outputs([g.call("requantize", xv, multiplier=m, shift=s, axis=0, zero_point=3)])
    np.testing.assert_array_equal(build(g, "llvm", {})(x), g.run(x)[0])
