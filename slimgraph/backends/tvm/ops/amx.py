"""AMX bf16 forms of convs and constant-weight matmuls (CPUs whose target ``has("amx")``).

One micro-kernel does the multiply-adds: :data:`AMX_LLVM`, an LLVM IR function
linked into each kernel that uses it (``pragma_import_llvm``, as the
``vdpbf16ps`` function of ``schedules/intrinsics.py``). It computes a 32 x 32
float32 block as 2 x 2 accumulator tiles: per step of 32 bf16 values of K it
loads two A tiles (16 rows x 32 bf16) and two B tiles (16 pairs of K x 16
columns, each a pair of bf16 in a 32-bit word) and issues four ``tdpbf16ps``
(16 x 16 x 32 multiply-adds each). It loads its tile configuration
(:data:`TILE_CONFIG`) on every call, so every TVM worker thread that runs it
is configured. Linux grants a process tile data only on request: the compiled
model asks before its first call (``backends/tvm/tile_permission.py``).

The TIR around it is a ``te.extern`` stage: one parallel loop over the blocks,
one kernel call per block. Its operands are laid out for the tiles:

- a conv computes ``W [C_out, K] x X [K, pixels]``: weights (rows of the A
  tiles) packed at build as [C_out/16, KH, KW, C_in/32, 16, 16] words;
  activations (B tiles) as channel-pair words [N, C_in/2, phases, H', W'] with
  the padding, read at a stride of one pair-plane per tile row. Output pixels
  are counted along the *padded* row (q = h * W' + w), so that every tap reads
  16 consecutive words at q plus the tap's offset (a table of offsets built
  at compile time); the columns past the output row are computed and dropped.
  A stride splits the input into phases, see :func:`conv2d`.
- a matmul computes ``X [M, K] x W [K, N]``: activations (rows of the A tiles)
  as words [M, K/2], weights as [N/16, K/32, 16, 16] pair words.

Every dim is padded with zeros to whole tiles (rows and columns to 32, K to
32); the micro-kernel adds the bias and rounds each block to bf16 (the op's
result) while it is in L1, and a compute stage reads the result back without
the padding; the graph's epilogue (activation, residual add) fuses into it.

Example::

    >>> pad_to(100, K_STEP), _row(58), _row(9)
    (128, 64, 9)
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te, tirx

from slimgraph.backends.tvm.ops.common import spatial_compute, up
from slimgraph.backends.tvm.schedules.intrinsics import bf16_bits
from slimgraph.backends.tvm.tile_permission import AMX_KERNEL

#: Rows of a tile; float32 columns of an accumulator tile; bf16 pairs in a tile row (64 bytes).
TILE = 16
#: bf16 values of K one ``tdpbf16ps`` step consumes.
K_STEP = 32
#: Rows and columns of the block one kernel call computes (2 x 2 accumulator tiles).
BLOCK = 32
#: Bytes of a word: operand buffers hold words of two bf16 (results are bf16, 2 bytes).
WORD = 4
#: Smallest input channel count worth AMX: K is padded to 32, so fewer would waste half the work.
MIN_CHANNELS = 16


def _tile_config() -> bytes:
    """The palette-1 configuration: tiles 0-7 each 16 rows of 64 bytes."""
    cfg = bytearray(64)
    cfg[0] = 1
    for t in range(8):
        cfg[16 + 2 * t] = TILE * WORD
        cfg[48 + t] = TILE
    return bytes(cfg)


#: The 64-byte ``ldtilecfg`` operand.
TILE_CONFIG = _tile_config()

#: :data:`TILE_CONFIG` as an LLVM string constant.
_CONFIG_TEXT = "".join(f"\\{b:02X}" for b in TILE_CONFIG)


def _asm(template: str, operands: str = "", constraints: str = "") -> str:
    """One inline-assembly statement (AT&T syntax; ``$0``, ``$1``: its register operands)."""
    sep = "," if constraints else ""
    return f'  call void asm sideeffect "{template}", "{constraints}{sep}~{{memory}}"({operands})'


def _load(tile: int, ptr: str, stride: str) -> str:
    return _asm(f"tileloadd ($0,$1,1), %tmm{tile}", f"ptr {ptr}, i64 {stride}", "r,r")


def _dot(c: int, a: int, b: int) -> str:
    return _asm(f"tdpbf16ps %tmm{b}, %tmm{a}, %tmm{c}")


def _store(tile: int, ptr: str) -> str:
    return _asm(f"tilestored %tmm{tile}, ($0,$1,1)", f"ptr {ptr}, i64 64", "r,r")


def _round_row(j: int) -> str:
    """Row %r, column tile j of the block: its sums plus the bias (of the row or of the columns),
    rounded to bf16 (nearest even) and stored at %r.out + 32 j."""
    return f"""  %s{j}.at0 = add i64 %r.sums, {j * 1024}
  %s{j}.at = getelementptr i8, ptr %sums, i64 %s{j}.at0
  %s{j} = load <16 x float>, ptr %s{j}.at, align 64
  %col.b{j} = getelementptr float, ptr %bias, i64 {j * 16}
  %col.bias{j} = load <16 x float>, ptr %col.b{j}, align 4
  %bias{j} = select i1 %by.row, <16 x float> %row.bias.v, <16 x float> %col.bias{j}
  %v{j} = fadd <16 x float> %s{j}, %bias{j}
  %bits{j} = bitcast <16 x float> %v{j} to <16 x i32>
  %odd{j}.0 = lshr <16 x i32> %bits{j}, splat (i32 16)
  %odd{j} = and <16 x i32> %odd{j}.0, splat (i32 1)
  %up{j}.0 = add <16 x i32> %bits{j}, splat (i32 32767)
  %up{j} = add <16 x i32> %up{j}.0, %odd{j}
  %hi{j} = lshr <16 x i32> %up{j}, splat (i32 16)
  %bf{j} = trunc <16 x i32> %hi{j} to <16 x i16>
  %o{j} = getelementptr i8, ptr %r.out, i64 {j * 32}
  store <16 x i16> %bf{j}, ptr %o{j}, align 2"""


#: The micro-kernel, in LLVM IR. Sums (tiles 0-3) = sum over taps t and steps s of A (tiles 4, 5
#: at a and a + a_next; + t * a_tap + s * a_step) times B (tiles 6, 7 at b and b + b_next;
#: + b_taps[t] + s * b_step); ``b_taps`` holds one int64 per tap (a conv's taps read the
#: activations at offsets no stride describes). The 32 x 32 block of sums goes through the stack
#: (still in L1), gets its float32 bias (``bias[row]`` where bias_rows is not 0, else
#: ``bias[column]``), and is stored rounded to bf16 at c (row stride ldc): the op's one rounding,
#: and half the bytes of float32 sums for the epilogue to read. All offsets are bytes.
#: Returns 0 (TVM's extern calls carry a value).
#:
#: The tile instructions are inline assembly, not LLVM's AMX intrinsics: TVM marks every function
#: it imports always-inline, so the function compiles with its caller's features, and a module
#: without amx-* cannot select the intrinsics (enabling them module-wide slowed float32 convs
#: 2-4x). The assembler takes the mnemonics whatever the features; LLVM never allocates tile
#: registers in such a module, so the statements own them between the configuration and the stores.
AMX_LLVM = f"""
@slimgraph_amx_config = linkonce_odr constant [64 x i8] c"{_CONFIG_TEXT}", align 64
define linkonce_odr i32 @{AMX_KERNEL}(ptr %c, i64 %ldc, ptr %a, i64 %lda, i64 %a_next, i64 %a_step, i64 %a_tap,
    ptr %b, i64 %ldb, i64 %b_next, i64 %b_step, ptr %b_taps, i64 %taps, i64 %steps, ptr %bias, i64 %bias_rows) {{
entry:
  %sums = alloca [1024 x float], align 64
{_asm("ldtilecfg ($0)", "ptr @slimgraph_amx_config", "r")}
{_asm("tilezero %tmm0")}
{_asm("tilezero %tmm1")}
{_asm("tilezero %tmm2")}
{_asm("tilezero %tmm3")}
  br label %tap
tap:
  %t = phi i64 [0, %entry], [%t.next, %tap.end]
  %a.off = mul i64 %t, %a_tap
  %b.off.at = getelementptr i64, ptr %b_taps, i64 %t
  %b.off = load i64, ptr %b.off.at, align 8
  %a.tap = getelementptr i8, ptr %a, i64 %a.off
  %b.tap = getelementptr i8, ptr %b, i64 %b.off
  br label %k
k:
  %s = phi i64 [0, %tap], [%s.next, %k]
  %a.k = mul i64 %s, %a_step
  %b.k = mul i64 %s, %b_step
  %a0 = getelementptr i8, ptr %a.tap, i64 %a.k
  %a1 = getelementptr i8, ptr %a0, i64 %a_next
  %b0 = getelementptr i8, ptr %b.tap, i64 %b.k
  %b1 = getelementptr i8, ptr %b0, i64 %b_next
{_load(4, "%a0", "%lda")}
{_load(6, "%b0", "%ldb")}
{_dot(0, 4, 6)}
{_load(7, "%b1", "%ldb")}
{_dot(1, 4, 7)}
{_load(5, "%a1", "%lda")}
{_dot(2, 5, 6)}
{_dot(3, 5, 7)}
  %s.next = add i64 %s, 1
  %k.done = icmp eq i64 %s.next, %steps
  br i1 %k.done, label %tap.end, label %k
tap.end:
  %t.next = add i64 %t, 1
  %taps.done = icmp eq i64 %t.next, %taps
  br i1 %taps.done, label %store, label %tap
store:
  %t1 = getelementptr i8, ptr %sums, i64 1024
  %t2 = getelementptr i8, ptr %sums, i64 2048
  %t3 = getelementptr i8, ptr %sums, i64 3072
{_store(0, "%sums")}
{_store(1, "%t1")}
{_store(2, "%t2")}
{_store(3, "%t3")}
  %by.row = icmp ne i64 %bias_rows, 0
  br label %out
out:
  %r = phi i64 [0, %store], [%r.next, %out]
  %r.tile = lshr i64 %r, 4
  %r.in = and i64 %r, 15
  %r.sums0 = mul i64 %r.tile, 2048
  %r.sums1 = shl i64 %r.in, 6
  %r.sums = add i64 %r.sums0, %r.sums1
  %row.b = getelementptr float, ptr %bias, i64 %r
  %row.bias = load float, ptr %row.b, align 4
  %row.bias.v0 = insertelement <16 x float> poison, float %row.bias, i64 0
  %row.bias.v = shufflevector <16 x float> %row.bias.v0, <16 x float> poison, <16 x i32> zeroinitializer
  %r.c = mul i64 %r, %ldc
  %r.out = getelementptr i8, ptr %c, i64 %r.c
{_round_row(0)}
{_round_row(1)}
  %r.next = add i64 %r, 1
  %r.done = icmp eq i64 %r.next, 32
  br i1 %r.done, label %done, label %out
done:
  ret i32 0
}}
"""


def pad_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _i64(v) -> tirx.PrimExpr:
    return tirx.const(v, "int64") if isinstance(v, int) else tirx.Cast("int64", v)


def _extern(shape, inputs, row_blocks: int, col_blocks: int, call_at, name: str):
    """A ``te.extern`` of ``shape`` holding bf16 bits (uint16): a parallel loop over ``row_blocks`` x
    ``col_blocks`` 32 x 32 blocks (column blocks inner), ``call_at(ins, out, rb, cb)`` giving
    the micro-kernel's arguments for a block."""

    def body(ins, outs):
        i = tirx.Var("block", "int32")
        args = call_at(ins, outs[0], tirx.floordiv(i, col_blocks), tirx.floormod(i, col_blocks))
        call = tirx.Evaluate(tirx.call_extern("int32", AMX_KERNEL, *args))
        loop = tirx.For(i, 0, row_blocks * col_blocks, tirx.ForKind.PARALLEL, call)
        return tirx.AttrStmt(tirx.const(0, "int32"), "pragma_import_llvm", tvm.ir.StringImm(AMX_LLVM), loop)

    def buffer(shape_, dtype, hint):  # offset 0: the calls address elements from the buffer's start
        return tirx.decl_buffer(shape_, dtype, hint, elem_offset=0)

    ins = [buffer(t.shape, t.dtype, t.op.name) for t in inputs]
    return te.extern(tuple(shape), list(inputs), body, dtype="uint16", name=name, attrs={"sg.rule": "amx"},
                     in_buffers=ins, out_buffers=[buffer(shape, "uint16", name)])


