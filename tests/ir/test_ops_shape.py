"""The reduction and injective ops agree with PyTorch (or a hand-written numpy
index), infer symbolic shapes, and reject bad attributes with clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slimgraph.errors import OpError, SlimgraphError
from slimgraph.ir import Graph, TensorType
from slimgraph.ir.types import DType
from slimgraph.ir.registry import get_op

HUGE64 = 2**63 - 1
RNG = np.random.default_rng(0)


def rand(*shape, dtype=np.float32, low=-1.0, high=1.0):
    return RNG.uniform(low, high, shape).astype(dtype)


def run_op(op, *arrays, **attrs):
    """Build a one-node graph over ``arrays`` and run it; checks each output
    against the type inference. Returns one array, or a list for multi-output ops."""
    g = Graph("t")
    inputs = [g.add_input(f"x{i}", TensorType.of_array(a)) for i, a in enumerate(arrays)]
    out = g.call(op, *inputs, **attrs)
    outs = out if isinstance(out, tuple) else (out,)
    g.set_outputs(outs)
    results = g.run(*arrays)
    for value, result in zip(outs, results):
        assert result.dtype == value.type.dtype.numpy
        assert result.shape == value.type.shape
    return results if isinstance(out, tuple) else results[0]


def infer(op, *types, **attrs):
    """The inferred output type(s) of ``op`` on inputs of the given types."""
    g = Graph("t")
    inputs = [g.add_input(f"x{i}", t) for i, t in enumerate(types)]
    out = g.call(op, *inputs, **attrs)
    return tuple(str(v.type) for v in out) if isinstance(out, tuple) else str(out.type)


T = torch.from_numpy

# ---------------------------------------------------------------------------
# Reductions


def torch_reduce(fn, t, axes, keepdims):
    if not axes:
        out = fn(t)
        return out.reshape((1,) * t.ndim) if keepdims else out
    # torch.prod takes one dim at a time; reducing from the last axis keeps indices valid.
    for axis in sorted((a % t.ndim for a in axes), reverse=True):
        t = fn(t, axis, keepdim=True)
    return t if keepdims else t.squeeze(tuple(a % t.ndim for a in axes))


REDUCTIONS = {
    "reduce_sum": torch.sum,
    "reduce_mean": torch.mean,
    "reduce_max": torch.amax,
    "reduce_min": torch.amin,
    "reduce_prod": torch.prod,
}


@pytest.mark.parametrize("op", sorted(REDUCTIONS))
@pytest.mark.parametrize("axes", [(), (1,), (-1,), (0, 2), (-3, -1), (2, 0, 1)])
@pytest.mark.parametrize("keepdims", [True, False])
def test_reduction_matches_torch(op, axes, keepdims):
    x = rand(3, 4, 5, low=0.5, high=1.5)
    got = run_op(op, x, axes=axes, keepdims=keepdims)
    want = torch_reduce(REDUCTIONS[op], T(x), axes, keepdims).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_prod", "reduce_max", "reduce_min"])
def test_integer_reduction_keeps_dtype(op):
    x = RNG.integers(-3, 4, (4, 5)).astype(np.int32)
    got = run_op(op, x, axes=(1,), keepdims=False)
    want = torch_reduce(REDUCTIONS[op], T(x), (1,), False).numpy().astype(np.int32)
    np.testing.assert_array_equal(got, want)


def test_half_mean_accumulates_wide():
    # The sum (240000) overflows f16 (max 65504); the mean of 60000s must not.
    x = np.full((2, 4), 60000, np.float16)
    got = run_op("reduce_mean", x, axes=(1,), keepdims=False)
    np.testing.assert_array_equal(got, np.full((2,), 60000, np.float16))


def test_reduce_max_of_bool():
    x = np.array([[True, False], [False, False]])
    np.testing.assert_array_equal(run_op("reduce_max", x, axes=(1,), keepdims=False), [True, False])


def test_reduce_sum_over_empty_axis_is_zero():
    x = np.zeros((3, 0), np.float32)
    np.testing.assert_array_equal(run_op("reduce_sum", x, axes=(1,)), np.zeros((3, 1), np.float32))


@pytest.mark.parametrize("op, fn", [("argmax", torch.argmax), ("argmin", torch.argmin)])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("keepdims", [True, False])
def test_arg_reduction_matches_torch(op, fn, axis, keepdims):
    x = rand(3, 4, 5)
    got = run_op(op, x, axis=axis, keepdims=keepdims)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, fn(T(x), dim=axis, keepdim=keepdims).numpy())


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("largest", [True, False])
def test_top_k_matches_torch(axis, largest):
    x = rand(4, 5, 6)
    values, indices = run_op("top_k", x, k=3, axis=axis, largest=largest)
    want = torch.topk(torch.from_numpy(x), 3, dim=axis, largest=largest)
    np.testing.assert_array_equal(values, want.values.numpy())
    np.testing.assert_array_equal(indices, want.indices.numpy())


def test_float64_top_k_and_reductions_keep_float64():
    # 1 + 2^-40 and 1 are one value in f32: an f32 sort key would call them a tie and keep index order.
    x = np.array([1.0, 1.0 + 2**-40, 0.5, 1.0 + 2**-39])
    values, indices = run_op("top_k", x, k=3)
    assert indices.tolist() == [3, 1, 0] and values.dtype == np.float64
    wide = RNG.standard_normal((3, 7))
    for op, ref in (("reduce_sum", torch.sum), ("reduce_mean", torch.mean), ("reduce_max", torch.amax)):
        np.testing.assert_allclose(run_op(op, wide, axes=(1,)), ref(torch.from_numpy(wide), 1, keepdim=True).numpy(),
                                   rtol=1e-14, err_msg=op)


def test_top_k_ties_keep_index_order_and_k_is_checked():
    values, indices = run_op("top_k", np.array([1, 3, 3, 0, 3], np.int64), k=3)
    assert values.tolist() == [3, 3, 3] and indices.tolist() == [1, 2, 4]
    with pytest.raises(OpError, match="k=6 must be between 1 and the 5 elements"):
        infer("top_k", TensorType("f32", (2, 5)), k=6)


def test_reduction_flops_count_input_elements():
    x = TensorType("f32", ("N", 3, 4))
    out = TensorType("f32", ("N", 1, 1))
    assert get_op("reduce_sum").flops([x], [out], {"axes": (1, 2), "keepdims": True}) == 12
    assert get_op("argmax").flops([x], [out], {"axis": 1, "keepdims": True}) == 12
    for op in ("reshape", "transpose", "concat", "slice", "pad", "gather"):
        assert get_op(op).flops([x], [x], {}) == 0
        assert get_op(op).category == "injective"
    assert get_op("reduce_mean").category == "reduction"


# ---------------------------------------------------------------------------
# Reshapes


@pytest.mark.parametrize(
    "shape, target, want",
    [
        ((2, 3, 4), (0, -1), (2, 12)),
        ((2, 3, 4), (-1,), (24,)),
        ((2, 3, 4), (4, 0, 2), (4, 3, 2)),
        ((2, 3, 4), (6, -1), (6, 4)),
        ((2, 3, 4), (1, -1, 1), (1, 24, 1)),
        ((2, 3, 4), (0, 0, 0), (2, 3, 4)),
        ((2, 0, 4), (0, 0, 2, 2), (2, 0, 2, 2)),
    ],
)
def test_reshape_matches_torch(shape, target, want):
    x = rand(*shape)
    got = run_op("reshape", x, shape=target)
    np.testing.assert_array_equal(got, torch.reshape(T(x), want).numpy())


@pytest.mark.parametrize("axis, cut", [(0, 0), (1, 1), (2, 2), (3, 3), (-1, 2), (-3, 0)])
def test_flatten_matches_numpy(axis, cut):
    x = rand(2, 3, 4)
    got = run_op("flatten", x, axis=axis)
    np.testing.assert_array_equal(got, x.reshape(math.prod(x.shape[:cut]), math.prod(x.shape[cut:])))


@pytest.mark.parametrize("perm", [(), (0, 2, 1), (2, 0, 1), (-1, 0, 1), (0, 1, 2)])
def test_transpose_matches_torch(perm):
    x = rand(2, 3, 4)
    got = run_op("transpose", x, perm=perm)
    np.testing.assert_array_equal(got, T(x).permute(perm or (2, 1, 0)).numpy())


@pytest.mark.parametrize(
    "shape, axes, dims",
    [((1, 3, 1, 2), (), None), ((1, 3, 1, 2), (0,), (0,)), ((1, 3, 1, 2), (-2,), (2,)), ((1, 3, 1, 2), (0, 2), (0, 2))],
)
def test_squeeze_matches_torch(shape, axes, dims):
    x = rand(*shape)
    got = run_op("squeeze", x, axes=axes)
    want = T(x).squeeze() if dims is None else T(x).squeeze(dims)
    np.testing.assert_array_equal(got, want.numpy())


@pytest.mark.parametrize(
    "axes, want", [((0,), (1, 3, 4)), ((-1,), (3, 4, 1)), ((1, 3), (3, 1, 4, 1)), ((0, -1), (1, 3, 4, 1))]
)
def test_unsqueeze_matches_torch(axes, want):
    x = rand(3, 4)
    t = T(x)
    for axis in sorted(a % len(want) for a in axes):
        t = t.unsqueeze(axis)
    got = run_op("unsqueeze", x, axes=axes)
    assert got.shape == want
    np.testing.assert_array_equal(got, t.numpy())


@pytest.mark.parametrize(
    "shape, target, want",
    [
        ((3, 1), (2, 3, 4), (2, 3, 4)),  # rank grows
        ((3, 1), (1, 4), (3, 4)),  # both sides broadcast
        ((2, 3), (1, 1), (2, 3)),  # a smaller target keeps the input
        ((1,), (5,), (5,)),
        ((2, 1, 3), (3,), (2, 1, 3)),
    ],
)
def test_expand_matches_torch(shape, target, want):
    x = rand(*shape)
    np.testing.assert_array_equal(run_op("expand", x, shape=target), torch.broadcast_to(T(x), want).numpy())


@pytest.mark.parametrize("repeats", [(2, 1, 3), (1, 1, 1), (0, 2, 1)])
def test_tile_matches_torch(repeats):
    x = rand(2, 3, 4)
    np.testing.assert_array_equal(run_op("tile", x, repeats=repeats), torch.tile(T(x), repeats).numpy())


# ---------------------------------------------------------------------------
# Joining and cutting


@pytest.mark.parametrize(
    "shapes, axis", [([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 5)], 1), ([(2, 3), (2, 2)], -1), ([(2, 3)], 0)]
)
def test_concat_matches_torch(shapes, axis):
    xs = [rand(*s) for s in shapes]
    got = run_op("concat", *xs, axis=axis)
    np.testing.assert_array_equal(got, torch.cat([T(x) for x in xs], dim=axis).numpy())


@pytest.mark.parametrize("axis, sizes", [(-1, (1, 2, 3)), (0, (4,)), (1, (0, 3)), (1, (2, 1))])
def test_split_matches_torch(axis, sizes):
    x = rand(4, 3, 6)
    got = run_op("split", x, axis=axis, sizes=sizes)
    got = got if isinstance(got, list) else [got]
    want = torch.split(T(x), list(sizes), dim=axis)
    assert len(got) == len(sizes)
    for g_, w in zip(got, want):
        np.testing.assert_array_equal(g_, w.numpy())


@pytest.mark.parametrize(
    "starts, ends, axes, steps, index",
    [
        ((1,), (3,), (), (), np.s_[1:3]),
        ((-3,), (HUGE64,), (), (), np.s_[-3:]),
        ((0,), (-1,), (-1,), (), np.s_[..., :-1]),
        ((10,), (20,), (), (), np.s_[5:5]),  # past the end: empty
        ((-100,), (100,), (1,), (), np.s_[:, :]),
        ((-1,), (-HUGE64 - 1,), (), (-1,), np.s_[::-1]),
        ((4,), (0,), (), (-2,), np.s_[4:0:-2]),
        ((100,), (-100,), (2,), (-1,), np.s_[:, :, ::-1]),
        ((-2,), (-5,), (2,), (-1,), np.s_[:, :, 4:1:-1]),
        ((0, 1), (2, HUGE64), (2, 0), (1, 2), np.s_[1::2, :, 0:2]),
        ((2,), (2,), (), (), np.s_[2:2]),
        ((-100,), (-HUGE64 - 1,), (), (-1,), np.s_[0::-1]),  # a start before the axis clamps to 0
        ((0, 3), (4, -100), (1, 2), (3, -2), np.s_[:, 0:4:3, 3::-2]),
    ],
)
def test_slice_matches_numpy_indexing(starts, ends, axes, steps, index):
    x = rand(5, 4, 6)
    got = run_op("slice", x, starts=starts, ends=ends, axes=axes, steps=steps)
    np.testing.assert_array_equal(got, x[index])


def test_slice_matches_torch_narrow():
    x = rand(5, 4, 6)
    got = run_op("slice", x, starts=(1,), ends=(4,), axes=(-1,))
    np.testing.assert_array_equal(got, torch.narrow(T(x), 2, 1, 3).numpy())


@pytest.mark.parametrize(
    "indices, axis",
    [
        (np.array([0, -1, 2], np.int64), 0),
        (np.array([[1, -2], [0, 4]], np.int64), 0),
        (np.array([-1], np.int32), 1),
        (np.array(2, np.int32), -1),
        (np.array([[0, 0, -3]], np.int32), 2),
    ],
)
def test_gather_matches_torch(indices, axis):
    data = rand(5, 4, 3)
    got = run_op("gather", data, indices, axis=axis)
    size = data.shape[axis]
    picked = torch.index_select(T(data), axis, T((indices % size).astype(np.int64).reshape(-1)))
    want = picked.reshape(data.shape[: axis % 3] + indices.shape + data.shape[axis % 3 + 1 :])
    np.testing.assert_array_equal(got, want.numpy())


def test_gather_index_out_of_range_fails_at_run_time():
    with pytest.raises(SlimgraphError, match="index 5 is out of range for an axis of size 5"):
        run_op("gather", rand(5, 4), np.array([5], np.int64))


def torch_pads(pads):
    """ONNX pads (begins, then ends) as F.pad's list (last axis first)."""
    rank = len(pads) // 2
    return [p for axis in reversed(range(rank)) for p in (pads[axis], pads[rank + axis])]


