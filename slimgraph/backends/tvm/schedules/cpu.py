"""The project's CPU schedule rules: tiling, vectorization, parallel outer loops, fused epilogues.

A kernel's PrimFunc is scheduled in three steps:

1. inline: every spatial block that is neither an output nor a rule's anchor
   is computed inside its consumer, so a fused region's elementwise chain
   becomes the epilogue of its anchor (or one loop nest);
2. anchors: blocks tagged by the lowerings (``sg.rule``) get their rule:
   ``conv2d_packed`` and ``matmul_packed`` are register-tiled micro-kernels
   (a [tile x vector] accumulator kept in registers, the epilogue computed
   inside the tile as it is written back; ``conv2d_vnni`` is the same tile
   with each step one AVX-512 VNNI int8 dot product), ``depthwise`` vectorizes along
   the output row, ``pool`` and reductions run parallel over their outer
   spatial loops;
3. the rest (elementwise outputs, reductions without a rule) get a parallel,
   vectorized loop nest.

If a rule throws on an unusual kernel, the kernel is rescheduled with the
generic steps only, so a build never fails on a schedule; the kernel carries
``FALLBACK_ATTR`` with the rule's error (visible in its TIR) and the
``slimgraph.backends.tvm`` log warns, since the generic schedule is often
many times slower.

Example::

    >>> pick_tile(56, (7, 8, 4))
    7
"""

from __future__ import annotations

import logging
import math
from typing import Callable

from slimgraph.backends.tvm.schedules.intrinsics import DPBF16PS_LLVM, bf16_dot_16x2, vnni_dot_16x4

#: Vector lanes of float32 the rules aim for (AVX-512: 16; AVX2 machines split them in two).
VECTOR = 16
#: Parallel chunks per core: enough slack for uneven work.
PARALLEL_CHUNKS_PER_CORE = 4
#: Loop nests with fewer innermost iterations (elements, multiply-adds) run on the calling thread:
#: about a microsecond of one core's work, less than waking the thread pool costs. Squeeze-excite's
#: pooled 1x1 convs are a few hundred multiply-adds; a stack of such kernels ran 1.4x slower on
#: two threads than on one before this (interleaved min times, loaded machine).
MIN_PARALLEL_WORK = 32768


#: Rules of convs whose padded input is materialized once rather than inlined.
PACKED_CONVS = ("conv2d_packed", "conv2d_vnni", "conv2d_bf16", "depthwise", "conv1x1_rows")
#: Rules whose register tile reuses each weight vector across its rows: compressed weights
#: are decoded once per reduction step into a small buffer ahead of the tile.
TILED = ("conv2d_packed", "conv2d_vnni", "conv1x1_rows", "matmul_packed", "dense_packed")


def pick_tile(extent: int, candidates: tuple[int, ...]) -> int:
    """The first candidate dividing ``extent`` (else the largest divisor below the first candidate)."""
    for c in candidates:
        if extent % c == 0:
            return c
    return max(d for d in range(1, candidates[0] + 1) if extent % d == 0)


log = logging.getLogger("slimgraph.backends.tvm")

#: Attribute of a kernel whose rule failed, giving why; it runs on the generic schedule, often
#: many times slower, so the kernel's TIR (``Kernel.tir``) says so and the log warns.
FALLBACK_ATTR = "sg.fallback"


def schedule_cpu(func, target):
    """Schedule one PrimFunc for a CPU target; returns the scheduled PrimFunc."""
    from tvm import s_tir

    cores = max(target.cores, 1)
    try:
        sch = s_tir.Schedule(func)
        _schedule(sch, cores, use_rules=True)
    except Exception as exc:  # noqa: BLE001 - any rule failure falls back to the generic schedule
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
        name = str(func.attrs["global_symbol"]) if func.attrs and "global_symbol" in func.attrs else "a kernel"
        log.warning("%s: its schedule rule failed (%s); it runs on the generic schedule", name, reason)
        func = func.with_attr(FALLBACK_ATTR, reason)
        sch = s_tir.Schedule(func)
        try:
            _schedule(sch, cores, use_rules=False)
        except Exception:  # noqa: BLE001 - an unschedulable kernel still runs, serially
            return func
    return sch.mod["main"]


# ---------------------------------------------------------------------------
# Block queries


def _blocks(sch):
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _stmt(sch, block):
    return sch.get(block)