def _bias(call, n: int, size: int) -> np.ndarray:
    """The op's constant bias of ``n`` outputs (input 2; zeros without one) as float32, padded
    with zeros to ``size``; a single value serves every output."""
    padded = np.zeros(size, np.float32)
    if len(call.args) > 2:
        padded[:n] = np.asarray(call.consts[2]).astype(np.float32).reshape(-1)
    return padded


def bias_fits(call, n: int) -> bool:
    """Whether the op's bias (input 2) can be added by the micro-kernel: absent, or a constant
    holding one value per output (of ``n``) or one for all."""
    if len(call.args) <= 2:
        return True
    bias = call.consts[2]
    return bias is not None and (bias.size == 1 or (bias.size == n and bias.shape[-1] == n))


def _value(bits, dtype: str):
    """The ``dtype`` value of bf16 ``bits`` (a uint16 expression)."""
    wide = tirx.reinterpret("float32", tirx.Cast("uint32", bits) << tirx.const(16, "uint32"))
    return wide if dtype == "float32" else wide.astype(dtype)


def _word(lo, hi):
    """The int32 word of two bf16 values (float32 expressions holding bf16 numbers), ``lo`` in the low half."""
    return tirx.reinterpret("int32", bf16_bits(lo) | (bf16_bits(hi) << tirx.const(16, "uint32")))


