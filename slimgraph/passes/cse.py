"""``cse``: merge nodes that compute the same thing from the same inputs.

Two nodes are the same when they have the same op, the same inputs (in
either order for commutative ops) and equal attributes; constants are the
same when their arrays are bitwise equal. Fused regions are compared by
their printed bodies.

Example::

    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (2,)))
    >>> g.set_outputs([g.call("add", g.call("exp", x), g.call("exp", x))])
    >>> [n.op for n in CommonSubexpressionElimination()(g).nodes]
    ['exp', 'add']
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from slimgraph.ir.graph import Graph, Node
from slimgraph.passes.pattern import replace_node
from slimgraph.passes.registry import Pass, register_pass


@register_pass("cse")
class CommonSubexpressionElimination(Pass):
    """Merge duplicate nodes (same op, inputs and attributes) and identical constants."""

    def apply(self, graph: Graph) -> None:
        seen: dict[tuple, Node] = {}
        outputs = {id(v) for v in graph.outputs}
        for node in list(graph.nodes):
            key = _key(node)
            first = seen.setdefault(key, node)
            if first is node:
                continue
            # Two graph outputs stay two values, so the outputs keep their names.
            if not any(id(old) in outputs and id(new) in outputs for old, new in zip(node.outputs, first.outputs)):
                replace_node(graph, node, first.outputs)
                outputs = {id(v) for v in graph.outputs}


def _key(node: Node) -> tuple:
    inputs = [id(v) for v in node.inputs]
    if node.opdef.commutative:
        inputs.sort()
    return (node.op, tuple(inputs), tuple((k, _attr_key(v)) for k, v in sorted(node.attrs.items())))


def _attr_key(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return ("array", data.dtype.str, data.shape, hashlib.blake2b(data.view(np.uint8).reshape(-1)).digest())
    if isinstance(value, Graph):
        return ("graph", str(value), tuple(_attr_key(a) for a in value.consts().values()))
    if isinstance(value, float) and value != value:
        return ("nan",)  # NaN != NaN would keep equal nodes apart
    return value
