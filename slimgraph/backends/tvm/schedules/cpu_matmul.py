"""CPU rules of the transformer kernels: dense matmul with packed weights, and attention.

``dense_packed`` (``ops/nn.py``, a matmul or linear with a constant weight and
static rows): C[rows, N] = x[rows, K] @ W, W packed as [N/B, K, B] panels
(B = ``sg.block``, a few vectors of ``sg.lanes``), rows padded to a multiple
of ``sg.rows``. Each task of the parallel loop owns one (panel, row tile)
and keeps its [rows x B] accumulator in registers (a ``local`` buffer
whose every access LLVM sees at a constant offset) while it walks K; the
fused epilogue (bias, GELU, residual, the reshape to the output's shape)
runs on the tile right after, still in registers. Panels are the outer
loop so a panel stays in L2 while the row tiles stream past it.

``attention`` (``ops/attention.py``): one task per (batch, head); inside it
K transposed, the scores as a register-tiled product, row max, exponentials,
their sum, their product with V, and that divided by the sum, every stage on
data the task just wrote (in L1/L2). The two products keep a [row tile x
vectors] accumulator in registers; the row max and sum are vectors of
partials folded once per row. With padded keys or a bool mask the mask is
padded to a bias (-inf on padded keys) once, in its own parallel loop ahead
of the heads.

``row_reduce`` (layer norm's statistics, softmax's max and sum over the
last axis): the row reduced as a vector of partial results, then folded.

Example::

    >>> sorted(MATMUL_RULES)
    ['attention', 'dense_packed', 'row_reduce']
"""

from __future__ import annotations

from typing import Callable


def _helpers():
    # imported late: cpu.py imports this module to complete its rule table
    from slimgraph.backends.tvm.schedules import cpu

    return cpu


def _register_tile(sch, block, tiles: list[tuple], reduce_loops: list, outer: list):
    """Split ``block``'s spatial loops by ``tiles`` ((loop, [inner factors]) pairs), put the
    reduction loops between the outer and inner parts, and return (outer loops, inner loops)."""
    outers, inners = list(outer), []
    for loop, factors in tiles:
        parts = sch.split(loop, [None, *factors])
        outers.append(parts[0])
        inners.extend(parts[1:])
    sch.reorder(*outers, *reduce_loops, *inners)
    return outers, inners


def _finish_accumulator(sch, block, first_reduce, inners: list) -> None:
    """Init split off; the tile's inner loops unrolled and the last vectorized, in both."""
    for loop in inners[:-1]:
        sch.unroll(loop)
    sch.vectorize(inners[-1])
    init = sch.decompose_reduction(block, first_reduce)
    init_loops = list(sch.get_loops(init))[-len(inners):]
    for loop in init_loops[:-1]:
        sch.unroll(loop)
    sch.vectorize(init_loops[-1])


def _names_since(sch, others: set[str]) -> set[str]:
    """The blocks a rule scheduled: every block now but the ``others`` it left alone (a rule's
    blocks are renamed as it splits them: ``matmul`` becomes ``matmul_init`` and ``matmul_update``)."""
    cpu = _helpers()
    return {cpu._stmt(sch, b).name_hint for b in cpu._blocks(sch)} - others