def _ptr(buffer, access: str, offset):
    return buffer.access_ptr(access, offset=offset)


def _weight_words(w: np.ndarray) -> np.ndarray:
    """A bf16 array [..., K, N] as int32 words [..., K/2, N], K-pair 2i's first value in the low half."""
    bits = np.asarray(w).view(np.uint16).astype(np.uint32)
    return (bits[..., 0::2, :] | (bits[..., 1::2, :] << 16)).view(np.int32)


# ---------------------------------------------------------------------------
# Convolution


def conv2d_applies(call, weight, groups: int, dilations, kernel) -> bool:
    """Whether a 2-d conv takes the AMX form: bf16, constant weight, ungrouped, no dilation,
    enough input channels (or channels times kernel columns) to fill the tiles, static shape."""
    x = call.args[0]
    return (call.dtype() == "bfloat16" and call.target.has("amx") and weight is not None and groups == 1
            and bias_fits(call, int(weight.shape[0])) and len(kernel) == 2 and set(dilations) == {1}
            and int(x.shape[1]) * kernel[-1] >= MIN_CHANNELS
            and all(isinstance(d, (int, tirx.IntImm)) for d in x.shape))


#: Extra columns a row may gain so that the operand copy vectorizes (its inner loop is the row).
ROW_SLACK = 1 / 8


