"""The dataflow IR: :class:`Graph`, :class:`Node` and :class:`Value`.

Values are SSA: each is defined once, by a graph input or by one output of a
node, and knows its :class:`~slimgraph.ir.types.TensorType`, its producer and
its users. Nodes are kept in topological order. Every edit goes through a few
Graph methods (``add_node``, ``set_input``, ``replace_all_uses``,
``remove_node``) that keep the users lists right.

Example::

    >>> import numpy as np
    >>> from slimgraph.ir import Graph, TensorType
    >>> g = Graph("tiny")
    >>> x = g.add_input("x", TensorType("f32", ("N", 4)))
    >>> w = g.const(np.ones((3, 4), np.float32), name="fc.weight")
    >>> y = g.call("relu", g.call("linear", x, w))
    >>> g.set_outputs([y])
    >>> print(g, end="")
    graph @tiny(%x: f32[N,4]) -> (f32[N,3]) {
      %fc.weight = const [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0] : f32[3,4]
      %0 = linear(%x, %fc.weight) : f32[N,3]
      %1 = relu(%0) : f32[N,3]
      return %1
    }
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from slimgraph.errors import GraphError
from slimgraph.ir.registry import OpDef, get_op
from slimgraph.ir.types import TensorType

#: How deeply regions may nest (a fused body holding a fused node, ...). The printer, parser,
#: verifier, clone and interpreter recurse once per level; real models nest a level or two, and
#: this bound keeps every one of those walks far from Python's recursion limit.
MAX_REGION_DEPTH = 32


def region_depth(graph: "Graph") -> int:
    """How many levels of graph-valued attributes (region bodies) nest inside ``graph`` (0: none)."""
    deepest, pending = 0, [(graph, 0)]
    while pending:  # a loop, not recursion: the point is to measure before anything recurses
        g, depth = pending.pop()
        deepest = max(deepest, depth)
        pending.extend((a, depth + 1) for node in g.nodes for a in node.attrs.values() if isinstance(a, Graph))
    return deepest


def check_region_depth(graph: "Graph") -> None:
    """GraphError when regions nest deeper than MAX_REGION_DEPTH inside ``graph``."""
    depth = region_depth(graph)
    if depth > MAX_REGION_DEPTH:
        raise GraphError(f"graph @{graph.name}: regions nest {depth} levels deep; slimgraph allows {MAX_REGION_DEPTH}")


class Value:
    """An SSA value: ``name``, ``type``, its ``producer`` node (None for graph
    inputs), which output of the producer it is (``index``) and its ``users``
    (one entry per use, so a node that reads a value twice appears twice)."""

    __slots__ = ("name", "type", "producer", "index", "users")

    def __init__(self, name: str, type: TensorType, producer: "Node | None" = None, index: int = 0):
        self.name = name
        self.type = type
        self.producer = producer
        self.index = index
        self.users: list[Node] = []

    @property
    def is_const(self) -> bool:
        return self.producer is not None and self.producer.op == "const"

    @property
    def const_value(self) -> np.ndarray | None:
        """The array of a constant value, else None."""
        return self.producer.attrs["value"] if self.is_const else None

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One op application: ``op`` (a registered name), ``inputs`` (a flat tuple
    of Values), ``attrs`` (plain typed data, defaults filled in), ``outputs``
    and ``loc`` (where it came from: an ONNX node name, a torch source line)."""

    __slots__ = ("op", "inputs", "attrs", "outputs", "loc")

    def __init__(self, op: str, inputs: tuple, attrs: dict, loc: str | None):
        self.op = op
        self.inputs: tuple[Value, ...] = inputs
        self.attrs: dict[str, Any] = attrs
        self.outputs: tuple[Value, ...] = ()
        self.loc = loc

    @property
    def opdef(self) -> OpDef:
        return get_op(self.op)

    @property
    def output(self) -> Value:
        """The only output; GraphError if the node has several."""
        if len(self.outputs) != 1:
            raise GraphError(f"node {self.describe()} has {len(self.outputs)} outputs, not one")
        return self.outputs[0]

    @property
    def body(self) -> "Graph":
        """The sub-graph of a ``fused`` node."""
        return self.attrs["body"]

    def describe(self) -> str:
        """A short name for messages: ``%3 = conv`` (plus its loc when known)."""
        outs = ", ".join(f"%{v.name}" for v in self.outputs) or "?"
        return f"{outs} = {self.op}" + (f" [{self.loc}]" if self.loc else "")

    def __repr__(self) -> str:
        return f"<Node {self.describe()}>"


