"""TE lowerings of the compute ops: matmul, linear, convolutions, normalizations, pooling, softmax.

On CPU targets a constant weight is re-laid out once at compile time so that
the innermost loop of the schedule reads it contiguously: convolutions use
``[C_out/B, C_in, KH, KW, B]`` and matmuls ``[N/B, K, B]`` (B = the CPU rule's
vector block). The compute blocks carry ``sg.rule`` hints that the schedule
rules dispatch on. Sums of half-precision values accumulate in float32 (the packed
forms widen each operand as they read it). float64 takes the same packed forms with
blocks of at most 8 (the register width of 16 float32).

Example::

    >>> vector_block(96), vector_block(1000), vector_block(3)
    (16, 8, 1)
"""

from __future__ import annotations

import math

import numpy as np
from tvm import te, tirx

from slimgraph.backends.tvm.lower import register
from slimgraph.backends.tvm.ops import amx
from slimgraph.backends.tvm.ops.sparse import sparse_conv1x1, sparse_form, sparse_matmul
from slimgraph.backends.tvm.ops.common import (
    compute_dtype, dims, down, dtype_of, is_float, lowest, spatial_compute, up, vector_exp,
)
from slimgraph.backends.tvm.schedules.intrinsics import bf16_bits, bf16_half
from slimgraph.ir.ops.nn import _conv_geometry, _pool_geometry, _transpose_geometry, resize_tables


def vector_block(n: int, widest: int = 16) -> int:
    """The largest of 16, 8, 4, 2, 1 up to ``widest`` dividing ``n``: the channel block of packed weights."""
    return next(b for b in (16, 8, 4, 2, 1) if b <= widest and n % b == 0)


def _block(call, n: int) -> int:
    # a vector register holds half as many float64 lanes as float32 ones
    return vector_block(n, 8 if call.dtype() == "float64" else 16)


def _acc_dtype(dtype: str) -> str:
    return compute_dtype(dtype) if is_float(dtype) else dtype


def _cpu_packed(call) -> bool:
    """Whether the CPU micro-kernel forms (packed weights, register tiles) apply to ``call``."""
    return call.target.is_cpu and is_float(call.dtype())


def pad_spatial(x, begins, ends, fill, name: str = "pad"):
    """``x`` [N, C, *spatial] padded with ``fill``; ``x`` itself when nothing is padded."""
    if not any(begins) and not any(ends):
        return x
    sizes = [int(d) for d in x.shape[2:]]
    shape = list(dims(x)[:2]) + [s + b + e for s, b, e in zip(sizes, begins, ends)]

    def f(n, c, *pos):
        inside = tirx.const(True, "bool")
        for p, b, s in zip(pos, begins, sizes):
            if b:
                inside = tirx.And(inside, p >= b)
            inside = tirx.And(inside, p < b + s)
        # clamped reads: a vectorized if_then_else may load both sides
        src = tuple(tirx.max(tirx.min(p - b, s - 1), 0) if b or e else p for p, b, e, s in zip(pos, begins, ends, sizes))
        return tirx.if_then_else(inside, x[(n, c) + src], fill)

    return spatial_compute(shape, f, name=name, rule="pad")


def _bias_epilogue(call, acc, bias_index: int, scale: float = 1.0, bias_scale: float = 1.0, channel_axis: int = 1):
    """``scale * acc + bias_scale * b`` (b along ``channel_axis``), cast to the output dtype."""
    shape, dtype = call.shape(), call.dtype()
    bias = call.args[bias_index] if len(call.args) > bias_index else None
    if bias is None and scale == 1.0 and dtype_of(acc) == dtype:
        return acc

    def f(*idx):
        v = acc[idx]
        if scale != 1.0:
            v = v * tirx.const(scale, dtype_of(v))
        if bias is not None:
            bidx = tuple(0 if int(d) == 1 else idx[len(idx) - bias.ndim + i] for i, d in enumerate(bias.shape))
            if channel_axis == 1 and bias.ndim == 1:
                bidx = (idx[1],)
            bv = up(bias[bidx])
            v = v + (bv * tirx.const(bias_scale, dtype_of(bv)) if bias_scale != 1.0 else bv)
        return down(v, dtype)

    return spatial_compute(shape, f, name="epilogue", rule="elementwise")


# ---------------------------------------------------------------------------
# Convolution


