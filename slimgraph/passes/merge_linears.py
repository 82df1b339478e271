"""``merge-linears``: linears that read one input with constant weights become one linear.

An attention block projects one input three times (queries, keys and values;
a gated feed-forward twice: gate and up). As one linear over the concatenated
weights the kernel launches once instead of three times and its parallel loop
has three times the panels to share among the cores; each former result is a
``slice`` of the merged one along its last axis, which the consumer's region
takes as index arithmetic (``fuse``'s prologue rule), so nothing is copied.

Linears merge when they read the same value as ``x``, their weights (and
biases, if any) are constants of one dtype, and they agree on ``trans_a``
(false), ``trans_b``, ``alpha`` and ``beta``; a linear without a bias gets zeros
where the others have one. The merged weight is named after the first one's
with ``+`` and the others' names (``q.weight+k.weight+v.weight``), so its origin
stays readable.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph()
    >>> x = g.add_input("x", TensorType("f32", (4, 8)))
    >>> ws = [g.const(np.full((8, 8), i, np.float32), name=f"{n}.weight") for i, n in enumerate("qkv")]
    >>> g.set_outputs([g.call("linear", x, w) for w in ws])
    >>> merged = MergeLinears()(g)
    >>> [n.op for n in merged.nodes if n.op != "const"]
    ['linear', 'slice', 'slice', 'slice']
    >>> merged.find_nodes("linear")[0].inputs[1].name
    'q.weight+k.weight+v.weight'
"""

from __future__ import annotations

import numpy as np

from slimgraph.ir.graph import Graph, Node
from slimgraph.passes.registry import Pass, register_pass


def _key(node: Node) -> tuple | None:
    """What merging linears must share (their input, flags and dtype), or None for a linear that cannot merge."""
    if node.op != "linear" or node.attrs["trans_a"] or not all(v.is_const for v in node.inputs[1:]):
        return None
    x, w = node.inputs[:2]
    if len({v.type.dtype for v in node.inputs}) != 1 or len(w.type.shape) != 2:
        return None
    return id(x), node.attrs["trans_b"], node.attrs["alpha"], node.attrs["beta"]


def _merge(graph: Graph, group: list[Node]) -> None:
    first = group[0]
    trans_b = first.attrs["trans_b"]
    weights = [n.inputs[1].const_value for n in group]
    widths = [w.shape[0] if trans_b else w.shape[1] for w in weights]
    weight = np.concatenate(weights, axis=0 if trans_b else 1)
    biases = None
    if any(len(n.inputs) > 2 for n in group):
        biases = np.concatenate([n.inputs[2].const_value if len(n.inputs) > 2
                                 else np.zeros(width, weight.dtype) for n, width in zip(group, widths)])
    name = "+".join(n.inputs[1].name for n in group)
    with graph.inserting_before(first):
        w = graph.const(weight, name=name, dtype=first.inputs[1].type.dtype)
        operands = [first.inputs[0], w]
        if biases is not None:
            operands.append(graph.const(biases, name=name.replace("weight", "bias"), dtype=first.inputs[1].type.dtype))
        attrs = {k: first.attrs[k] for k in ("trans_b", "alpha", "beta")}
        merged = graph.call("linear", *operands, name=first.outputs[0].name + "_merged", loc=first.loc, **attrs)
        axis = len(merged.type.shape) - 1
        start = 0
        for node, width in zip(group, widths):
            part = graph.call("slice", merged, starts=(start,), ends=(start + width,), axes=(axis,), loc=node.loc)
            start += width
            graph.replace_all_uses(node.outputs[0], part)
    for node in group:
        graph.remove_node(node)
        for const in {id(v): v.producer for v in node.inputs[1:]}.values():  # the weights now copied into the merged ones
            if not const.outputs[0].users and const.outputs[0] not in graph.outputs:
                graph.remove_node(const)


@register_pass("merge-linears")
class MergeLinears(Pass):
    """Linears reading one input with constant weights become one linear over the concatenated
    weights, each former result a slice of it."""

    def apply(self, graph: Graph) -> None:
        groups: dict[tuple, list[Node]] = {}
        for node in graph.nodes:
            key = _key(node)
            if key is not None:
                groups.setdefault(key, []).append(node)
        for group in groups.values():
            if len(group) > 1:
                _merge(graph, group)
