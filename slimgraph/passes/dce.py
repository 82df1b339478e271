"""``dce``: remove nodes whose results nobody reads.

Graph inputs stay (they are the graph's interface) even when unused.

Example::

    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (2,)))
    >>> _ = g.call("exp", x)
    >>> g.set_outputs([g.call("relu", x)])
    >>> [n.op for n in DeadCodeElimination()(g).nodes]
    ['relu']
"""

from __future__ import annotations

from slimgraph.ir.graph import Graph
from slimgraph.passes.registry import Pass, register_pass


@register_pass("dce")
class DeadCodeElimination(Pass):
    """Remove nodes whose results are not used by any output."""

    def apply(self, graph: Graph) -> None:
        live = {id(v) for v in graph.outputs}
        keep = []
        for node in reversed(graph.nodes):
            if any(id(v) in live for v in node.outputs):
                keep.append(node)
                live.update(id(v) for v in node.inputs)
        kept = {id(n) for n in keep}
        for node in reversed(graph.nodes):
            if id(node) not in kept:
                graph.remove_node(node)