def packed_conv2d(call, xp, weight: np.ndarray, shape, strides, dilations, name: str, widen=lambda v: v,
                  pixels: bool = False):
    """The CPU micro-kernel layout of a 2-d conv with a constant weight: the weight is
    re-laid out once as [C_out/block, C_in, kh, kw, block] so the inner loop reads it
    contiguously; ``widen`` converts each operand before the multiply (int8 -> int32).
    ``xp`` is the (padded) NCHW input, or with ``pixels`` a 1x1 conv's [N, H_out, C_in, W_out]
    pixels (:func:`conv1x1_pixels`)."""
    c_out, c_in, *kernel = weight.shape
    block = _block(call, c_out)
    if isinstance(shape[3], int) and _two_vector_block(call, c_in, c_out, kernel, shape[3]):
        block *= 2
    wp = call.param(weight.reshape(c_out // block, block, c_in, *kernel).transpose(0, 2, 3, 4, 1), "w_packed")
    rc, rh, rw = (te.reduce_axis((0, n), r) for n, r in ((c_in, "rc"), (kernel[0], "rh"), (kernel[1], "rw")))
    (sh, sw), (dh, dw) = strides, dilations

    def x_at(n, h, v):
        return xp[n, h + rh, rc, v + rw] if pixels else xp[n, rc, h * sh + rh * dh, v * sw + rw * dw]

    return te.compute(
        shape,
        lambda n, o, h, v: te.sum(widen(x_at(n, h, v)) * widen(wp[o // block, rc, rh, rw, o % block]), axis=[rc, rh, rw]),
        name=name,
        attrs={"sg.rule": "conv2d_packed", "sg.block": block},
    )


def _two_vector_block(call, c_in: int, c_out: int, kernel: list[int], out_width: int) -> bool:
    """Whether a float32 packed conv on AVX-512 takes blocks of 32 output channels (two registers per
    pixel of its tile) instead of 16: where a tile of 16 leaves too few accumulators, a row of 7
    pixels (7x7 maps: ResNet-50's last stage 10-20% faster, its weights read from memory as in
    the model), or where few input channels make each step a load of weights for few FMAs (the
    7x7 stem over 3 channels: 1.11 -> 0.85 ms); and for the 1x1 convs of 14x14 maps that narrow
    the channels (3-12% faster: 576->96, 384->64, 1024->256). Measured slower for the 1x1 convs of
    14x14 maps that widen them (7-30%), for wider maps' 3x3 convs (28 accumulators spill) and for
    the 3x3 stems of MobileNetV2 and EfficientNet."""
    if call.target.lanes != 16 or call.dtype() != "float32" or c_out % 32:
        return False
    narrowing = kernel == [1, 1] and c_in > c_out and out_width <= 14
    return out_width <= 7 or narrowing or (c_in <= 4 and min(kernel) >= 7)


def conv1x1_pixels(x, shape, strides):
    """The pixels a 1x1 conv reads, row by row: [N, H_out, C_in, W_out], each output row's
    pixels as one run per input channel, materialized once in the conv's kernel (the ``pixels``
    stage, computed row by row ahead of the rows reading it). A tile of a row then reads its
    input as one contiguous stream, where in NCHW each step of the reduction over input channels
    reads a row segment a whole channel plane away from the last, a new cache line that no
    prefetcher predicts. The copy moves whole row runs; a channels-last copy was a transpose,
    one scalar load per element (MobileNetV2 3.97 -> 3.87 ms, EfficientNet-B0 8.57 -> 8.35,
    ResNet-50 34.2 -> 33.7 against channels last). A strided conv's copy keeps only the pixels
    it reads."""
    sh, sw = strides
    return spatial_compute((shape[0], shape[2], int(x.shape[1]), shape[3]),
                           lambda n, h, c, v: x[n, c, h * sh, v * sw], name="pixels", rule="pixels")


#: (pixel vectors, output channels) tiles of a 1x1 conv over its flattened pixel rows, by the
#: target's float32 lanes, in order of preference (measured on ResNet-50's and MobileNetV2's
#: shapes): about 16 accumulator registers of AVX-512's 32, 8-12 of AVX2's 16. Per input channel
#: a tile loads its pixel vectors once and broadcasts one weight per output channel into them.
#: Runs of 28 or 56 lanes (no power of two) compile to scalar code: 14x14 and 7x7 maps keep the
#: packed conv.
PIXEL_ROW_TILES = {16: ((2, 8), (2, 6), (4, 4), (2, 4), (1, 8), (1, 12), (1, 6), (1, 4)),
                   8: ((2, 6), (4, 3), (2, 4), (1, 12), (1, 8), (1, 6), (1, 4))}


def _pixel_rows_tile(call, kernel, begins, ends) -> tuple[int, int] | None:
    """The (pixels, channels) tile of an unpadded 1x1 fp32 conv, None when none fits its shape."""
    if kernel != [1, 1] or any(begins) or any(ends) or call.dtype() != "float32":
        return None
    _, c_out, h, w = call.shape()
    if not all(isinstance(d, int) for d in (c_out, h, w)):
        return None
    lanes = call.target.lanes
    return next(((v * lanes, c) for v, c in PIXEL_ROW_TILES.get(lanes, ()) if (h * w) % (v * lanes) == 0
                 and c_out % c == 0), None)


#: Channel runs at and above which a 1x1 conv over pixel rows copies each tile's pixels into one
#: contiguous run ahead of the tile: a step of the tile reads its input a whole channel plane away
#: from the last (12.5 KB at 56x56), a new page the L1 prefetcher does not follow, and the tile's
#: input leaves L1 while the channel runs stream their weights by; the copy is read in sequence
#: from L1. Alone, 2 threads: ResNet-50's 256->64 at 56x56 0.456 -> 0.409 ms, 256->128 0.83 ->
#: 0.75, 512->256 at 28x28 0.95 -> 0.87; with 3 runs (MobileNetV2's 144->24 at 56x56) the copy
#: cost more than it saved (0.080 -> 0.089).
PIXEL_TILE_RUNS = 8


def pixel_rows_conv1x1(call, x, weight: np.ndarray, shape, strides, tile: tuple[int, int]):
    """A 1x1 conv as the matrix product it is in NCHW: out[n, :, p] = W @ x[n, :, p] over the
    flattened pixels p, computed (``conv1x1_rows`` rule) as vectors along p times a run of output channels.
    Each input channel's pixels are one contiguous row, so no transposed copy is made, and each tile
    writes whole vectors into its channel planes (the packed conv's 16-channel tile stores its
    pixels lane by lane, as many scalar stores as results: ResNet-50's 1x1 convs ran at 140-250
    GFLOP/s). A strided conv reads a copy of the pixels it uses, in rows (``pixels``, made once).
    A conv that narrows the channels, its pixel tiles outermost and each read by PIXEL_TILE_RUNS
    channel runs or more, reads a copy of each tile's pixels instead (``pixel_tiles``, made per tile, see
    :data:`PIXEL_TILE_RUNS`). ``tile`` is the (pixels, channels) tile :func:`_pixel_rows_tile`
    chose. The weight is laid out [C_out/B, C_in, B]: a step's B broadcasts are adjacent."""
    c_out, c_in = weight.shape[:2]
    pixels, block = tile
    width = int(shape[3])
    count = int(shape[2]) * width
    rows_first = count > c_out
    sh, sw = strides
    if rows_first and c_in > c_out and c_out // block >= PIXEL_TILE_RUNS:
        tiles = spatial_compute((shape[0], count // pixels, c_in, pixels),
                                lambda n, t, c, i: x[n, c, (t * pixels + i) // width * sh, (t * pixels + i) % width * sw],
                                name="pixels", rule="pixel_tiles")

        def read(n, c, p):
            return tiles[n, p // pixels, c, p % pixels]
    else:
        if (sh, sw) != (1, 1):
            x = spatial_compute((shape[0], c_in, shape[2], width), lambda n, c, h, v: x[n, c, h * sh, v * sw],
                                name="pixels", rule="pixels")

        def read(n, c, p):
            return x[n, c, p // width, p % width]
    wp = call.param(weight.reshape(c_out // block, block, c_in).transpose(0, 2, 1), "w_packed")
    rc = te.reduce_axis((0, c_in), "rc")
    rows = te.compute(
        (shape[0], c_out, count),
        lambda n, o, p: te.sum(read(n, rc, p) * wp[o // block, rc, o % block], axis=rc),
        name="conv",
        attrs={"sg.rule": "conv1x1_rows", "sg.block": block, "sg.pixels": pixels, "sg.width": width,
               "sg.rows_first": int(rows_first)},
    )
    return spatial_compute(shape, lambda n, o, h, v: rows[n, o, h * width + v], name="conv_planes",
                           rule="elementwise")


#: Grouped convs with at most this many groups run as dense packed convs over a block-diagonal
#: weight: G times the multiply-adds, but the packed kernel runs them about ten times faster than
#: the generic grouped loop nest (ShuffleNet's 4-group 1x1 convs: 7-9 GFLOP/s generic).
DENSE_GROUPS = 4


def _block_diagonal(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv's weight [C_out, C_in/G, ...] as the dense [C_out, C_in, ...] it equals."""
    c_out, per_in = weight.shape[:2]
    per_out = c_out // groups
    dense = np.zeros((c_out, per_in * groups) + weight.shape[2:], weight.dtype)
    for g in range(groups):
        dense[g * per_out : (g + 1) * per_out, g * per_in : (g + 1) * per_in] = weight[g * per_out : (g + 1) * per_out]
    return dense


@register("conv")
def lower_conv(call):
    """N-d grouped convolution; on CPU, packed 2-d and depthwise forms for constant weights."""
    x, w = call.args[:2]
    k = len(x.shape) - 2
    strides, begins, ends, dilations = _conv_geometry(call.attrs, k)
    groups = call.attrs["groups"]
    c_in, c_out = int(x.shape[1]), int(w.shape[0])
    kernel = [int(d) for d in w.shape[2:]]
    shape = call.shape()
    xp = pad_spatial(x, begins, ends, tirx.const(0, dtype_of(x)))
    weight = call.consts[1]
    plan = sparse_form(call, x)
    if plan is not None:
        return _bias_epilogue(call, sparse_conv1x1(call, x, plan), 2)
    if amx.conv2d_applies(call, weight, groups, dilations, kernel):
        return amx.conv2d(call, x, weight, begins, strides)  # the bias added, rounded once, in the kernel
    if _dpbf16_applies(call, k, groups, c_out, weight):
        conv = _bf16_conv2d(call, x, weight, begins, ends, strides, dilations)
    elif _cpu_packed(call) and k == 2 and groups == 1 and weight is not None and (
            tile := _pixel_rows_tile(call, kernel, begins, ends)):
        conv = pixel_rows_conv1x1(call, x, weight, shape, strides, tile)
    elif _cpu_packed(call) and k == 2 and groups == 1 and weight is not None:
        pixels = kernel == [1, 1] and not any(begins) and not any(ends)
        if pixels:
            xp = conv1x1_pixels(x, shape, strides)
        conv = packed_conv2d(call, xp, weight, shape, strides, dilations, "conv", widen=up, pixels=pixels)
    elif _cpu_packed(call) and k == 2 and 1 < groups <= DENSE_GROUPS and groups != c_in and weight is not None:
        conv = packed_conv2d(call, xp, _block_diagonal(weight, groups), shape, strides, dilations, "conv", widen=up)
    elif _cpu_packed(call) and k == 2 and groups == c_in == c_out:
        conv = _depthwise_conv2d(x, w, shape, kernel, strides, begins, ends, dilations)
    else:
        per_group_in, per_group_out = c_in // groups, c_out // groups
        rc = te.reduce_axis((0, per_group_in), "rc")
        rk = [te.reduce_axis((0, kk), f"rk{i}") for i, kk in enumerate(kernel)]

        def f(n, o, *pos):
            channel = (o // per_group_out) * per_group_in + rc if groups > 1 else rc
            where = tuple(p * s + r * d for p, s, r, d in zip(pos, strides, rk, dilations))
            return te.sum(up(xp[(n, channel) + where]) * up(w[(o, rc) + tuple(rk)]), axis=[rc, *rk])

        conv = te.compute(shape, f, name="conv", attrs={"sg.rule": "conv"})
    return _bias_epilogue(call, conv, 2)


def _vector_multiple(n: int) -> int:
    """``n`` rounded up to whole vectors: of 16 lanes, or 8 or 4 for short rows."""
    lanes = 16 if n > 8 else 8 if n > 4 else 4
    return -(-n // lanes) * lanes


def _depthwise_conv2d(x, w, shape, kernel, strides, begins, ends, dilations):
    """A depthwise 2-d conv, with the ``depthwise`` rule: vectorized along the output row, the
    padded input materialized (per channel, by the schedule) so that the window's reads carry
    no bounds test. With row stride 1 the rows are computed to whole vectors (56 as 64, 7 as 8:
    a ragged vector split into 16 + 8 + 4 lanes cost three loads and a shuffle per step) and
    read back without the extra columns, and the input is padded to cover them, in whole
    vectors so that the copy vectorizes too.

    With a row stride s > 1 each tap reads every s-th column of the padded row, a vector load
    the TIR pipeline (``tir_pipeline.py``) turns into s contiguous loads and a shuffle.
    """
    rh, rw = te.reduce_axis((0, kernel[0]), "rh"), te.reduce_axis((0, kernel[1]), "rw")
    (sh, sw), (dh, dw) = strides, dilations
    out_w = int(shape[3])
    rows_w = _vector_multiple(out_w)
    width = int(x.shape[3]) + begins[1] + ends[1]
    reach = (rows_w - 1) * sw + (kernel[1] - 1) * dw + 1  # input columns the whole-vector rows read
    extra = _vector_multiple(max(width, reach)) - width if any(begins) or any(ends) or reach > width else 0
    xp = pad_spatial(x, begins, (ends[0], ends[1] + extra), tirx.const(0, dtype_of(x)))
    conv = te.compute(
        (*shape[:3], rows_w),
        lambda n, c, h, v: te.sum(up(xp[n, c, h * sh + rh * dh, v * sw + rw * dw]) * up(w[c, 0, rh, rw]),
                                  axis=[rh, rw]),
        name="conv",
        attrs={"sg.rule": "depthwise"},
    )
    if rows_w == out_w:
        return conv
    return spatial_compute(shape, lambda *i: conv[i], name="conv_rows", rule="elementwise")


#: AVX512-BF16 ``vdpbf16ps``: 16 float32 lanes, each adding the products of a pair of bf16 values.
BF16_LANES = 16


def _dpbf16_applies(call, k: int, groups: int, c_out: int, weight) -> bool:
    """Whether a bf16 conv takes the ``vdpbf16ps`` form (other bf16 convs widen each operand)."""
    return (call.dtype() == "bfloat16" and k == 2 and groups == 1 and weight is not None
            and c_out % BF16_LANES == 0 and call.target.has("bf16"))


def _bf16_pairs(weight: np.ndarray) -> np.ndarray:
    """A bf16 array [C_out, C, ...] as int32 pairs [C_out, ceil(C/2), ...] (channel 2i in the low half)."""
    bits = np.asarray(weight).view(np.uint16).astype(np.uint32)
    if bits.shape[1] % 2:
        bits = np.concatenate([bits, np.zeros_like(bits[:, :1])], axis=1)
    return (bits[:, 0::2] | (bits[:, 1::2] << 16)).view(np.int32)


def _bf16_conv2d(call, x, weight: np.ndarray, begins, ends, strides, dilations):
    """The AVX512-BF16 form of a 2-d conv: ``vdpbf16ps`` multiplies a pair of bf16 activations
    by a pair of bf16 weights for each of 16 output channels and adds the sums to float32 lanes.

    As in the VNNI int8 conv (``ops/quantized.py``), activations are re-laid out once, with the
    padding (rows rounded up to whole vectors), as [N, C/2, H, W] int32 words each holding two channels' bf16 bits, and weights as
    [C_out/16, C/2, KH, KW, 16] words (see ``schedules/intrinsics.py``); an odd channel count
    gets a zero partner.
    """
    c_in = int(x.shape[1])
    c_out, _, kh, kw = weight.shape
    pairs = -(-c_in // 2)
    # rows of whole vectors, so that the copy vectorizes (the extra columns are never read)
    width = int(x.shape[3]) + begins[1] + ends[1]
    xp = pad_spatial(x, begins, (ends[0], ends[1] + _vector_multiple(width) - width), tirx.const(0, dtype_of(x)))
    n, _, height, width = (int(d) for d in xp.shape)

    def relaid(b, c2, h, w):
        low = bf16_bits(up(xp[b, c2 * 2, h, w]))
        # a clamped read: the vectorized copy may load both sides of the select
        high = tirx.if_then_else(c2 * 2 + 1 < c_in, bf16_bits(up(xp[b, tirx.min(c2 * 2 + 1, c_in - 1), h, w])),
                                 tirx.const(0, "uint32"))
        return tirx.reinterpret("int32", low | (high << tirx.const(16, "uint32")))

    xq = spatial_compute((n, pairs, height, width), relaid, name="pad", rule="pad")
    words = _bf16_pairs(weight)
    wp = call.param(words.reshape(c_out // BF16_LANES, BF16_LANES, pairs, kh, kw).transpose(0, 2, 3, 4, 1), "w_bf16")
    rc, rh, rw, ri = (te.reduce_axis((0, e), r) for e, r in ((pairs, "rc"), (kh, "rh"), (kw, "rw"), (2, "ri")))
    (sh, sw), (dh, dw) = strides, dilations
    return te.compute(
        call.shape(),
        lambda b, o, h, v: te.sum(
            bf16_half(xq[b, rc, h * sh + rh * dh, v * sw + rw * dw], ri)
            * bf16_half(wp[o // BF16_LANES, rc, rh, rw, o % BF16_LANES], ri),
            axis=[rc, rh, rw, ri],
        ),
        name="conv",
        attrs={"sg.rule": "conv2d_bf16", "sg.block": BF16_LANES},
    )


@register("conv_transpose")
def lower_conv_transpose(call):
    """Transposed convolution, gathered: each output sums the inputs that scatter onto it."""
    x, w = call.args[:2]
    k = len(x.shape) - 2
    strides, begins, _, dilations, _ = _transpose_geometry(call.attrs, k)
    groups = call.attrs["groups"]
    c_in = int(x.shape[1])
    per_group_in, per_group_out = c_in // groups, int(w.shape[1])
    sizes = [int(d) for d in x.shape[2:]]
    kernel = [int(d) for d in w.shape[2:]]
    rc = te.reduce_axis((0, per_group_in), "rc")
    rk = [te.reduce_axis((0, kk), f"rk{i}") for i, kk in enumerate(kernel)]
    acc = _acc_dtype(call.dtype())

    def f(n, o, *pos):
        channel = (o // per_group_out) * per_group_in + rc
        valid = tirx.const(True, "bool")
        where = []
        for p, s, b, r, d, size in zip(pos, strides, begins, rk, dilations, sizes):
            offset = p + b - r * d
            q = tirx.floordiv(offset, s)
            valid = tirx.And(valid, tirx.And(tirx.EQ(tirx.floormod(offset, s), 0), tirx.And(q >= 0, q < size)))
            where.append(tirx.max(tirx.min(q, size - 1), 0))
        term = up(x[(n, channel) + tuple(where)]) * up(w[(channel, o % per_group_out) + tuple(rk)])
        return te.sum(tirx.Select(valid, term, tirx.const(0, acc)), axis=[rc, *rk])

    conv = te.compute(call.shape(), f, name="conv_transpose", attrs={"sg.rule": "conv"})
    return _bias_epilogue(call, conv, 2)


# ---------------------------------------------------------------------------
# matmul and linear


#: Register tiles of the dense kernel per vector width: (row tiles to choose from, vectors per panel).
#: AVX-512 (32 registers): 6x4 accumulators; AVX2 (16): 4x3.
DENSE_TILES = {16: ((6, 4, 8, 5), 4), 8: ((4, 3, 2), 3)}
#: Row tiles of a panel of fewer vectors (a narrow N: Swin's 96 and 288 take 3 vectors of 16), per
#: (vector width, vectors): more rows keep the registers busy, 8x3 accumulators where 6x3 would leave
#: a quarter idle (Swin-tiny's stage-1 linears, 3136 rows: 7-30% faster in one loaded run).
NARROW_TILES = {(16, 3): (8, 6, 4, 5)}


def _dense_geometry(call, rows: int, n_dim: int) -> tuple[int, int, int]:
    """(row tile, panel width, float lanes) of the dense kernel: the panel of a few vectors that pads
    N least, then the row tile for it that pads ``rows`` least."""
    lanes = call.target.lanes // (2 if call.dtype() == "float64" else 1)
    width = 16 if lanes >= 16 else 8
    row_tiles, vectors = DENSE_TILES[width]
    panel = min((v * lanes for v in range(vectors, 0, -1)), key=lambda b: -(-n_dim // b) * b)
    row_tiles = NARROW_TILES.get((width, panel // lanes), row_tiles)
    # the first (largest) tile wasting at most 1/16 of the rows on padding, else the least padding
    tile = next((t for t in row_tiles if -(-rows // t) * t - rows <= rows / 16),
                min(row_tiles, key=lambda t: -(-rows // t) * t))
    return tile, panel, lanes


def _packed_matmul(call, x, weight_kn: np.ndarray, lead_shape):
    """``x @ W`` for a constant W [K, N]; x is [..., K].

    With static rows this is the ``dense_packed`` kernel: the last lead dim padded to the row
    tile, W packed [N/B, K, B] with N padded to the panel (copies of the last column), and the result read
    back without the padding (the schedule computes that read, and the epilogue, in the tile).
    A dynamic row count keeps the rows as they are, packed [N/B, K, B] (``matmul_packed``)."""
    k_dim, n_dim = weight_kn.shape
    rk = te.reduce_axis((0, k_dim), "rk")
    if any(not isinstance(d, int) for d in lead_shape):
        block = _block(call, n_dim)
        wp = call.param(weight_kn.reshape(k_dim, n_dim // block, block).transpose(1, 0, 2), "w_packed")
        return te.compute(
            tuple(lead_shape) + (n_dim,),
            lambda *idx: te.sum(up(x[idx[:-1] + (rk,)]) * up(wp[idx[-1] // block, rk, idx[-1] % block]), axis=rk),
            name="matmul",
            attrs={"sg.rule": "matmul_packed", "sg.block": block},
        )
    # the rows are the last lead dim (padded to the row tile); the dims before it stay as they are
    *outer, rows = lead_shape or (1,)
    tile, panel, lanes = _dense_geometry(call, rows, n_dim)
    rows_p, n_p = -(-rows // tile) * tile, -(-n_dim // panel) * panel
    # padded columns repeat the last one (their results are dropped): a weight stored encoded
    # (k-means codes) can hold them, which zeros outside its codebook would not allow
    padded = np.pad(weight_kn, ((0, 0), (0, n_p - n_dim)), mode="edge")
    wp = call.param(padded.reshape(k_dim, n_p // panel, panel).transpose(1, 0, 2), "w_packed")

    def x_at(idx, k):
        m = tirx.min(idx[-1], rows - 1) if rows_p != rows else idx[-1]  # padded rows read the last one
        return x[(*idx[:-1], m, k) if lead_shape else (k,)]

    mm = te.compute(
        (*outer, rows_p, n_p),
        lambda *i: te.sum(up(x_at(i[:-1], rk)) * up(wp[i[-1] // panel, rk, i[-1] % panel]), axis=rk),
        name="matmul",
        attrs={"sg.rule": "dense_packed", "sg.block": panel, "sg.rows": tile, "sg.lanes": lanes},
    )
    # the padded rows and columns are never read back; the schedule computes this read in the tile
    return spatial_compute(tuple(lead_shape) + (n_dim,), lambda *i: mm[i if lead_shape else (0, *i)],
                           name="matmul_rows", rule="elementwise")


@register("linear")
def lower_linear(call):
    """alpha * op(x) @ op(w) + beta * b."""
    x, w = call.args[:2]
    trans_a, trans_b = call.attrs["trans_a"], call.attrs["trans_b"]
    shape = call.shape()
    weight = call.consts[1]
    mm = None
    plan = sparse_form(call, x)
    if plan is not None:
        mm = sparse_matmul(call, x, plan, shape[:-1])
    elif weight is not None and not trans_a and amx.matmul_applies(call, shape[:-1]):
        return amx.matmul(call, x, weight.T if trans_b else weight, shape[:-1])  # with its bias, rounded once
    if mm is None and _cpu_packed(call) and weight is not None and not trans_a:
        mm = _packed_matmul(call, x, weight.T if trans_b else weight, shape[:-1])
    if mm is None:
        k_dim = int(x.shape[0] if trans_a else x.shape[-1])
        rk = te.reduce_axis((0, k_dim), "rk")

        def f(*idx):
            a = x[rk, idx[0]] if trans_a else x[idx[:-1] + (rk,)]
            b = w[idx[-1], rk] if trans_b else w[rk, idx[-1]]
            return te.sum(up(a) * up(b), axis=rk)

        mm = te.compute(shape, f, name="matmul", attrs={"sg.rule": "matmul"})
    return _bias_epilogue(call, mm, 2, call.attrs["alpha"], call.attrs["beta"], channel_axis=-1)


@register("matmul")
def lower_matmul(call):
    """Numpy matmul: batched with broadcast batch dims; 1-d operands are promoted and dropped."""
    a, b = call.args
    a_shape, b_shape = dims(a), dims(b)
    shape = call.shape()
    weight = call.consts[1]
    if weight is not None and len(b_shape) == 2 and len(a_shape) >= 2 and amx.matmul_applies(call, shape[:-1]):
        mm = amx.matmul(call, a, weight, shape[:-1])
    elif _cpu_packed(call) and weight is not None and len(b_shape) == 2 and len(a_shape) >= 2:
        mm = _packed_matmul(call, a, weight, shape[:-1])
    else:
        mm = _generic_matmul(a, b, a_shape, b_shape, shape)
    return mm if dtype_of(mm) == call.dtype() else spatial_compute(
        shape, lambda *idx: down(mm[idx], call.dtype()), name="cast", rule="elementwise"
    )


def _generic_matmul(a, b, a_shape, b_shape, shape):
    """The matmul loop nest (broadcast batch dims, 1-d operands), summed in the compute dtype."""
    k_dim = a_shape[-1]
    rk = te.reduce_axis((0, k_dim), "rk")
    a_rank, b_rank = len(a_shape), len(b_shape)
    batch = len(shape) - (a_rank > 1) - (b_rank > 1)

    def f(*idx):
        bidx = idx[:batch]
        i = idx[batch] if a_rank > 1 else None
        j = idx[-1] if b_rank > 1 else None
        a_batch = tuple(0 if d == 1 else bidx[batch - (a_rank - 2) + n] for n, d in enumerate(a_shape[:-2]))
        b_batch = tuple(0 if d == 1 else bidx[batch - (b_rank - 2) + n] for n, d in enumerate(b_shape[:-2]))
        av = a[a_batch + (i, rk)] if a_rank > 1 else a[rk]
        bv = b[b_batch + (rk, j)] if b_rank > 1 else b[rk]
        return te.sum(up(av) * up(bv), axis=rk)

    return te.compute(shape, f, name="matmul", attrs={"sg.rule": "matmul"})


# ---------------------------------------------------------------------------
# Normalizations


def _channel_vector(call, i: int):
    """A per-channel input as an index function of the channel."""
    return lambda c: up(call.args[i][c])


@register("batch_norm")
def lower_batch_norm(call):
    """x * m + a per channel; m and a are computed at compile time when the statistics are constants."""
    x = call.args[0]
    eps = call.attrs["epsilon"]
    if all(c is not None for c in call.consts[1:]):
        wide = np.dtype(compute_dtype(call.dtype()))
        scale, bias, mean, var = (c.astype(wide) for c in call.consts[1:])
        mul = scale / np.sqrt(var + wide.type(eps))
        add = bias - mean * mul
        m, a = call.param(mul, "bn_mul"), call.param(add, "bn_add")
        mul_of, add_of = (lambda c: m[c]), (lambda c: a[c])
    else:
        s, b, mu, v = (_channel_vector(call, i) for i in range(1, 5))

        def mul_of(c):
            return s(c) / tirx.sqrt(v(c) + tirx.const(eps, compute_dtype(call.dtype())))

        def add_of(c):
            return b(c) - mu(c) * mul_of(c)

    return spatial_compute(
        call.shape(), lambda n, c, *rest: down(up(x[(n, c) + rest]) * mul_of(c) + add_of(c), call.dtype()),
        name="batch_norm", rule="elementwise",
    )


def _reduce_attrs(call, last_axis: bool) -> dict:
    """Schedule hints of a reduction: over the last axis on a CPU, the vectorized ``row_reduce``."""
    if last_axis and call.target.is_cpu and is_float(call.dtype()):
        lanes = call.target.lanes // (2 if compute_dtype(call.dtype()) == "float64" else 1)
        return {"sg.rule": "row_reduce", "sg.lanes": lanes}
    return {"sg.rule": "reduction"}


def _normalize(call, axes: list[int], name: str):
    """(x - mean) / sqrt(var + eps) over ``axes``, as stages in the compute dtype."""
    x = call.args[0]
    shape = call.shape()
    count = math.prod(shape[a] for a in axes)
    eps = tirx.const(call.attrs["epsilon"], compute_dtype(call.dtype()))
    kept = [a for a in range(len(shape)) if a not in axes]
    stat_shape = [shape[a] if a in kept else 1 for a in range(len(shape))]

    def reduce_over(fn, stage):
        red = [te.reduce_axis((0, shape[a]), f"r{a}") for a in axes]

        def f(*idx):
            full = list(idx)
            for a, r in zip(axes, red):
                full[a] = r
            return te.sum(fn(tuple(full)), axis=red)

        return te.compute(stat_shape, f, name=stage, attrs=_reduce_attrs(call, axes == [len(shape) - 1]))

    total = reduce_over(lambda i: up(x[i]), f"{name}_sum")
    inv = tirx.const(1.0 / count, compute_dtype(call.dtype()))

    def stat(t, idx):
        return t[tuple(0 if a in axes else idx[a] for a in range(len(shape)))]

    centred_sq = reduce_over(lambda i: (up(x[i]) - stat(total, i) * inv) * (up(x[i]) - stat(total, i) * inv), f"{name}_var")

    def normalized(idx):
        mean = stat(total, idx) * inv
        return (up(x[idx]) - mean) / tirx.sqrt(stat(centred_sq, idx) * inv + eps)

    return normalized


@register("layer_norm")
def lower_layer_norm(call):
    """Normalize over axis..rank-1, then optional scale and bias (broadcast over the tail)."""
    rank = len(call.shape())
    start = call.attrs["axis"] % rank
    norm = _normalize(call, list(range(start, rank)), "ln")
    extras = [call.args[i] for i in (1, 2) if i < len(call.args)]

    def f(*idx):
        v = norm(idx)
        for i, t in enumerate(extras):
            tidx = tuple(0 if int(d) == 1 else idx[rank - len(t.shape) + j] for j, d in enumerate(t.shape))
            v = v * up(t[tidx]) if i == 0 else v + up(t[tidx])
        return down(v, call.dtype())

    return spatial_compute(call.shape(), f, name="layer_norm", rule="elementwise")


@register("instance_norm")
def lower_instance_norm(call):
    """Normalize each (sample, channel) over its spatial axes, then scale and bias per channel."""
    rank = len(call.shape())
    norm = _normalize(call, list(range(2, rank)), "in")
    s, b = _channel_vector(call, 1), _channel_vector(call, 2)
    return spatial_compute(
        call.shape(), lambda *idx: down(norm(idx) * s(idx[1]) + b(idx[1]), call.dtype()),
        name="instance_norm", rule="elementwise",
    )


@register("group_norm")
def lower_group_norm(call):
    """Per (sample, group) mean and variance over the group's channels and spatial axes, then scale and bias."""
    x = call.args[0]
    shape = call.shape()
    groups = call.attrs["groups"]
    per_group = shape[1] // groups
    spatial = list(shape[2:])
    inv = tirx.const(1.0 / (per_group * math.prod(spatial)), compute_dtype(call.dtype()))

    def reduce_over(fn, stage):
        rc = te.reduce_axis((0, per_group), "rc")
        rs = [te.reduce_axis((0, d), f"r{a}") for a, d in enumerate(spatial)]
        return te.compute(
            (shape[0], groups), lambda n, g: te.sum(fn((n, g * per_group + rc, *rs), n, g), axis=[rc, *rs]),
            name=stage, attrs={"sg.rule": "reduction"},
        )

    total = reduce_over(lambda i, n, g: up(x[i]), "gn_sum")

    def deviation(i, n, g):
        return up(x[i]) - total[n, g] * inv

    squares = reduce_over(lambda i, n, g: deviation(i, n, g) * deviation(i, n, g), "gn_var")
    s, b = _channel_vector(call, 1), _channel_vector(call, 2)
    eps = tirx.const(call.attrs["epsilon"], compute_dtype(call.dtype()))

    def f(n, c, *rest):
        g = c // per_group
        norm = deviation((n, c, *rest), n, g) / tirx.sqrt(squares[n, g] * inv + eps)
        return down(norm * s(c) + b(c), call.dtype())

    return spatial_compute(shape, f, name="group_norm", rule="elementwise")


# ---------------------------------------------------------------------------
# resize


@register("resize")
def lower_resize(call):
    """A weighted sum over the taps of every spatial axis; the tap tables are compile-time parameters."""
    x = call.args[0]
    in_shape = dims(x)
    tables = []
    for axis, (index, weight) in enumerate(resize_tables(in_shape, call.attrs)):
        index_t = call.param(index.astype(np.int32), f"resize_index{axis}")
        wide = weight.astype(compute_dtype(call.dtype()))
        weight_t = None if call.attrs["mode"] == "nearest" else call.param(wide, f"resize_weight{axis}")
        tables.append((index_t, weight_t, index.shape[1]))

    def f(n, c, *out):
        total = None
        for taps in np.ndindex(*(t for _, _, t in tables)):
            pos = tuple(index_t[o, k] for (index_t, _, _), o, k in zip(tables, out, taps))
            term = up(x[(n, c) + pos])
            for (_, weight_t, _), o, k in zip(tables, out, taps):
                if weight_t is not None:
                    term = term * weight_t[o, k]
            total = term if total is None else total + term
        return down(total, call.dtype())

    return spatial_compute(call.shape(), f, name="resize", rule="elementwise")


# ---------------------------------------------------------------------------
# Pooling


def _window(call, x, kernel, strides, begins, dilations, reduce_axes, pos):
    """Input positions of one window element, and whether it lies inside the input."""
    sizes = [int(d) for d in x.shape[2:]]
    inside = None
    where = []
    for p, s, b, r, d, size, out in zip(pos, strides, begins, reduce_axes, dilations, sizes, call.shape()[2:]):
        q = p * s - b + r * d
        where.append(q)
        last = (out - 1) * s - b + (int(r.dom.extent) - 1) * d
        if b > 0 or last >= size:  # only axes whose windows can leave the input need a guard
            cond = tirx.And(q >= 0, q < size)
            inside = cond if inside is None else tirx.And(inside, cond)
            where[-1] = tirx.max(tirx.min(q, size - 1), 0)
    return tuple(where), inside


@register("max_pool")
def lower_max_pool(call):
    """Max over each window; padding never wins."""
    x = call.args[0]
    k = len(x.shape) - 2
    kernel, strides, begins, _, dilations = _pool_geometry(call.attrs, k)
    rk = [te.reduce_axis((0, kk), f"rk{i}") for i, kk in enumerate(kernel)]
    low = lowest(dtype_of(x))

    def f(n, c, *pos):
        where, inside = _window(call, x, kernel, strides, begins, dilations, rk, pos)
        v = x[(n, c) + where]
        return te.max(v if inside is None else tirx.if_then_else(inside, v, low), axis=rk)

    return te.compute(call.shape(), f, name="max_pool", attrs={"sg.rule": "pool"})


@register("avg_pool")
def lower_avg_pool(call):
    """Mean over each window, dividing by the elements counted (with or without declared padding)."""
    x = call.args[0]
    k = len(x.shape) - 2
    kernel, strides, begins, ends, dilations = _pool_geometry(call.attrs, k)
    include = call.attrs["count_include_pad"]
    sizes = [int(d) for d in x.shape[2:]]
    rk = [te.reduce_axis((0, kk), f"rk{i}") for i, kk in enumerate(kernel)]

    def total_f(n, c, *pos):
        where, inside = _window(call, x, kernel, strides, begins, dilations, rk, pos)
        v = up(x[(n, c) + where])
        return te.sum(v if inside is None else tirx.if_then_else(inside, v, tirx.const(0, dtype_of(v))), axis=rk)

    total = te.compute(call.shape(), total_f, name="avg_pool_sum", attrs={"sg.rule": "pool"})

    def f(n, c, *pos):
        count = tirx.const(1, "int32")
        for p, s, b, e, kk, size in zip(pos, strides, begins, ends, kernel, sizes):
            start = p * s - b
            stop = start + kk
            if include:
                count = count * (tirx.min(stop, size + e) - start)
            else:
                count = count * (tirx.min(stop, size) - tirx.max(start, 0))
        count = tirx.max(count, 1).astype(compute_dtype(call.dtype()))
        return down(total[(n, c) + pos] / count, call.dtype())

    return spatial_compute(call.shape(), f, name="avg_pool", rule="elementwise")


def _reduce_spatial(call, combine, name: str):
    """``combine`` over the spatial axes of each (n, c) plane, as one axis running through the
    plane in memory order (unravelled into the spatial indices, which the flattened buffer's
    address folds back): on a CPU the ``row_reduce`` rule sums it as a vector of partials,
    where a loop per axis adds one element at a time, each add waiting on the last."""
    x = call.args[0]
    spatial = [int(d) for d in x.shape[2:]]
    r = te.reduce_axis((0, math.prod(spatial)), "rk")

    def unravel(flat):
        idx = []
        for size in reversed(spatial):
            idx.append(flat % size)
            flat = flat // size
        return tuple(reversed(idx))

    attrs = _reduce_attrs(call, True)
    if "sg.lanes" in attrs:  # a plane of 14x14 takes 4 partials, where 16 do not divide it
        attrs["sg.lanes"] = next((v for v in (attrs["sg.lanes"], 8, 4) if math.prod(spatial) % v == 0), attrs["sg.lanes"])
    return te.compute(call.shape(), lambda n, c, *_: combine(x, n, c, unravel(r), r), name=name, attrs=attrs)


@register("global_avg_pool")
def lower_global_avg_pool(call):
    """Mean over all spatial axes."""
    count = math.prod(int(d) for d in call.args[0].shape[2:])
    total = _reduce_spatial(call, lambda x, n, c, at, r: te.sum(up(x[(n, c) + at]), axis=r), "gap_sum")
    inv = tirx.const(1.0 / count, compute_dtype(call.dtype()))
    return spatial_compute(
        call.shape(), lambda *idx: down(total[idx] * inv, call.dtype()), name="global_avg_pool", rule="elementwise"
    )


@register("global_max_pool")
def lower_global_max_pool(call):
    """Max over all spatial axes."""
    return _reduce_spatial(call, lambda x, n, c, at, r: te.max(x[(n, c) + at], axis=r), "global_max_pool")


# ---------------------------------------------------------------------------
# softmax


def _softmax_stages(call):
    x = call.args[0]
    shape = call.shape()
    axis = call.attrs["axis"] % len(shape)
    red_shape = [1 if a == axis else d for a, d in enumerate(shape)]

    def along(idx, r):
        return idx[:axis] + (r,) + idx[axis + 1 :]

    r1 = te.reduce_axis((0, shape[axis]), "r1")
    last = axis == len(shape) - 1
    mx = te.compute(red_shape, lambda *i: te.max(up(x[along(i, r1)]), axis=r1), name="softmax_max",
                    attrs=_reduce_attrs(call, last))

    def at(t, idx):
        return t[along(idx, 0)]

    r2 = te.reduce_axis((0, shape[axis]), "r2")
    total = te.compute(
        red_shape, lambda *i: te.sum(vector_exp(up(x[along(i, r2)]) - mx[i], flush=True), axis=r2), name="softmax_sum",
        attrs=_reduce_attrs(call, last),
    )
    return x, shape, mx, total, at


@register("softmax")
def lower_softmax(call):
    """exp(x - max) / sum, along axis."""
    x, shape, mx, total, at = _softmax_stages(call)
    return spatial_compute(
        shape, lambda *i: down(vector_exp(up(x[i]) - at(mx, i), flush=True) / at(total, i), call.dtype()), name="softmax",
        rule="elementwise",
    )


@register("log_softmax")
def lower_log_softmax(call):
    """x - max - log(sum(exp(x - max))), along axis."""
    x, shape, mx, total, at = _softmax_stages(call)
    return spatial_compute(
        shape, lambda *i: down(up(x[i]) - at(mx, i) - tirx.log(at(total, i)), call.dtype()), name="log_softmax",
        rule="elementwise",
    )
