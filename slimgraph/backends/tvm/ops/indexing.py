"""TE lowerings of the ops that index with data: gather_elements, the scatters, one_hot.

Indices go through :func:`positions` (checked, wrapped, clamped). A scatter is one
extern loop nest shared by scatter_elements and scatter_nd: copy the data, then
visit the updates in order, each combined into the element (or, for scatter_nd,
the row of trailing elements) at its target offset; the order makes duplicate
targets deterministic, the last update winning as in the reference.
"""

from __future__ import annotations

import math

from tvm import te, tirx

from slimgraph.backends.tvm.lower import register
from slimgraph.backends.tvm.ops.common import const, dims, down, dtype_of, positions, spatial_compute, up

_COMBINE = {
    "none": lambda old, new: new,
    "add": lambda old, new: old + new,
    "mul": lambda old, new: old * new,
    "max": tirx.max,
    "min": tirx.min,
}


@register("gather_elements")
def lower_gather_elements(call):
    data = call.args[0]
    axis = call.attrs["axis"] % len(data.shape)
    pos = positions(call, 1, dims(data)[axis], f"gather_elements axis {axis}")
    return spatial_compute(call.shape(), lambda *i: data[i[:axis] + (pos(*i),) + i[axis + 1 :]], call.op, "elementwise")


@register("scatter_elements")
def lower_scatter_elements(call):
    data, indices, updates = call.args
    shape = dims(data)
    axis = call.attrs["axis"] % len(shape)
    pos = positions(call, 1, shape[axis], f"scatter_elements axis {axis}")

    def offset(*i):
        flat = const(0, "int64")
        for a, (v, d) in enumerate(zip(i, shape)):
            flat = flat * d + (pos(*i) if a == axis else v).astype("int64")
        return flat

    target = te.compute(tuple(dims(indices)), offset, name=f"{call.op}_target")
    return _scatter(call, target, updates, inner=1)


@register("scatter_nd")
def lower_scatter_nd(call):
    data, indices, updates = call.args
    shape = dims(data)
    depth = int(indices.shape[-1])
    pos = positions(call, 1, shape[:depth], "scatter_nd coordinates")

    def offset(*i):
        flat = const(0, "int64")
        for j in range(depth):
            flat = flat * shape[j] + pos(*i, j).astype("int64")
        return flat

    target = te.compute(tuple(dims(indices)[:-1]), offset, name=f"{call.op}_target")
    return _scatter(call, target, updates, inner=math.prod(shape[depth:]))


def _scatter(call, target, updates, inner: int):
    """Data with each update combined in at ``target`` (flat offsets in units of ``inner`` elements)."""
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    data = call.args[0]
    dtype = call.dtype()
    combine = _COMBINE[call.attrs["reduction"]]
    total, count = math.prod(int(d) for d in data.shape), math.prod(int(d) for d in target.shape)

    def body(ins, outs):
        src, at, new = (T.buffer_proxy(b) for b in ins)
        out = T.buffer_proxy(outs[0])
        with IRBuilder() as copy:
            with T.parallel(0, total) as i:
                out[i] = src[i]
        with IRBuilder() as scatter:
            with T.serial(0, count) as k:
                with T.serial(0, inner) as j:
                    dst = at[k] * inner + j
                    out[dst] = down(combine(up(out[dst]), up(new[k * inner + j])), dtype)
        # two statements, not T.seq_scope, whose marker attribute LLVM codegen warns about
        return tirx.SeqStmt([copy.get(), scatter.get()])

    buffer = tirx.decl_buffer(data.shape, dtype, f"{call.op}_out")
    return te.extern([data.shape], [data, target, updates], body, dtype=dtype, out_buffers=[buffer], name=call.op)


@register("one_hot")
def lower_one_hot(call):
    indices = call.args[0]
    depth = call.attrs["depth"]
    axis = call.attrs["axis"] % len(call.shape())
    values = call.args[1]
    kind = dtype_of(indices)

    def f(*i):
        raw = indices[i[:axis] + i[axis + 1 :]]
        wrapped = tirx.Select(raw < const(0, kind), raw + const(depth, kind), raw)
        return tirx.Select(wrapped == i[axis].astype(kind), values[1], values[0])

    return spatial_compute(call.shape(), f, call.op, "elementwise")