@pytest.mark.parametrize(
    "pads, value",
    [
        ((0, 0, 1, 2, 0, 0, 3, 1), 0.0),
        ((1, 2, 0, 1, 2, 0, 1, 0), 1.5),  # every axis, batch and channels too
        ((0, 0, -1, 2, 0, 0, 1, -2), -2.0),  # negative pads crop
        ((0, 0, 0, 0, 0, 0, 0, 0), 0.0),
    ],
)
def test_constant_pad_matches_torch(pads, value):
    x = rand(2, 3, 5, 6)
    got = run_op("pad", x, pads=pads, value=value)
    np.testing.assert_array_equal(got, F.pad(T(x), torch_pads(pads), mode="constant", value=value).numpy())


@pytest.mark.parametrize("mode, torch_mode", [("reflect", "reflect"), ("edge", "replicate")])
@pytest.mark.parametrize("pads", [(0, 0, 1, 2, 0, 0, 3, 1), (0, 0, 0, 4, 0, 0, 4, 0), (0, 0, 2, 5, 0, 0, 2, 5)])
def test_reflect_and_edge_pad_match_torch(mode, torch_mode, pads):
    x = rand(2, 3, 5, 6)
    got = run_op("pad", x, pads=pads, mode=mode)
    want = F.pad(T(x), torch_pads(pads)[:4], mode=torch_mode).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "mode, pads, want",
    [
        ("reflect", (-1, 2), [1, 2, 3, 4, 3, 2]),  # crop, then pad what is left (as ONNX Runtime)
        ("reflect", (2, -1), [2, 1, 0, 1, 2, 3]),
        ("edge", (2, -3), [0, 0, 0, 1]),
        ("constant", (-5, 1), [7]),
    ],
)
def test_pad_crops_before_padding(mode, pads, want):
    x = np.arange(5, dtype=np.int32)
    np.testing.assert_array_equal(run_op("pad", x, pads=pads, mode=mode, value=7.0), np.array(want, np.int32))


