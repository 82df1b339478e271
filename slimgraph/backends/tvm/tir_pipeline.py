"""The TIR lowering pipeline slimgraph compiles CPU code with: TVM's own (``s_tir``), then one
rewrite of ours on the lowered code, registered with TVM as :data:`PIPELINE` by :func:`for_target`
(GPU targets keep TVM's default).

The rewrite: a vector load with a small constant stride (``x[2 * v]`` for a vectorized ``v``: a
strided depthwise conv's taps, the pixel copy of a strided 1x1 conv) becomes a few contiguous
vector loads and one shuffle. TVM's LLVM code generator loads such a vector one lane at a time
(16 scalar loads and inserts for 16 float32 lanes); two loads and a ``vpermt2ps`` do the same,
4.8x faster on a stride-2 copy. The loads read no element outside the range the lanes cover.

Example::

    >>> import tvm
    >>> from tvm import tirx
    >>> x = tirx.decl_buffer((64,), "float32", name="x")
    >>> load = tirx.BufferLoad(x, [tirx.Ramp(tirx.IntImm("int32", 0), 2, 8)])
    >>> type(contiguous_loads(load)).__name__
    'Shuffle'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slimgraph.backends.tvm.targets import TargetSpec

#: The name slimgraph's pipeline is registered under (``tvm.compile(..., tir_pipeline=PIPELINE)``).
PIPELINE = "slimgraph"

#: Strides rewritten: a stride of s costs s loads and s - 1 two-vector shuffles, a win over one
#: load per lane up to about a quarter of the lanes.
MAX_STRIDE = 4


def contiguous_loads(load):
    """``load`` with a strided ramp index (stride 2 to MAX_STRIDE, at least 4 lanes) as a shuffle of
    contiguous loads over the same elements; any other load unchanged."""
    from tvm import tirx

    if len(load.indices) != 1 or getattr(load, "predicate", None) is not None:
        return load
    ramp = load.indices[0]
    if not isinstance(ramp, tirx.Ramp) or not isinstance(ramp.stride, tirx.IntImm) or not ramp.base.ty.is_scalar():
        return load
    stride, lanes = int(ramp.stride), int(ramp.lanes)
    if not 2 <= stride <= MAX_STRIDE or lanes < 4:
        return load
    span = stride * (lanes - 1)  # the last lane's offset: no load reaches past it
    starts = [min(k * lanes, span - lanes + 1) for k in range(stride)]
    vectors = [tirx.BufferLoad(load.source, [tirx.Ramp(ramp.base + start, 1, lanes)]) for start in starts]
    picks = []
    for lane in range(lanes):
        offset = stride * lane
        k = next(k for k, start in enumerate(starts) if start <= offset < start + lanes)
        picks.append(tirx.IntImm("int32", k * lanes + offset - starts[k]))
    return tirx.Shuffle(vectors, picks)


def _rewrite_strided_loads():
    """A module pass applying :func:`contiguous_loads` to every function."""
    import tvm
    import tvm_ffi
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="slimgraph.ContiguousLoads")
    def rewrite(mod, _ctx):
        updates = {}
        for gvar, func in mod.functions.items():
            if isinstance(func, tirx.PrimFunc):
                updates[gvar] = func.with_body(tvm_ffi.structural_map(func.body, [(tvm.ir.expr.TensorLoad,
                                                                                   contiguous_loads)]))
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    return rewrite


def _pipeline():
    import tvm
    from tvm.tirx import compilation_pipeline

    lower, host, device = compilation_pipeline.get_tir_pipeline("s_tir")
    return tvm.transform.Sequential([lower, _rewrite_strided_loads()]), host, device


def for_target(spec: "TargetSpec") -> str:
    """The name of the TIR pipeline to compile for ``spec`` with (``tvm.compile``'s
    ``tir_pipeline``): slimgraph's, registered with TVM on first use, for CPU targets."""
    return registered(PIPELINE) if spec.is_cpu else "default"


def registered(name: str) -> str:
    """``name`` (one :func:`for_target` returned), registered with TVM in this process: a tuning
    candidate's builder runs in a worker process of its own."""
    if name == PIPELINE:
        from tvm.tirx import compilation_pipeline

        compilation_pipeline.register_tir_pipeline(PIPELINE, _pipeline)
    return name