def _row(width: int) -> int:
    """The padded row of ``width`` columns, rounded up to whole vectors of 16, 8 or 4 words where
    that adds at most :data:`ROW_SLACK` (each extra column is computed and dropped)."""
    return next((r for r in (pad_to(width, v) for v in (16, 8, 4)) if r - width <= width * ROW_SLACK), width)


def conv2d(call, x, weight: np.ndarray, begins, strides):
    """``conv(x, weight, bias)`` (float32 sums of bf16 products, rounded once to bf16) as AMX
    blocks; see the module docstring.

    A stride s splits the padded input into phases (the rows and columns of each remainder mod s,
    those the taps reach), each a plane of its own: tap (rh, rw) reads phase (rh % s, rw % s) at
    (rh // s, rw // s), consecutive words again for consecutive output pixels.

    A 1x1 conv with stride 1 and no padding reads its pixels as one row (H x W long, rounded up
    to whole blocks): nothing is padded but the end, and its copy vectorizes at any width.

    With fewer than 16 input channels (an image's first conv) the kernel's columns join the
    channels in K (k = c * KW + rw): the copy takes the column offset and stride, and only the
    kernel's rows remain taps, so 3 channels of a 7-wide kernel fill 21 of 32 K values, not 3."""
    n, c_in, height, width = (int(d) for d in x.shape)
    c_out, _, kh, kw = weight.shape
    _, _, h_out, w_out = (int(d) for d in call.shape())
    (sh, sw), (pt, pl) = strides, begins
    image_width = width
    flat = kh == kw == sh == sw == 1 and not any(begins) and (h_out, w_out) == (height, width)
    if flat:  # the image as one row; reads map the row's positions back to (h, w)
        height, width, h_out, w_out = 1, height * width, 1, height * width
    fold = c_in < MIN_CHANNELS
    kw_t, sw_t = (1, 1) if fold else (kw, sw)  # the taps' columns and stride (folded: none)
    k_len = c_in * kw if fold else c_in
    phases_h, phases_w = min(sh, kh), min(sw_t, kw_t)
    steps = pad_to(k_len, K_STEP) // K_STEP
    # the padded row W' the output pixels are counted along
    row = pad_to(w_out, BLOCK) if flat else _row(w_out + (kw_t - 1) // sw_t)
    pixels = pad_to(h_out * row, BLOCK)       # output pixels computed, garbage columns included
    # rows of a phase: the padded image's, and enough zero rows that the last block's taps stay inside
    rows_in = -(-(pixels + (kh - 1) // sh * row + (kw_t - 1) // sw_t) // row)
    pairs = steps * K_STEP // 2
    phase_plane = rows_in * row

    def words(b, c2, p, h, w):
        y = h * sh + tirx.floordiv(p, phases_w) - pt
        yc = tirx.max(tirx.min(y, height - 1), 0)

        def value(k):  # clamped reads: the vectorized copy may load both sides of a select
            c, rw = (tirx.floordiv(k, kw), tirx.floormod(k, kw)) if fold else (k, tirx.floormod(p, phases_w))
            v = w * sw + rw - pl
            inside = tirx.all(y >= 0, y < height, v >= 0, v < width, k < k_len)
            vc = tirx.max(tirx.min(v, width - 1), 0)
            at = (tirx.floordiv(vc, image_width), tirx.floormod(vc, image_width)) if flat else (yc, vc)
            return tirx.if_then_else(inside, up(x[(b, tirx.min(c, c_in - 1), *at)]), tirx.const(0.0, "float32"))

        return _word(value(c2 * 2), value(c2 * 2 + 1))

    xq = spatial_compute((n, pairs, phases_h * phases_w, rows_in, row), words, name="amx_pack", rule="amx_pack")
    c_out_p = pad_to(c_out, BLOCK)
    w = np.zeros((c_out_p, steps * K_STEP, kh, kw_t), weight.dtype)
    # folded: [C_out, C_in, kh, kw] -> [C_out, C_in * kw, kh, 1], K = c * kw + rw
    w[:c_out, :k_len] = weight.transpose(0, 1, 3, 2).reshape(c_out, k_len, kh, 1) if fold else weight
    # [C_out/16, 16, steps, 32, kh, kw] -> [C_out/16, kh, kw, steps, 16 rows, 32 bf16]
    tiles = w.reshape(c_out_p // TILE, TILE, steps, K_STEP, kh, kw_t).transpose(0, 4, 5, 2, 1, 3)
    wq = call.param(np.ascontiguousarray(tiles).view(np.int32), "w_amx")
    taps = np.array([((rh % sh * phases_w + rw % sw_t) * phase_plane + rh // sh * row + rw // sw_t) * WORD
                     for rh in range(kh) for rw in range(kw_t)], np.int64)
    tq = call.param(taps, "amx_taps")
    bq = call.param(_bias(call, c_out, c_out_p), "amx_bias")
    tile_bytes = TILE * TILE * WORD
    plane = phases_h * phases_w * phase_plane  # words of one channel pair

    def call_at(ins, out, rb, cb):
        xb, wb, tb, bb = ins
        b, ob = tirx.floordiv(rb, c_out_p // BLOCK), tirx.floormod(rb, c_out_p // BLOCK)
        return [
            _ptr(out, "w", (b * c_out_p + ob * BLOCK) * pixels + cb * BLOCK), _i64(pixels * 2),
            _ptr(wb, "r", ob * 2 * kh * kw_t * steps * TILE * TILE), _i64(TILE * WORD),
            _i64(kh * kw_t * steps * tile_bytes), _i64(tile_bytes), _i64(steps * tile_bytes),
            _ptr(xb, "r", b * pairs * plane + cb * BLOCK), _i64(plane * WORD), _i64(TILE * WORD),
            _i64(TILE * plane * WORD), _ptr(tb, "r", 0), _i64(kh * kw_t), _i64(steps),
            _ptr(bb, "r", ob * BLOCK), _i64(1),
        ]

    acc = _extern((n, c_out_p, pixels), [xq, wq, tq, bq], n * c_out_p // BLOCK, pixels // BLOCK, call_at,
                  "conv_amx")
    # a flat conv's pixel (h, v) is h * W + v of its one row, any other's h * W' + v
    stride_h = image_width if flat else row
    return spatial_compute(call.shape(), lambda b, o, h, v: _value(acc[b, o, h * stride_h + v], call.dtype()),
                           name="conv", rule="elementwise")


# ---------------------------------------------------------------------------
# Matmul


def matmul_applies(call, lead_shape) -> bool:
    """Whether a matmul or linear with a constant weight takes the AMX form: bf16, static rows,
    a constant bias or none (a linear's alpha and beta 1)."""
    return (call.dtype() == "bfloat16" and call.target.has("amx") and bias_fits(call, int(call.shape()[-1]))
            and call.attrs.get("alpha", 1.0) == call.attrs.get("beta", 1.0) == 1.0
            and all(isinstance(d, int) for d in lead_shape))


def matmul(call, x, weight_kn: np.ndarray, lead_shape):
    """``x @ W + bias`` for a constant bf16 W [K, N] (x [..., K]) as AMX blocks: the op's bf16 result [..., N]."""
    k_dim, n_dim = weight_kn.shape
    rows = int(np.prod(lead_shape)) if lead_shape else 1
    rows_p, n_p, k_p = pad_to(rows, BLOCK), pad_to(n_dim, BLOCK), pad_to(k_dim, K_STEP)
    steps = k_p // K_STEP
    strides = [int(np.prod(lead_shape[i + 1:])) for i in range(len(lead_shape))]

    def words(m, k2):
        lead = tuple(tirx.floormod(tirx.floordiv(tirx.min(m, rows - 1), s), d) for s, d in zip(strides, lead_shape))

        def value(k):
            return tirx.if_then_else(tirx.all(m < rows, k < k_dim), up(x[(*lead, tirx.min(k, k_dim - 1))]),
                                     tirx.const(0.0, "float32"))

        return _word(value(k2 * 2), value(k2 * 2 + 1))

    xq = spatial_compute((rows_p, k_p // 2), words, name="amx_pack", rule="amx_pack")
    tq = call.param(np.zeros(1, np.int64), "amx_taps")
    bq = call.param(_bias(call, n_dim, n_p), "amx_bias")
    w = np.zeros((k_p, n_p), weight_kn.dtype)
    w[:k_dim, :n_dim] = weight_kn
    # words [K/2, N] -> [N/16, steps, 16 pairs, 16 columns]
    panels = _weight_words(w).reshape(steps, TILE, n_p // TILE, TILE).transpose(2, 0, 1, 3)
    wq = call.param(panels, "w_amx")
    tile_bytes = TILE * TILE * WORD
    col_blocks = n_p // BLOCK

    def call_at(ins, out, rb, cb):
        xb, wb, tb, bb = ins
        return [
            _ptr(out, "w", rb * BLOCK * n_p + cb * BLOCK), _i64(n_p * 2),
            _ptr(xb, "r", rb * BLOCK * (k_p // 2)), _i64(k_p // 2 * WORD), _i64(TILE * k_p // 2 * WORD),
            _i64(TILE * WORD), _i64(0),
            _ptr(wb, "r", cb * 2 * steps * TILE * TILE), _i64(TILE * WORD), _i64(steps * tile_bytes),
            _i64(tile_bytes), _ptr(tb, "r", 0), _i64(1), _i64(steps),
            _ptr(bb, "r", cb * BLOCK), _i64(0),
        ]

    # row blocks inner: one weight panel serves every row block
    acc = _extern((rows_p, n_p), [xq, wq, tq, bq], col_blocks, rows_p // BLOCK,
                  lambda ins, out, cb, rb: call_at(ins, out, rb, cb), "matmul_amx")

    def read(*i):
        m = sum((i[d] * s for d, s in enumerate(strides)), tirx.const(0, "int32")) if lead_shape else 0
        return _value(acc[m, i[-1]], call.dtype())

    return spatial_compute(tuple(lead_shape) + (n_dim,), read, name="matmul_rows", rule="elementwise")