@pytest.mark.parametrize("dtype", ["f64", "f16", "bf16", "i8", "u8", "bool"])
@pytest.mark.parametrize(
    "op, attrs",
    [
        ("reshape", {"shape": (-1,)}),
        ("transpose", {}),
        ("slice", {"starts": (1,), "ends": (3,)}),
        ("pad", {"pads": (1, 0, 0, 1)}),
        ("reduce_max", {"axes": (0,)}),
        ("tile", {"repeats": (2, 1)}),
    ],
)
def test_ops_keep_narrow_dtypes(op, attrs, dtype):
    x = RNG.integers(0, 2, (4, 3)).astype(DType.of(dtype).numpy)
    got = run_op(op, x, **attrs)
    assert got.dtype == x.dtype


# ---------------------------------------------------------------------------
# Symbolic batch


def test_symbolic_batch_through_every_op_family():
    g = Graph("sym")
    x = g.add_input("x", TensorType("f32", ("N", 16, 4, 4)))
    a = g.call("reshape", x, shape=(0, -1), name="a")
    b = g.call("flatten", x, axis=1, name="b")
    outs = {
        "r1": g.call("reshape", x, shape=(-1, 256)),
        "rows": g.call("reshape", x, shape=(-1, 16)),
        "f0": g.call("flatten", x, axis=0),
        "t": g.call("transpose", x, perm=(0, 2, 3, 1)),
        "cat": g.call("concat", a, b, axis=1),
        "cat0": g.call("concat", a, b, a, axis=0),
        "sl": g.call("slice", a, starts=(0, 10), ends=(HUGE64, 20), axes=(0, 1)),
        "rev": g.call("slice", x, starts=(-1, 1), ends=(-HUGE64, 3), axes=(0, 1), steps=(-1, 1)),
        "mean": g.call("reduce_mean", x, axes=(2, 3), keepdims=False),
        "sum": g.call("reduce_sum", x, axes=(0,), keepdims=True),
        "am": g.call("argmax", a, axis=1, keepdims=False),
        "ga": g.call("gather", x, g.const(np.array([3, -1], np.int64)), axis=1),
        "un": g.call("unsqueeze", a, axes=(1,)),
        "sq": g.call("squeeze", g.call("unsqueeze", a, axes=(1,)), axes=(1,)),
        "ex": g.call("expand", g.call("unsqueeze", a, axes=(1,)), shape=(1, 3, 1)),
        "ti": g.call("tile", a, repeats=(2, 1)),
        "pad": g.call("pad", a, pads=(0, 1, 0, 2)),
    }
    parts = g.call("split", a, axis=1, sizes=(56, 200))
    outs["s0"], outs["s1"] = parts
    g.set_outputs(outs.values())
    types = {k: str(v.type) for k, v in outs.items()}
    assert types == {
        "r1": "f32[N,256]",
        "rows": "f32[N*16,16]",
        "f0": "f32[1,N*256]",
        "t": "f32[N,4,4,16]",
        "cat": "f32[N,512]",
        "cat0": "f32[N*3,256]",
        "sl": "f32[N,10]",
        "rev": "f32[N,2,4,4]",
        "mean": "f32[N,16]",
        "sum": "f32[1,16,4,4]",
        "am": "i64[N]",
        "ga": "f32[N,2,4,4]",
        "un": "f32[N,1,256]",
        "sq": "f32[N,256]",
        "ex": "f32[N,3,256]",
        "ti": "f32[N*2,256]",
        "pad": "f32[N,259]",
        "s0": "f32[N,56]",
        "s1": "f32[N,200]",
    }
    for batch in (1, 5):
        xb = rand(batch, 16, 4, 4)
        t = T(xb)
        ta = t.reshape(batch, -1)
        want = {
            "r1": ta,
            "rows": t.reshape(-1, 16),
            "f0": t.reshape(1, -1),
            "t": t.permute(0, 2, 3, 1),
            "cat": torch.cat([ta, ta], 1),
            "cat0": torch.cat([ta, ta, ta], 0),
            "sl": ta[:, 10:20],
            "rev": t.flip(0)[:, 1:3],
            "mean": t.mean((2, 3)),
            "sum": t.sum(0, keepdim=True),
            "am": ta.argmax(1),
            "ga": t[:, [3, 15]],
            "un": ta.unsqueeze(1),
            "sq": ta,
            "ex": ta.unsqueeze(1).expand(batch, 3, 256),
            "ti": torch.tile(ta, (2, 1)),
            "pad": F.pad(ta, (1, 2)),
            "s0": ta[:, :56],
            "s1": ta[:, 56:],
        }
        for name, got in zip(outs, g.run(xb)):
            np.testing.assert_allclose(got, want[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    "op, shapes, attrs, match",
    [
        ("concat", [("N", 3), (3, 3)], {"axis": 0}, "cannot concat on symbolic axis 0: N \\+ 3"),
        ("concat", [("N", 3), ("B", 3)], {"axis": 0}, "cannot concat on symbolic axis"),
        ("slice", [("N", 3)], {"starts": (1,), "ends": (HUGE64,)}, "cannot slice symbolic axis 0 \\(size N\\)"),
        ("slice", [("N", 3)], {"starts": (0,), "ends": (2,)}, "cannot slice symbolic axis"),
        ("slice", [("N", 3)], {"starts": (0,), "ends": (HUGE64,), "steps": (2,)}, "cannot slice symbolic axis"),
        ("pad", [("N", 3)], {"pads": (1, 0, 0, 0)}, "cannot pad symbolic axis 0 \\(size N\\)"),
        ("split", [("N", 3)], {"axis": 0, "sizes": (1, 2)}, "cannot split on symbolic axis 0"),
        ("squeeze", [("N", 1, 3)], {}, "axes=\\(\\) on \\[N,1,3\\] is ambiguous"),
        ("squeeze", [("N", 1, 3)], {"axes": (0,)}, "axis 0 has size N, not 1"),
        ("reshape", [("N", 3)], {"shape": (2, -1)}, "cannot reshape \\[N,3\\] to shape=\\(2, -1\\)"),
        ("reshape", [("N", 4)], {"shape": (8, 2)}, "element count mismatch \\(N\\*4 vs 16\\)"),
    ],
)
def test_symbolic_shape_errors(op, shapes, attrs, match):
    with pytest.raises(OpError, match=f"^{op}: .*{match}"):
        infer(op, *(TensorType("f32", s) for s in shapes), **attrs)


@pytest.mark.parametrize(
    "op, shape, attrs, want",
    [
        ("concat", ("N*2", 3), {"axis": 0}, "f32[N*4,3]"),  # equal symbols do add up
        ("pad", ("N", 3), {"pads": (-1, 0, 1, 0)}, "f32[N,3]"),  # shift by one keeps the length
        ("slice", ("N", 3), {"starts": (-HUGE64 - 1,), "ends": (HUGE64,)}, "f32[N,3]"),
        ("tile", ("N", 3), {"repeats": (3, 0)}, "f32[N*3,0]"),
        ("expand", ("N", 1), {"shape": (1, 4)}, "f32[N,4]"),
        ("gather", ("N", 3), {"axis": 1}, "f32[N,B,2]"),
        ("reshape", ("B", "N", 6), {"shape": (0, -1, 3)}, "f32[B,N*2,3]"),
    ],
)
def test_symbolic_shape_rules(op, shape, attrs, want):
    types = [TensorType("f32", shape)] * (2 if op == "concat" else 1)
    if op == "gather":
        types.append(TensorType("i64", ("B", 2)))
    assert infer(op, *types, **attrs) == want


# ---------------------------------------------------------------------------
# Attribute validation


@pytest.mark.parametrize(
    "op, shapes, attrs, match",
    [
        ("reduce_sum", [(2, 3, 4)], {"axes": (3,)}, "axes=\\(3,\\): axis 3 is out of range for rank 3"),
        ("reduce_sum", [(2, 3, 4)], {"axes": (0, -3)}, "axes=\\(0, -3\\) names axis 0 twice"),
        ("reduce_mean", [("i32", 2, 3)], {}, "must be a float tensor"),
        ("reduce_sum", [("bool", 2, 3)], {}, "must be a numeric tensor"),
        ("reduce_max", [(2, 0)], {"axes": (1,)}, "axis 1 .* is empty and reduce_max has no identity"),
        ("argmax", [(2, 3)], {"axis": 2}, "axis 2 is out of range for rank 2"),
        ("argmin", [()], {}, "axis=0: a scalar has no axes"),
        ("reshape", [(2, 3, 4)], {"shape": (-1, -1)}, "shape=\\(-1, -1\\) has more than one -1"),
        ("reshape", [(2, 3, 4)], {"shape": (5, 5)}, "element count mismatch \\(24 vs 25\\)"),
        ("reshape", [(2, 3, 4)], {"shape": (-2, 12)}, "entry -2 at position 0 is negative"),
        ("reshape", [(2, 12)], {"shape": (1, 1, 0, -1)}, "0 at position 2 copies an input dim"),
        ("reshape", [(2, 3, 4)], {"shape": (5, -1)}, "do not divide into \\[5\\]"),
        ("reshape", [(0, 3)], {"shape": (0, -1)}, "cannot reshape \\[0,3\\]"),
        ("flatten", [(2, 3)], {"axis": 3}, "axis=3 is out of range for rank 2 \\(valid: -2..2\\)"),
        ("transpose", [(2, 3, 4)], {"perm": (0, 0, 1)}, "perm=\\(0, 0, 1\\) names axis 0 twice"),
        ("transpose", [(2, 3, 4)], {"perm": (1, 0)}, "perm=\\(1, 0\\) is not a permutation"),
        ("transpose", [(2, 3)], {"perm": (0, 2)}, "perm=\\(0, 2\\): axis 2 is out of range"),
        ("concat", [(2, 3), ("i32", 2, 3)], {"axis": 0}, "input 1 is i32\\[2,3\\] .* dtypes must match"),
        ("concat", [(2, 3), (2, 4)], {"axis": 0}, "all dims but axis=0 must match"),
        ("concat", [(2, 3), (2, 3, 1)], {"axis": 0}, "all dims but axis=0 must match"),
        ("concat", [(2, 3)], {"axis": -3}, "axis -3 is out of range for rank 2"),
        ("split", [(4, 3)], {"sizes": (1, 2)}, "sizes=\\(1, 2\\) sums to 3 but axis 0 has size 4"),
        ("split", [(4, 3)], {"sizes": ()}, "sizes=\\(\\) is empty"),
        ("split", [(4, 3)], {"sizes": (5, -1)}, "negative"),
        ("slice", [(4, 3)], {"starts": (0,), "ends": (1,), "steps": (0,)}, "steps=\\(0,\\) has a 0 step"),
        ("slice", [(4, 3)], {"starts": (0, 1), "ends": (1,)}, "differ in length"),
        ("slice", [(4, 3)], {"starts": (0, 0), "ends": (1, 1), "axes": (1, -1)}, "names axis 1 twice"),
        ("slice", [(4, 3)], {"starts": (0,), "ends": (1,), "axes": (2,)}, "axis 2 is out of range"),
        ("slice", [(4, 3)], {"starts": (0, 0, 0), "ends": (1, 1, 1)}, "starts=\\(0, 0, 0\\) has 3 entries"),
        ("slice", [(4, 3)], {"starts": (0,), "ends": (1,), "steps": (1, 1)}, "steps=\\(1, 1\\) has 2 entries"),
        ("gather", [(4, 3), (2,)], {}, "indices must be i32 or i64, got f32\\[2\\]"),
        ("gather", [(4, 3), ("i64", 2)], {"axis": 2}, "axis 2 is out of range"),
        ("squeeze", [(1, 3)], {"axes": (1,)}, "axes=\\(1,\\): axis 1 has size 3, not 1"),
        ("unsqueeze", [(2, 3)], {"axes": (0, -4)}, "axes=\\(0, -4\\) names axis 0 twice"),
        ("unsqueeze", [(2, 3)], {"axes": (4,)}, "axis 4 is out of range for rank 3"),
        ("expand", [(2, 3)], {"shape": (4,)}, "shape=\\(4,\\) does not broadcast"),
        ("expand", [(2, 3)], {"shape": (-1, 3)}, "shape=\\(-1, 3\\) has a negative entry"),
        ("tile", [(2, 3)], {"repeats": (2,)}, "repeats=\\(2,\\) has 1 entries but the input has rank 2"),
        ("tile", [(2, 3)], {"repeats": (2, -1)}, "negative"),
        ("pad", [(2, 3)], {"pads": (1, 1)}, "pads=\\(1, 1\\) has 2 entries; a rank-2 input needs 4"),
        ("pad", [(2, 3)], {"pads": (0, 0, 0, 3), "mode": "reflect"}, "mode='reflect' needs pads smaller than axis 1"),
        ("pad", [(2, 3)], {"pads": (0, -2, 0, -2)}, "crops axis 1 of size 3 by more than its length"),
        ("pad", [(2, 0)], {"pads": (0, 1, 0, 0), "mode": "edge"}, "mode='edge' cannot pad the empty axis 1"),
        ("pad", [(2, 3)], {"pads": (0, 0, 0, 0), "mode": "wrap"}, "mode='wrap' is not one of"),
        ("reshape", [(2, 3)], {}, "missing required attribute 'shape'"),
    ],
)
def test_bad_attributes_raise_op_error(op, shapes, attrs, match):
    types = [TensorType(s[0], s[1:]) if s and isinstance(s[0], str) else TensorType("f32", s) for s in shapes]
    with pytest.raises(OpError, match=f"^{op}: .*{match}"):
        infer(op, *types, **attrs)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("exclusive, reverse", [(False, False), (True, False), (False, True), (True, True)])
def test_cumsum_matches_torch(axis, exclusive, reverse):
    x = rand(3, 4, 5)
    want = T(x).flip(axis) if reverse else T(x)
    total = torch.cumsum(want, axis)
    if exclusive:
        total = total - want
    want = total.flip(axis) if reverse else total
    np.testing.assert_allclose(run_op("cumsum", x, axis=axis, exclusive=exclusive, reverse=reverse), want.numpy(),
                               rtol=1e-5, atol=1e-6)


def test_cumsum_keeps_integers_and_refuses_bool():
    x = RNG.integers(-5, 5, (2, 6)).astype(np.int32)
    out = run_op("cumsum", x, axis=1)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, torch.cumsum(T(x), 1).numpy())
    with pytest.raises(SlimgraphError, match="cast a bool mask"):
        run_op("cumsum", x > 0, axis=1)


@pytest.mark.parametrize("k", [-2, 0, 1, 7])
def test_trilu_matches_torch(k):
    x = rand(2, 4, 6)
    np.testing.assert_array_equal(run_op("trilu", x, k=k), torch.triu(T(x), k).numpy())
    np.testing.assert_array_equal(run_op("trilu", x > 0, k=k, upper=False), torch.tril(T(x > 0), k).numpy())
    assert infer("trilu", TensorType("f32", ("N", 5, 5)), k=k) == "f32[N,5,5]"
    with pytest.raises(SlimgraphError, match="rank 2 or more"):
        run_op("trilu", rand(4), k=k)