def _rule(sch, block) -> str:
    ann = _stmt(sch, block).annotations
    return str(ann["sg.rule"]) if "sg.rule" in ann else ""


def _ann_int(sch, block, key: str, default: int) -> int:
    ann = _stmt(sch, block).annotations
    return int(ann[key]) if key in ann else default


def _is_reduction(sch, block) -> bool:
    return any(int(iv.iter_type) != 0 for iv in _stmt(sch, block).iter_vars)


def _output_buffers(sch) -> list:
    # a PrimFunc's parameters are its buffers; outputs are written, inputs only read
    return list(sch.mod["main"].params)


def _writes_output(sch, block, outputs) -> bool:
    return any(region.source.same_as(p) for region in _stmt(sch, block).writes for p in outputs)


def _extent(sch, loop) -> int | None:
    """A loop's trip count, None when it depends on a dynamic dim."""
    from tvm import tirx

    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


# ---------------------------------------------------------------------------
# The driver


def _schedule(sch, cores: int, use_rules: bool) -> None:
    outputs = _output_buffers(sch)
    anchors = set(CPU_RULES) if use_rules else set()
    _inline(sch, outputs, anchors)
    done: set[str] = set()
    if use_rules:
        for block in _blocks(sch):
            name = _stmt(sch, block).name_hint
            rule = _rule(sch, block)
            if rule in CPU_RULES and name not in done:
                done |= CPU_RULES[rule](sch, block, cores, outputs)
    for block in _blocks(sch):
        if _stmt(sch, block).name_hint not in done:
            _generic(sch, block, cores)


def _inline(sch, outputs, anchors) -> None:
    """Compute every spatial non-output block inside its consumers (pads of packed convs excepted)."""
    changed = True
    while changed:
        changed = False
        for block in reversed(_blocks(sch)):
            rule = _rule(sch, block)
            if rule in anchors or _is_reduction(sch, block) or _writes_output(sch, block, outputs):
                continue
            if rule in ("pad", "pixels", "pixel_tiles") and anchors and any(_rule(sch, c) in PACKED_CONVS for c in sch.get_consumers(block)):
                continue  # materialized once: an if in the micro-kernel's inner loop costs more than a copy
            if rule == "sparse_input" and anchors:
                continue  # x^T, materialized once: the sparse rows read it as contiguous vectors
            if rule == "decode" and anchors and any(_rule(sch, c) in TILED for c in sch.get_consumers(block)):
                continue  # decoded once per reduction step by the tile (_decode_at), not once per use
            try:
                sch.compute_inline(block)
                changed = True
            except Exception:  # noqa: BLE001 - not inlinable (e.g. read by a reduction's init); leave it
                continue


def _bits(buffer) -> int:
    """Bits of one element of ``buffer``."""
    import tvm

    return tvm.DataType(str(buffer.dtype)).bits


def _lanes(sch, block) -> int:
    """VECTOR float32 lanes as lanes of the block's output: the same register width holds half
    as many 64-bit elements (f64, i64)."""
    return VECTOR // 2 if _bits(_stmt(sch, block).writes[0].source) == 64 else VECTOR


