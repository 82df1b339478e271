"""Graph statistics (nodes, parameters, weight bytes, FLOPs) and their per-pass diff.

``nodes`` counts the top-level nodes that compute (constants excluded, a
fused region counts once); ``regions`` counts fused regions; ``parameters``
and ``weight_bytes`` sum the constants, inside fused bodies too; ``flops``
sums each op's FLOP count (a fused region counts its body), with symbolic
dims taken as 1.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (1, 4)))
    >>> g.set_outputs([g.call("add", x, g.const(np.ones((1, 4), np.float32)))])
    >>> s = graph_stats(g)
    >>> (s.nodes, s.parameters, s.weight_bytes, s.flops)
    (1, 4, 16, 4)
    >>> str(s.diff(graph_stats(Graph())))
    'nodes -1, regions +0, parameters -4, weight_bytes -16, flops -4'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from slimgraph.ir.graph import Graph


@dataclass(frozen=True)
class GraphStats:
    """Size and cost of a graph; ``a.diff(b)`` gives ``b - a`` field by field."""

    nodes: int
    regions: int
    parameters: int
    weight_bytes: int
    flops: int

    def diff(self, after: "GraphStats") -> "StatsDiff":
        return StatsDiff(**{f.name: getattr(after, f.name) - getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class StatsDiff(GraphStats):
    """Signed change of each statistic."""

    def __str__(self) -> str:
        return ", ".join(f"{f.name} {getattr(self, f.name):+d}" for f in dataclasses.fields(self))


def graph_stats(graph: Graph) -> GraphStats:
    """Count ``graph``'s nodes, regions, parameters, weight bytes and FLOPs."""
    parameters, weight_bytes = _weights(graph)
    flops = sum(
        n.opdef.flops([v.type for v in n.inputs], [v.type for v in n.outputs], n.attrs) for n in graph.nodes
    )
    return GraphStats(
        nodes=sum(1 for n in graph.nodes if n.op != "const"),
        regions=sum(1 for n in graph.nodes if n.op == "fused"),
        parameters=parameters,
        weight_bytes=weight_bytes,
        flops=int(flops),
    )


def _weights(graph: Graph) -> tuple[int, int]:
    count = size = 0
    for node in graph.nodes:
        if node.op == "const":
            t = node.output.type
            count += t.numel()
            size += t.nbytes()
        elif node.op == "fused":
            c, s = _weights(node.body)
            count += c
            size += s
    return count, size