class Graph:
    """A dataflow graph: ``inputs``, ``nodes`` in topological order, ``outputs``.

    Build it with :meth:`add_input`, :meth:`call` (or :meth:`add_node`),
    :meth:`const` and :meth:`set_outputs`; print it with ``str(graph)``; check it
    with :meth:`verify`; run it with :meth:`run`.
    """

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []
        self._values: dict[str, Value] = {}
        self._counter = 0
        self._insert_at: int | None = None
        #: the uncompressed graph this one was derived from by compressing passes (pruning,
        #: quantization, weight sharing); fine-tuning distills from it. Not saved with the graph.
        self.origin: Graph | None = None

    # -- construction ------------------------------------------------------

    def add_input(self, name: str, type: TensorType) -> Value:
        """Add a graph input of the given type."""
        value = Value(self._claim_name(name, exact=True), type)
        self.inputs.append(value)
        self._values[value.name] = value
        return value

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: dict | None = None,
        *,
        names: Sequence[str | None] | None = None,
        types: Sequence[TensorType] | None = None,
        loc: str | None = None,
    ) -> Node:
        """Create a node at the insertion point and return it.

        Attributes are checked and completed with defaults. Output types come
        from the op's type inference unless ``types`` gives them (the parser
        does; the verifier then checks them). ``names`` suggests output names;
        taken names get a numeric suffix.
        """
        opdef = get_op(op)
        inputs = tuple(inputs)
        for i, value in enumerate(inputs):
            if not isinstance(value, Value):
                raise GraphError(f"{op}: input {i} is a {type(value).__name__}, not a Value")
            if self._values.get(value.name) is not value:
                raise GraphError(f"{op}: input {i} (%{value.name}) does not belong to graph @{self.name}")
        where = loc
        full_attrs = opdef.normalize_attrs(dict(attrs or {}), where=where)
        for name, body in full_attrs.items():
            if isinstance(body, Graph) and region_depth(body) + 1 > MAX_REGION_DEPTH:
                raise GraphError(f"{op}: attribute {name!r} (@{body.name}) would nest regions "
                                 f"{region_depth(body) + 1} levels deep; slimgraph allows {MAX_REGION_DEPTH}")
        if types is None:
            types = opdef.infer_types([v.type for v in inputs], full_attrs, where=where)
        elif not opdef.arity_ok(len(inputs)):
            opdef.infer_types([v.type for v in inputs], full_attrs, where=where)  # raises the arity error
        node = Node(op, inputs, full_attrs, loc)
        names = list(names or [])
        outs = []
        for i, t in enumerate(types):
            hint = names[i] if i < len(names) else None
            value = Value(self._claim_name(hint), t, node, i)
            self._values[value.name] = value
            outs.append(value)
        node.outputs = tuple(outs)
        for value in inputs:
            value.users.append(node)
        if self._insert_at is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self._insert_at, node)
            self._insert_at += 1
        return node

    def call(self, op: str, *inputs: Value, name: str | None = None, loc: str | None = None, **attrs: Any):
        """Add a node and return its output value (a tuple for multi-output ops)."""
        node = self.add_node(op, inputs, attrs, names=[name] if name else None, loc=loc)
        return node.outputs[0] if len(node.outputs) == 1 else node.outputs

    def const(self, array: Any, name: str | None = None, dtype: "DType | str | None" = None) -> Value:
        """Add a ``const`` node holding ``array`` (copied and frozen) and return its value.

        Without ``dtype`` a float64 array (numpy's default) becomes f32; pass ``dtype="f64"`` to keep it."""
        array = np.asarray(array, dtype=None if dtype is None else TensorType(dtype, ()).dtype.numpy)
        if dtype is None and array.dtype == np.float64:
            array = array.astype(np.float32)
        return self.call("const", name=name, value=array)

    def set_outputs(self, values: Iterable[Value]) -> None:
        values = list(values)
        for v in values:
            if self._values.get(v.name) is not v:
                raise GraphError(f"output %{v.name} does not belong to graph @{self.name}")
        self.outputs = values

    @contextlib.contextmanager
    def inserting_before(self, node: Node) -> Iterator[None]:
        """New nodes go just before ``node`` inside the block."""
        saved = self._insert_at
        self._insert_at = self._index_of(node)
        try:
            yield
        finally:
            self._insert_at = saved

    @contextlib.contextmanager
    def inserting_after(self, node: Node) -> Iterator[None]:
        """New nodes go just after ``node`` (in order) inside the block."""
        saved = self._insert_at
        self._insert_at = self._index_of(node) + 1
        try:
            yield
        finally:
            self._insert_at = saved

    # -- editing -------------------------------------------------------------

    def set_input(self, node: Node, index: int, value: Value) -> None:
        """Make input ``index`` of ``node`` read ``value``."""
        old = node.inputs[index]
        old.users.remove(node)
        node.inputs = node.inputs[:index] + (value,) + node.inputs[index + 1 :]
        value.users.append(node)

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Every reader of ``old`` (nodes and graph outputs) reads ``new`` instead."""
        if old is new:
            return
        if old.type != new.type:
            raise GraphError(f"cannot replace %{old.name}: {old.type} with %{new.name}: {new.type}")
        for user in list(dict.fromkeys(old.users)):
            user.inputs = tuple(new if v is old else v for v in user.inputs)
            count = sum(1 for v in user.inputs if v is new)
            new.users.extend([user] * (count - new.users.count(user)))
        old.users = []
        self.outputs = [new if v is old else v for v in self.outputs]

    def remove_node(self, node: Node) -> None:
        """Remove a node whose outputs nobody reads."""
        for out in node.outputs:
            if out.users or out in self.outputs:
                raise GraphError(f"cannot remove {node.describe()}: %{out.name} is still used")
        self.nodes.pop(self._index_of(node))
        for value in node.inputs:
            value.users.remove(node)
        for out in node.outputs:
            del self._values[out.name]

    def set_const(self, value: Value, array: Any) -> None:
        """Give the constant ``value`` of this graph a new array of its type (cast to its dtype).

        The type is kept, so every reader stays valid; a different shape is a GraphError.

        Example::

            >>> g = Graph(); w = g.const(np.zeros(2, np.float32)); g.set_const(w, [1, 2]); w.const_value.tolist()
            [1.0, 2.0]
        """
        if not value.is_const or self._values.get(value.name) is not value:
            raise GraphError(f"set_const: %{value.name} is not a constant of graph @{self.name}")
        array = np.asarray(array).astype(value.type.dtype.numpy, copy=False)
        if array.shape != tuple(value.type.shape):
            raise GraphError(f"set_const: %{value.name} is {value.type}, got an array of shape {list(array.shape)}")
        const = value.producer
        const.attrs["value"] = const.opdef.attr("value").coerce(array, "const")

    def rename(self, value: Value, name: str) -> None:
        """Give a value a new, unused name."""
        if name == value.name:
            return
        if name in self._values:
            raise GraphError(f"name %{name} is already taken in graph @{self.name}")
        del self._values[value.name]
        value.name = name
        self._values[name] = value

    def topo_sort(self) -> None:
        """Reorder nodes topologically, keeping the current order where it is valid."""
        defined = {id(v) for v in self.inputs}
        pending = list(self.nodes)
        ordered: list[Node] = []
        while pending:
            progress, rest = False, []
            for node in pending:
                if all(id(v) in defined for v in node.inputs):
                    ordered.append(node)
                    defined.update(id(v) for v in node.outputs)
                    progress = True
                else:
                    rest.append(node)
            if not progress:
                raise GraphError(f"graph @{self.name} has a cycle through {rest[0].describe()}")
            pending = rest
        self.nodes = ordered

    # -- queries ------------------------------------------------------------

    def value(self, name: str) -> Value:
        """The value named ``name`` (without the %)."""
        try:
            return self._values[name]
        except KeyError:
            raise GraphError(f"graph @{self.name} has no value %{name}") from None

    def has_value(self, name: str) -> bool:
        return name in self._values

    def values(self) -> Iterator[Value]:
        """All values: inputs, then node outputs in order."""
        yield from self.inputs
        for node in self.nodes:
            yield from node.outputs

    def consts(self) -> dict[str, np.ndarray]:
        """Constant arrays by value name (weights keep their framework names)."""
        return {n.output.name: n.attrs["value"] for n in self.nodes if n.op == "const"}

    def find_nodes(self, op: str) -> list[Node]:
        return [n for n in self.nodes if n.op == op]

    # -- whole-graph operations -------------------------------------------------

    def clone(self) -> "Graph":
        """A deep copy of the structure; constant arrays (read-only) are shared."""
        check_region_depth(self)
        new = Graph(self.name)
        mapping: dict[int, Value] = {}
        for v in self.inputs:
            mapping[id(v)] = new.add_input(v.name, v.type)
        for node in self.nodes:
            attrs = {k: (a.clone() if isinstance(a, Graph) else a) for k, a in node.attrs.items()}
            copy = Node(node.op, tuple(mapping[id(v)] for v in node.inputs), attrs, node.loc)
            outs = []
            for v in node.outputs:
                nv = Value(v.name, v.type, copy, v.index)
                new._values[v.name] = nv
                mapping[id(v)] = nv
                outs.append(nv)
            copy.outputs = tuple(outs)
            for v in copy.inputs:
                v.users.append(copy)
            new.nodes.append(copy)
        new.outputs = [mapping[id(v)] for v in self.outputs]
        new._counter = self._counter
        new.origin = self.origin
        return new

    def equals(self, other: "Graph") -> bool:
        """Structural equality: names, types, ops, attributes and constants (bitwise)."""
        from slimgraph.ir.printer import print_graph

        if not isinstance(other, Graph):
            return False
        if print_graph(self) != print_graph(other):
            return False
        return all(
            a.dtype == b.dtype and a.tobytes() == b.tobytes()
            for a, b in zip(self.consts().values(), other.consts().values())
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and self.equals(other)

    __hash__ = None  # type: ignore[assignment]  # graphs are mutable

    def __str__(self) -> str:
        from slimgraph.ir.printer import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return f"<Graph @{self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, {len(self.outputs)} outputs>"

    def verify(self) -> "Graph":
        """Run the verifier; raises VerifyError naming the node and rule. Returns self."""
        from slimgraph.ir.verifier import verify

        verify(self)
        return self

    def run(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        """Run the reference interpreter: inputs positionally or by name; returns the outputs."""
        from slimgraph.ir.interpreter import run

        return run(self, *args, **kwargs)

    def save(self, path: str | os.PathLike) -> None:
        """Write the text form to ``path`` and large constants to ``path + '.weights'``."""
        from slimgraph.ir.serialize import save

        save(self, path)

    def to_networkx(self):
        """A networkx DiGraph with one vertex per node (and per graph input),
        edges labelled with the value they carry."""
        import networkx as nx

        dg = nx.DiGraph(name=self.name)
        for v in self.inputs:
            dg.add_node(("input", v.name), op="input", value=v.name, type=str(v.type))
        for i, node in enumerate(self.nodes):
            dg.add_node(i, op=node.op, node=node, outputs=[v.name for v in node.outputs])
        index = {id(n): i for i, n in enumerate(self.nodes)}
        for i, node in enumerate(self.nodes):
            for v in node.inputs:
                src = ("input", v.name) if v.producer is None else index[id(v.producer)]
                dg.add_edge(src, i, value=v.name, type=str(v.type))
        for v in self.outputs:
            dg.add_node(("output", v.name), op="output", value=v.name)
            src = ("input", v.name) if v.producer is None else index[id(v.producer)]
            dg.add_edge(src, ("output", v.name), value=v.name, type=str(v.type))
        return dg

    # -- internals --------------------------------------------------------------

    def _index_of(self, node: Node) -> int:
        for i, n in enumerate(self.nodes):
            if n is node:
                return i
        raise GraphError(f"{node.describe()} is not in graph @{self.name}")

    def _claim_name(self, hint: str | None, exact: bool = False) -> str:
        if hint is not None:
            if not isinstance(hint, str) or not hint:
                raise GraphError(f"bad value name {hint!r}")
            if hint not in self._values:
                return hint
            if exact:
                raise GraphError(f"value name %{hint} is defined twice in graph @{self.name}")
            suffix = 1
            while f"{hint}_{suffix}" in self._values:
                suffix += 1
            return f"{hint}_{suffix}"
        while str(self._counter) in self._values:
            self._counter += 1
        name = str(self._counter)
        self._counter += 1
        return name
