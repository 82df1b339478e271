"""TE lowerings of the integer ops: ``qconv``, ``qlinear`` (int8 x int8 -> int32) and ``requantize``.

The kernels read int8/uint8 activations and int8 weights (int4 weights are
widened to int8 at compile time) and multiply-accumulate in int32. On CPU a
constant weight is packed as the float rules pack it (``[C_out/B, C_in, KH,
KW, B]`` and ``[N/B, K, B]``) and the compute blocks carry the same
``sg.rule`` hints, so the register-tiled micro-kernels of the CPU schedule
run them with int32 accumulators. On a CPU with AVX-512 VNNI a 2-d conv
instead takes the layouts of ``vpdpbusd`` (4 input channels innermost) and is
tensorized with it: about 10x the int32 micro-kernel's throughput.

The activations' zero point is handled as integer libraries do: the input
is padded with the zero point, the kernel sums ``x * w`` and the epilogue
adds ``bias - x_zero_point * sum(w)`` per output channel (a compile-time
constant). ``requantize`` is gemmlowp's fixed-point arithmetic in int64.

Example::

    >>> from slimgraph.backends.tvm.lower import lowering_table
    >>> import slimgraph.backends.tvm.ops.quantized  # noqa: F401
    >>> {"qconv", "qlinear", "requantize"} <= set(lowering_table())
    True
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from slimgraph.backends.tvm.lower import register
from slimgraph.backends.tvm.ops.common import const, spatial_compute
from slimgraph.backends.tvm.ops.nn import packed_conv2d, pad_spatial, vector_block
from slimgraph.ir.ops.nn import _conv_geometry
from slimgraph.ir.ops.qlinear import _clip_range

_ACC = "int32"
#: ``vpdpbusd``: 16 int32 lanes, each the sum of 4 uint8 x int8 products.
VNNI_LANES, VNNI_GROUP = 16, 4


def _wide(expr):
    return expr.astype(_ACC)


def _int8_weight(call, index: int = 1) -> np.ndarray | None:
    weight = call.consts[index]
    return None if weight is None else np.asarray(weight).astype(np.int8)


def _zero_point_epilogue(call, acc, weight: np.ndarray | None, channel_axis: int, zx: int | None = None):
    """``acc - zx * sum(w) + bias`` per output channel, in int32 (``zx``: the
    activations' zero point as the kernel saw them, by default the op's)."""
    zx = call.attrs["x_zero_point"] if zx is None else zx
    bias = call.args[2] if len(call.args) > 2 else None
    if not zx and bias is None:
        return acc
    shape = call.shape()
    axis = channel_axis % len(shape)
    bias_const = call.consts[2] if len(call.consts) > 2 else None
    if weight is not None:
        correction = -zx * weight.reshape(weight.shape[0], -1).astype(np.int64).sum(axis=1)
        if bias_const is not None:  # folded with the zero-point term into one constant
            correction = correction + bias_const.astype(np.int64)
            bias = None
        offset = call.param(correction.astype(np.int32), "qbias")
        read_offset = lambda c: offset[c]  # noqa: E731
    else:
        w = call.args[1]
        r = [te.reduce_axis((0, int(d)), f"rs{i}") for i, d in enumerate(w.shape[1:])]
        sums = te.compute((int(w.shape[0]),), lambda o: te.sum(_wide(w[(o, *r)]), axis=r), name="wsum")
        read_offset = lambda c: -const(zx, _ACC) * sums[c]  # noqa: E731

    def f(*idx):
        v = acc[idx] + read_offset(idx[axis])
        return v + bias[idx[axis]] if bias is not None else v

    return spatial_compute(shape, f, name="qbias", rule="elementwise")


@register("qconv")
def lower_qconv(call):
    """Integer convolution; on CPU, the packed micro-kernel layout for a constant 2-d weight."""
    x, w = call.args[:2]
    k = len(x.shape) - 2
    strides, begins, ends, dilations = _conv_geometry(call.attrs, k)
    groups = call.attrs["groups"]
    c_in, c_out = int(x.shape[1]), int(w.shape[0])
    kernel = [int(d) for d in w.shape[2:]]
    shape = call.shape()
    weight = _int8_weight(call)
    if k == 2 and groups == 1 and weight is not None and c_out % VNNI_LANES == 0 and call.target.has_cpu_features("avx512vnni"):
        return _vnni_conv2d(call, x, weight, begins, ends, strides, dilations)
    xp = pad_spatial(x, begins, ends, const(call.attrs["x_zero_point"], str(x.dtype)))
    if call.target.is_cpu and k == 2 and groups == 1 and weight is not None:
        acc = packed_conv2d(call, xp, weight, shape, strides, dilations, "qconv", widen=_wide)
    else:
        wt = call.param(weight, "w_int8") if weight is not None else w
        per_in, per_out = c_in // groups, c_out // groups
        rc = te.reduce_axis((0, per_in), "rc")
        rk = [te.reduce_axis((0, n), f"rk{i}") for i, n in enumerate(kernel)]

        def f(n, o, *pos):
            channel = (o // per_out) * per_in + rc if groups > 1 else rc
            where = tuple(p * s + r * d for p, s, r, d in zip(pos, strides, rk, dilations))
            return te.sum(_wide(xp[(n, channel) + where]) * _wide(wt[(o, rc) + tuple(rk)]), axis=[rc, *rk])

        acc = te.compute(shape, f, name="qconv", attrs={"sg.rule": "conv"})
    return _zero_point_epilogue(call, acc, weight, 1)


def _vnni_conv2d(call, x, weight: np.ndarray, begins, ends, strides, dilations):
    """The AVX-512 VNNI form of a 2-d conv: ``vpdpbusd`` multiplies 4 uint8 activations
    by 4 int8 weights for each of 16 output channels and adds the sums to int32 lanes.

    Activations are re-laid out once as [N, C/4, H, W, 4] uint8 (padding and the
    int8 -> uint8 shift by 128 in the same copy; the shift moves into the zero
    point the epilogue corrects for) and weights as [C_out/16, C/4, KH, KW, 16, 4].
    Input channels are padded to a multiple of 4 with zero weights.
    """
    c_in = int(x.shape[1])
    c_out, _, kh, kw = weight.shape
    groups4 = -(-c_in // VNNI_GROUP)
    zx = call.attrs["x_zero_point"]
    shift = 128 if str(x.dtype) == "int8" else 0
    xp = pad_spatial(x, begins, ends, const(zx, str(x.dtype)))  # inlined into the relayout below
    n, _, height, width = (int(d) for d in xp.shape)

    def relaid(b, c4, h, w, i):
        c = c4 * VNNI_GROUP + i
        # a clamped read: the vectorized copy may load both sides of the select
        src = (xp[b, tirx.min(c, c_in - 1), h, w].astype("int32") + shift).astype("uint8")
        return tirx.if_then_else(c < c_in, src, const(zx + shift, "uint8"))

    xq = spatial_compute((n, groups4, height, width, VNNI_GROUP), relaid, name="pad", rule="pad")
    padded = np.zeros((c_out, groups4 * VNNI_GROUP, kh, kw), np.int8)
    padded[:, :c_in] = weight
    wp = call.param(
        padded.reshape(c_out // VNNI_LANES, VNNI_LANES, groups4, VNNI_GROUP, kh, kw).transpose(0, 2, 4, 5, 1, 3),
        "w_vnni",
    )
    rc, rh, rw, ri = (te.reduce_axis((0, e), r) for e, r in ((groups4, "rc"), (kh, "rh"), (kw, "rw"), (VNNI_GROUP, "ri")))
    (sh, sw), (dh, dw) = strides, dilations
    acc = te.compute(
        call.shape(),
        lambda b, o, h, v: te.sum(
            xq[b, rc, h * sh + rh * dh, v * sw + rw * dw, ri].astype(_ACC)
            * wp[o // VNNI_LANES, rc, rh, rw, o % VNNI_LANES, ri].astype(_ACC),
            axis=[rc, rh, rw, ri],
        ),
        name="qconv",
        attrs={"sg.rule": "conv2d_vnni", "sg.block": VNNI_LANES},
    )
    return _zero_point_epilogue(call, acc, weight, 1, zx=zx + shift)


@register("qlinear")
def lower_qlinear(call):
    """Integer x @ w.T; on CPU, a constant weight packed [N/B, K, B] for the matmul micro-kernel."""
    x, w = call.args[:2]
    n_dim, k_dim = (int(d) for d in w.shape)
    shape = call.shape()
    weight = _int8_weight(call)
    rk = te.reduce_axis((0, k_dim), "rk")
    if call.target.is_cpu and weight is not None:
        block = vector_block(n_dim)
        wp = call.param(weight.reshape(n_dim // block, block, k_dim).transpose(0, 2, 1), "w_packed")
        acc = te.compute(
            shape,
            lambda *i: te.sum(_wide(x[i[:-1] + (rk,)]) * _wide(wp[i[-1] // block, rk, i[-1] % block]), axis=rk),
            name="qlinear",
            attrs={"sg.rule": "matmul_packed", "sg.block": block},
        )
    else:
        acc = te.compute(
            shape,
            lambda *i: te.sum(_wide(x[i[:-1] + (rk,)]) * _wide(w[i[-1], rk]), axis=rk),
            name="qlinear",
            attrs={"sg.rule": "matmul"},
        )
    return _zero_point_epilogue(call, acc, weight, -1)


def _channel_param(call, values, name: str):
    """Index -> the value of the slice it lies in (inline when there is one value)."""
    if len(set(int(v) for v in values)) == 1:  # one value: a constant the compiler can fold
        value = tirx.const(int(values[0]), "int64")
        return lambda idx: value
    axis = call.attrs["axis"] % len(call.shape())
    buf = call.param(np.asarray(values, np.int64), name)
    return lambda idx: buf[idx[axis]]


@register("requantize")
def lower_requantize(call):
    """gemmlowp's MultiplyByQuantizedMultiplier, then the zero point and the clamp."""
    x = call.args[0]
    shifts = np.asarray(call.attrs["shift"], np.int64)
    multiplier = _channel_param(call, call.attrs["multiplier"], "multiplier")
    left = _channel_param(call, np.maximum(shifts, 0), "left_shift")
    right = _channel_param(call, np.maximum(-shifts, 0), "right_shift")
    lo, hi = _clip_range(call.out_types[0].dtype, call.attrs["clip"])
    zero = call.attrs["zero_point"]
    i64 = lambda v: tirx.const(v, "int64")  # noqa: E731
    out_dtype = call.dtype()

    def f(*idx):
        v = x[idx].astype("int64")
        if shifts.max() > 0:  # only multipliers above 1 shift left first
            v = tirx.min(tirx.max(v << left(idx), i64(-(2**31))), i64(2**31 - 1))
        # gemmlowp's nudged, truncating high multiply and round-half-away shift, rewritten so
        # that each intermediate is used once (a repeated subexpression is copied when inlined,
        # and LLVM spent about 10 s per kernel on the copies). Multipliers are positive, so the
        # product, the high word and v share a sign: (v*m + nudge) / 2^31 truncated is
        # (v*m + 2^30) >> 31, and a negative value rounds with one less added before >> r.
        high = (v * multiplier(idx) + i64(1 << 30)) >> i64(31)
        r = right(idx)
        half = (i64(1) << r) >> i64(1)
        rounded = (high + half - tirx.Select(tirx.all(v < i64(0), r > i64(0)), i64(1), i64(0))) >> r
        return tirx.min(tirx.max(rounded + i64(zero), i64(lo)), i64(hi)).astype(out_dtype)

    return spatial_compute(call.shape(), f, name="requantize", rule="elementwise")
