"""The verifier: checks the rules every graph must keep, naming the node and the rule broken.

Rules (the ``rule`` field of :class:`~slimgraph.errors.VerifyError`):

- ``ssa``: every value is defined once and names are unique;
- ``order``: every input of a node is defined before the node (topological order);
- ``membership``: every value a node reads belongs to this graph;
- ``users``: each value's users list matches the nodes that read it;
- ``op``: the op is registered, its arity and attributes fit the schema;
- ``type``: the output types equal what the op's inference gives;
- ``outputs``: the graph has outputs and each is defined in it;
- ``region``: a fused region's body verifies and matches the node's inputs.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType, verify
    >>> g = Graph("g")
    >>> x = g.add_input("x", TensorType("f32", (2,)))
    >>> y = g.call("relu", x)
    >>> verify(g)
    Traceback (most recent call last):
    ...
    slimgraph.errors.VerifyError: [outputs] graph @g has no outputs
"""

from __future__ import annotations

from collections import Counter

from slimgraph.errors import OpError, VerifyError
from slimgraph.ir.registry import has_op


def verify(graph) -> None:
    """Raise VerifyError at the first broken rule; return None when the graph is valid."""
    from slimgraph.ir.graph import check_region_depth

    check_region_depth(graph)
    defined: dict[str, object] = {}
    position: dict[int, int] = {}
    for value in graph.inputs:
        if value.name in defined:
            raise VerifyError(f"graph input %{value.name} is defined twice", rule="ssa", where=f"@{graph.name}")
        if value.producer is not None:
            raise VerifyError(f"graph input %{value.name} has a producer", rule="ssa", where=f"@{graph.name}")
        defined[value.name] = value
        position[id(value)] = -1
    uses: Counter = Counter()
    for index, node in enumerate(graph.nodes):
        where = node.describe()
        for value in node.inputs:
            if id(value) not in position:
                if graph.has_value(value.name) and graph.value(value.name) is value:
                    raise VerifyError(f"reads %{value.name} before it is defined", rule="order", where=where)
                raise VerifyError(f"reads %{value.name}, which is not a value of graph @{graph.name}", rule="membership", where=where)
            uses[(id(value), id(node))] += 1
        for out_index, out in enumerate(node.outputs):
            if out.name in defined:
                raise VerifyError(f"defines %{out.name}, which is already defined", rule="ssa", where=where)
            if out.producer is not node or out.index != out_index:
                raise VerifyError(f"output %{out.name} does not point back to its node", rule="ssa", where=where)
            defined[out.name] = out
            position[id(out)] = index
        _check_op(node, where)
    for name, value in defined.items():
        if not graph.has_value(name) or graph.value(name) is not value:
            raise VerifyError(f"value %{name} is not registered under its name", rule="ssa", where=f"@{graph.name}")
    for value in defined.values():
        counted = Counter(id(u) for u in value.users)
        for user in value.users:
            if uses[(id(value), id(user))] != counted[id(user)]:
                raise VerifyError(
                    f"%{value.name}'s users list says {user.describe()} reads it {counted[id(user)]} times, "
                    f"but it reads it {uses[(id(value), id(user))]} times",
                    rule="users",
                    where=f"%{value.name}",
                )
    by_id = {id(v): v for v in defined.values()}
    nodes_by_id = {id(n): n for n in graph.nodes}
    for (value_id, node_id), count in uses.items():
        value = by_id[value_id]
        if sum(1 for u in value.users if id(u) == node_id) != count:
            node = nodes_by_id[node_id]
            raise VerifyError(f"reads %{value.name} but is missing from its users list", rule="users", where=node.describe())
    if not graph.outputs:
        raise VerifyError(f"graph @{graph.name} has no outputs", rule="outputs")
    for value in graph.outputs:
        if defined.get(value.name) is not value:
            raise VerifyError(f"output %{value.name} is not defined in graph @{graph.name}", rule="outputs")


def _check_op(node, where: str) -> None:
    if not has_op(node.op):
        raise VerifyError(f"unknown op {node.op!r}", rule="op", where=where)
    opdef = node.opdef
    try:
        attrs = opdef.normalize_attrs(node.attrs, where=where)
        if attrs.keys() != node.attrs.keys() or any(
            not _attr_equal(attrs[k], node.attrs[k]) for k in attrs
        ):
            raise VerifyError("attributes are not in canonical form", rule="op", where=where)
        inferred = opdef.infer_types([v.type for v in node.inputs], attrs, where=where)
    except OpError as exc:
        raise VerifyError(str(exc), rule="op", where=where) from None
    declared = [v.type for v in node.outputs]
    if len(inferred) != len(declared):
        raise VerifyError(f"has {len(declared)} outputs but the op gives {len(inferred)}", rule="type", where=where)
    for value, want in zip(node.outputs, inferred):
        if value.type != want:
            raise VerifyError(f"%{value.name} is declared {value.type} but the op infers {want}", rule="type", where=where)
    if node.op == "fused":
        try:
            verify(node.body)
        except VerifyError as exc:
            raise VerifyError(f"region body: {exc}", rule="region", where=where) from None


def _attr_equal(a, b) -> bool:
    if a is b:
        return True
    if hasattr(a, "nodes"):
        return a is b
    try:
        return bool(a == b) or (a != a and b != b)
    except (TypeError, ValueError):
        return False
