"""GPU schedules (CUDA and OpenCL alike): the project's convolution rule, then TVM's dlight rules.

dlight has no rule for convolutions: its fallback gives each thread one output
element and re-reads every input and weight from global memory for it.
:func:`schedule_conv` register-tiles the convolutions the lowerings tag
(``sg.rule = conv``: dense, grouped and depthwise, NCHW): each thread
accumulates ``channels x positions`` outputs in registers, so each weight it
loads serves several positions and each input value several channels, and
the fused epilogue (bias, activation, residual add) is computed from those
registers as the tile is written. A kernel the rule cannot take keeps dlight.

Example::

    >>> [type(r).__name__ for r in gpu_rules()][-1]
    'Fallback'
    >>> conv_tiles(channels=64, positions=3136, threads=256)
    (4, 2, 16, 16)
"""

from __future__ import annotations

#: Outputs each thread accumulates: output channels x output positions.
CHANNELS_PER_THREAD = 4
POSITIONS_PER_THREAD = 2


def gpu_rules() -> list:
    """dlight's GPU rules in the order they are tried, each one that raises counting as not applicable."""
    from tvm.s_tir import dlight as dl

    return [_tolerant(rule) for rule in (dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                                         dl.gpu.Transpose(), dl.gpu.Fallback())]


def _tolerant(rule):
    """``rule`` whose exceptions mean "does not apply", so the next rule gets the kernel: dlight's
    transpose test compares index expressions with Python's ``==`` and raises on MobileViT's unfold."""
    apply = rule.apply

    def tolerant_apply(func, target, tunable):
        try:
            return apply(func, target, tunable)
        except Exception:  # noqa: BLE001 - a rule's failure is its not applying
            return None

    rule.apply = tolerant_apply
    return rule


def schedule_gpu(mod, target):
    """Schedule every PrimFunc of ``mod`` for a GPU ``target`` (a TargetSpec): the conv rule where it
    applies, dlight for the rest."""
    import tvm
    from tvm.s_tir import dlight as dl

    threads = int(target.tvm().attrs["max_num_threads"])
    unscheduled = {}
    for gv, func in list(mod.functions.items()):
        if isinstance(func, tvm.tirx.PrimFunc):
            unscheduled[gv] = func
            scheduled = schedule_conv(func, threads)
            if scheduled is not None:
                mod[gv] = scheduled.with_attr("tirx.is_scheduled", True)
    with target.tvm():
        mod = dl.ApplyDefaultSchedule(*gpu_rules())(mod)
        # a rule may bind its own block and leave a fused neighbour (a concat after dlight's transpose)
        # to run on the host, which cannot touch device memory: such kernels take the fallback alone
        for gv, func in unscheduled.items():
            if _runs_on_host(mod[gv]):
                mod[gv] = dl.ApplyDefaultSchedule(dl.gpu.Fallback())(tvm.IRModule({gv: func}))[gv]
    return mod


def _runs_on_host(func) -> bool:
    """Whether a scheduled PrimFunc has a block outside every thread-bound loop."""
    from tvm import s_tir, tirx

    sch = s_tir.Schedule(func)
    return any(not any(sch.get(loop).kind == tirx.ForKind.THREAD_BINDING for loop in sch.get_loops(block))
               for block in sch.get_child_blocks(sch.get_sblock("root")))


def conv_tiles(channels: int, positions: int, threads: int) -> tuple[int, int, int, int]:
    """(channels per thread, positions per thread, channel threads, position threads) of a block:
    the per-thread tile where the extents allow it, and a power-of-two thread grid of at most
    ``threads`` that wastes few threads on small layers."""
    per_c = CHANNELS_PER_THREAD if channels % CHANNELS_PER_THREAD == 0 else 1
    per_s = POSITIONS_PER_THREAD if positions % POSITIONS_PER_THREAD == 0 else 1
    t_c = 1
    while t_c * 2 * per_c <= channels and t_c < 16:
        t_c *= 2
    t_s = 1
    while t_s * 2 * per_s <= positions and t_c * t_s * 2 <= threads:
        t_s *= 2
    return per_c, per_s, t_c, t_s


def schedule_conv(func, threads: int):
    """``func`` with its one ``conv`` block register-tiled (see the module docstring), or None when
    it has none, its shapes are dynamic, or the rule fails on it."""
    from tvm import s_tir, tirx

    sch = s_tir.Schedule(func)
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    convs = [b for b in blocks if str(sch.get(b).annotations.get("sg.rule", "")) == "conv"]
    if len(convs) != 1 or len(sch.get_loops(convs[0])) != 7:
        return None
    conv = convs[0]
    outputs = list(sch.mod["main"].params)
    try:
        for block in blocks:  # pads and intermediate elementwise steps compute inside their consumers
            if block.same_as(conv) or any(r.source.same_as(p) for r in sch.get(block).writes for p in outputs):
                continue
            sch.compute_inline(block)
        consumers = list(sch.get_consumers(conv))
        if len(consumers) > 1:
            return None
        if consumers:
            sch.set_scope(conv, 0, "local")
            store = consumers[0]
        else:
            store = sch.cache_write(conv, 0, "local")
        n, o, h, w, rc, rh, rw = sch.get_loops(conv)
        extents = [sch.get(loop).extent for loop in (o, h, w)]
        if not all(isinstance(e, tirx.IntImm) for e in extents):
            return None
        channels, positions = int(extents[0]), int(extents[1]) * int(extents[2])
        per_c, per_s, t_c, t_s = conv_tiles(channels, positions, threads)
        s = sch.fuse(h, w)
        o_b, o_t, o_i = sch.split(o, [None, t_c, per_c])
        s_b, s_t, s_i = sch.split(s, [None, t_s, per_s])
        sch.reorder(n, o_b, s_b, o_t, s_t, rc, rh, rw, o_i, s_i)
        sch.bind(sch.fuse(n, o_b, s_b), "blockIdx.x")
        thread = sch.fuse(o_t, s_t)
        sch.bind(thread, "threadIdx.x")
        sch.reverse_compute_at(store, thread, preserve_unit_loops=True)
        sch.decompose_reduction(conv, rc)
        # unrolled, the tile's accumulators index statically and stay in registers
        sch.unroll(o_i)
        sch.unroll(s_i)
        return sch.mod["main"]
    except Exception:  # noqa: BLE001 - any kernel the rule cannot take keeps dlight's schedule
        return None