def _parallel_vectorize(sch, block, loops: list, cores: int, vectorize: bool = True) -> None:
    """Vectorize the innermost loop when its extent allows, and run the outer loops in parallel."""
    if not loops:
        return
    if vectorize:
        inner = loops[-1]
        extent = _extent(sch, inner)
        widest = _lanes(sch, block)
        lanes = 0 if extent is None else next((v for v in (widest, widest // 2, widest // 4) if extent % v == 0), 0)
        if lanes and extent >= lanes:
            outer, vec = sch.split(inner, [None, lanes])
            sch.vectorize(vec)
            loops = loops[:-1] + ([outer] if extent > lanes else [])
    _parallelize(sch, loops, cores)


def _iterations(stmt) -> int:
    """How often the innermost statements under ``stmt`` run (a dynamic loop counts as plenty)."""
    from tvm import s_tir, tirx

    if isinstance(stmt, tirx.For):
        extent = stmt.extent
        return (int(extent) if isinstance(extent, tirx.IntImm) else MIN_PARALLEL_WORK) * _iterations(stmt.body)
    if isinstance(stmt, tirx.SeqStmt):
        return sum(_iterations(s) for s in stmt.seq)
    if isinstance(stmt, s_tir.SBlockRealize):
        return _iterations(stmt.block.body)
    body = getattr(stmt, "body", None)
    return _iterations(body) if isinstance(body, tirx.Stmt) else 1


def _parallelize(sch, loops: list, cores: int) -> None:
    """Fuse the outer loops until there is enough parallel work, and mark them parallel
    (unless the whole nest is too little work to share, see MIN_PARALLEL_WORK)."""
    if not loops or cores <= 1 or _iterations(sch.get(loops[0])) < MIN_PARALLEL_WORK:
        return
    want = cores * PARALLEL_CHUNKS_PER_CORE
    count, work, dynamic = 0, 1, False
    for loop in loops:
        count += 1
        # a dynamic dim (batch, sequence) may be 1 at a call: fuse on past it, counting static work only
        size = _extent(sch, loop)
        if size is None:
            dynamic = True
        else:
            work *= size
        if work >= want:
            break
    if work < 2 and not dynamic:
        return
    fused = sch.fuse(*loops[:count]) if count > 1 else loops[0]
    sch.parallel(fused)


def _generic(sch, block, cores: int) -> None:
    """A parallel (and, for elementwise blocks, vectorized) loop nest."""
    loops = list(sch.get_loops(block))
    if not loops:
        return
    spatial = len([iv for iv in _stmt(sch, block).iter_vars if int(iv.iter_type) == 0])
    if _is_reduction(sch, block):
        _parallelize(sch, loops[:spatial], cores)
    else:
        _parallel_vectorize(sch, block, loops, cores)


# ---------------------------------------------------------------------------
# Anchor rules. Each returns the names of the blocks it scheduled.


def _epilogue(sch, block, outputs):
    """The one consumer block the anchor's result flows into, or None when the anchor writes the output."""
    consumers = list(sch.get_consumers(block))
    if not consumers:
        return None
    if len(consumers) > 1:
        raise ValueError("anchor with several consumers")
    return consumers[0]


def _tiled_accumulate(sch, block, outputs, spatial_tiles: list[tuple[int, int]], layout: Callable, cores: int,
                      intrin: str | None = None, weight_loop: int = 1, outer_order: tuple[int, ...] | None = None,
                      k_block: int = 0):
    """Shared micro-kernel scheduling.

    ``spatial_tiles`` gives, per spatial loop, (tile, rank): each loop is split
    by its tile and the tiles go innermost in rank order, the last one
    vectorized and the others unrolled, so the accumulator (re-laid out by
    ``layout`` to make the vector dim innermost) stays in registers. The
    epilogue (or a plain copy) writes the tile back inside the tile loop.
    With a tensor intrinsic, the last reduction loop goes inside the vector
    loop and the two are replaced by ``intrin`` (e.g. a 16x4 dot product).
    A compressed weight (a ``decode`` producer) is decoded once per value of the
    spatial loop ``weight_loop`` (the weight's output-channel block), which then
    goes outermost: its whole panel serves every row tile. Otherwise ``outer_order`` (a
    permutation of the spatial loops) orders the tile loops. With ``k_block``, the first reduction
    loop is split in runs of that many steps, and each run goes outside every tile of the weight
    block (the first two tile loops): the run's weights come from memory once and serve all the
    tiles from L1, whose partial sums stay in cache between runs; the epilogue runs after the
    last run, over the block.
    """
    consumer = _epilogue(sch, block, outputs)
    if consumer is None:
        consumer = sch.cache_write(block, 0, "global")
    sch.transform_layout(block, ("write", 0), layout)
    loops = list(sch.get_loops(block))
    n_spatial = len(spatial_tiles)
    spatial, reduce = loops[:n_spatial], loops[n_spatial:]
    outers, inners = [], []
    for loop, (tile, rank) in zip(spatial, spatial_tiles):
        if tile > 1:
            o, i = sch.split(loop, [None, tile])
            outers.append(o)
            inners.append((rank, i))
        else:
            outers.append(loop)
    ranked = [i for _, i in sorted(inners, key=lambda p: p[0])]
    inner_reduce = reduce[-1:] if intrin else []
    decoding = [p for p in sch.get_producers(block) if _rule(sch, p) == "decode"]
    if decoding:
        outers.insert(0, outers.pop(weight_loop))
    elif outer_order:
        outers = [outers[i] for i in outer_order]
    head = outers[:2] if k_block else outers  # the loops the epilogue runs in
    if k_block:
        run, step = sch.split(reduce[0], [None, k_block])
        reduce = [run, step, *reduce[1:]]
        sch.reorder(*head, run, *outers[2:], *reduce[1:len(reduce) - len(inner_reduce)], *ranked, *inner_reduce)
    else:
        sch.reorder(*outers, *reduce[:len(reduce) - len(inner_reduce)], *ranked, *inner_reduce)
    sch.reverse_compute_at(consumer, head[-1], preserve_unit_loops=True)
    if not k_block:
        for loop in list(sch.get_loops(consumer))[len(outers):]:
            sch.unroll(loop)
    # annotate before splitting off the init: the update block alone is no longer a reduction block
    for loop in ranked[:-1]:
        sch.unroll(loop)
    if not intrin:
        sch.vectorize(ranked[-1])
    # with a decode, only the weight-block loop runs parallel: fusing the rows into it would
    # decode each panel once per row instead of once
    _parallelize(sch, outers[:1] if decoding else head if k_block else outers[:-1] or outers, cores)
    decoders = _decode_at(sch, block, list(sch.get_loops(block))[0], decoding) if decoding else set()
    if intrin:  # the intrinsic's loops become one block, tensorized once its init is split off
        block = sch.blockize(ranked[-1])
    init = sch.decompose_reduction(block, reduce[0])
    names = {_stmt(sch, b).name_hint for b in (block, consumer, init)} | decoders
    init_loops = list(sch.get_loops(init))[-len(ranked):]
    for loop in init_loops[:-1]:
        sch.unroll(loop)
    if intrin:
        sch.tensorize(block, intrin)
        sch.vectorize(list(sch.get_loops(sch.get_child_blocks(init)[0]))[-1])
    else:
        sch.vectorize(init_loops[-1])
    return names


def _decode_at(sch, block, loop, producers) -> set[str]:
    """Compute the weights the decoding ``producers`` feed ``block`` inside ``loop``, the
    innermost loop on which the weight panel depends, vectorized: each panel is decoded
    once and serves every tile under the loop. Returns the decoding blocks' names."""
    depth = 1 + next(i for i, l in enumerate(sch.get_loops(block)) if sch.get(l).same_as(sch.get(loop)))
    names = set()
    for producer in producers:
        names.add(_stmt(sch, producer).name_hint)
        sch.compute_at(producer, loop, preserve_unit_loops=True)
        loops = list(sch.get_loops(producer))[depth:]
        if loops:
            sch.vectorize(sch.split(loops[-1], [None, VECTOR])[1] if (_extent(sch, loops[-1]) or 0) % VECTOR == 0 else loops[-1])
    return names


def _rows_outside_channels(sch, block) -> bool:
    """Whether a packed conv's output rows should be its outer loop, each row's channel blocks
    inside it: when its input (4-d) is larger than its weights (5-d, packed). Channel blocks
    outside stream the whole input once per block; an input larger than L2 then comes from L3
    each time (ResNet-50's 256->64 1x1 conv at 56x56: 3.2 MB of input read four times, 75
    GFLOP/s on one core). Rows outside stream the weights once per row instead, which suits
    the late layers, whose weights are larger than their maps."""
    from tvm import tirx

    sizes = {}
    for region in _stmt(sch, block).reads:
        shape = region.source.shape
        if all(isinstance(d, tirx.IntImm) for d in shape):
            sizes[len(shape)] = math.prod(int(d) for d in shape)
    return sizes.get(4, 0) > sizes.get(5, math.inf)


def _conv2d_packed(sch, block, cores: int, outputs, intrin: str | None = None) -> set[str]:
    """Conv with weights [C_out/B, C_in, KH, KW, B]: a (width-tile x B) accumulator per step,
    the tiles ordered by ``_rows_outside_channels``."""
    block_c = _ann_int(sch, block, "sg.block", VECTOR)
    loops = list(sch.get_loops(block))
    width = _extent(sch, loops[3])
    full = block_c * VECTOR // _lanes(sch, block) >= VECTOR  # the block fills a 16-float32 register width
    tile_w = pick_tile(width, (14, 12, 7, 8, 6, 4, 5, 3, 2)) if full else pick_tile(width, (14, 12, 8, 7, 6, 4))
    producers = list(sch.get_producers(block))
    decoding = any(_rule(sch, p) == "decode" for p in producers)  # then the weight blocks go outermost
    order = (0, 2, 1, 3) if not decoding and _rows_outside_channels(sch, block) else None
    pixels = [p for p in producers if _rule(sch, p) == "pixels"]
    names = _tiled_accumulate(
        sch, block, outputs, [(1, 0), (block_c, 2), (1, 0), (tile_w, 1)],
        lambda n, c, h, w: (n, c // block_c, h, w, c % block_c), cores, intrin, outer_order=order,
        k_block=0 if order or decoding or intrin else _weight_run(sch, block, loops, block_c, tile_w),
    )
    for producer in pixels:  # a 1x1 conv's pixels in row runs (ops/nn.py: conv1x1_pixels)
        names.add(_stmt(sch, producer).name_hint)
        if order:  # each output row's pixels copied just ahead of it, into L1, by the thread that reads them
            sch.compute_at(producer, list(sch.get_loops(block))[0], preserve_unit_loops=True)
        loops = list(sch.get_loops(producer))
        _vector_row(sch, loops[-1])
        if not order:  # else a loop of its own
            _parallelize(sch, loops[:-1], cores)
    if intrin is None:
        _vector_epilogue(sch, block, block_c)
    return names | _schedule_pad(sch, cores)


#: Bytes of a weight block's run that the K-blocked packed conv keeps in L1 while every output
#: tile of the block reads it (a quarter to a half of L1 on AVX-512 CPUs).
WEIGHT_RUN_BYTES = 16 * 1024


def _weight_run(sch, block, loops: list, block_c: int, tile_w: int) -> int:
    """Input channels per run of a packed conv with a kernel window whose channel blocks are outside
    its rows (its weights outweigh its map), 0 to keep one pass. One pass re-reads the block's
    weights for every output tile: from memory for the first, then from L2. Runs of
    WEIGHT_RUN_BYTES serve every tile from L1 (ResNet-50's 512-channel 3x3 conv at 7x7: 0.89 ->
    0.72 ms with its weights in cache, 1.09 -> 0.97 ms from memory, as in the model). 1x1 convs
    gained nothing (their partial sums go to memory between runs for few FMAs) and keep one pass."""
    extents = [_extent(sch, loop) for loop in loops]
    if None in extents or len(extents) < 5:
        return 0
    _, _, height, width, c_in, *window = extents
    if height * width // tile_w < 2 or math.prod(window) == 1:
        return 0
    per_channel = math.prod(window) * block_c * 4
    want = max(WEIGHT_RUN_BYTES // per_channel, 1)
    run = max(d for d in range(1, min(want, c_in) + 1) if c_in % d == 0)
    return run if run < c_in else 0


#: Bytes of input a widening 1x1 conv's run of pixel tiles reads (:func:`_plane_run`): a quarter of
#: L2, where the run's input stays while every channel run reads it again.
PLANE_RUN_INPUT_BYTES = 512 * 1024


def _plane_run(sch, block, pixels: int, cores: int) -> int:
    """Pixel tiles per run of a 1x1 conv over pixel rows whose output outweighs its input (it widens
    the channels), 1 for none. With one tile outermost, each tile writes (and its epilogue reads)
    one 128-byte piece of each of hundreds of channel planes, more streams than the hardware
    prefetchers follow: ResNet-50's 64->256+add+relu at 56x56 ran at 0.37 ms with its data in
    cache and 0.87 ms with its data from memory. Runs of tiles outside the channel runs write
    each plane in runs of several KB (0.37 -> 0.34 and 0.87 -> 0.49 ms; 0.61 -> 0.40 ms in the
    model). The runs divide evenly among the threads, so each writes the pixels the next
    kernel's thread reads, as it did before: a split by channels made the next 1x1 conv read half
    its input from the other core (0.50 -> 0.58 ms). Narrowing convs keep one tile outermost:
    each run would re-read their large input from L2 (256->64 at 56x56: slower)."""
    loops = list(sch.get_loops(block))
    c_out, total, c_in = (_extent(sch, loop) for loop in loops[1:4])
    if None in (c_out, total, c_in) or c_out <= c_in:
        return 1
    count = total // pixels
    tile_bytes = c_in * pixels * _bits(_stmt(sch, block).writes[0].source) // 8  # one tile's input
    return max(run for run in range(1, count + 1) if count % run == 0 and (
        run == 1 or (run * tile_bytes <= PLANE_RUN_INPUT_BYTES and (count // run) % cores == 0)))


def _conv1x1_rows(sch, block, cores: int, outputs) -> set[str]:
    """A 1x1 conv over flattened pixel rows (``ops/nn.py``: ``pixel_rows_conv1x1``): a tile of
    ``sg.pixels`` pixels (vectors) x ``sg.block`` output channels (unrolled) accumulates in
    registers; the epilogue, iterated over the same flattened pixels, runs on the tile as vectors
    and stores whole vectors. The pixel tiles go outermost when the input outweighs the weight, so
    each tile's input rows are read from cache once for every channel run; a widening conv's
    tiles go outermost in runs (:func:`_plane_run`)."""
    width = _ann_int(sch, block, "sg.width", 1)
    consumer = _epilogue(sch, block, outputs)
    sch.transform_block_layout(consumer, lambda n, c, h, v: (n, c, h * width + v))
    pixels = _ann_int(sch, block, "sg.pixels", 16)
    tiles = [(1, 0), (_ann_int(sch, block, "sg.block", 8), 1), (pixels, 2)]
    order = (0, 2, 1) if _ann_int(sch, block, "sg.rows_first", 0) else None
    run = _plane_run(sch, block, pixels, cores) if order else 1
    if run > 1:  # pixel runs outermost, then channel runs, then the run's tiles
        sch.split(sch.get_loops(block)[2], [None, run * pixels])
        tiles, order = tiles[:2] + [(1, 0), (pixels, 2)], (0, 2, 1, 3)
    names = _tiled_accumulate(sch, block, outputs, tiles, lambda *i: i, cores, outer_order=order)
    sch.vectorize(sch.get_loops(consumer)[-1])
    for producer in sch.get_producers(block):
        if _rule(sch, producer) == "pixel_tiles":  # each tile's pixels, copied just ahead of it
            # in the tile loop: the last five are the tiles, channel runs, rc, channels, pixels
            sch.compute_at(producer, list(sch.get_loops(block))[-5], preserve_unit_loops=True)
            sch.vectorize(sch.get_loops(producer)[-1])
        elif _rule(sch, producer) == "pixels":  # a strided conv's pixels, copied in rows once
            _parallel_vectorize(sch, producer, list(sch.get_loops(producer)), cores)
        else:
            continue
        names.add(_stmt(sch, producer).name_hint)
    return names


def _vector_epilogue(sch, block, block_c: int) -> None:
    """The epilogue of a channel-vector tile over an NCHW output, one channel vector per tile
    column: read from the tile as vectors and computed as vectors (SiLU's exp on 16 lanes, not
    224 scalars per tile), then stored lane by lane to the output's channel planes."""
    for consumer in sch.get_consumers(block):
        loops = sch.get_loops(consumer)
        channel, width = loops[-3], loops[-1]
        if _extent(sch, channel) != block_c or block_c < 4:
            continue
        sch.reorder(width, channel)
        sch.vectorize(channel)


def _conv2d_vnni(sch, block, cores: int, outputs) -> set[str]:
    """Int8 conv on AVX-512 VNNI: the packed conv's tiles, each step one ``vpdpbusd``
    over 4 input channels for 16 outputs (``ops/quantized.py`` lays the operands out)."""
    return _conv2d_packed(sch, block, cores, outputs, intrin=vnni_dot_16x4())


def _conv2d_bf16(sch, block, cores: int, outputs) -> set[str]:
    """Bf16 conv on AVX512-BF16: the packed conv's tiles, each step one ``vdpbf16ps`` over
    2 input channels for 16 outputs (``ops/nn.py`` lays the operands out). The kernel links
    the LLVM function the intrinsic calls."""
    names = _conv2d_packed(sch, block, cores, outputs, intrin=bf16_dot_16x2())
    sch.annotate(sch.get_loops(_blocks(sch)[0])[0], "pragma_import_llvm", DPBF16PS_LLVM)
    return names


def _schedule_pad(sch, cores: int) -> set[str]:
    names = set()
    for block in _blocks(sch):
        if _rule(sch, block) == "pad":
            _parallel_vectorize(sch, block, list(sch.get_loops(block)), cores)
            names.add(_stmt(sch, block).name_hint)
    return names


def _matmul_packed(sch, block, cores: int, outputs) -> set[str]:
    """x @ W with W packed [N/B, K, B]: leading dims fused into rows, an (M-tile x B) accumulator."""
    block_n = _ann_int(sch, block, "sg.block", VECTOR)
    loops = list(sch.get_loops(block))
    rank = len(loops) - 1
    extents = [_extent(sch, loop) for loop in loops[:-2]]
    # rows of dynamic count are not tiled: the vector dim keeps its tile
    tile_m = pick_tile(math.prod(extents), (6, 8, 4, 7, 5, 3, 2)) if rank > 1 and None not in extents else 1
    if rank > 2:
        sch.fuse(*loops[:-2])
    tiles = ([(tile_m, 1)] if rank > 1 else []) + [(block_n, 2)]

    def layout(*i):
        return tuple(i[:-1]) + (i[-1] // block_n, i[-1] % block_n)

    if rank > 2:  # the fused rows are one loop, the buffer keeps its dims: tile only the vector dim
        return _tiled_accumulate(sch, block, outputs, [(1, 0), (block_n, 2)], layout, cores)
    return _tiled_accumulate(sch, block, outputs, tiles, layout, cores)


def _sparse_rows(sch, block, cores: int, outputs) -> set[str]:
    """Sparse weight rows x dense columns (``ops/sparse.py``): per weight row, a tile of up to
    8 vectors of the output row accumulates in registers while the row's non-zero blocks
    stream by, each weight scalar broadcast against contiguous vectors of x^T. An epilogue
    reading the rows at non-affine positions (a conv's pixels) runs after, on its own."""
    consumer = _epilogue(sch, block, outputs) if _ann_int(sch, block, "sg.epilogue_in_tile", 0) else None
    if consumer is None:
        consumer = sch.cache_write(block, 0, "global")
    n, m, rj, ri = sch.get_loops(block)
    columns = _extent(sch, m) or 0
    lanes = next((v for v in (VECTOR, VECTOR // 2, VECTOR // 4) if columns % v == 0), 0)
    if not columns or not lanes:
        raise ValueError("sparse rows need a static multiple of 4 columns")
    tile = pick_tile(columns // lanes, (8, 6, 4, 7, 5, 3, 2))
    mo, mt, mi = sch.split(m, [None, tile, lanes])
    sch.reorder(n, mo, rj, ri, mt, mi)
    sch.reverse_compute_at(consumer, mo, preserve_unit_loops=True)
    sch.unroll(mt)
    sch.vectorize(mi)
    if (_extent(sch, ri) or 0) > 1:
        sch.unroll(ri)
    _parallelize(sch, [n, mo], cores)
    init = sch.decompose_reduction(block, rj)
    init_loops = list(sch.get_loops(init))
    sch.unroll(init_loops[-2])
    sch.vectorize(init_loops[-1])
    names = {_stmt(sch, b).name_hint for b in (block, consumer, init)}
    for producer in sch.get_producers(block):
        if _rule(sch, producer) == "sparse_input":
            _parallel_vectorize(sch, producer, list(sch.get_loops(producer)), cores)
            names.add(_stmt(sch, producer).name_hint)
    return names


#: Row tiles of a depthwise conv, in vector lanes: one or two registers of accumulators (the
#: lowering computes rows in whole vectors of 16, 8 or 4 lanes).
DEPTHWISE_TILES = (32, 16, 8, 4)


#: Independent accumulator registers a depthwise tile aims for: each window step is one FMA per
#: register, and an FMA waits about four cycles for the previous one into the same register, so
#: with two FMA units fewer than eight chains leave the units idle (one chain per row tile ran
#: the 7x7 convs of ConvNeXt at 16-18 GFLOP/s on one core, latency-bound).
DEPTHWISE_CHAINS = 8


def _depthwise(sch, block, cores: int, outputs) -> set[str]:
    """Depthwise conv: a tile of output rows x a run of each row kept in registers (vectorized
    along the row) while the kernel window is summed into it, then written back through the
    epilogue; enough rows that the tile's registers make DEPTHWISE_CHAINS independent chains.
    The padded input (``ops/nn.py``) is copied inside each task of the parallel loop, just
    before the rows that read it: a channel's plane is copied into cache and read there, in one
    pass over the threads instead of two."""
    loops = sch.get_loops(block)
    height, width = _extent(sch, loops[2]), _extent(sch, loops[3])
    tile_w = pick_tile(width, DEPTHWISE_TILES)
    vectors = -(-tile_w // VECTOR)
    tile_h = max(d for d in range(1, max(DEPTHWISE_CHAINS // vectors, 1) + 1) if height % d == 0)
    pads = [p for p in sch.get_producers(block) if _rule(sch, p) == "pad"]
    names = _tiled_accumulate(sch, block, outputs, [(1, 0), (1, 0), (tile_h, 1), (tile_w, 2)], lambda *i: i, cores)
    for consumer in sch.get_consumers(block):
        # the epilogue on row vectors, a short row as one (28 lanes: LLVM's 16 + 8 + 4, not seven
        # 4-lane steps): SiLU's exp unrolled as scalars ran EfficientNet's convs at 5 GFLOP/s
        row = sch.get_loops(consumer)[-1]
        if (_extent(sch, row) or 0) <= 4 * VECTOR:
            sch.vectorize(row)
        else:
            _vector_row(sch, row)
    task, rows = sch.get_loops(block)[:2]  # the parallel loop and the row tiles (the block is now the update)
    for pad in pads:
        names.add(_stmt(sch, pad).name_hint)
        sch.compute_at(pad, rows if _plane_bytes(sch, pad) > DEPTHWISE_PLANE_BYTES else task, preserve_unit_loops=True)
        _vector_row(sch, sch.get_loops(pad)[-1])
    return names


#: A depthwise conv copies its padded input per channel, inside the channel's task, when the
#: padded plane is at most this many bytes; a larger plane is copied per row tile instead (the
#: rows the tile reads, a row shared with the next tile copied twice), so that the copy is still
#: in L1 when the tile reads it. A 112x112 plane padded is 66 KB: MobileNetV2's stride-2
#: 96-channel conv 0.188 -> 0.140 ms, its 32-channel one 0.066 -> 0.054; a 28x28 plane per tile
#: was slower (192 channels: 0.058 -> 0.063).
DEPTHWISE_PLANE_BYTES = 32 * 1024


def _plane_bytes(sch, block) -> int:
    """Bytes of one channel plane of ``block``'s [N, C, H, W] output (0 when a dim is dynamic)."""
    from tvm import tirx

    buffer = _stmt(sch, block).writes[0].source
    if not all(isinstance(d, tirx.IntImm) for d in buffer.shape[2:]):
        return 0
    return math.prod(int(d) for d in buffer.shape[2:]) * _bits(buffer) // 8


def _vector_row(sch, loop) -> None:
    """Vectorize a row loop: split into whole vectors where a width divides it, else as one
    vector of its extent (LLVM masks the rest) when that is a few registers long."""
    extent = _extent(sch, loop) or 0
    lanes = next((v for v in (VECTOR, VECTOR // 2, VECTOR // 4) if extent % v == 0), 0)
    if lanes and extent > lanes:
        sch.vectorize(sch.split(loop, [None, lanes])[1])
    elif lanes or 1 < extent <= 4 * VECTOR:
        sch.vectorize(loop)


def _pool(sch, block, cores: int, outputs) -> set[str]:
    """Pooling: parallel over (n, c, rows), the window unrolled."""
    loops = list(sch.get_loops(block))
    spatial = len([iv for iv in _stmt(sch, block).iter_vars if int(iv.iter_type) == 0])
    for loop in loops[spatial:]:
        if _extent(sch, loop) <= 8:
            sch.unroll(loop)
    _parallelize(sch, loops[:spatial - 1], cores)
    return {_stmt(sch, block).name_hint}


def _amx(sch, block, cores: int, outputs) -> set[str]:
    """An AMX kernel (``ops/amx.py``) builds its own parallel loop of micro-kernel calls; its
    operand copies (``amx_pack``) run parallel and vectorized."""
    names = {_stmt(sch, block).name_hint}
    for pack in _blocks(sch):
        if _rule(sch, pack) == "amx_pack" and _stmt(sch, pack).name_hint not in names:
            _parallel_vectorize(sch, pack, list(sch.get_loops(pack)), cores)
            names.add(_stmt(sch, pack).name_hint)
    return names


CPU_RULES: dict[str, Callable] = {
    "amx": _amx,
    # an anchor so that _inline keeps the copy materialized; the "amx" rule of its consumer schedules it
    "amx_pack": lambda sch, block, cores, outputs: set(),
    "conv2d_packed": _conv2d_packed,
    "conv2d_vnni": _conv2d_vnni,
    "conv2d_bf16": _conv2d_bf16,
    "matmul_packed": _matmul_packed,
    "sparse_rows": _sparse_rows,
    "depthwise": _depthwise,
    "conv1x1_rows": _conv1x1_rows,
    "pool": _pool,
}

from slimgraph.backends.tvm.schedules.cpu_matmul import MATMUL_RULES  # noqa: E402 - it uses the helpers above

CPU_RULES.update(MATMUL_RULES)

