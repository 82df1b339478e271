"""Every registered op has a TVM lowering, and each lowering matches the reference interpreter.

Ops are grouped into a few graphs (one kernel per op node), so that a handful
of builds cover the whole op set; a failure names the op whose output differs.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

pytest.importorskip("tvm")

from slimgraph.backends.tvm import build  # noqa: E402
from slimgraph.backends.tvm.lower import unsupported_ops  # noqa: E402
from slimgraph.ir import Graph, TensorType  # noqa: E402

RNG = np.random.default_rng(7)


def _f32(*shape, scale=1.0, positive=False):
    a = RNG.standard_normal(shape).astype(np.float32) * scale
    return np.abs(a) + 0.1 if positive else a


def test_every_registered_op_has_a_lowering():
    assert unsupported_ops() == []


def _check(graph: Graph, inputs: list, rtol: float = 1e-4, atol: float = 1e-5, bindings=None):
    model = build(graph, "llvm", bindings)
    got = model(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    want = graph.run(*inputs)
    assert len(got) == len(want)
    for value, g, w in zip(graph.outputs, got, want):
        assert g.dtype == w.dtype, f"{value.producer.op}: dtype {g.dtype} vs {w.dtype}"
        assert g.shape == w.shape, f"{value.producer.op}: shape {g.shape} vs {w.shape}"
        if w.dtype.kind in "f" or w.dtype == ml_dtypes.bfloat16:
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol,
                                       err_msg=f"op {value.producer.op} ({value.name})")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"op {value.producer.op} ({value.name})")
    return model


UNARY = ["neg", "abs", "sign", "relu", "exp", "erf", "floor", "ceil", "round", "sin", "cos", "sigmoid", "tanh",
         "silu", "softplus", "mish", "hardswish", "gelu", "hardsigmoid", "leaky_relu", "elu", "selu"]


def test_unary_elementwise_ops():
    g = Graph("unary")
    x = g.add_input("x", TensorType("f32", (3, 33)))
    p = g.add_input("p", TensorType("f32", (3, 33)))
    outs = [g.call(op, x, name=op) for op in UNARY]
    outs += [g.call("gelu", x, approximate="tanh", name="gelu_tanh"), g.call("clip", x, min=-0.5, max=0.7)]
    outs += [g.call(op, p, name=op) for op in ("sqrt", "log", "reciprocal")]
    g.set_outputs(outs)
    x_val = _f32(3, 33, scale=3.0)
    x_val[0, :4] = [0.5, -0.5, 2.5, -1.5]  # halves: round is half-to-even
    _check(g, [x_val, _f32(3, 33, positive=True)])


def test_binary_compare_and_select_ops():
    g = Graph("binary")
    a = g.add_input("a", TensorType("f32", (2, 3, 4)))
    b = g.add_input("b", TensorType("f32", (3, 1)))
    i = g.add_input("i", TensorType("i32", (2, 3, 4)))
    j = g.add_input("j", TensorType("i32", (4,)))
    outs = [g.call(op, a, b, name=op) for op in ("add", "sub", "mul", "div", "min", "max")]
    outs.append(g.call("pow", g.call("abs", a), b, name="pow"))
    outs.append(g.call("max", a, b, g.const(np.float32(0.25)), name="max3"))
    outs += [g.call(op, i, j, name=f"{op}_i") for op in ("add", "div", "mul", "min")]
    outs.append(g.call("pow", i, g.const(np.array([2, 0, 3, -1], np.int32)), name="pow_i"))
    cmps = [g.call(op, a, b, name=op) for op in ("equal", "less", "less_equal", "greater", "greater_equal")]
    outs += cmps + [g.call("logical_not", cmps[1], name="not")]
    outs.append(g.call("where", cmps[1], a, b, name="where"))
    outs.append(g.call("prelu", a, g.const(_f32(3, 1)), name="prelu"))
    outs.append(g.call("add", a, g.const(np.float32(1.5)), name="add_scalar"))
    g.set_outputs(outs)
    i_val = RNG.integers(-20, 20, (2, 3, 4)).astype(np.int32)
    j_val = np.array([3, -4, 5, 7], np.int32)
    _check(g, [_f32(2, 3, 4), _f32(3, 1, positive=True), i_val, j_val])


def test_casts_and_half_precision():
    g = Graph("casts")
    x = g.add_input("x", TensorType("f32", (4, 8)))
    h = g.call("cast", x, to="f16")
    bf = g.call("cast", x, to="bf16")
    outs = [h, bf, g.call("cast", x, to="i32"), g.call("cast", x, to="bool"), g.call("cast", x, to="u8")]
    outs += [g.call("relu", h), g.call("sigmoid", bf), g.call("softmax", h, axis=1), g.call("add", h, h)]
    g.set_outputs(outs)
    _check(g, [_f32(4, 8, scale=4.0)], rtol=1e-2, atol=1e-2)


def test_matmul_linear_and_conv_ops():
    g = Graph("compute")
    x = g.add_input("x", TensorType("f32", (2, 4, 9, 9)))
    a = g.add_input("a", TensorType("f32", (2, 3, 5, 6)))
    b = g.add_input("b", TensorType("f32", (3, 6, 7)))
    v = g.add_input("v", TensorType("f32", (6,)))
    m = g.add_input("m", TensorType("f32", (5, 6)))
    y = g.add_input("y", TensorType("f32", (2, 8, 7, 7)))
    outs = [
        g.call("conv", x, g.const(_f32(16, 4, 3, 3)), g.const(_f32(16)), pads=(1, 1, 1, 1), name="conv_packed"),
        # few groups: a dense packed conv over a block-diagonal weight; many: the grouped loop nest
        g.call("conv", y, g.const(_f32(12, 2, 3, 3)), g.const(_f32(12)), pads=(1, 0, 1, 2), strides=(2, 1), groups=4,
               name="conv_grouped_dense"),
        g.call("conv", y, g.const(_f32(16, 1, 1, 1)), groups=8, name="conv_grouped_wide"),
        g.call("conv", x, g.const(_f32(6, 4, 3, 2)), strides=(2, 1), dilations=(1, 2), pads=(0, 1, 2, 0), name="conv_odd"),
        g.call("conv", x, g.const(_f32(4, 1, 3, 3)), pads=(1, 1, 1, 1), groups=4, name="depthwise"),
        g.call("conv", x, g.const(_f32(8, 2, 3, 3)), groups=2, strides=(2, 2), name="conv_grouped"),
        g.call("conv", g.call("reshape", x, shape=(2, 4, 81)), g.const(_f32(5, 4, 3)), pads=(1, 1), name="conv1d"),
        g.call("conv", x, g.add_input("w", TensorType("f32", (3, 4, 1, 1))), name="conv_dynamic_w"),
        g.call("conv_transpose", x, g.const(_f32(4, 3, 3, 3)), g.const(_f32(3)), strides=(2, 2), pads=(1, 1, 0, 0),
               output_padding=(1, 0), name="deconv"),
        g.call("conv_transpose", x, g.const(_f32(4, 2, 2, 2)), groups=2, name="deconv_grouped"),
        g.call("matmul", a, b, name="matmul_bcast"),
        g.call("matmul", a, v, name="matmul_vec"),
        g.call("matmul", v, b, name="vec_matmul"),
        g.call("matmul", m, g.const(_f32(6, 32)), name="matmul_const"),
        g.call("linear", m, g.const(_f32(32, 6)), g.const(_f32(32)), name="linear"),
        g.call("linear", a, g.const(_f32(6, 3)), trans_b=False, alpha=0.5, name="linear_nd"),
        g.call("linear", g.call("transpose", m), g.const(_f32(6, 4)), g.const(_f32(1, 4)), trans_a=True,
               trans_b=False, beta=2.0, name="gemm_ta"),
        g.call("linear", m, m, trans_b=True, name="linear_dynamic"),
    ]
    g.set_outputs(outs)
    inputs = [_f32(2, 4, 9, 9), _f32(2, 3, 5, 6), _f32(3, 6, 7), _f32(6), _f32(5, 6), _f32(2, 8, 7, 7), _f32(3, 4, 1, 1)]
    kernels = {k.node.split(" = ")[0].lstrip("%"): k for k in _check(g, inputs).kernels}
    assert "w_packed" in kernels["conv_grouped_dense"].tir and "w_packed" not in kernels["conv_grouped_wide"].tir


def test_normalization_pooling_and_softmax_ops():
    g = Graph("nn")
    x = g.add_input("x", TensorType("f32", (2, 3, 7, 8)))
    s = g.add_input("s", TensorType("f32", (3,)))
    c = [g.const(_f32(3, positive=True)) for _ in range(4)]
    outs = [
        g.call("batch_norm", x, *c, name="bn_const"),
        g.call("batch_norm", x, s, c[1], c[2], c[3], name="bn_dynamic"),
        g.call("instance_norm", x, c[0], c[1], name="instance_norm"),
        g.call("layer_norm", x, g.const(_f32(8)), g.const(_f32(8)), name="layer_norm"),
        g.call("layer_norm", x, axis=2, name="layer_norm_2"),
        g.call("max_pool", x, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), name="max_pool"),
        g.call("max_pool", x, kernel=(2, 3), strides=(2, 2), ceil_mode=True, dilations=(1, 2), name="max_pool_ceil"),
        g.call("avg_pool", x, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), name="avg_pool"),
        g.call("avg_pool", x, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), count_include_pad=True,
               ceil_mode=True, name="avg_pool_incl"),
        g.call("max_pool", g.call("reshape", x, shape=(2, 3, 56)), kernel=(3,), name="max_pool_1d"),
        g.call("global_avg_pool", x, name="gap"),
        g.call("global_max_pool", x, name="gmp"),
        g.call("softmax", x, axis=1, name="softmax"),
        g.call("log_softmax", x, axis=-1, name="log_softmax"),
    ]
    g.set_outputs(outs)
    _check(g, [_f32(2, 3, 7, 8), _f32(3, positive=True)])


def test_group_norm_and_resize_ops():
    g = Graph("resize")
    x = g.add_input("x", TensorType("f32", (2, 6, 5, 7)))
    outs = [
        g.call("group_norm", x, g.const(_f32(6)), g.const(_f32(6)), groups=3, name="group_norm"),
        g.call("resize", x, sizes=(10, 14), mode="nearest", coordinate_mode="asymmetric", nearest_mode="floor",
               name="nearest"),
        g.call("resize", x, sizes=(3, 9), mode="nearest", name="nearest_round"),
        g.call("resize", x, sizes=(9, 4), mode="linear", coordinate_mode="align_corners", name="linear_corners"),
        g.call("resize", x, sizes=(10, 14), scales=(2.0, 2.0), mode="linear", name="linear_scaled"),
        g.call("resize", x, sizes=(8, 11), mode="cubic", exclude_outside=True, cubic_coeff_a=-0.5, name="cubic"),
        g.call("resize", g.call("reshape", x, shape=(2, 6, 35)), sizes=(50,), mode="cubic",
               coordinate_mode="pytorch_half_pixel", name="cubic_1d"),
    ]
    g.set_outputs(outs)
    _check(g, [_f32(2, 6, 5, 7)])


def test_top_k_op_keeps_index_order_on_ties():
    g = Graph("top_k")
    x = g.add_input("x", TensorType("f32", (3, 9)))
    i = g.add_input("i", TensorType("i64", (4, 6)))
    largest = g.call("top_k", x, k=4, name="top_k")
    smallest = g.call("top_k", i, k=3, axis=0, largest=False, name="bottom_k")
    g.set_outputs([*largest, *smallest])
    ties = RNG.integers(-3, 3, (4, 6)).astype(np.int64)  # many equal values
    _check(g, [_f32(3, 9), ties])


def test_reductions_and_data_movement_ops():
    g = Graph("shape")
    x = g.add_input("x", TensorType("f32", (2, 3, 4)))
    idx = g.add_input("idx", TensorType("i64", (2, 2)))
    bx = g.add_input("bx", TensorType("bool", (2, 3, 4)))
    outs = [g.call(op, x, axes=(1,), name=op) for op in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min",
                                                            "reduce_prod")]
    outs += [g.call("reduce_sum", x, keepdims=False, name="sum_all"), g.call("reduce_max", bx, axes=(2,), name="any"),
             g.call("reduce_mean", x, axes=(0, 2), keepdims=False, name="mean_02")]
    outs += [g.call("argmax", x, axis=1, name="argmax"), g.call("argmin", x, axis=-1, keepdims=False, name="argmin")]
    outs += [
        g.call("reshape", x, shape=(4, -1), name="reshape"),
        g.call("flatten", x, axis=2, name="flatten"),
        g.call("unsqueeze", x, axes=(0, 3), name="unsqueeze"),
        g.call("squeeze", g.call("unsqueeze", x, axes=(1,)), axes=(1,), name="squeeze"),
        g.call("identity", x, name="identity"),
        g.call("transpose", x, perm=(2, 0, 1), name="transpose"),
        g.call("expand", g.call("slice", x, starts=(0,), ends=(1,), axes=(1,)), shape=(2, 3, 4), name="expand"),
        g.call("tile", x, repeats=(1, 2, 3), name="tile"),
        g.call("concat", x, g.call("neg", x), x, axis=1, name="concat"),
        *g.call("split", x, axis=2, sizes=(1, 3)),
        g.call("slice", x, starts=(-1, 3), ends=(-2**40, 0), axes=(1, 2), steps=(-1, -2), name="slice"),
        g.call("gather", x, idx, axis=1, name="gather"),
        g.call("pad", x, pads=(0, 1, -1, 1, 0, 2), value=2.5, name="pad"),
        g.call("pad", x, pads=(0, 2, 1, 0, 1, 2), mode="reflect", name="pad_reflect"),
        g.call("pad", x, pads=(1, 0, 2, 0, 3, 1), mode="edge", name="pad_edge"),
    ]
    g.set_outputs(outs)
    _check(g, [_f32(2, 3, 4), np.array([[0, -1], [2, 1]], np.int64), _f32(2, 3, 4) > 0])


def test_quantize_dequantize_ops():
    g = Graph("quant")
    x = g.add_input("x", TensorType("f32", (2, 3, 4)))
    q8 = g.call("quantize", x, scale=(0.05,), zero_point=(3,), dtype="i8", name="q8")
    qu = g.call("quantize", x, scale=(0.02, 0.04, 0.08), zero_point=(128, 120, 100), axis=1, dtype="u8", name="qu8")
    q4 = g.call("quantize", x, scale=(0.3,), dtype="i4", name="q4")
    ql = g.call("quantize", x, scale=(0.5,), scheme="log2", min_exp=-6, max_exp=2, name="qlog2")
    outs = [q8, qu, q4, ql,
            g.call("dequantize", q8, scale=(0.05,), zero_point=(3,), name="dq8"),
            g.call("dequantize", qu, scale=(0.02, 0.04, 0.08), zero_point=(128, 120, 100), axis=1, name="dqu8"),
            g.call("dequantize", q4, scale=(0.3,), name="dq4"),
            g.call("dequantize", ql, scale=(0.5,), scheme="log2", min_exp=-6, max_exp=2, name="dqlog2")]
    g.set_outputs(outs)
    x_val = _f32(2, 3, 4, scale=2.0)
    x_val[0, 0, :3] = [0.025, 0.075, 0.0]  # exact halves of the int8 scale: half-to-even
    _check(g, [x_val])


def test_symbolic_batch_is_bound_at_compile_time():
    g = Graph("sym")
    x = g.add_input("x", TensorType("f32", ("N", 6)))
    y = g.call("linear", x, g.const(_f32(4, 6)))
    g.set_outputs([g.call("reshape", y, shape=(-1,))])
    model = _check(g, [_f32(3, 6)], bindings={"N": 3})
    assert str(model.input_types[0]) == "f32[3,6]"
    assert math.prod(model.output_types[0].shape) == 12


def test_attention_einsum_scan_and_mask_ops():
    g = Graph("text")
    q = g.add_input("q", TensorType("f32", (2, 4, 5, 8)))
    k = g.add_input("k", TensorType("f32", (2, 2, 6, 8)))
    v = g.add_input("v", TensorType("f32", (2, 2, 6, 3)))
    m = g.add_input("m", TensorType("bool", (2, 1, 5, 6)))
    bias = g.add_input("bias", TensorType("f32", (1, 1, 5, 6)))
    ids = g.add_input("ids", TensorType("i64", (3, 7)))
    outs = [g.call("attention", q, k, v, m, name="attention_bool_mask"),
            g.call("attention", q, k, v, causal=True, scale=0.3, name="attention_causal"),
            g.call("attention", q, k, v, bias, causal=True, name="attention_float_mask"),
            g.call("einsum", q, q, equation="bhqd,bhkd->bhqk", name="einsum_scores"),
            g.call("einsum", v, equation="...ij->...j", name="einsum_ellipsis"),
            g.call("cumsum", ids, axis=1, name="cumsum_i64"),
            g.call("cumsum", q, axis=2, exclusive=True, reverse=True, name="cumsum_reverse"),
            g.call("trilu", q, k=1, name="triu"), g.call("trilu", m, k=-1, upper=False, name="tril_bool")]
    both = g.call("logical_and", m, g.call("logical_not", m))
    outs.append(g.call("logical_xor", m, g.call("logical_or", both, m), name="logic"))
    g.set_outputs(outs)
    mask = RNG.random((2, 1, 5, 6)) > 0.4
    mask[0, 0, 2] = False  # a query that sees nothing gets zeros
    bias_val = _f32(1, 1, 5, 6)
    bias_val[0, 0, 1] = -np.inf
    _check(g, [_f32(2, 4, 5, 8), _f32(2, 2, 6, 8), _f32(2, 2, 6, 3), mask, bias_val,
               RNG.integers(-5, 5, (3, 7))])


def test_indexing_ops():
    g = Graph("indexing")
    x = g.add_input("x", TensorType("f32", (4, 5, 3)))
    h = g.add_input("h", TensorType("f16", (4, 5)))
    n = g.add_input("n", TensorType("i32", (4, 5)))
    i = g.add_input("i", TensorType("i64", (3, 5, 2)))
    j = g.add_input("j", TensorType("i32", (2, 5)))
    rows = g.add_input("rows", TensorType("i64", (3, 1)))
    upd = g.call("slice", x, starts=(0, 0), ends=(3, 2), axes=(0, 2))
    outs = [g.call("gather_elements", x, i, axis=0, name="gather_elements")]
    outs += [g.call("scatter_elements", x, i, upd, axis=0, reduction=r, name=f"scatter_{r}")
             for r in ("none", "add", "mul", "max", "min")]
    outs.append(g.call("scatter_elements", h, j, g.call("gather_elements", h, j, axis=1), axis=1, reduction="add",
                       name="scatter_f16"))
    outs.append(g.call("scatter_elements", n, j, g.call("gather_elements", n, j, axis=1), axis=1, reduction="max",
                       name="scatter_i32"))
    outs.append(g.call("scatter_nd", x, rows, g.call("slice", x, starts=(0,), ends=(3,), axes=(0,)), reduction="add",
                       name="scatter_nd_rows"))
    outs.append(g.call("one_hot", j, g.const(np.array([-1, 4], np.int32)), depth=6, axis=1, name="one_hot"))
    g.set_outputs(outs)
    idx = np.random.default_rng(3).integers(-4, 4, (3, 5, 2))
    dup = np.array([[0, 1, 1, -1, 4], [2, 2, -5, 0, 3]], np.int32)  # duplicate targets accumulate in order
    _check(g, [_f32(4, 5, 3), _f32(4, 5).astype(np.float16), RNG.integers(-9, 9, (4, 5)).astype(np.int32), idx,
               dup, np.array([[1], [-1], [1]])], rtol=1e-3, atol=1e-3)


def test_float64_ops_compute_in_float64():
    """f64 kernels keep f64 sums, scalars and tables: an f32 accumulator or constant anywhere
    would miss the reference by ~1e-7, far outside this tolerance."""
    g = Graph("f64")
    x = g.add_input("x", TensorType("f64", (2, 4, 7, 8)))
    a = g.add_input("a", TensorType("f64", (2, 3, 5, 6)))
    s = g.add_input("s", TensorType("f64", (4,)))
    h = g.add_input("h", TensorType("f32", (2, 3)))

    def c(*shape, positive=False):
        return g.const(RNG.standard_normal(shape) ** (2 if positive else 1) + (0.1 if positive else 0), dtype="f64")

    stats = [c(4), c(4), c(4), c(4, positive=True)]
    outs = [
        g.call("conv", x, c(6, 4, 3, 3), c(6), pads=(1, 1, 1, 1), name="conv"),
        g.call("conv", x, c(4, 1, 3, 3), pads=(1, 1, 1, 1), groups=4, name="depthwise"),
        g.call("linear", a, c(5, 6), c(5), name="linear"),
        g.call("matmul", a, g.call("transpose", a, perm=(0, 1, 3, 2)), name="matmul"),
        g.call("batch_norm", x, *stats, name="bn_const"),
        g.call("batch_norm", x, s, *stats[1:], epsilon=1e-3, name="bn_dynamic"),
        g.call("layer_norm", x, c(8), c(8), name="layer_norm"),
        g.call("instance_norm", x, stats[0], stats[1], name="instance_norm"),
        g.call("group_norm", x, stats[0], stats[1], groups=2, name="group_norm"),
        g.call("avg_pool", x, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), name="avg_pool"),
        g.call("global_avg_pool", x, name="gap"),
        g.call("reduce_mean", x, axes=(1, 3), name="reduce_mean"),
        g.call("reduce_sum", x, axes=(2,), name="reduce_sum"),
        g.call("softmax", x, axis=-1, name="softmax"),
        g.call("attention", a, a, a, causal=True, name="attention"),
        g.call("einsum", a, a, equation="bhqd,bhkd->bhqk", name="einsum"),
        g.call("resize", x, sizes=(9, 11), mode="cubic", name="resize_cubic"),
        g.call("mul", g.call("gelu", x), g.const(0.1, dtype="f64"), name="gelu_scaled"),
        g.call("cast", h, to="f64", name="widen"),
        g.call("cast", x, to="f32", name="narrow"),
    ]
    g.set_outputs(outs)
    inputs = [RNG.standard_normal((2, 4, 7, 8)), RNG.standard_normal((2, 3, 5, 6)), RNG.random(4) + 0.5, _f32(2, 3)]
    _check(g, inputs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, ulp", [("f16", 2**-10), ("bf16", 2**-7)])
def test_half_precision_compute_ops_sum_in_float32(dtype, ulp):
    """The packed CPU forms widen half operands as they read them: the result is the float32 sum
    rounded once, as the reference computes it (within one ulp where the sums' order differs)."""
    g = Graph("half_compute")
    x = g.add_input("x", TensorType(dtype, (1, 8, 10, 16)))
    m = g.add_input("m", TensorType(dtype, (5, 24)))
    np_dtype = x.type.dtype.numpy

    def c(*shape):
        return g.const(RNG.standard_normal(shape).astype(np.float32) * 0.3, dtype=dtype)

    g.set_outputs([
        g.call("conv", x, c(16, 8, 3, 3), c(16), pads=(1, 1, 1, 1), name="conv_packed"),
        g.call("conv", x, c(8, 4, 3, 3), groups=2, name="conv_grouped_dense"),
        g.call("conv", x, c(8, 1, 3, 3), pads=(1, 1, 1, 1), groups=8, name="depthwise"),
        g.call("linear", m, c(32, 24), c(32), name="linear"),
        g.call("matmul", m, c(24, 16), name="matmul"),
    ])  # fmt: skip
    inputs = [RNG.standard_normal((1, 8, 10, 16)).astype(np_dtype), RNG.standard_normal((5, 24)).astype(np_dtype)]
    _check(g, inputs, rtol=ulp, atol=ulp)