def _vector_tail(sch, block, lanes: int) -> None:
    """The block's innermost loop split by ``lanes`` (or a half or quarter of it, whichever
    divides its extent) and vectorized; left alone when nothing divides or the extent is dynamic."""
    cpu = _helpers()
    loops = list(sch.get_loops(block))
    extent = cpu._extent(sch, loops[-1])
    width = next((w for w in (lanes, lanes // 2, lanes // 4) if w and extent and extent % w == 0), 0)
    if width and extent > width:
        _, vec = sch.split(loops[-1], [None, width])
        sch.vectorize(vec)
    elif width:
        sch.vectorize(loops[-1])


def _dense_packed(sch, block, cores: int, outputs) -> set[str]:
    """rows x N matmul over K with packed weights: see the module docstring."""
    cpu = _helpers()
    rows = cpu._ann_int(sch, block, "sg.rows", 1)
    panel = cpu._ann_int(sch, block, "sg.block", cpu.VECTOR)
    lanes = cpu._ann_int(sch, block, "sg.lanes", cpu.VECTOR)
    consumer = cpu._epilogue(sch, block, outputs)
    others = {cpu._stmt(sch, b).name_hint for b in cpu._blocks(sch)} - {
        cpu._stmt(sch, b).name_hint for b in (block, consumer) if b is not None}
    *outer, m, n, k = sch.get_loops(block)
    no, nv, nl = sch.split(n, [None, panel // lanes, lanes])
    mo, mi = sch.split(m, [None, rows])
    sch.reorder(no, *outer, mo, k, mi, nv, nl)
    if consumer is not None:
        sch.set_scope(block, 0, "local")
        sch.reverse_compute_at(consumer, mo, preserve_unit_loops=True)
        for loop in list(sch.get_loops(consumer))[len(outer) + 2:-1]:
            if cpu._extent(sch, loop) is not None:  # an epilogue that reshapes rows may vary per tile
                sch.unroll(loop)
        _vector_tail(sch, consumer, lanes)
    # the parallel loop is marked before the init is split off: the update alone is no longer a reduction.
    # A compressed weight is decoded once per panel, which then serves every row tile, so only the
    # panel loop runs parallel (fusing the rows into it would decode each panel once per row tile)
    decoding = [p for p in sch.get_producers(block) if cpu._rule(sch, p) == "decode"]
    cpu._parallelize(sch, [no] if decoding else [no, *outer, mo], cores)
    decoders = cpu._decode_at(sch, block, list(sch.get_loops(block))[0], decoding) if decoding else set()
    _finish_accumulator(sch, block, k, [mi, nv, nl])
    return _names_since(sch, others) | decoders


#: The attention kernel's stages, in order (``ops/attention.py`` names them).
ATTENTION_STAGES = ("attention_kt", "attention_dot", "attention_max", "attention_exp", "attention_sum",
                    "attention_values")
#: The mask padded to the scores' shape (with padded keys or a bool mask; see ``ops/attention.py``).
ATTENTION_MASK = "attention_bias"


def _attention(sch, block, cores: int, outputs) -> set[str]:
    """Per (batch, head) task: every stage computed inside it, the two products register-tiled."""
    cpu = _helpers()
    stage = {cpu._stmt(sch, b).name_hint: b for b in cpu._blocks(sch)}
    kt, dot, top, exp, total, values = (stage[name] for name in ATTENTION_STAGES)
    finish = cpu._epilogue(sch, values, outputs)
    rows = cpu._ann_int(sch, values, "sg.rows", 4)
    lanes = cpu._ann_int(sch, dot, "sg.lanes", cpu.VECTOR)
    others = {cpu._stmt(sch, b).name_hint for b in cpu._blocks(sch)} - set(ATTENTION_STAGES) - {
        ATTENTION_MASK, cpu._stmt(sch, finish).name_hint}
    if ATTENTION_MASK in stage:  # its own loop ahead of the heads; a few thousand scalar copies
        cpu._parallelize(sch, list(sch.get_loops(stage[ATTENTION_MASK]))[:-1], cores)
    # the row max and sum as vectors of partials (split while their loop nests are standalone)
    top_rf, total_rf = (_lane_split(sch, b, lanes) for b in (top, total))

    # the exponentials own the head loop: the stages before them move in as producers
    # (compute_at: every consumer already inside), those after as consumers (reverse_compute_at:
    # every producer already inside). No other stage could own it: the mask's bias stays out
    # ahead of the heads, so what reads it must move in as a producer, and the division by the
    # row's sum reads the sum and the values product both, so it must move in as a consumer
    *lead, _, _ = sch.get_loops(exp)
    head = sch.fuse(*lead) if len(lead) > 1 else lead[0]
    cpu._parallelize(sch, [head], cores)
    _vector_tail(sch, exp, lanes)
    for b in (top, top_rf, dot, kt):
        sch.compute_at(b, head, preserve_unit_loops=True)
    _lane_partials(sch, top_rf, top, lane_at=1)
    _scores_product(sch, dot, lanes)
    _vector_tail(sch, kt, lanes)
    for b in (total_rf, total):
        sch.reverse_compute_at(b, head, preserve_unit_loops=True)
    _lane_partials(sch, total_rf, total, lane_at=1)

    # the values product: [rows x features] accumulators in registers; then the division by
    # the row's sum (and the cast to the output's type) over the head's rows, which reads the sum
    # too and so cannot sit inside the product's row tile (reverse_compute_at wants every
    # producer of a block under the loop it goes to)
    sch.reverse_compute_at(values, head, preserve_unit_loops=True)
    local = sch.cache_write(values, 0, "local")
    *_, i, d, rv = sch.get_loops(values)
    features = cpu._extent(sch, d)
    width = next(w for w in (lanes, lanes // 2, lanes // 4, 1) if features % w == 0)  # heads of 8 or 40 features
    outers, inners = _register_tile(sch, values, [(i, [rows]), (d, [features // width, width])], [rv], [])
    sch.reverse_compute_at(local, outers[0], preserve_unit_loops=True)
    _vector_tail(sch, local, lanes)
    _finish_accumulator(sch, values, rv, inners)
    sch.reverse_compute_at(finish, head, preserve_unit_loops=True)
    _vector_tail(sch, finish, lanes)
    return _names_since(sch, others)


def _scores_product(sch, dot, lanes: int) -> None:
    """The scores q k^T as [``sg.rows`` x up to 4 vectors] accumulators over the features (the
    lowering gives 8 rows when the keys make an odd number of vectors, so that a tile of one
    vector still holds 8 independent sums: 4 left the FMA units waiting on each other)."""
    cpu = _helpers()
    rows = cpu._ann_int(sch, dot, "sg.rows", 4)
    keys = cpu._extent(sch, list(sch.get_loops(dot))[-2])
    vectors = next(v for v in (4, 2, 1) if keys % (v * lanes) == 0)
    local = sch.cache_write(dot, 0, "local")
    *_, di, dj, dr = sch.get_loops(dot)
    outers, inners = _register_tile(sch, dot, [(di, [rows]), (dj, [vectors, lanes])], [dr], [])
    sch.reverse_compute_at(local, outers[-1], preserve_unit_loops=True)
    _vector_tail(sch, local, lanes)
    _finish_accumulator(sch, dot, dr, inners)


def _row_reduce(sch, block, cores: int, outputs) -> set[str]:
    """A sum or max over the innermost axis (layer norm's statistics, softmax's max and sum):
    ``lanes`` partial results kept as a vector while the row streams past, then folded, where a
    scalar loop would wait on each add in turn. Rows run in parallel."""
    cpu = _helpers()
    lanes = cpu._ann_int(sch, block, "sg.lanes", cpu.VECTOR)
    *spatial, r = sch.get_loops(block)
    extent = cpu._extent(sch, r)
    if not spatial or extent is None or extent % lanes or extent < 2 * lanes:
        cpu._parallelize(sch, spatial, cores)
        return {cpu._stmt(sch, block).name_hint}
    others = {cpu._stmt(sch, b).name_hint for b in cpu._blocks(sch)} - {cpu._stmt(sch, block).name_hint}
    partial = _lane_split(sch, block, lanes)
    # the rows go parallel while the partials are still a reduction (not once their init is split off)
    cpu._parallelize(sch, list(sch.get_loops(partial))[:-2], cores)
    _lane_partials(sch, partial, block)
    return _names_since(sch, others)


def _lane_split(sch, block, lanes: int):
    """Split ``block``'s innermost loop, its one reduction (a multiple of ``lanes``), into
    ``lanes`` partial results, a new block returned; the loop nest must still be ``block``'s
    alone (rfactor's rule). See :func:`_lane_partials`."""
    *spatial, r = sch.get_loops(block)
    _, inner = sch.split(r, [None, lanes])
    return sch.rfactor(inner, len(spatial))


def _lane_partials(sch, partial, block, lane_at: int = -1) -> None:
    """The partial results of :func:`_lane_split` kept as one vector while the row streams past,
    and ``block`` folding them after each row: a scalar loop would wait on each add or max in
    turn (4 cycles each). ``lane_at`` is the lane loop's place in ``partial``'s loops: last as
    rfactor leaves it, first of its own when compute_at rebuilt them (in the order of the block's
    iters, the lane's first). The fold goes under the loop just above the reduction."""
    loops = list(sch.get_loops(partial))
    lane = loops[lane_at]
    *rows, ro = [loop for loop in loops if not loop.same_as(lane)]
    sch.reorder(rows[-1], ro, lane)
    sch.reverse_compute_at(block, rows[-1], preserve_unit_loops=True)
    sch.vectorize(lane)
    init = sch.decompose_reduction(partial, ro)
    sch.vectorize(sch.get_loops(init)[-1])


MATMUL_RULES: dict[str, Callable] = {
    "dense_packed": _dense_packed,
    "attention": _attention,
    "row_reduce": _row_reduce,
}
