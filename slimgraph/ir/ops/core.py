"""Structural ops: ``const``, ``identity``, ``cast`` and ``fused`` regions."""

from __future__ import annotations

import numpy as np

from slimgraph.errors import GraphError
from slimgraph.ir.registry import Attr, In, define_op, elementwise_flops, infer_same
from slimgraph.ir.types import TensorType


def _infer_const(types, attrs):
    return [TensorType.of_array(attrs["value"])]


define_op(
    "const",
    inputs=[],
    attrs=[Attr("value", "tensor", doc="the constant's array (read-only)")],
    infer=_infer_const,
    impl=lambda value: value,
    category="source",
    doc="A constant tensor; weights are consts named after their framework parameter.",
)

define_op(
    "identity",
    inputs=[In("x")],
    infer=infer_same,
    impl=lambda x: x,
    category="injective",
    doc="Returns its input unchanged.",
)


def _cast(x, to):
    return x.astype(to.numpy)


define_op(
    "cast",
    inputs=[In("x")],
    attrs=[Attr("to", "dtype", doc="target dtype")],
    infer=lambda types, attrs: [types[0].with_dtype(attrs["to"])],
    impl=_cast,
    flops=elementwise_flops,
    category="elementwise",
    doc="Converts to another dtype (floats to ints truncate toward zero, as numpy does).",
)


def _infer_fused(types, attrs):
    body = attrs["body"]
    if len(types) != len(body.inputs):
        raise GraphError(f"region @{body.name} takes {len(body.inputs)} inputs, got {len(types)}")
    for i, (given, param) in enumerate(zip(types, body.inputs)):
        if given.dtype != param.type.dtype or given.rank != param.type.rank:
            raise GraphError(f"input {i} is {given} but region @{body.name} expects {param.type}")
    return [v.type for v in body.outputs]


def _run_fused(*arrays: np.ndarray, body, anchor):
    from slimgraph.ir.interpreter import run

    outs = run(body, *arrays)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _fused_flops(ins, outs, attrs):
    return sum(n.opdef.flops([v.type for v in n.inputs], [v.type for v in n.outputs], n.attrs) for n in attrs["body"].nodes)


define_op(
    "fused",
    inputs=[In("args", variadic=True, min=0)],
    attrs=[
        Attr("body", "graph", doc="the region's sub-graph; its inputs are the node's inputs"),
        Attr("anchor", "str", default="", doc="the op the region was grown from, if any"),
    ],
    infer=_infer_fused,
    impl=_run_fused,
    flops=_fused_flops,
    category="opaque",
    doc="A fused region: one sub-graph lowered as one kernel.",
)
